// One console, one server: a second etoken-ca-server for the same CA_DIR, SPOOL_DIR or CONSOLE
// refuses to start and names the running one.
import t from "tap";
import * as path from "node:path";
import { BIN, configVariant, createInstallation, runCommand, startServer, waitForState } from "../fixtures/server.js";

const inst = createInstallation({ prefix: "etca-one" });
const first = startServer(inst);
t.teardown(async () => {
  await first.stop();
  inst.cleanup();
});
await waitForState(inst, "NEED_PIN", 60_000);

/** A second server's own files, so that only `shared` collides with the first. */
function second(name: string, shared: Record<string, string>): string {
  const own = (p: string): string => path.join(inst.dir, name, p);
  return configVariant(name, inst, {
    CA_DIR: own("ca"),
    CRL_DIR: own("crl"),
    SPOOL_DIR: own("spool"),
    REVOKE_DIR: own("revoke"),
    PIDFILE: own("run/pid"),
    STATUS_FILE: own("run/status.json"),
    AUDIT_LOG: own("log/audit.log"),
    CONSOLE: "/dev/null",
    ...shared,
  });
}

for (const key of ["CA_DIR", "SPOOL_DIR", "CONSOLE"] as const) {
  t.test(`the same ${key}: refused, naming the running server`, async (t) => {
    const file = second(`second-${key.toLowerCase()}`, { [key]: inst.config[key] });
    const r = runCommand(process.execPath, [BIN.server, "--config", file]);
    t.not(r.code, 0);
    t.equal(r.stderr, `etoken-ca-server: ${key}=${inst.config[key]} is in use by etoken-ca-server pid ${first.pid} (configuration ${inst.configPath}); one server per CA\n`);
    t.equal(first.proc.exitCode, null, "the first server runs on");
  });
}
