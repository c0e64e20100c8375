// The --compare mode's arithmetic, kept apart from running anything so that it can be tested:
// the figures table a run prints, read back (every version of run.ts prints the same table, so
// an older checkout needs no new option); the runs of one side merged into one value per
// figure (element-wise medians); both sides side by side with the ratio after/before.
import { sectionNamed, withNeeds, type Section } from "../sections/section.js";
import { TABLE_HEADER, type Figure } from "./report.js";

/** One run's output, read back. `figures` include the rows derived below. */
export interface RunResult {
  figures: Figure[];
  notes: string[];
}

/** Notes that carry a figure worth comparing (older checkouts print them as notes only). */
const NOTE_FIGURES: readonly { pattern: RegExp; id: string; what: string }[] = [
  { pattern: /^CPU ms per certificate during \(c\)[^:]*: ([\d.]+) (\(.*\))$/, id: "(c cpu)", what: "CPU per certificate during (c), all five processes" },
];

/**
 * Figures whose value ends in a per-process list "(kernel 1.36, spool 2.44, ...)": one row per
 * process too, in the unit after the figure's first number ("7.50 ms (...)": ms, "17.3 wake-ups
 * (...)": wake-ups).
 */
const PER_PROCESS = new Set(["(cpu)", "(cpu-warm)", "(c cpu)", "(prof)", "(wake)", "(wake-warm)", "(c wake)", "(design floor)", "(design floor warm)", "(above floor)", "(above floor warm)"]);
/**
 * the same figures split by kind of thread (lib/thread-figures.ts): "(cpu-warm v8)", "(c wake uv)",
 * ...; "other" (the inspector's idle signal thread) keeps its one total row
 */
const PER_PROCESS_BY_KIND = /^\((cpu-warm|wake-warm|c cpu|c wake) (main|v8|uv)\)$/;

/** Numbers in a value, not digits inside words ("p50", "C_Sign"); a leading minus belongs to the number. */
const NUMBER = /(?<![\w.])-?\d+(?:\.\d+)?/g;

/** The figures table and the notes at the end of one run's output; [] when it printed none. */
export function parseRun(out: string): RunResult {
  const lines = out.split("\n").map((l) => l.replace(/\r$/, ""));
  const start = lines.lastIndexOf(TABLE_HEADER);
  if (start < 0) return { figures: [], notes: [] };
  const figures: Figure[] = [];
  let i = start + 2;
  for (; i < lines.length && lines[i]!.startsWith("| "); i++) {
    const cells = lines[i]!.split("|").slice(1, -1).map((c) => c.trim());
    if (cells.length !== 5) continue;
    const [id, what, value, goal, verdict] = cells as [string, string, string, string, string];
    figures.push({ id, what, value, goal: goal || undefined, verdict: verdict === "PASS" || verdict === "MISS" || verdict === "n/a" ? verdict : undefined });
  }
  const notes = lines.slice(i).filter((l) => l.startsWith("- ")).map((l) => l.slice(2));
  for (const n of notes) {
    for (const nf of NOTE_FIGURES) {
      const m = nf.pattern.exec(n);
      if (m) figures.push({ id: nf.id, what: nf.what, value: `${m[1]} ms ${m[2]}` });
    }
  }
  return { figures: figures.flatMap(withPerProcess), notes };
}

