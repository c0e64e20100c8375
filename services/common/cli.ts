// What every command-line entry point shares: one-line errors, no stack traces, --help and -h
// (usage on stdout, exit 0), --version (exit 0), usage errors with exit 64 and only those.
import { describeError, UsageError } from "./errors.js";

export const VERSION = "0.1.0";

/** --help anywhere on a command line: the usage goes to stdout and the program exits 0. */
class HelpRequested extends Error {
  constructor(readonly usage: string) {
    super("help");
  }
}

export function runCli(program: string, main: (argv: string[]) => Promise<number | void> | number | void): void {
  const argv = process.argv.slice(2).map((a) => (a === "-h" ? "--help" : a));
  if (argv.length === 1 && argv[0] === "--version") {
    process.stdout.write(`${program} ${VERSION}\n`);
    return;
  }
  Promise.resolve()
    .then(() => main(argv))
    .then((code) => {
      if (typeof code === "number") process.exitCode = code;
    })
    .catch((err) => {
      if (err instanceof HelpRequested) {
        process.stdout.write(`${err.usage}\n`);
        process.exitCode = 0;
        return;
      }
      process.stderr.write(`${program}: ${describeError(err)}\n`);
      if (err instanceof UsageError) process.exitCode = 64;
      else process.exitCode = 1;
      if (process.env.ETOKEN_CA_DEBUG === "1" && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    });
}

/** Parses `--flag`, `--key value` and `--key=value` against an allow-list. */
export function parseArgs(argv: readonly string[], spec: Record<string, "flag" | "value">, usage: string): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  if (argv.includes("--help") && spec.help === undefined) throw new HelpRequested(usage);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) throw new UsageError(`unexpected argument ${JSON.stringify(a)}\n${usage}`);
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    const kind = spec[name];
    if (!kind) throw new UsageError(`unknown option --${name}\n${usage}`);
    if (kind === "flag") {
      if (eq > 0) throw new UsageError(`--${name} takes no value\n${usage}`);
      out[name] = true;
    } else {
      const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined || v === "") throw new UsageError(`--${name} needs a value\n${usage}`);
      out[name] = v;
    }
  }
  return out;
}
