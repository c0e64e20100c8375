import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";
import { start, stop, sequential } from "../lib/installation.js";
import { rssOf, cpuOf, cpuPerCert, countPerCert } from "../lib/processes.js";
import { measured } from "../lib/measured.js";
import { threadKindFigures } from "../lib/thread-figures.js";

/** issue 20's (c): "sustained certificates/s with 32 writers", --quick too (fewer requests each) */
export const C_WRITERS = 32;

async function secThroughput(): Promise<void> {
  const writers = C_WRITERS;
  const per = QUICK ? 10 : 30;
  console.log(`[throughput] ${writers} concurrent writers x ${per} requests each`);
  const r = await start("etca-bench-thr");
  try {
    await sequential(r, 0, 10);
    const c0 = cpuOf(r.server.pid);
    const t0 = now();
    let ok = 0;
    const lat: number[] = [];
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < per; i++) {
          const x = await r.driver.issue(`w${w} r${i}`, r.csrPem);
          if (x.ok) ok++;
          lat.push(x.done - x.t0);
        }
      }),
    );
    const secs = (now() - t0) / 1000;
    const rate = ok / secs;
    const c1 = cpuOf(r.server.pid);
    const cpu = cpuPerCert(c0, c1, ok);
    note(`CPU ms per certificate during (c) (schedstat, all threads): ${cpu.total.toFixed(2)} (${cpu.rows})`);
    const wake = countPerCert(c0, c1, ok, "wakeups");
    fig("(c wake)", `wake-ups per certificate during (c), ${writers} writers, every thread`, `${wake.total.toFixed(1)} wake-ups (${wake.rows})`);
    threadKindFigures({ cpu: "c cpu", wake: "c wake" }, `during (c), ${writers} writers`, c0, c1, ok);
    const goal = measured.signRate ? rate >= measured.signRate / 2 : undefined;
    fig("(c)", `sustained issuance, ${writers} writers (${ok}/${writers * per} ok)`, `${rate.toFixed(0)} certs/s (latency p50 ${ms(q(lat, 0.5), 1)})`, measured.signRate ? `>= ${(measured.signRate / 2).toFixed(0)}/s (half of (a))` : ">= half of (a)", goal);
    const rss = rssOf(r.server.pid);
    fig("rss", "peak RSS (VmHWM) after the throughput run, MiB", `${rss.total.toFixed(0)} (${rss.rows.join(", ")})`, "< 300 MiB", rss.total < 300);
  } finally {
    await stop(r);
  }
}

export const section: Section = { name: "throughput", needs: ["sign"], title: "(c) sustained certificates/s with many writers injecting into the spool", run: secThroughput };
