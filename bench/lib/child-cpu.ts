// CPU time of the child processes the bench runs (etoken-ca-client), in µs from the kernel's
// own accounting rather than 10 ms ticks: the bench moves itself into a cgroup v2 group of its
// own (children inherit it), reads the group's cpu.stat usage_usec around each child and takes
// off its own CPU (process.cpuUsage) in the same interval.
import * as fs from "node:fs";
import * as path from "node:path";
import { mountTable } from "./file-system.js";

export interface ChildCpu {
  /** runs `fn` (which runs children synchronously) and returns its result and the children's CPU in ms */
  measure<T>(fn: () => T): { value: T; cpuMs: number };
  /** moves the bench back where it was and removes the group */
  close(): void;
}

function cgroup2Mount(): string | undefined {
  return mountTable().find((m) => m.type === "cgroup2")?.point;
}

/** undefined when there is no cgroup v2 hierarchy this process may use (then no figure). */
export function openChildCpu(): ChildCpu | undefined {
  const mount = cgroup2Mount();
  const own = /^0::(.*)$/m.exec(fs.readFileSync("/proc/self/cgroup", "utf8"))?.[1];
  if (!mount || own === undefined) return undefined;
  const home = path.join(mount, own);
  const group = path.join(mount, `etca-bench-${process.pid}`);
  try {
    fs.mkdirSync(group);
    fs.writeFileSync(path.join(group, "cgroup.procs"), String(process.pid));
  } catch {
    fs.rmSync(group, { recursive: true, force: true });
    return undefined;
  }
  const usageUs = (): number => Number(/^usage_usec (\d+)$/m.exec(fs.readFileSync(path.join(group, "cpu.stat"), "utf8"))?.[1] ?? NaN);
  return {
    measure<T>(fn: () => T): { value: T; cpuMs: number } {
      const u0 = usageUs();
      const self0 = process.cpuUsage();
      const value = fn();
      const self = process.cpuUsage(self0);
      return { value, cpuMs: (usageUs() - u0 - self.user - self.system) / 1000 };
    },
    close(): void {
      try {
        fs.writeFileSync(path.join(home, "cgroup.procs"), String(process.pid));
        fs.rmdirSync(group);
      } catch {
        // left for the operator: an empty group under the cgroup mount
      }
    },
  };
}
