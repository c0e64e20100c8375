// Imported first by every entry point (kernel, services, client, commands): no etoken-ca process
// ever serves Node's inspector. By default a SIGUSR1 opens an unauthenticated inspector on
// 127.0.0.1:9229, and whoever connects first runs code in the process (in the signer: signs
// with the logged-in token). A JavaScript SIGUSR1 listener replaces that activation for the
// life of the process, so one is installed here at once (the kernel adds its own, the revoke
// queue, to this one). SIGUSR2 is ignored too: by default it ends the process, and an operator
// who mixes up the two signals must not stop the CA. Before this module runs, Node's own
// handler is in place for a few milliseconds of start-up: the wrappers and the supervisor also
// pass INSPECT_PORT_NOWHERE (service-table.ts), so a signal in that window finds no address to
// listen on.
// An inspector already open (--inspect on the command line; the wrappers unset NODE_OPTIONS)
// is closed, and the process refuses to run.
// Whether one is open is asked of Node's inspector binding, the function node:inspector's url()
// is: loading node:inspector itself (worker_threads, streams) costs 2-3 ms of CPU at every
// start, and MyProxy starts the client once per logon. The module is loaded to close an open
// inspector, and to ask it when a Node without process.binding("inspector") runs this.
import { createRequire } from "node:module";

const ignore = (): void => {};
process.on("SIGUSR1", ignore);
process.on("SIGUSR2", ignore);

type Inspector = typeof import("node:inspector");
const builtin = createRequire("/") as (id: "node:inspector") => Inspector;

function inspectorBindingUrl(): (() => string | undefined) | undefined {
  try {
    const url = (process as unknown as { binding(name: string): { url?: unknown } }).binding("inspector").url;
    return typeof url === "function" ? (url as () => string | undefined) : undefined;
  } catch {
    return undefined; // no process.binding, or no inspector in this Node
  }
}

if ((inspectorBindingUrl() ?? builtin("node:inspector").url)() !== undefined) {
  builtin("node:inspector").close();
  process.stderr.write("etoken-ca: refusing to run with the Node.js inspector open (--inspect on the command line or in NODE_OPTIONS)\n");
  process.exit(78);
}
