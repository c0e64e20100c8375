// One section of the benchmark: `--only NAME` (or one of its aliases) runs it; `run` prints its
// figures and notes through lib/report.ts and asserts nothing.
export interface Section {
  name: string;
  /** other names --only accepts for it */
  aliases?: readonly string[];
  /** one line: what it measures */
  title: string;
  /** runs only when asked for by name (or by its mode flag, e.g. --cpu-prof), not in a plain run */
  onRequest?: boolean;
  run(): Promise<void>;
}
