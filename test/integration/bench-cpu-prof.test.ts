// `npm run bench -- --cpu-prof` writes one V8 CPU profile per process and says where they are
// kept. Since the installations moved onto a loop-mounted image that is deleted at the end of
// the run, the profiles were written there too: the directory the bench named was gone when it
// had finished printing.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

t.test("--cpu-prof: the profiles of every process are still where the bench says they are kept", async (t) => {
  const r = spawnSync("env", ["-u", "NODE_OPTIONS", process.execPath, path.join(DIST, "bench/run.js"), "--cpu-prof", "--quick"], { encoding: "utf8", timeout: 300_000 });
  const out = `${r.stdout}${r.stderr}`;
  t.equal(r.status, 0, `exit 0 (output: ${out.slice(-1200)})`);
  const kept = /cpuprof: profiles kept in (\S+) /.exec(out);
  t.ok(kept, "the bench names the directory");
  if (!kept) return;
  const dir = kept[1]!;
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.ok(fs.existsSync(dir), `${dir} exists after the run`);
  if (!fs.existsSync(dir)) return;
  for (const proc of ["kernel", "spool", "signer", "monitor", "notifier"]) {
    const files = fs.existsSync(path.join(dir, proc)) ? fs.readdirSync(path.join(dir, proc)).filter((f) => f.endsWith(".cpuprofile")) : [];
    t.ok(files.length >= 1, `${proc}: ${files.length} profile(s)`);
    if (files[0]) t.ok((JSON.parse(fs.readFileSync(path.join(dir, proc, files[0]), "utf8")) as { nodes?: unknown[] }).nodes?.length, `${proc}: a V8 CPU profile with nodes`);
  }
});
