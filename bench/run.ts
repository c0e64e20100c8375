// The benchmark runner: `npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results] [--cpu-prof]`.
// Starts real installations (as root: real users, SoftHSM2 token, the kernel and its four
// services), measures from the outside where the goals say so, and prints one table of figures
// with the goals and PASS/MISS. It never asserts and always exits 0 unless it cannot run at all.
//
// The sections (names for --only) are the rows of sections/index.ts, one file each under
// sections/; the helpers they share are in lib/ (spool-driver.ts: requests injected exactly as
// etoken-ca-client does it; installation.ts, shared-installation.ts: servers to measure;
// processes.ts: CPU and memory of each process; report.ts: the figures table).
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { machine } from "./lib/machine.js";
import { CPU_PROF, ONLY, QUICK, WRITE } from "./lib/options.js";
import { figures, note, notes } from "./lib/report.js";
import { sharedCleanup } from "./lib/shared-installation.js";
import { SECTIONS } from "./sections/index.js";
import type { Section } from "./sections/section.js";

const SRC_BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bench");

const named = (s: Section): boolean => ONLY !== undefined && [s.name, ...(s.aliases ?? [])].some((n) => ONLY!.includes(n));
/** --cpu-prof alone runs only the profile section; with --only, the named ones too */
const wanted = (s: Section): boolean => named(s) || (s.name === "cpuprof" ? CPU_PROF : ONLY === undefined && !CPU_PROF && !s.onRequest);

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("bench: run as root (it creates users and starts the server with its services)");
    process.exit(2);
  }
  const unknown = (ONLY ?? []).filter((n) => !SECTIONS.some((s) => s.name === n || s.aliases?.includes(n)));
  if (unknown.length) {
    console.error(`bench: no section ${unknown.join(", ")}; sections: ${SECTIONS.map((s) => s.name).join(", ")}`);
    process.exit(2);
  }
  const m = machine();
  console.log(`etoken-ca bench${QUICK ? " (--quick)" : ""}\n${m.map((x) => `  ${x}`).join("\n")}`);
  const started = Date.now();
  for (const s of SECTIONS) {
    if (!wanted(s)) continue;
    const t0 = Date.now();
    try {
      await s.run();
    } catch (err) {
      note(`section ${s.name} failed: ${(err as Error).stack?.split("\n").slice(0, 3).join(" / ")}`);
    }
    console.log(`  (${s.name}: ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  await sharedCleanup();
  const table = [
    `| id | figure | value | goal | verdict |`,
    `|---|---|---|---|---|`,
    ...figures.map((f) => `| ${f.id} | ${f.what} | ${f.value} | ${f.goal ?? ""} | ${f.verdict ?? ""} |`),
  ];
  console.log(`\n${table.join("\n")}\n`);
  for (const n of notes) console.log(`- ${n}`);
  console.log(`(${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (WRITE) {
    const out = [
      "# etoken-ca performance figures",
      "",
      `Produced by \`npm run bench -- --write-results${QUICK ? " --quick" : ""}${ONLY ? ` --only ${ONLY.join(",")}` : ""}\` on ${new Date().toISOString().slice(0, 10)}. Goals from the issues; PASS/MISS are this run's, not assertions.`,
      "",
      "## Machine",
      "",
      ...m.map((x) => `- ${x}`),
      "",
      "## Figures",
      "",
      ...table,
      "",
      "## Notes",
      "",
      ...notes.map((n) => `- ${n}`),
      "",
    ].join("\n");
    fs.writeFileSync(path.join(SRC_BENCH, "RESULTS.md"), out);
    console.log(`wrote ${path.join(SRC_BENCH, "RESULTS.md")}`);
  }
}

await main();
process.exit(0);
