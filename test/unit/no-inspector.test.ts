// no-inspector.ts asks Node's inspector binding whether an inspector is open (loading
// node:inspector costs every start-up 2-3 ms); where the binding cannot be had, it asks
// node:inspector. Either way an open inspector is closed and the process exits 78, and a process
// without one runs on. Both builds: the services' ESM and the client's CommonJS.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { DIST } from "../fixtures/server.js";

const BUILDS = { esm: path.join(DIST, "services/common/no-inspector.js"), commonjs: path.join(DIST, "client/services/common/no-inspector.js") };
const REFUSAL = "etoken-ca: refusing to run with the Node.js inspector open (--inspect on the command line or in NODE_OPTIONS)\n";

function run(module: string, opts: { inspect: boolean; binding: "kept" | "deleted" | "throws" }) {
  const drop = { kept: "", deleted: "delete process.binding;", throws: 'process.binding = () => { throw new Error("gone"); };' }[opts.binding];
  const script = `${drop} import(${JSON.stringify(module)}).then(() => process.stdout.write("ran\\n"));`;
  // env -i: no NODE_OPTIONS from tap in the child
  const r = spawnSync("/usr/bin/env", ["-i", "PATH=/usr/bin:/bin", process.execPath, ...(opts.inspect ? ["--inspect=127.0.0.1:0"] : []), "-e", script], { encoding: "utf8", timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

for (const [build, module] of Object.entries(BUILDS)) {
  for (const binding of ["kept", "deleted", "throws"] as const) {
    t.test(`${build} build, process.binding ${binding}`, async (t) => {
      const open = run(module, { inspect: true, binding });
      t.equal(open.code, 78, "an open inspector: exit 78");
      t.equal(open.stdout, "", "nothing ran after it");
      t.ok(open.stderr.endsWith(REFUSAL), open.stderr);
      const closed = run(module, { inspect: false, binding });
      t.equal(closed.code, 0, closed.stderr);
      t.equal(closed.stdout, "ran\n");
      t.equal(closed.stderr, "");
    });
  }
}
