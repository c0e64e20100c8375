// The installation's processes by name: CPU used, peak memory.
import * as fs from "node:fs";
import * as path from "node:path";
import { processTree } from "../../test/fixtures/server.js";

/** The name of one of our processes: its service title (kernel, spool, ...) or its script. */
function ourName(pid: number): string | undefined {
  const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  const title = /^etoken-ca: (\w+)/.exec(cmd[0] ?? "")?.[1]; // process titles set by the services
  const js = cmd.findIndex((c) => c.endsWith(".js"));
  if (!title && js < 0) return undefined;
  return title ?? (cmd[js]!.endsWith("start.js") ? (cmd[js + 1] ?? "service") : path.basename(cmd[js]!, ".js").replace("etoken-ca-server", "kernel"));
}

/** What the scheduler counted for a process, summed over its threads. */
export interface Sched {
  /** ns on a CPU: /proc/PID/task/TID/schedstat field 1 (not the 10 ms ticks of stat) */
  cpuNs: number;
  /** times a thread was put on a CPU: schedstat field 3 ("timeslices run"), wake-ups and returns after a preemption */
  slices: number;
  /**
   * wake-ups: times a thread went to sleep by itself (status: voluntary_ctxt_switches; each such
   * sleep ends in one wake-up: a frame read, a timer, a thread-pool completion, ...)
   */
  wakeups: number;
  /** times a running thread was preempted (status: nonvoluntary_ctxt_switches): the rest of `slices` */
  preempted: number;
  /** the wake-ups of the main thread (the event loop's) alone; the rest are V8's workers', libuv's pool's, ... */
  mainWakeups: number;
}

const NO_SCHED: Sched = { cpuNs: 0, slices: 0, wakeups: 0, preempted: 0, mainWakeups: 0 };

/**
 * The scheduler's counters of a process, summed over its threads (main, V8's workers, libuv's
 * pool). `proc` is /proc, or a directory laid out like it (tests). A thread that ends between
 * the two files it is read from counts with what was read.
 */
export function schedOf(pid: number, proc = "/proc"): Sched {
  const sum = { ...NO_SCHED };
  for (const tid of fs.readdirSync(`${proc}/${pid}/task`)) {
    const dir = `${proc}/${pid}/task/${tid}`;
    try {
      const fields = fs.readFileSync(`${dir}/schedstat`, "utf8").trim().split(/\s+/);
      sum.cpuNs += Number(fields[0]);
      sum.slices += Number(fields[2]);
      const status = fs.readFileSync(`${dir}/status`, "utf8");
      const wakeups = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      sum.wakeups += wakeups;
      if (tid === String(pid)) sum.mainWakeups += wakeups;
      sum.preempted += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    } catch {
      // the thread ended meanwhile
    }
  }
  return sum;
}

export function procInfo(pid: number): ({ name: string; hwmMiB: number } & Sched) | undefined {
  try {
    const name = ourName(pid);
    if (!name) return undefined;
    const st = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const hwmMiB = Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0) / 1024;
    return { name, hwmMiB, ...schedOf(pid) };
  } catch {
    return undefined;
  }
}

export function rssOf(root: number): { total: number; rows: string[] } {
  let total = 0;
  const rows: string[] = [];
  for (const pid of processTree(root)) {
    const p = procInfo(pid);
    if (!p) continue;
    total += p.hwmMiB;
    rows.push(`${p.name} ${p.hwmMiB.toFixed(0)}`);
  }
  return { total, rows };
}

/** The scheduler's counters so far of each process of the installation, by name. */
export function cpuOf(root: number): Record<string, Sched> {
  const out: Record<string, Sched> = {};
  for (const pid of processTree(root)) {
    const p = procInfo(pid);
    if (!p) continue;
    const o = out[p.name] ?? NO_SCHED;
    out[p.name] = { cpuNs: o.cpuNs + p.cpuNs, slices: o.slices + p.slices, wakeups: o.wakeups + p.wakeups, preempted: o.preempted + p.preempted, mainWakeups: o.mainWakeups + p.mainWakeups };
  }
  return out;
}

/** One counter's increase per certificate between two cpuOf() readings, per process and in all. */
function perCert(before: Record<string, Sched>, after: Record<string, Sched>, n: number, counter: (s: Sched) => number): { total: number; by: Record<string, number> } {
  const by: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) by[k] = (counter(v) - counter(before[k] ?? NO_SCHED)) / n;
  return { total: Object.values(by).reduce((a, b) => a + b, 0), by };
}

const listed = (by: Record<string, number>, digits: number): string => Object.entries(by).map(([k, v]) => `${k} ${v.toFixed(digits)}`).join(", ");

/** ms of CPU per certificate of each process between two cpuOf() readings, and their total. */
export function cpuPerCert(before: Record<string, Sched>, after: Record<string, Sched>, n: number): { total: number; rows: string; by: Record<string, number> } {
  const { total, by } = perCert(before, after, n, (s) => s.cpuNs / 1e6);
  return { total, by, rows: listed(by, 2) };
}

/** A scheduler count (wake-ups, run slices, preemptions) per certificate of each process between two cpuOf() readings, and their total. */
export function countPerCert(before: Record<string, Sched>, after: Record<string, Sched>, n: number, what: "wakeups" | "mainWakeups" | "slices" | "preempted"): { total: number; rows: string; by: Record<string, number> } {
  const { total, by } = perCert(before, after, n, (s) => s[what]);
  return { total, by, rows: listed(by, 1) };
}

/** Name of one of our processes (service title, script) or the program (openssl children). */
export function procName(pid: number): string | undefined {
  const p = procInfo(pid);
  if (p) return p.name;
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    return cmd.length ? path.basename(cmd[0]!) : undefined;
  } catch {
    return undefined;
  }
}

export function statusKiB(pid: number, key: string): number {
  try {
    return Number(new RegExp(`${key}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * Peak memory of every process of the installation during a run: VmHWM reset first (clear_refs
 * 5), then sampled every 100 ms (short-lived children: openssl), Pss from smaps_rollup every
 * 250 ms. Per process name the largest value seen (one process per name at a time).
 */
export class MemorySampler {
  private readonly hwm = new Map<string, number>();
  private readonly pss = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  constructor(private readonly root: number) {}
  start(): void {
    for (const pid of processTree(this.root)) {
      try {
        fs.writeFileSync(`/proc/${pid}/clear_refs`, "5");
      } catch {
        // gone
      }
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), 100);
  }
  private sample(): void {
    const withPss = this.ticks++ % 3 === 0;
    for (const pid of processTree(this.root)) {
      const name = procName(pid);
      if (!name || name === "env") continue;
      this.hwm.set(name, Math.max(this.hwm.get(name) ?? 0, statusKiB(pid, "VmHWM") / 1024));
      if (withPss) {
        try {
          const kib = Number(/^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
          this.pss.set(name, Math.max(this.pss.get(name) ?? 0, kib / 1024));
        } catch {
          // gone
        }
      }
    }
  }
  stop(): { total: number; rows: string; pssTotal: number; pssRows: string } {
    this.sample();
    clearInterval(this.timer);
    const fmt = (m: Map<string, number>): string => [...m].map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ");
    const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
    return { total: sum(this.hwm), rows: fmt(this.hwm), pssTotal: sum(this.pss), pssRows: fmt(this.pss) };
  }
}
