// What every command-line entry point shares: one-line errors, no stack traces, --help and -h
// (usage on stdout, exit 0), --version (exit 0), usage errors with exit 64 and only those.
import { parseArgs as nodeParseArgs } from "node:util";
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

export type OptionSpec = Readonly<Record<string, "flag" | "value" | { kind: "flag" | "value"; short: string }>>;
/** What parseArgs returns for a spec: true for a flag given, the text for a value given. */
export type ParsedOptions<S extends OptionSpec> = { [K in keyof S]?: (S[K] extends { kind: infer T } ? T : S[K]) extends "flag" ? true : string };

/** --help was asked for: runCli prints the usage (a command that catches errors lets this one through). */
export function isHelpRequest(err: unknown): boolean {
  return err instanceof HelpRequested;
}

/**
 * Parses `--flag`, `--key value` and `--key=value` (and declared one-letter aliases such as -w)
 * against an allow-list, with util.parseArgs; every mistake is a UsageError followed by `usage`.
 */
export function parseArgs<S extends OptionSpec>(argv: readonly string[], spec: S, usage: string): ParsedOptions<S> {
  if (argv.includes("--help") && spec.help === undefined) throw new HelpRequested(usage);
  const kindOf = (name: string): "flag" | "value" | undefined => {
    const s = Object.prototype.hasOwnProperty.call(spec, name) ? spec[name] : undefined;
    return typeof s === "object" ? s.kind : s;
  };
  const options = Object.fromEntries(
    Object.entries(spec).map(([name, s]) => [name, { type: (typeof s === "object" ? s.kind : s) === "flag" ? ("boolean" as const) : ("string" as const), ...(typeof s === "object" ? { short: s.short } : {}) }]),
  );
  const { tokens } = nodeParseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const usageError = (message: string): never => {
    throw new UsageError(`${message}\n${usage}`);
  };
  const out: Record<string, string | true> = {};
  for (const token of tokens) {
    if (token.kind === "positional") usageError(`unexpected argument ${JSON.stringify(token.value)}`);
    if (token.kind === "option-terminator") usageError("unknown option --");
    if (token.kind !== "option") continue;
    const kind = kindOf(token.name);
    const declared = token.rawName.startsWith("--") || (kind !== undefined && typeof spec[token.name] === "object");
    if (!declared) usageError(`unexpected argument ${JSON.stringify(argv[token.index])}`);
    if (kind === undefined) usageError(`unknown option ${token.rawName}`);
    if (kind === "flag") {
      if (token.value !== undefined) usageError(`${token.rawName} takes no value`);
      out[token.name] = true;
    } else {
      if (token.value === undefined || token.value === "") usageError(`${token.rawName} needs a value`);
      out[token.name] = token.value!;
    }
  }
  return out as ParsedOptions<S>;
}
