// What every command-line entry point shares: one-line errors, no stack traces.
import { describeError, UsageError } from "./errors.js";

export function runCli(program: string, main: (argv: string[]) => Promise<number | void> | number | void): void {
  Promise.resolve()
    .then(() => main(process.argv.slice(2)))
    .then((code) => {
      if (typeof code === "number") process.exitCode = code;
    })
    .catch((err) => {
      process.stderr.write(`${program}: ${describeError(err)}\n`);
      if (err instanceof UsageError) process.exitCode = 64;
      else process.exitCode = 1;
      if (process.env.ETOKEN_CA_DEBUG === "1" && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    });
}

/** Parses `--flag`, `--key value` and `--key=value` against an allow-list. */
export function parseArgs(argv: readonly string[], spec: Record<string, "flag" | "value">, usage: string): Record<string, string | true> {
  const out: Record<string, string | true> = {};
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
