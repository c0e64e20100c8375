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
import * as inspector from "node:inspector";

const ignore = (): void => {};
process.on("SIGUSR1", ignore);
process.on("SIGUSR2", ignore);

if (inspector.url() !== undefined) {
  inspector.close();
  process.stderr.write("etoken-ca: refusing to run with the Node.js inspector open (--inspect on the command line or in NODE_OPTIONS)\n");
  process.exit(78);
}
