// services/spool/results.ts: a result written unnamed (O_TMPFILE) whose linkat(2) fails for
// another reason than EEXIST goes the named way; whether linkat through /proc/self/fd can work at
// all is decided once, not looked up again at every failure. Before the fix every such failure
// checked /proc/self/fd again. Counted with strace on a child process that publishes results
// whose names are too long to link (ENAMETOOLONG at linkat, then at the named file's open).
import t from "tap";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const RESULTS_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../services/spool/results.js");
const ATTEMPTS = 5;

if (spawnSync("strace", ["-V"]).status !== 0) {
  t.fail("strace is needed (apt-get install strace)");
} else {
  t.test("a linkat that fails: /proc/self/fd is looked up once, not once per failure; each result still goes the named way", async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-publish-"));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const trace = path.join(dir, "strace.out");
    const spool = path.join(dir, "spool");
    fs.mkdirSync(spool);
    const script = `
      const { publishResult } = await import(${JSON.stringify(RESULTS_JS)});
      const codes = [];
      for (let i = 0; i < ${ATTEMPTS}; i++) {
        try {
          publishResult(${JSON.stringify(spool)}, "req." + "x".repeat(300) + i, "content");
          codes.push("published");
        } catch (err) {
          codes.push(err.code);
        }
      }
      console.log(JSON.stringify(codes));
    `;
    const r = spawnSync("strace", ["-f", "-qq", "-e", "trace=%file", "-o", trace, "/usr/bin/env", "-u", "NODE_OPTIONS", process.execPath, "--input-type=module", "-e", script], { encoding: "utf8" });
    t.equal(r.status, 0, r.stderr);
    t.same(JSON.parse(r.stdout), Array(ATTEMPTS).fill("ENAMETOOLONG"), "every result went the named way, which fails as the name is too long");
    const lines = fs.readFileSync(trace, "utf8").split("\n");
    const q = spool.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const linkats = lines.filter((l) => new RegExp(`\\slinkat\\(AT_FDCWD, "/proc/self/fd/[0-9]+", AT_FDCWD, "${q}/req\\.x+\\d\\.result", AT_SYMLINK_FOLLOW\\) = -1 ENAMETOOLONG`).test(l));
    t.equal(linkats.length, ATTEMPTS, "each result was tried unnamed first: linkat failed with ENAMETOOLONG");
    const named = lines.filter((l) => new RegExp(`\\sopen(at)?\\(.*"${q}/req\\.x+\\d\\.result\\.tmp[0-9a-f]+", [^)]*O_EXCL`).test(l));
    t.equal(named.length, ATTEMPTS, "then named (O_EXCL)");
    const lookups = lines.filter((l) => /"\/proc\/self\/fd"/.test(l));
    t.equal(lookups.length, 1, `/proc/self/fd looked up once, for all ${ATTEMPTS} results:\n${lookups.join("\n")}`);
  });
}