function withPerProcess(f: Figure): Figure[] {
  if (!PER_PROCESS.has(f.id) && !PER_PROCESS_BY_KIND.test(f.id)) return [f];
  const list = /\(([^()]*)\)\s*$/.exec(f.value)?.[1] ?? "";
  const unit = /^-?\d+(?:\.\d+)? ([^\s(]+) \(/.exec(f.value)?.[1] ?? "ms";
  const rows = [...list.matchAll(/(\w+) (-?\d+(?:\.\d+)?)/g)].map((m): Figure => ({ id: f.id, what: `of which ${m[1]}`, value: `${m[2]} ${unit}` }));
  return [f, ...rows];
}

/** The same figure in every run: its id and description with the numbers (sample counts, sizes) left out. */
export function figureKey(f: Figure): string {
  return `${f.id} ${f.what.replace(NUMBER, "#")}`;
}

const template = (value: string): string => value.replace(NUMBER, "#");
const numbers = (value: string): string[] => value.match(NUMBER) ?? [];

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** One side's figure over its runs: the value with each number the median of that number over the runs. */
export interface Merged {
  key: string;
  id: string;
  what: string;
  value: string;
  /** the value's first number (the median of it): what the ratio compares */
  headline: number | undefined;
  goal: string | undefined;
  /** "PASS", "MISS", "n/a", or e.g. "PASS 1/2" when the runs disagree */
  verdict: string;
  runs: number;
}

/** Merges the runs of one side; keys in the order they first appear. */
export function mergeRuns(runs: readonly RunResult[]): Map<string, Merged> {
  const byKey = new Map<string, Figure[]>();
  for (const run of runs) {
    const seen = new Map<string, number>();
    for (const f of run.figures) {
      const base = figureKey(f);
      const k = (seen.get(base) ?? 0) + 1; // a figure twice in one run (same description) stays two rows
      seen.set(base, k);
      const key = k === 1 ? base : `${base} #${k}`;
      byKey.set(key, [...(byKey.get(key) ?? []), f]);
    }
  }
  const out = new Map<string, Merged>();
  for (const [key, fs] of byKey) out.set(key, mergeOne(key, fs));
  return out;
}

function mergeOne(key: string, fs: Figure[]): Merged {
  // the values of the most common shape ("p50 # ms p99 # ms"); a run that says "no logon" is left out of the medians
  const shapes = new Map<string, Figure[]>();
  for (const f of fs) shapes.set(template(f.value), [...(shapes.get(template(f.value)) ?? []), f]);
  const same = [...shapes.values()].reduce((a, b) => (b.length > a.length ? b : a));
  const first = same[0]!;
  const cols = numbers(first.value).map((tok, i) => {
    const m = median(same.map((f) => Number(numbers(f.value)[i])));
    return m.toFixed(tok.split(".")[1]?.length ?? 0);
  });
  let n = 0;
  const value = same.length === 1 ? first.value : first.value.replace(NUMBER, () => cols[n++]!);
  const last = fs[fs.length - 1]!;
  return {
    key,
    id: first.id,
    what: last.what,
    value: same.length === fs.length ? value : `${value} (${same.length} of ${fs.length} runs; others: ${fs.filter((f) => !same.includes(f)).map((f) => f.value).join("; ")})`,
    headline: cols.length ? Number(cols[0]) : undefined,
    goal: last.goal,
    verdict: verdictOf(fs),
    runs: fs.length,
  };
}

function verdictOf(fs: Figure[]): string {
  const vs = fs.map((f) => f.verdict).filter((v): v is NonNullable<Figure["verdict"]> => v !== undefined);
  if (vs.length === 0) return "";
  const pass = vs.filter((v) => v === "PASS").length;
  const miss = vs.filter((v) => v === "MISS").length;
  if (pass + miss === 0) return "n/a";
  if (miss === 0) return "PASS";
  if (pass === 0) return "MISS";
  return `PASS ${pass}/${pass + miss}`;
}

/** after / before of the headline numbers, "n/a" when either side lacks the figure or a number. */
export function ratio(before: Merged | undefined, after: Merged | undefined): string {
  if (before?.headline === undefined || after?.headline === undefined || before.headline === 0) return "n/a";
  return `${(after.headline / before.headline).toFixed(2)}x`;
}

export const COMPARE_HEADER = ["| id | figure | before | after | after/before | goal | before: verdict | after: verdict |", "|---|---|---|---|---|---|---|---|"];

/** The comparison table: the after side's rows in its order, then rows only the before side has. */
export function compareTable(before: readonly RunResult[], after: readonly RunResult[]): string[] {
  const b = mergeRuns(before);
  const a = mergeRuns(after);
  const keys = [...a.keys(), ...[...b.keys()].filter((k) => !a.has(k))];
  const rows = keys.map((k) => {
    const x = b.get(k);
    const y = a.get(k);
    const any = (y ?? x)!;
    // the same figure taken otherwise (--quick's counts, (c)'s writers in an older bench): say so
    const what = x && y && x.what !== y.what ? `${y.what} (before: ${x.what})` : any.what;
    return `| ${any.id} | ${what} | ${x?.value ?? "n/a"} | ${y?.value ?? "n/a"} | ${ratio(x, y)} | ${y?.goal ?? x?.goal ?? ""} | ${x ? x.verdict : "n/a"} | ${y ? y.verdict : "n/a"} |`;
  });
  return [...COMPARE_HEADER, ...rows];
}

/**
 * The sections of `unit` a checkout's bench has, when it refused the unit for naming a section it
 * does not have (an older checkout: "bench: no section floor; sections: fsync, sign, ..." on
 * stderr); undefined when `stderr` says nothing of the kind or none of the unit is left.
 */
export function unitKnownTo(unit: readonly string[], stderr: string): string[] | undefined {
  const list = /no section \S+; sections: ([\w, -]+)/.exec(stderr)?.[1];
  if (!list) return undefined;
  const known = new Set(list.split(",").map((x) => x.trim()));
  const left = unit.filter((n) => known.has(n));
  return left.length && left.length < unit.length ? left : undefined;
}

/**
 * The runs of one round: each requested section with the sections it needs (their figures are
 * its goals, e.g. (a) for (b/a)), one child run each, so that before and after alternate section
 * by section; a section another run already includes is not run alone.
 */
export function compareUnits(sections: readonly Pick<Section, "name" | "aliases" | "needs">[], requested: readonly string[]): string[][] {
  const names = withNeeds(sections, requested).filter((n) => requested.some((r) => sectionNamed(sections, r)?.name === n));
  const units = names.map((n) => withNeeds(sections, [n]));
  return units.filter((u) => !units.some((v) => v !== u && v.length > u.length && u.every((x) => v.includes(x))));
}
