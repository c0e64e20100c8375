// The installation's processes by name: CPU used, peak memory.
import * as fs from "node:fs";
import * as path from "node:path";
import { processTree } from "../../test/fixtures/server.js";

export function procInfo(pid: number): { name: string; hwmMiB: number; cpuMs: number } | undefined {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    const title = /^etoken-ca: (\w+)/.exec(cmd[0] ?? "")?.[1]; // process titles set by the services
    const js = cmd.findIndex((c) => c.endsWith(".js"));
    if (!title && js < 0) return undefined;
    const name = title ?? (cmd[js]!.endsWith("start.js") ? (cmd[js + 1] ?? "service") : path.basename(cmd[js]!, ".js").replace("etoken-ca-server", "kernel"));
    const st = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const hwmMiB = Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0) / 1024;
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    const cpuMs = ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, USER_HZ 100
    return { name, hwmMiB, cpuMs };
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

/** CPU ms used so far by each process of the installation, by name. */
export function cpuOf(root: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const pid of processTree(root)) {
    const p = procInfo(pid);
    if (p) out[p.name] = (out[p.name] ?? 0) + p.cpuMs;
  }
  return out;
}
export function cpuPerCert(before: Record<string, number>, after: Record<string, number>, n: number): string {
  return Object.keys(after)
    .map((k) => `${k} ${((after[k]! - (before[k] ?? 0)) / n).toFixed(2)}`)
    .join(", ");
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
