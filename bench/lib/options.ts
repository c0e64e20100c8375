// The runner's options: `npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results] [--cpu-prof]
// [--compare DIR [--rounds N]]`.
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    "write-results": { type: "boolean", default: false },
    "cpu-prof": { type: "boolean", default: false },
    compare: { type: "string" },
    rounds: { type: "string" },
  },
  strict: true,
});

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
/** sequential requests of the latency sections */
export const N_LAT = QUICK ? 60 : 300;
/**
 * The latency section's steady state: after (b), this many more sequential certificates (V8 tiers
 * up the services' hot functions meanwhile), then (cpu-warm) and (b warm) over the next N_STEADY.
 */
export const N_STEADY_WARMUP = QUICK ? 500 : 2000;
export const N_STEADY = QUICK ? 200 : 500;
