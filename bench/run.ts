// The benchmark runner: `npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results] [--cpu-prof]
// [--compare DIR [--rounds N]] [--fs image|tmp]`.
// Starts real installations (as root: real users, SoftHSM2 token, the kernel and its four
// services), measures from the outside where the goals say so, and prints one table of figures
// with the goals and PASS/MISS. It never asserts and always exits 0 unless it cannot run at all.
// --compare DIR runs the sections from the built checkout DIR and from this one, alternating,
// and prints both side by side (lib/compare-run.ts).
// The installations live under os.tmpdir(), by default a fresh journaled ext4 image mounted for
// the run (lib/file-system.ts: why), `--fs tmp` the temporary directory as it is.
//
// The sections (names for --only) are the rows of sections/index.ts, one file each under
// sections/; the helpers they share are in lib/ (spool-driver.ts: requests injected exactly as
// etoken-ca-client does it; installation.ts, shared-installation.ts: servers to measure;
// processes.ts: CPU and memory of each process; report.ts: the figures table; results-file.ts:
// the generated regions of RESULTS.md).
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { machine } from "./lib/machine.js";
import { checkBuilt, runCompare, stopChild } from "./lib/compare-run.js";
import { fallbackLine, fileSystemNote, KEEP_ENV, makeImageFs, PREPARED_ENV } from "./lib/file-system.js";
import { stopAll } from "./lib/installation.js";
import { COMPARE, CPU_PROF, FS, ONLY, QUICK, ROUNDS, WRITE } from "./lib/options.js";
import { fig, figures, figureTable, note, notes } from "./lib/report.js";
import { writeRegion } from "./lib/results-file.js";
import { sharedCleanup } from "./lib/shared-installation.js";
import { SECTIONS } from "./sections/index.js";
import { withNeeds, type Section } from "./sections/section.js";

const CHECKOUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RESULTS = path.join(CHECKOUT, "bench/RESULTS.md");

/** the command line as the results file names it */
const invocation = (): string => `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim();

function fail(message: string): never {
  console.error(`bench: ${message}`);
  process.exit(2);
}

function writeResults(region: "figures" | "compare", body: string[]): void {
  try {
    writeRegion(RESULTS, region, body);
    console.log(`wrote the ${region} region of ${RESULTS}`);
  } catch (err) {
    fail(`not written: ${(err as Error).message}`);
  }
}

/** The named sections and what they need; undefined without --only. */
let selected: Set<string> | undefined;
/** --cpu-prof alone runs only the profile section; with --only, the named ones too */
const wanted = (s: Section): boolean => selected?.has(s.name) === true || (s.name === "cpuprof" ? CPU_PROF : ONLY === undefined && !CPU_PROF && !s.onRequest);

/**
 * Where this run's installations go, as one line (the header, RESULTS.md): a fresh journaled ext4
 * image (TMPDIR set to its mount; unmounted and deleted at exit), the temporary directory with
 * --fs tmp or when no image can be had (one line on stdout says why), or what a --compare parent
 * prepared (PREPARED_ENV).
 */
function installationsBase(): string {
  const tmp = os.tmpdir();
  const prepared = process.env[PREPARED_ENV];
  if (prepared) return `installations under ${tmp}: ${prepared}`;
  if (FS === "tmp") return `installations under ${tmp} (--fs tmp): ${fileSystemNote(tmp)}`;
  const image = makeImageFs(tmp);
  if ("reason" in image) {
    const line = fallbackLine(tmp, image.reason);
    console.log(line);
    return `installations under ${tmp}: ${fileSystemNote(tmp)} (${line.slice("bench: ".length)})`;
  }
  process.env[KEEP_ENV] = tmp;
  process.env.TMPDIR = image.dir;
  return `installations under ${image.dir}: ${image.describe}`;
}

/** --compare: a fresh image for each child run (the same for both sides: they honour TMPDIR), or the temporary directory. */
function compareBase(): { prepare: () => { env: Record<string, string>; release(): void }; installations: string } {
  const tmp = os.tmpdir();
  const asIs = (why: string) => ({ prepare: () => ({ env: { [PREPARED_ENV]: `${fileSystemNote(tmp)} (${why})` }, release: () => {} }), installations: `under ${tmp} for both sides (${why}): ${fileSystemNote(tmp)}` });
  if (FS === "tmp") return asIs("--fs tmp");
  const probe = makeImageFs(tmp);
  if ("reason" in probe) {
    console.log(fallbackLine(tmp, probe.reason));
    return asIs(`no journaled ext4 image: ${probe.reason}`);
  }
  const kind = probe.describe;
  probe.release();
  return {
    prepare: () => {
      const image = makeImageFs(tmp);
      if ("reason" in image) throw new Error(`no journaled ext4 image for this run: ${image.reason}`);
      return { env: { TMPDIR: image.dir, [KEEP_ENV]: tmp, [PREPARED_ENV]: image.describe }, release: image.release };
    },
    installations: `a new image for each run, before and after alike (TMPDIR): ${kind}`,
  };
}

/**
 * SIGINT/SIGTERM: the servers stopped (a --compare child: the signal passed on and its end
 * awaited), then exit, whose hook unmounts and deletes the image. A second signal exits at once.
 */
function stopOnSignals(): void {
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      const code = signal === "SIGINT" ? 130 : 143;
      if (stopping) process.exit(code);
      stopping = true;
      console.error(`bench: ${signal}: stopping the servers, then removing the installations' file system`);
      const cap = new Promise((r) => setTimeout(r, 30_000).unref());
      void Promise.race([Promise.allSettled([stopChild(signal), stopAll(), sharedCleanup()]), cap]).finally(() => process.exit(code));
    });
  }
}

