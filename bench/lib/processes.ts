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
 * CPU time of a process in ns: the sum over its threads (main, V8's workers, libuv's pool) of
 * the scheduler's run time, /proc/PID/task/TID/schedstat field 1 (not the 10 ms ticks of stat).
 */
export function cpuNsOf(pid: number): number {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns;
}

export function procInfo(pid: number): { name: string; hwmMiB: number; cpuNs: number } | undefined {
  try {
    const name = ourName(pid);
    if (!name) return undefined;
    const st = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const hwmMiB = Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0) / 1024;
    return { name, hwmMiB, cpuNs: cpuNsOf(pid) };
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

/** CPU ns used so far by each process of the installation, by name. */
export function cpuOf(root: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const pid of processTree(root)) {
    const p = procInfo(pid);
    if (p) out[p.name] = (out[p.name] ?? 0) + p.cpuNs;
  }
  return out;
}

/** ms of CPU per certificate of each process between two cpuOf() readings, and their total. */
export function cpuPerCert(before: Record<string, number>, after: Record<string, number>, n: number): { total: number; rows: string } {
  const per = Object.keys(after).map((k) => [k, (after[k]! - (before[k] ?? 0)) / 1e6 / n] as const);
  return { total: per.reduce((a, [, v]) => a + v, 0), rows: per.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ") };
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
