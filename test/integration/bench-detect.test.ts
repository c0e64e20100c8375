// `npm run bench -- --only detect`, run as the README says (the section's fence round trip
// through a real monitor process, then token removals on a real installation): the section
// lived in bench/ before the sections moved to bench/sections/, and its monitor's entry point
// stayed relative to the old place, so the full `npm run bench` ended at this section with
// exit code 13 (a promise that never settled) and no table.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

t.test("the detect section measures the fence and the removals and prints both figures", async (t) => {
  const r = spawnSync("env", ["-u", "NODE_OPTIONS", process.execPath, path.join(DIST, "bench/run.js"), "--only", "detect", "--quick", "--fs", "tmp"], {
    encoding: "utf8",
    timeout: 180_000,
  });
  const out = `${r.stdout}${r.stderr}`;
  t.equal(r.status, 0, `the bench ends with exit 0 (output: ${out.slice(-1500)})`);
  t.notMatch(out, /section detect failed/, "the section did not fail");
  const fence = /^\|\s*fence\s*\|[^|]*\|\s*p50 ([0-9.]+) ms p99 ([0-9.]+) ms\s*\|/m.exec(out);
  t.ok(fence, "the table has the fence round trip");
  if (fence) t.ok(Number(fence[1]) > 0 && Number(fence[1]) <= Number(fence[2]), `fence p50 ${fence[1]} ms, p99 ${fence[2]} ms: measured`);
  const detect = /^\|\s*detect\s*\|[^|]*\|\s*p50 ([0-9.]+) ms max ([0-9.]+) ms\s*\|/m.exec(out);
  t.ok(detect, "the table has removal -> SUSPENDED, every round seen (a missed one would print NaN)");
  if (detect) t.ok(Number(detect[1]) > 0 && Number(detect[1]) <= Number(detect[2]), `detect p50 ${detect[1]} ms, max ${detect[2]} ms`);
});
