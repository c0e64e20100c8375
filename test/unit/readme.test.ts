// The README's configuration reference must follow services/common/config-schema.ts: every key,
// its default and its meaning, and no key the schema no longer has. On failure the message holds
// the table to paste between the config-table markers.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { CONFIG_SCHEMA } from "../../services/common/config-schema.js";

const ROOT = path.resolve(fileURLToPath(new URL("../../..", import.meta.url)));
const README = path.join(ROOT, "README.md");
const BEGIN = "<!-- config-table:begin -->";
const END = "<!-- config-table:end -->";

function defaultCell(d: string | undefined): string {
  return d === undefined ? "*(required)*" : d === "" ? "*(empty)*" : `\`${d}\``;
}

/** The table as the README must hold it. */
export function configTable(): string {
  const rows = Object.entries(CONFIG_SCHEMA).map(
    ([key, spec]) => `| \`${key}\` | ${defaultCell(spec.default)} | ${spec.section} | ${spec.doc.replace(/\|/g, "\\|")} |`,
  );
  return ["| key | default | section | meaning |", "|---|---|---|---|", ...rows].join("\n");
}

const text = fs.readFileSync(README, "utf8");

t.test("the README's configuration table is the schema's", async (t) => {
  const b = text.indexOf(BEGIN);
  const e = text.indexOf(END);
  t.ok(b >= 0 && e > b, `README.md has the ${BEGIN} ... ${END} markers`);
  if (b < 0 || e <= b) return;
  const table = text.slice(b + BEGIN.length, e).trim();
  const rows = new Map<string, string>();
  for (const line of table.split("\n")) {
    const m = /^\| `([A-Z0-9_]+)` \|/.exec(line);
    if (m) rows.set(m[1]!, line);
  }
  for (const [key, spec] of Object.entries(CONFIG_SCHEMA)) {
    const row = rows.get(key);
    t.ok(row, `README documents ${key}`);
    if (!row) continue;
    t.ok(row.includes(` ${defaultCell(spec.default)} `), `README gives ${key}'s default ${defaultCell(spec.default)}`);
    t.ok(row.includes(spec.doc.replace(/\|/g, "\\|")), `README gives ${key}'s meaning`);
  }
  for (const key of rows.keys()) t.ok(key in CONFIG_SCHEMA, `README's ${key} is a key of the schema`);
  t.equal(table, configTable(), "the table is exactly the generated one (paste the expected value between the markers)");
});

t.test("the README names the two commands and keeps the lead's sections", async (t) => {
  t.match(text, /bash demo\/run/, "the demo command");
  t.ok(fs.existsSync(path.join(ROOT, "demo/run")), "demo/run exists");
  t.match(text, /npm ci && npm run build\nnpm test/, "the test command");
  for (const section of ["## Performance", "## Reliability", "## Configuration reference", "## MyProxy integration", "## Operating guide", "## Security model"]) {
    t.ok(text.includes(`\n${section}`), `section ${section}`);
  }
});

t.test("the README's Performance section keeps the current figures only; the history is in bench/RESULTS.md", async (t) => {
  const text = fs.readFileSync(README, "utf8");
  const perf = text.slice(text.indexOf("## Performance"), text.indexOf("\n## ", text.indexOf("## Performance") + 3));
  const tables = perf.split("\n").filter((l) => /^\|---/.test(l)).length;
  t.equal(tables, 1, "one table: the latest run");
  t.notMatch(perf, /round before|\| before \| after \|/i, "no round-by-round history");
  t.match(fs.readFileSync(path.join(ROOT, "bench/RESULTS.md"), "utf8"), /^## History/m);
});
