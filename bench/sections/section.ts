// One section of the benchmark: `--only NAME` (or one of its aliases) runs it; `run` prints its
// figures and notes through lib/report.ts and asserts nothing.
export interface Section {
  name: string;
  /** other names --only accepts for it */
  aliases?: readonly string[];
  /** one line: what it measures */
  title: string;
  run(): Promise<void>;
}
