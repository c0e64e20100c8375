// The figures table and the notes of one run: printed as they come, tabled at the end.
export interface Figure {
  id: string;
  what: string;
  value: string;
  goal?: string;
  verdict?: "PASS" | "MISS" | "n/a";
}
export const figures: Figure[] = [];
export const notes: string[] = [];
export function fig(id: string, what: string, value: string, goal?: string, pass?: boolean): void {
  const f: Figure = { id, what, value, goal, verdict: pass === undefined ? (goal ? "n/a" : undefined) : pass ? "PASS" : "MISS" };
  figures.push(f);
  console.log(`  ${id.padEnd(6)} ${what.padEnd(58)} ${value.padEnd(34)} ${goal ? `goal ${goal}` : ""}${f.verdict ? `  ${f.verdict}` : ""}`);
}
export function note(s: string): void {
  notes.push(s);
  console.log(`  note: ${s}`);
}

/** The header of the figures table every run prints at its end (--compare reads it back from older checkouts too). */
export const TABLE_HEADER = "| id | figure | value | goal | verdict |";

/** The figures as the markdown table a run prints and writes. */
export function figureTable(fs: readonly Figure[]): string[] {
  return [TABLE_HEADER, "|---|---|---|---|---|", ...fs.map((f) => `| ${f.id} | ${f.what} | ${f.value} | ${f.goal ?? ""} | ${f.verdict ?? ""} |`)];
}
