// The operator's console on a real pseudo-terminal: an aborted PIN prompt (token removed, a
// signer restart, stopping) ends its line, so the kernel's next line starts on a line of its own
// and not after the prompt's ": ".
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as pty from "node-pty";
import { OperatorConsole } from "../../services/kernel/console.js";
import { waitFor, waitForLine } from "../fixtures/server.js";

const PROMPT = "PIN for CA token \"ca\" (serial 0123): ";

t.test("an aborted prompt ends its line: the next line starts at the line's start", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-console-"));
  const term = pty.spawn("sleep", ["3600"], { name: "xterm", cols: 200, rows: 30, env: { PATH: "/usr/bin:/bin" } });
  let shown = "";
  term.onData((d) => (shown += d));
  const operatorConsole = OperatorConsole.open((term as unknown as { ptsName: string }).ptsName, true, path.join(dir, "conf"));
  t.teardown(() => {
    operatorConsole.close();
    term.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const reading = operatorConsole.readSecret(PROMPT);
  await waitFor("the prompt shown", () => shown.endsWith(PROMPT) || undefined, 10_000);
  operatorConsole.abortPrompt();
  t.equal(await reading, undefined, "the aborted prompt read nothing");
  t.notOk(operatorConsole.prompting, "no prompt open");
  operatorConsole.say("[2026-12-04T04:30:00.000Z] state SUSPENDED | no token");
  const line = await waitForLine("the state line", () => shown, /state SUSPENDED/, 10_000);
  t.match(line, /^\[2026-12-04T04:30:00\.000Z\] state SUSPENDED \| no token$/, "a whole line of its own, starting with the time stamp");
  t.match(shown.replace(/\r/g, ""), new RegExp(`${PROMPT.replace(/[()]/g, "\\$&")}\n\\[`), "the prompt's line ended before it");
});
