// The --compare mode: the same sections from another built checkout ("before") and from this one
// ("after"), each in a child `node dist/bench/run.js --only ...` of its own checkout, alternating
// section by section and round by round (A B, then B A), so that the shared machine's load
// drifts hit both sides alike; then one table (lib/compare.ts) with both and the ratio.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Section } from "../sections/section.js";
import { compareTable, compareUnits, parseRun, unitKnownTo, type RunResult } from "./compare.js";

/** Issue 20's goals: (a) C_Sign, (cpu) and (b), (c), (d), (h4). */
export const GOAL_SECTIONS = ["sign", "latency", "throughput", "client", "myproxy"];

export interface CompareOptions {
  beforeDir: string;
  afterDir: string;
  /** section names or aliases; the goals' sections when undefined */
  only: readonly string[] | undefined;
  quick: boolean;
  rounds: number;
  /** the file system of each child run (run.ts): its environment (TMPDIR), released after it */
  prepare: () => { env: Record<string, string>; release(): void };
}

interface Side {
  label: "before" | "after";
  dir: string;
  runs: RunResult[];
}

/** One line about a checkout: its commit, and whether it has changes not committed. */
export function describeCheckout(dir: string): string {
  try {
    const head = execFileSync("git", ["-C", dir, "log", "-1", "--format=%h (%cs)"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    const dirty = execFileSync("git", ["-C", dir, "status", "--porcelain", "--untracked-files=no"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return `${dir} at ${head}${dirty ? " with uncommitted changes" : ""}`;
  } catch {
    return `${dir} (not a git checkout)`;
  }
}

let running: ChildProcess | undefined;

/** On SIGINT/SIGTERM: passes the signal to the child bench running, and waits for it to end (its own clean-up). */
export async function stopChild(signal: NodeJS.Signals): Promise<void> {
  const child = running;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((r) => child.once("close", r));
  child.kill(signal);
  await closed;
}

/** Runs `dir`'s bench once with `args`, its output echoed with `tag`; its exit code and output. */
function runBench(dir: string, args: string[], tag: string, env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(dir, "dist/bench/run.js"), ...args], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    running = child;
    let out = "";
    let err = "";
    let partial = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const lines = (partial + d).split("\n");
      partial = lines.pop()!;
      for (const l of lines) console.log(`${tag} ${l}`);
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      running = undefined;
      if (partial) console.log(`${tag} ${partial}`);
      resolve({ code, out, err });
    });
  });
}

/** Runs the comparison; returns the lines to print (and to write to RESULTS.md's compare region). */
export async function runCompare(o: CompareOptions, sections: readonly Section[]): Promise<{ table: string[]; header: string[]; problems: string[] }> {
  const units = compareUnits(sections, o.only ?? GOAL_SECTIONS);
  const sides: [Side, Side] = [
    { label: "before", dir: o.beforeDir, runs: [] },
    { label: "after", dir: o.afterDir, runs: [] },
  ];
  const problems: string[] = [];
  const header = [
    `before: ${describeCheckout(o.beforeDir)}`,
    `after: ${describeCheckout(o.afterDir)}`,
    `runs: ${units.map((u) => `--only ${u.join(",")}`).join("; ")}${o.quick ? " (each --quick)" : ""}; ${o.rounds} round(s), before and after alternating run by run (A B, B A, ...)`,
  ];
  for (const h of header) console.log(`  ${h}`);
  for (let round = 0; round < o.rounds; round++) {
    for (const [ui, unit] of units.entries()) {
      const order = (round + ui) % 2 === 0 ? sides : ([sides[1], sides[0]] as const);
      for (const side of order) {
        let args = ["--only", unit.join(","), ...(o.quick ? ["--quick"] : [])];
        const tag = `[${side.label} ${round + 1}/${o.rounds}]`;
        const t0 = Date.now();
        const once = async (): Promise<{ code: number | null; out: string; err: string }> => {
          let base: ReturnType<CompareOptions["prepare"]>;
          try {
            base = o.prepare();
          } catch (err) {
            return { code: null, out: "", err: (err as Error).message };
          }
          try {
            return await runBench(side.dir, args, tag, base.env);
          } finally {
            base.release();
          }
        };
        let r = await once();
        const known = r.code !== 0 ? unitKnownTo(unit, r.err) : undefined;
        if (known) {
          // an older checkout without a newer section: its figures are n/a, the rest still compares
          const msg = `${side.label}: no section ${unit.filter((n) => !known.includes(n)).join(", ")} in ${side.dir}; ran --only ${known.join(",")}`;
          if (!problems.includes(msg)) problems.push(msg);
          args = ["--only", known.join(","), ...(o.quick ? ["--quick"] : [])];
          r = await once();
        }
        const run = parseRun(r.out);
        console.log(`${tag} exit ${r.code}, ${((Date.now() - t0) / 1000).toFixed(0)} s, ${run.figures.length} figures`);
        if (r.code !== 0 || run.figures.length === 0) {
          problems.push(`${side.label}, round ${round + 1}, ${args.join(" ")}: exit ${r.code}, no figures${r.err.trim() ? `: ${r.err.trim().split("\n").slice(-2).join(" / ").slice(0, 300)}` : ""}`);
          continue;
        }
        for (const n of run.notes) if (/\bfailed\b/.test(n)) problems.push(`${side.label}, round ${round + 1}: ${n.slice(0, 300)}`);
        side.runs.push(run);
      }
    }
  }
  header.push(`load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  return { table: compareTable(sides[0].runs, sides[1].runs), header, problems };
}

/** The checkout `dir` has a built bench to run; a message when not. */
export function checkBuilt(dir: string): string | undefined {
  if (!fs.existsSync(path.join(dir, "dist/bench/run.js"))) return `--compare ${dir}: no ${path.join(dir, "dist/bench/run.js")} (build that checkout first: npm run build)`;
  return undefined;
}
