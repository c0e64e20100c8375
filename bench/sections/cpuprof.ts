// The --cpu-prof mode: one installation issues a fixed number of certificates with every process
// under V8's CPU profiler (the kernel started with node --cpu-prof, the services through the
// kernel's root-only --cpu-prof-dir); then, per process, the functions with the most self time
// while those certificates were issued (profile-summary.ts, window on the monotonic clock).
import * as fs from "node:fs";
import * as path from "node:path";
import { formatSummary, summarizeProfile } from "../profile-summary.js";
import { keepDir } from "../lib/file-system.js";
import { sequential, start, stop } from "../lib/installation.js";
import { QUICK } from "../lib/options.js";
import { cpuOf, cpuPerCert } from "../lib/processes.js";
import { fig, note } from "../lib/report.js";
import { ms } from "../lib/stats.js";
import type { Section } from "./section.js";

const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

async function secCpuProf(): Promise<void> {
  const n = QUICK ? 300 : 1000;
  // root's, 0755: each service writes into its own subdirectory, made by the kernel; outside the
  // bench's image (deleted at the end), since the profiles are kept
  const dir = fs.mkdtempSync(path.join(keepDir(), "etca-bench-prof-"));
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, "kernel"), { mode: 0o700 });
  console.log(`[cpuprof] ${n} sequential certificates with every process under the CPU profiler; profiles in ${dir}`);
  const r = await start("etca-bench-prof", {}, undefined, { serverArgs: ["--cpu-prof-dir", dir], nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${path.join(dir, "kernel")}`] });
  let from = 0;
  let to = 0;
  let issued = 0;
  try {
    await sequential(r, 0, 20);
    const c0 = cpuOf(r.server.pid);
    from = monotonicUs();
    const s = await sequential(r, n, 0);
    to = monotonicUs();
    issued = s.lat.length;
    if (s.bad) note(`cpuprof: ${s.bad} requests failed, e.g. ${s.firstText.trim().slice(0, 160)}`);
    const cpu = cpuPerCert(c0, cpuOf(r.server.pid), Math.max(issued, 1));
    fig("(prof)", `CPU per certificate under the profiler (${issued} certificates)`, `${ms(cpu.total)} (${cpu.rows})`);
  } finally {
    await stop(r);
  }
  for (const proc of fs.readdirSync(dir).sort()) {
    const files = fs.readdirSync(path.join(dir, proc)).filter((f) => f.endsWith(".cpuprofile"));
    if (files.length === 0) {
      note(`cpuprof: ${proc} wrote no profile`);
      continue;
    }
    for (const f of files) {
      const s = summarizeProfile(path.join(dir, proc, f), { top: 12, fromUs: from, toUs: to });
      if (s.busyMs === 0) continue; // a process that lived outside the window (a restart)
      const lines = formatSummary(s, issued);
      console.log(`  ${proc}: ${lines[0]}`);
      for (const l of lines.slice(1)) console.log(`    ${l}`);
      note(`cpuprof ${proc} (${path.join(proc, f)}): ${lines[0]}; top self time: ${s.top.slice(0, 6).map((e) => `${e.name} ${e.where} ${((e.selfMs / Math.max(issued, 1)) * 1000).toFixed(0)} µs`).join("; ")}`);
    }
  }
  note(`cpuprof: profiles kept in ${dir} (summarise one with: node dist/bench/profile-summary.js FILE --from ${from} --to ${to})`);
}

export const section: Section = {
  name: "cpuprof",
  onRequest: true,
  title: "(--cpu-prof) a fixed number of certificates with a V8 CPU profile of every process; top self-time functions per process",
  run: secCpuProf,
};
