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

/**
 * The kinds of thread of a node process, whose CPU tells compile time from work: the main thread
 * runs the JavaScript (the event loop), V8's platform threads compile optimised code and help the
 * garbage collector (with the delayed-task thread), libuv's pool runs fs calls, fsyncs and
 * crypto off the loop, and other native threads (inspector's signal thread, a PKCS#11 module's).
 */
export type ThreadKind = "main" | "v8" | "uv" | "other";
export const THREAD_KINDS: readonly ThreadKind[] = ["main", "v8", "uv", "other"];
export const THREAD_KIND_NAMES: Record<ThreadKind, string> = {
  main: "main thread (event loop, JavaScript)",
  v8: "V8's platform threads (optimising compiler, GC helpers)",
  uv: "libuv's pool (fs calls, fsync, crypto)",
  other: "other native threads",
};

/** One thread as classify() needs it: its id, its name (comm), and the size of its stack's mapping when it could be read. */
export interface ThreadInfo {
  tid: number;
  comm: string;
  stackKiB?: number;
}

/**
 * The kind of each thread of process `pid`. Node 20 names none of its threads (comm is "node" or
 * the process title), so they are told apart by the order Node creates them in, which thread
 * ids keep: the main thread (id = pid); V8's platform (the delayed-task thread, then the
 * --v8-pool-size workers), made before any JavaScript runs; then the inspector's SIGUSR1 thread,
 * the only one with a small stack (32 KiB; the others have 8 MiB); then libuv's pool, made at
 * its first use. Threads named by a newer libuv or Node ("libuv-worker", "V8 ...",
 * "DelayedTask...") go by their name, and so do ours ("etca-slot-wait", the monitor's, made
 * after libuv's pool: other). Without that small-stack thread to separate them, the unnamed
 * threads are "other" rather than guessed.
 */
export function classify(pid: number, threads: readonly ThreadInfo[]): Map<number, ThreadKind> {
  const out = new Map<number, ThreadKind>();
  const sorted = [...threads].sort((a, b) => a.tid - b.tid);
  const signal = sorted.find((t) => t.tid !== pid && t.stackKiB !== undefined && t.stackKiB <= 256)?.tid;
  for (const t of sorted) {
    if (t.tid === pid) out.set(t.tid, "main");
    else if (/^libuv-worker/.test(t.comm)) out.set(t.tid, "uv");
    else if (/^(V8|DelayedTask)/i.test(t.comm)) out.set(t.tid, "v8");
    else if (/^etca-/.test(t.comm)) out.set(t.tid, "other"); // ours (the monitor's etca-slot-wait)
    else if (signal === undefined || t.tid === signal) out.set(t.tid, "other");
    else out.set(t.tid, t.tid < signal ? "v8" : "uv");
  }
  return out;
}

/** The size in KiB of the mapping that holds a stack pointer, from /proc/PID/maps. */
function mappingKiB(maps: string, sp: bigint): number | undefined {
  for (const line of maps.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (!m) continue;
    const [a, b] = [BigInt(`0x${m[1]}`), BigInt(`0x${m[2]}`)];
    if (sp >= a && sp < b) return Number((b - a) / 1024n);
  }
  return undefined;
}

/** Thread kinds already known, by "proc pid start-time tid" (pids are reused: pid_max may be 32768). */
const kindCache = new Map<string, ThreadKind>();

/**
 * The kind of every thread of a process, classify() on what /proc says: each thread's comm and,
 * for a thread blocked in a system call, its stack pointer (/proc/PID/task/TID/syscall) located
 * in /proc/PID/maps. Read once per thread: a thread keeps its kind.
 */
