import * as fs from "node:fs";
import * as path from "node:path";
import { QUICK, N_LAT } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";
import { start, stop, sequential } from "../lib/installation.js";
import { rssOf } from "../lib/processes.js";
import { measured } from "../lib/measured.js";
import { syntheticIndex } from "../lib/synthetic-index.js";

async function secIndex1m(): Promise<void> {
  const lines = QUICK ? 200_000 : 1_000_000;
  console.log(`[index1m] (b) with ${lines} index.txt lines`);
  let prepMs = 0;
  const r = await start("etca-bench-1m", {}, (inst) => {
    const a = now();
    const dir = inst.config.CA_DIR;
    fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true, mode: 0o700 });
    syntheticIndex(path.join(dir, "index.txt"), lines);
    fs.writeFileSync(path.join(dir, "serial"), "01\n");
    fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
    for (const p of [dir, path.join(dir, "newcerts"), path.join(dir, "index.txt"), path.join(dir, "serial"), path.join(dir, "crlnumber")]) fs.chownSync(p, inst.users.SIGNER_USER.uid, inst.users.SIGNER_USER.gid);
    fs.chmodSync(dir, 0o700);
    prepMs = now() - a;
  });
  try {
    const s = await sequential(r, N_LAT);
    const p50 = q(s.lat, 0.5);
    fig("(e)", `(b) at ${lines} index lines`, `p50 ${ms(p50)} p99 ${ms(q(s.lat, 0.99))}`, measured.b50 ? `<= 1.2 x (b) = ${ms(1.2 * measured.b50)}` : "<= 1.2 x (b)", measured.b50 ? p50 <= 1.2 * measured.b50 : undefined);
    const rss = rssOf(r.server.pid);
    fig("rss", `peak RSS at ${lines} index lines, MiB`, `${rss.total.toFixed(0)} (${rss.rows.join(", ")})`);
    note(`index generation ${prepMs.toFixed(0)} ms (not timed in (e))`);
  } finally {
    await stop(r);
  }
}

export const section: Section = { name: "index1m", needs: ["latency"], title: "(e) (b) again with an index.txt of 1,000,000 entries", run: secIndex1m };
