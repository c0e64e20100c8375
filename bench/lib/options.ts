// The runner's options: `npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results] [--cpu-prof]`.
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    "write-results": { type: "boolean", default: false },
    "cpu-prof": { type: "boolean", default: false },
  },
  strict: true,
});

export const QUICK = values.quick === true;
export const WRITE = values["write-results"] === true;
/** section names (or aliases) to run; undefined: all */
export const ONLY = values.only === undefined ? undefined : values.only.split(",");
/** the --cpu-prof mode: the sections marked `onRequest` (cpuprof) run too; alone without --only */
export const CPU_PROF = values["cpu-prof"] === true;
/** sequential requests of the latency sections */
export const N_LAT = QUICK ? 60 : 300;