async function compare(beforeDir: string): Promise<void> {
  const missing = checkBuilt(beforeDir);
  if (missing) fail(missing);
  const base = compareBase();
  const m = machine(`installations: ${base.installations}`);
  const only = CPU_PROF ? [...(ONLY ?? []), "cpuprof"] : ONLY;
  console.log(`etoken-ca bench --compare${QUICK ? " (--quick)" : ""}\n${m.map((x) => `  ${x}`).join("\n")}`);
  const started = Date.now();
  const c = await runCompare({ beforeDir, afterDir: CHECKOUT, only, quick: QUICK, rounds: ROUNDS, ...base }, SECTIONS);
  console.log(`\n${c.header.join("\n")}\n\n${c.table.join("\n")}\n`);
  for (const p of c.problems) console.log(`- ${p}`);
  console.log(`(${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (!WRITE) return;
  writeResults("compare", [
    "## Before and after, back to back (generated)",
    "",
    `Produced by \`${invocation()}\` on ${new Date().toISOString().slice(0, 10)}. Each run is one child \`node dist/bench/run.js --only ...\` of its checkout; the two checkouts alternate run by run. A value is the median over its runs of each number in it; after/before divides the values' first numbers; a verdict is PASS or MISS in every run, or "PASS k/n". n/a: that checkout's bench has no such figure.`,
    "",
    ...[...m, ...c.header].map((x) => `- ${x}`),
    "",
    ...c.table,
    ...(c.problems.length ? ["", "Problems in the runs:", "", ...c.problems.map((p) => `- ${p}`)] : []),
  ]);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("bench: run as root (it creates users and starts the server with its services)");
    process.exit(2);
  }
  if (Number.isNaN(ROUNDS)) fail("--rounds takes a whole number >= 1");
  if (FS === undefined) fail("--fs takes image or tmp");
  try {
    selected = ONLY === undefined ? undefined : new Set(withNeeds(SECTIONS, ONLY));
  } catch (err) {
    fail((err as Error).message);
  }
  stopOnSignals();
  if (COMPARE !== undefined) return compare(path.resolve(COMPARE));
  const m = machine(installationsBase());
  console.log(`etoken-ca bench${QUICK ? " (--quick)" : ""}\n${m.map((x) => `  ${x}`).join("\n")}`);
  const started = Date.now();
  const loadAtStart = os.loadavg()[0]!;
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
  // the machine's load beside the figures (--compare lines it up): CPU per certificate grows with it
  fig("(load)", "load average (1 min) at the start and the end of the run, the bench's own processes included", `${loadAtStart.toFixed(2)} -> ${os.loadavg()[0]!.toFixed(2)}`);
  const table = figureTable(figures);
  console.log(`\n${table.join("\n")}\n`);
  for (const n of notes) console.log(`- ${n}`);
  console.log(`(${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (WRITE) {
    writeResults("figures", [
      `Produced by \`${invocation()}\` on ${new Date().toISOString().slice(0, 10)}. Goals from the issues; PASS/MISS are this run's, not assertions.`,
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
    ]);
  }
}

await main();
process.exit(0);
