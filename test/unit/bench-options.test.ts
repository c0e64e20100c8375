// The bench runner's command line (bench/lib/options.ts): --help and -h print the usage on stdout
// and exit 0 (they ended in parseArgs' stack trace); a mistake is one line on stderr naming it,
// exit 2 (the bench's "cannot run"), and nothing is run.
import t from "tap";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { NO_TAP_HOOKS } from "../fixtures/spool-harness.js";

const RUN_JS = fileURLToPath(new URL("../../bench/run.js", import.meta.url));

function bench(args: string[]) {
  const r = spawnSync("/usr/bin/env", [...NO_TAP_HOOKS, process.execPath, RUN_JS, ...args], { encoding: "utf8", env: { PATH: "/usr/bin:/bin" }, input: "" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test("--help and -h: the usage on stdout, exit 0", async (t) => {
  for (const flag of ["--help", "-h"]) {
    const r = bench([flag]);
    t.equal(r.code, 0, `${flag}: exit 0 (${r.stderr.split("\n")[0]})`);
    t.equal(r.stderr, "", `${flag}: nothing on stderr`);
    t.match(r.stdout, /^usage: npm run bench -- /, `${flag}: the usage first`);
    for (const option of ["--quick", "--only", "--write-results", "--cpu-prof", "--compare", "--rounds", "--fs"]) t.match(r.stdout, new RegExp(`^  ${option} `, "m"), `${flag}: ${option} explained`);
  }
  const late = bench(["--quick", "--help"]);
  t.equal(late.code, 0, "--help after other options: the usage too");
  t.match(late.stdout, /^usage: /);
});

t.test("a mistake: one line on stderr naming it, exit 2, nothing run", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--no-such-option"], /^bench: unknown option --no-such-option\b/],
    [["--quick", "--bogus=1"], /^bench: unknown option --bogus\b/],
    [["--only"], /^bench: --only needs a value\b/],
    [["--quick=yes"], /^bench: --quick takes no value\b/],
    [["latency"], /^bench: unexpected argument "latency"/],
    [["--fs"], /^bench: --fs needs a value\b/],
  ];
  for (const [args, message] of cases) {
    const r = bench(args);
    t.equal(r.code, 2, `${args.join(" ")}: exit 2`);
    t.match(r.stderr, message, `${args.join(" ")}: named (${r.stderr.trim()})`);
    t.equal(r.stderr.trimEnd().split("\n").length, 1, `${args.join(" ")}: one line, no stack trace`);
    t.equal(r.stdout, "", `${args.join(" ")}: nothing on stdout (nothing ran)`);
  }
});

t.test("--fs takes image or tmp: anything else is one line, exit 2, nothing run (no image made)", async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass("checked after the bench's root check", { skip: true });
    return;
  }
  const r = bench(["--fs", "journal"]);
  t.equal(r.code, 2, "exit 2");
  t.equal(r.stderr, "bench: --fs takes image or tmp\n", "named, one line");
  t.equal(r.stdout, "", "nothing on stdout (nothing ran)");
});
