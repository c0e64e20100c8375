// bench/RESULTS.md is kept by hand except for the regions the bench writes: each between a
// begin and an end marker line. --write-results replaces its region's lines and nothing else.
import * as fs from "node:fs";

/** The generated regions: the last run's figures, and the last --compare table. */
export type Region = "figures" | "compare";

const begin = (r: Region): string => `<!-- bench:${r}:begin (written by npm run bench -- --write-results; edit outside the markers) -->`;
const end = (r: Region): string => `<!-- bench:${r}:end -->`;
const isBegin = (line: string, r: Region): boolean => line.startsWith(`<!-- bench:${r}:begin`);
const isEnd = (line: string, r: Region): boolean => line.startsWith(`<!-- bench:${r}:end`);

/**
 * `text` with region `r`'s lines replaced by `body`. A region not there yet is added: after the
 * figures region's end for "compare" when there is one, else after the document's title (a first
 * line "# ..."), else at the top. A region with a marker missing or doubled is an error: the file
 * is not written rather than guessed at.
 */
export function replaceRegion(text: string, r: Region, body: string[]): string {
  const lines = text.split("\n");
  const b = lines.flatMap((l, i) => (isBegin(l, r) ? [i] : []));
  const e = lines.flatMap((l, i) => (isEnd(l, r) ? [i] : []));
  const block = [begin(r), "", ...body, "", end(r)];
  if (b.length === 1 && e.length === 1 && b[0]! < e[0]!) return [...lines.slice(0, b[0]), ...block, ...lines.slice(e[0]! + 1)].join("\n");
  if (b.length || e.length) throw new Error(`its ${r} region's markers are broken (${b.length} begin, ${e.length} end, expected one "${begin(r).slice(0, 24)}..." before one "${end(r)}")`);
  const figuresEnd = lines.findIndex((l) => isEnd(l, "figures"));
  const at = r === "compare" && figuresEnd >= 0 ? figuresEnd + 1 : lines[0]?.startsWith("# ") ? 1 : 0;
  return [...lines.slice(0, at), ...(at > 0 ? [""] : []), ...block, ...(lines[at] === "" ? [] : [""]), ...lines.slice(at)].join("\n");
}

/** Writes `body` into region `r` of the file (which need not exist yet); other lines are kept byte for byte. */
export function writeRegion(file: string, r: Region, body: string[]): void {
  let text = "# etoken-ca performance figures\n";
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  try {
    fs.writeFileSync(file, replaceRegion(text, r, body));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}
