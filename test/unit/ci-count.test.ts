// .ci/run's last line "N passed, N failed" comes from .ci/count-tests reading what `npm test`
// printed. Here real tap (the project's, with the project's reporter) runs small test files that
// pass, fail, crash and get killed, and the count must call every broken file a failure.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const COUNT = path.join(ROOT, ".ci/count-tests");

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-ci-count-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

/** `bash .ci/count-tests` on `log` and `status`: [passed, failed]. */
function count(log: string, status: number): [number, number] {
  const file = path.join(work, `log-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(file, log);
  const r = spawnSync("bash", [COUNT, file, String(status)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`count-tests: ${r.stderr}`);
  const m = /^(\d+) (\d+)\n$/.exec(r.stdout);
  if (!m) throw new Error(`count-tests printed ${JSON.stringify(r.stdout)}`);
  return [Number(m[1]), Number(m[2])];
}

/** Runs the project's tap, configured as package.json configures it, on `files` (name -> source). */
function runTap(files: Record<string, string>): { log: string; status: number } {
  const dir = fs.mkdtempSync(path.join(work, "run-"));
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  const tapConfig = (JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { tap: Record<string, unknown> }).tap;
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module", tap: { ...tapConfig, include: ["t/*.test.js"], timeout: 60 } }));
  fs.mkdirSync(path.join(dir, "t"));
  for (const [name, src] of Object.entries(files)) fs.writeFileSync(path.join(dir, "t", name), src);
  // env -i: not the environment of the tap running this test (its TAP_* variables)
  const r = spawnSync("/usr/bin/env", ["-i", `PATH=${process.env.PATH}`, `HOME=${os.homedir()}`, process.execPath, path.join(ROOT, "node_modules/.bin/tap")], { cwd: dir, encoding: "utf8", timeout: 300_000 });
  return { log: r.stdout + r.stderr, status: r.status ?? 1 };
}

const PASSING = `import t from "tap";\nt.test("two", async (t) => { t.ok(1); t.ok(1); });\nt.ok(1);\n`;

t.test("real tap: a killed file, a crashed one, a failing one each count as failed; the passes are the passing assertions", async (t) => {
  const run = runTap({
    "a-pass.test.js": PASSING,
    "b-fail.test.js": `import t from "tap";\nt.test("sub", async (t) => { t.ok(1); t.equal(1, 2); });\n`,
    // all its assertions passed, then the process died on a signal (the OOM killer, a stray kill)
    "c-killed.test.js": `import t from "tap";\nt.ok(1);\nsetTimeout(() => process.kill(process.pid, "SIGKILL"), 10);\n`,
    // exits non-zero after its assertions, without a "not ok" of its own
    "d-exit.test.js": `import t from "tap";\nt.ok(1);\nt.teardown(() => process.exit(3));\n`,
  });
  t.not(run.status, 0, "tap itself fails the run");
  t.match(run.log, /^not ok \d+ - t\/c-killed\.test\.js/m, "tap marks the killed file not ok");
  const [passed, failed] = count(run.log, run.status);
  t.equal(failed, 3, `b, c and d failed (tap's own summary: ${/^# \{.*\}$/m.exec(run.log)?.[0]})`);
  t.equal(passed, 6, "3 in a, 1 in b, 1 in c, 1 in d");
});

t.test("real tap: an all-passing run counts no failure; a skipped and a todo test are failures", async (t) => {
  const ok = runTap({ "a-pass.test.js": PASSING });
  t.same(count(ok.log, ok.status), [3, 0]);
  const skips = runTap({ "s.test.js": `import t from "tap";\nt.test("s", { skip: true }, async () => {});\nt.test("d", { todo: true }, async () => {});\nt.ok(1);\n` });
  t.same(count(skips.log, skips.status), [1, 2]);
});

t.test("no summary, or a failing status without a counted failure, is a failure", async (t) => {
  t.same(count("npm ERR! missing script: test\n", 1), [0, 2], "no summary (total 0) and exit 1");
  t.same(count("# { total: 0 }\n", 0), [0, 1], "no test ran");
  t.same(count("# { total: 2, pass: 2 }\n", 1), [2, 1], "exit 1 with all counted passing");
  t.same(count("# { total: 2, pass: 2 }\n", 0), [2, 0]);
});
