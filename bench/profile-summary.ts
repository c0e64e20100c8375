// Where a V8 CPU profile (.cpuprofile, written by node --cpu-prof) spends its time: the
// functions with the most self time, optionally only in a window of the monotonic clock (the
// clock of process.hrtime and of the profile's timestamps, in µs), e.g. the certificates of a
// bench run without the process's start-up.
// Run: node dist/bench/profile-summary.js FILE.cpuprofile [--top N] [--from US --to US]
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** ms sampled in the window, (idle) left out */
  busyMs: number;
  /** ms of (idle) in the window */
  idleMs: number;
  /** functions by self time, largest first */
  top: { name: string; where: string; selfMs: number; share: number }[];
}

const where = (f: ProfileNode["callFrame"]): string => {
  if (!f.url) return "";
  const file = f.url.replace(/^file:\/\//, "");
  const at = file.lastIndexOf("/dist/");
  return `${at >= 0 ? file.slice(at + 6) : file.startsWith("node:") ? file : path.basename(file)}:${f.lineNumber + 1}`;
};

export function summarizeProfile(file: string, opts: { top?: number; fromUs?: number; toUs?: number } = {}): ProfileSummary {
  const p = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, { name: string; where: string; us: number }>();
  let busy = 0;
  let idle = 0;
  let t = p.startTime;
  const times = p.timeDeltas.map((d) => (t += d));
  for (let i = 0; i < p.samples.length; i++) {
    const at = times[i]!;
    const dur = (i + 1 < times.length ? times[i + 1]! : p.endTime) - at;
    if ((opts.fromUs !== undefined && at < opts.fromUs) || (opts.toUs !== undefined && at > opts.toUs) || dur <= 0) continue;
    const f = byId.get(p.samples[i]!)?.callFrame;
    if (!f) continue;
    if (f.functionName === "(idle)") {
      idle += dur;
      continue;
    }
    busy += dur;
    const name = f.functionName || "(anonymous)";
    const w = where(f);
    const key = `${name} ${w}`;
    const e = self.get(key) ?? { name, where: w, us: 0 };
    e.us += dur;
    self.set(key, e);
  }
  const top = [...self.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, opts.top ?? 15)
    .map((e) => ({ name: e.name, where: e.where, selfMs: e.us / 1000, share: busy ? e.us / busy : 0 }));
  return { busyMs: busy / 1000, idleMs: idle / 1000, top };
}

export function formatSummary(s: ProfileSummary, perCert?: number): string[] {
  const per = (msValue: number): string => (perCert ? ` = ${((msValue / perCert) * 1000).toFixed(0)} µs/cert` : "");
  return [
    `sampled busy ${s.busyMs.toFixed(1)} ms${per(s.busyMs)}, idle ${s.idleMs.toFixed(0)} ms`,
    ...s.top.map((e) => `${(e.share * 100).toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(1).padStart(8)} ms${per(e.selfMs)}  ${e.name}${e.where ? `  ${e.where}` : ""}`),
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const { values, positionals } = parseArgs({ options: { top: { type: "string" }, from: { type: "string" }, to: { type: "string" } }, allowPositionals: true });
  if (positionals.length === 0) {
    console.error("usage: profile-summary FILE.cpuprofile... [--top N] [--from US --to US]");
    process.exit(2);
  }
  for (const f of positionals) {
    console.log(f);
    const s = summarizeProfile(f, { top: values.top ? Number(values.top) : 15, fromUs: values.from ? Number(values.from) : undefined, toUs: values.to ? Number(values.to) : undefined });
    for (const l of formatSummary(s)) console.log(`  ${l}`);
  }
}
