// The runner's options: `npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results] [--cpu-prof]
// [--compare DIR [--rounds N]] [--fs image|tmp]`.
import { isHelpRequest, parseArgs } from "../../services/common/cli.js";

export const USAGE = `usage: npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results] [--cpu-prof] [--compare DIR [--rounds N]] [--fs image|tmp]
  --quick          shorter runs (fewer requests; the warm window after 500 certificates, not 2000)
  --only NAMES     these sections only (and what they need); names and aliases: bench/README.md
  --write-results  write the generated regions of bench/RESULTS.md
  --cpu-prof       V8 CPU profiles of the services (alone: the profile section only)
  --compare DIR    run from the built checkout DIR and from this one, alternating, side by side
  --rounds N       --compare's rounds (default 2)
  --fs image|tmp   where the installations live: image (default) a fresh journaled ext4, a sparse
                   image loop-mounted for the run (for each run with --compare), as a CA host's
                   disk; tmp the temporary directory as it is (TMPDIR or /tmp)`;

/**
 * The command line's options. --help or -h: the usage on stdout, exit 0; a mistake (unknown
 * option, missing value, stray argument): one line naming it on stderr, exit 2 (the bench's
 * "cannot run"). Read when this module loads, before any section does.
 */
function readOptions(argv: string[]) {
  try {
    return parseArgs(argv.map((a) => (a === "-h" ? "--help" : a)), { quick: "flag", only: "value", "write-results": "flag", "cpu-prof": "flag", compare: "value", rounds: "value", fs: "value" }, USAGE);
  } catch (err) {
    if (isHelpRequest(err)) {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    // the UsageError's first line names the mistake; the usage follows it there
    process.stderr.write(`bench: ${(err as Error).message.split("\n")[0]} (npm run bench -- --help)\n`);
    process.exit(2);
  }
}

const values = readOptions(process.argv.slice(2));

export const QUICK = values.quick === true;
export const WRITE = values["write-results"] === true;
/** section names (or aliases) to run; undefined: all */
export const ONLY = values.only === undefined ? undefined : values.only.split(",");
/** the --cpu-prof mode: the sections marked `onRequest` (cpuprof) run too; alone without --only */
export const CPU_PROF = values["cpu-prof"] === true;
/** the --compare mode: the built checkout whose bench gives the "before" figures */
export const COMPARE = values.compare;
/** --compare's rounds (each: every section once from each checkout); NaN when not a whole number >= 1 */
export const ROUNDS = values.rounds === undefined ? 2 : /^[1-9]\d*$/.test(values.rounds) ? Number(values.rounds) : NaN;
/** --fs: "image" (default) or "tmp"; undefined when it is neither */
export const FS = parseFs(values.fs);
export function parseFs(value: string | undefined): "image" | "tmp" | undefined {
  return value === undefined || value === "image" ? "image" : value === "tmp" ? "tmp" : undefined;
}
/** sequential requests of the latency sections */
export const N_LAT = QUICK ? 60 : 300;
/**
 * The latency section's steady state: after (b), this many more sequential certificates (V8 tiers
 * up the services' hot functions meanwhile), then (cpu-warm) and (b warm) over the next N_STEADY.
 */
export const N_STEADY_WARMUP = QUICK ? 500 : 2000;
export const N_STEADY = QUICK ? 200 : 500;