function kindsOf(pid: number, tids: readonly string[], proc: string): Map<number, ThreadKind> {
  let start = "";
  try {
    start = fs.readFileSync(`${proc}/${pid}/stat`, "utf8").split(") ")[1]?.split(" ")[19] ?? "";
  } catch {
    // a directory laid out like /proc without stat (tests): the pid alone
  }
  const key = (tid: string): string => `${proc} ${pid} ${start} ${tid}`;
  if (tids.every((tid) => kindCache.has(key(tid)))) return new Map(tids.map((tid) => [Number(tid), kindCache.get(key(tid))!]));
  let maps = "";
  try {
    maps = fs.readFileSync(`${proc}/${pid}/maps`, "utf8");
  } catch {
    // gone, or not readable: no stack sizes, the unnamed threads are "other"
  }
  const threads: ThreadInfo[] = [];
  for (const tid of tids) {
    const dir = `${proc}/${pid}/task/${tid}`;
    const info: ThreadInfo = { tid: Number(tid), comm: "" };
    try {
      info.comm = fs.readFileSync(`${dir}/comm`, "utf8").trim();
      const syscall = fs.readFileSync(`${dir}/syscall`, "utf8").trim().split(" ");
      if (syscall.length >= 3) info.stackKiB = mappingKiB(maps, BigInt(syscall[syscall.length - 2]!));
    } catch {
      // running (no stack pointer to read) or ended
    }
    threads.push(info);
  }
  const kinds = classify(pid, threads);
  // a classification with the small-stack thread found is final; without it, try again next time
  if ([...kinds.values()].some((k) => k === "v8" || k === "uv")) for (const [tid, k] of kinds) kindCache.set(key(String(tid)), k);
  return kinds;
}

/** The CPU and wake-ups of the threads of one kind. */
export interface KindSched {
  cpuNs: number;
  wakeups: number;
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
  /** cpuNs and wakeups by kind of thread (classify()); absent: not split */
  kinds?: Partial<Record<ThreadKind, KindSched>>;
}

const NO_SCHED: Sched = { cpuNs: 0, slices: 0, wakeups: 0, preempted: 0, mainWakeups: 0 };

/**
 * The scheduler's counters of a process, summed over its threads (main, V8's workers, libuv's
 * pool), in all and by kind of thread. `proc` is /proc, or a directory laid out like it (tests).
 * A thread that ends between the two files it is read from counts with what was read.
 */
export function schedOf(pid: number, proc = "/proc"): Sched {
  const sum = { ...NO_SCHED };
  const tids = fs.readdirSync(`${proc}/${pid}/task`);
  const kindOf = kindsOf(pid, tids, proc);
  const kinds: Partial<Record<ThreadKind, KindSched>> = {};
  for (const tid of tids) {
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
      const k = (kinds[kindOf.get(Number(tid)) ?? "other"] ??= { cpuNs: 0, wakeups: 0 });
      k.cpuNs += Number(fields[0]);
      k.wakeups += wakeups;
    } catch {
      // the thread ended meanwhile
    }
  }
  return { ...sum, kinds };
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
    const kinds: Partial<Record<ThreadKind, KindSched>> = {};
    for (const k of THREAD_KINDS) {
      const [a, b] = [o.kinds?.[k], p.kinds?.[k]];
      if (a || b) kinds[k] = { cpuNs: (a?.cpuNs ?? 0) + (b?.cpuNs ?? 0), wakeups: (a?.wakeups ?? 0) + (b?.wakeups ?? 0) };
    }
    out[p.name] = { cpuNs: o.cpuNs + p.cpuNs, slices: o.slices + p.slices, wakeups: o.wakeups + p.wakeups, preempted: o.preempted + p.preempted, mainWakeups: o.mainWakeups + p.mainWakeups, kinds };
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

/** CPU ms or wake-ups per certificate of one kind of thread (classify()) of each process between two cpuOf() readings, and their total. */
export function kindPerCert(before: Record<string, Sched>, after: Record<string, Sched>, n: number, kind: ThreadKind, what: "cpuMs" | "wakeups"): { total: number; rows: string; by: Record<string, number> } {
  const counter = (s: Sched): number => (what === "cpuMs" ? (s.kinds?.[kind]?.cpuNs ?? 0) / 1e6 : (s.kinds?.[kind]?.wakeups ?? 0));
  const { total, by } = perCert(before, after, n, counter);
  return { total, by, rows: listed(by, what === "cpuMs" ? 2 : 1) };
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
