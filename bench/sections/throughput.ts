import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";
import { start, stop, sequential, type Running } from "../lib/installation.js";
import { rssOf, cpuOf, cpuPerCert, countPerCert, kindPerCert, type Sched } from "../lib/processes.js";
import { measured } from "../lib/measured.js";
import { threadKindFigures } from "../lib/thread-figures.js";

/** issue 20's (c): "sustained certificates/s with 32 writers", --quick too (fewer requests each) */
export const C_WRITERS = 32;

/** One (c) burst: `writers` writers of `per` requests each, with every process's counters around it. */
async function burst(r: Running, writers: number, per: number, tag: string): Promise<{ ok: number; rate: number; lat: number[]; c0: Record<string, Sched>; c1: Record<string, Sched> }> {
  const c0 = cpuOf(r.server.pid);
  const t0 = now();
  let ok = 0;
  const lat: number[] = [];
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      for (let i = 0; i < per; i++) {
        const x = await r.driver.issue(`${tag}w${w} r${i}`, r.csrPem);
        if (x.ok) ok++;
        lat.push(x.done - x.t0);
      }
    }),
  );
  const rate = ok / ((now() - t0) / 1000);
  return { ok, rate, lat, c0, c1: cpuOf(r.server.pid) };
}

const cGoal = (): string => (measured.signRate ? `>= ${(measured.signRate / 2).toFixed(0)}/s (half of (a))` : ">= half of (a)");

async function secThroughput(): Promise<void> {
  const writers = C_WRITERS;
  const per = QUICK ? 10 : 30;
  console.log(`[throughput] ${writers} concurrent writers x ${per} requests each, then the same again on the warmer installation`);
  const r = await start("etca-bench-thr");
  try {
    await sequential(r, 0, 10);
    const { ok, rate, lat, c0, c1 } = await burst(r, writers, per, "");
    const cpu = cpuPerCert(c0, c1, ok);
    note(`CPU ms per certificate during (c) (schedstat, all threads): ${cpu.total.toFixed(2)} (${cpu.rows})`);
    const wake = countPerCert(c0, c1, ok, "wakeups");
    fig("(c wake)", `wake-ups per certificate during (c), ${writers} writers, every thread`, `${wake.total.toFixed(1)} wake-ups (${wake.rows})`);
    threadKindFigures({ cpu: "c cpu", wake: "c wake" }, `during (c), ${writers} writers`, c0, c1, ok);
    const goal = measured.signRate ? rate >= measured.signRate / 2 : undefined;
    fig("(c)", `sustained issuance, ${writers} writers (${ok}/${writers * per} ok)`, `${rate.toFixed(0)} certs/s (latency p50 ${ms(q(lat, 0.5), 1)})`, cGoal(), goal);
    // (c) starts 10 certificates after start, while V8 still compiles (its threads' CPU shows it);
    // "sustained" may mean a CA that has run a while: the same burst once more
    const again = await burst(r, writers, per, "again ");
    const warmCpu = cpuPerCert(again.c0, again.c1, again.ok);
    const warmV8 = kindPerCert(again.c0, again.c1, again.ok, "v8", "cpuMs");
    fig("(c warm cpu)", `CPU per certificate during (c warm), all five processes (V8's threads ${warmV8.total.toFixed(2)} ms)`, `${ms(warmCpu.total)} (${warmCpu.rows})`);
    const warmGoal = measured.signRate ? again.rate >= measured.signRate / 2 : undefined;
    fig("(c warm)", `(c) again on the same installation, after ${10 + writers * per} certificates (${again.ok}/${writers * per} ok)`, `${again.rate.toFixed(0)} certs/s (latency p50 ${ms(q(again.lat, 0.5), 1)})`, cGoal(), warmGoal);
    const rss = rssOf(r.server.pid);
    fig("rss", "peak RSS (VmHWM) after the throughput run, MiB", `${rss.total.toFixed(0)} (${rss.rows.join(", ")})`, "< 300 MiB", rss.total < 300);
  } finally {
    await stop(r);
  }
}

export const section: Section = { name: "throughput", needs: ["sign"], title: "(c) sustained certificates/s with many writers injecting into the spool", run: secThroughput };
