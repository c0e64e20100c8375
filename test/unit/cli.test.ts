// The one option parser (services/common/cli.ts): what it accepts and the message for each
// mistake, each a UsageError followed by the usage text.
import t from "tap";
import { parseArgs } from "../../services/common/cli.js";
import { UsageError } from "../../services/common/errors.js";

const USAGE = "usage: prog [--json] [--config FILE]";
const SPEC = { json: "flag", config: "value" } as const;

function mistake(argv: string[]): string {
  try {
    parseArgs(argv, SPEC, USAGE);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    return err.message;
  }
  throw new Error(`accepted ${JSON.stringify(argv)}`);
}

t.test("accepted forms", async (t) => {
  t.same(parseArgs([], SPEC, USAGE), {});
  t.same(parseArgs(["--json", "--config", "/etc/x"], SPEC, USAGE), { json: true, config: "/etc/x" });
  t.same(parseArgs(["--config=/etc/x"], SPEC, USAGE), { config: "/etc/x" });
  t.same(parseArgs(["--config=a", "--config", "b"], SPEC, USAGE), { config: "b" }, "the last one counts");
  t.same(parseArgs(["--config", "--json"], SPEC, USAGE), { config: "--json" }, "a value option takes the next argument whatever it is");
  t.same(parseArgs(["--config", "-5"], SPEC, USAGE), { config: "-5" });
  t.same(parseArgs(["--help"], { ...SPEC, help: "flag" }, USAGE), { help: true }, "--help is an option when the program declares it");
});

t.test("one message per mistake, then the usage", async (t) => {
  const cases: [string[], string][] = [
    [["--frobnicate"], "unknown option --frobnicate"],
    [["--frobnicate=1"], "unknown option --frobnicate"],
    [["extra"], 'unexpected argument "extra"'],
    [["-x"], 'unexpected argument "-x"'],
    [["-"], 'unexpected argument "-"'],
    [["--"], "unknown option --"],
    [["--json=yes"], "--json takes no value"],
    [["--json="], "--json takes no value"],
    [["--config"], "--config needs a value"],
    [["--config="], "--config needs a value"],
    [["--config", ""], "--config needs a value"],
    [["--json", "extra"], 'unexpected argument "extra"'],
    [["--frobnicate", "--config"], "unknown option --frobnicate"],
  ];
  for (const [argv, message] of cases) t.equal(mistake(argv), `${message}\n${USAGE}`, JSON.stringify(argv));
});

t.test("--help anywhere is not a usage error when the program does not declare it", async (t) => {
  t.throws(() => parseArgs(["--config", "x", "--help"], SPEC, USAGE), { message: "help", usage: USAGE });
});
