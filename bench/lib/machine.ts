// What the figures were measured on (printed first, and in RESULTS.md).
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";

/** `installations`: one line saying which file system the installations are on (run.ts). */
export function machine(installations: string): string[] {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  let softhsm = "?";
  let openssl = "?";
  try {
    softhsm = execFileSync("dpkg-query", ["-W", "-f", "${Version}", "softhsm2"], { encoding: "utf8" });
  } catch {
    // not Debian
  }
  try {
    openssl = execFileSync("openssl", ["version"], { encoding: "utf8" }).trim();
  } catch {
    // none
  }
  const mem = Number(/MemTotal:\s+(\d+)/.exec(fs.readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) / 1048576;
  return [
    `nproc ${os.cpus().length}, CPU ${cpu}, ${mem.toFixed(1)} GiB RAM`,
    `kernel ${os.release()}, node ${process.version}, SoftHSM2 ${softhsm}, ${openssl}`,
    installations,
    `load average at start ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  ];
}
