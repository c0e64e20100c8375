// The README's `bash demo/run --interactive --keep`, on a terminal (a pseudo-terminal here): the
// operator types the PIN at the demo's own terminal, which relays it to the CA's console with
// echo off; a wrong PIN is refused and asked again; the demo stays in the foreground; after the
// token is pulled and put back the PIN is asked for here again; Ctrl-C stops everything and
// removes the demo's directory. demo-keep.test covers --keep without a terminal (the demo types
// the PIN itself); this path had no test.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import * as pty from "node-pty";
import { CLEAN_PATH, ROOT, waitFor, waitForLine } from "../fixtures/server.js";
import type { StatusSnapshot } from "../../services/common/status-file.js";

/** The demo's PIN (demo/demo.ts' DEMO_PIN): DEMO ONLY, printed by the demo itself. */
const DEMO_PIN = "demo-only-1234";
const WRONG_PIN = "not-the-pin-4321";
const HINT = "Type the PIN at the prompt below";

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const term = pty.spawn("/usr/bin/env", ["-i", `PATH=${path.dirname(process.execPath)}:${CLEAN_PATH}`, "LANG=C", "TERM=xterm", "bash", "demo/run", "--interactive", "--keep", "--no-build"], {
  name: "xterm",
  cols: 400,
  rows: 50,
  cwd: ROOT,
});
let raw = "";
term.onData((d) => (raw += d));
let exit: { exitCode: number; signal?: number } | undefined;
term.onExit((e) => (exit = e));
/** What the operator's terminal showed so far: no CRs, no bold. */
const shown = (): string => raw.replace(/\r/g, "").replace(/\x1b\[[0-9;]*m/g, "");
const count = (s: string): number => shown().split(s).length - 1;
t.teardown(async () => {
  if (exit) return;
  term.kill("SIGTERM"); // the demo cleans up on SIGTERM too
  await waitFor("the demo to end", () => exit !== undefined || undefined, 120_000).catch(() => undefined);
});

/** The PIN prompt relayed after the `nth` `marker` is on the screen, the cursor after its ": ". */
const promptAfter = (marker: string, nth: number): boolean => {
  const text = shown();
  let at = -1;
  for (let i = 0; i < nth; i++) {
    at = text.indexOf(marker, at + 1);
    if (at < 0) return false;
  }
  return text.slice(at).includes("PIN for CA token") && text.endsWith(": ");
};

/** Waits for the `nth` hint and the prompt relayed after it, then types `keys` and Enter. */
async function typeAtPrompt(nth: number, keys: string): Promise<void> {
  await waitFor(`the PIN hint #${nth} and its prompt`, () => promptAfter(HINT, nth) || undefined, 240_000);
  term.write(`${keys}\r`);
}

const said = (label: string): string | undefined => new RegExp(`^ {3}${label}: +(.*)$`, "m").exec(shown())?.[1];
const status = (dir: string): StatusSnapshot | undefined => {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "run/status.json"), "utf8")) as StatusSnapshot;
  } catch {
    return undefined;
  }
};
const sh = (command: string) => spawnSync("bash", ["--norc", "--noprofile", "-c", command], { encoding: "utf8", env: { PATH: CLEAN_PATH, LANG: "C" }, timeout: 120_000 });

t.test("demo/run --interactive --keep: the PIN typed here reaches the console, a wrong one is asked again, Ctrl-C cleans up", async (t) => {
  // first start: a wrong PIN, refused, then the prompt again in the same relay
  await typeAtPrompt(1, WRONG_PIN);
  await waitFor("LOGIN FAILED and the prompt again", () => promptAfter("LOGIN FAILED", 1) || undefined, 60_000);
  term.write(`${DEMO_PIN}\r`);
  // second start (the new DN_FORMAT): asked here again
  await typeAtPrompt(2, DEMO_PIN);
  // the last line of the --keep block, whole: the lines read below come before it
  await waitForLine("left running", shown, /^ {3}stop and clean up: kill \d+/, 240_000);
  t.equal(exit, undefined, "the demo stays in the foreground");
  t.match(shown(), /the PIN is asked for again after the token comes back: type it here/, "says the PIN is asked for here again");
  const configFile = said("configuration");
  t.ok(configFile, "names its configuration");
  const dir = path.dirname(configFile!);
  t.equal(status(dir)?.state, "READY", "READY with the PIN typed at the demo's terminal");
  const kernelPid = status(dir)?.kernelPid;
  t.notMatch(shown(), /state [A-Z_]+ \| no token/, "until the token is pulled, no state line says there is none (before the monitor's first report: \"token not checked yet\")");

  // the token pulled and put back: the PIN is asked for at this terminal again
  const pull = said("pull the token")!.replace(/ +\(state SUSPENDED.*$/, "");
  const m = /^mkdir -p (\S+) && mv (\S+)\/\* (\S+)\/$/.exec(pull);
  t.ok(m, `a mkdir and a mv: ${pull}`);
  if (!m) return;
  t.equal(sh(pull).status, 0, pull);
  await waitFor("SUSPENDED", () => status(dir)?.state === "SUSPENDED" || undefined, 60_000);
  t.equal(sh(`mv ${m[3]}/* ${m[2]}/`).status, 0, "moved back");
  await typeAtPrompt(3, DEMO_PIN);
  await waitFor("READY again", () => status(dir)?.state === "READY" || undefined, 60_000);
  t.pass("READY again with the PIN typed here");

  const text = shown();
  t.notMatch(text, new RegExp(WRONG_PIN), "the wrong PIN typed was never echoed");
  t.equal(text.split(DEMO_PIN).length - 1, count(HINT), "the PIN appears only in the demo's own hints, never echoed from the console");

  // Ctrl-C (the relay is off once READY: the terminal sends SIGINT): everything stops and goes
  term.write("\x03");
  await waitFor("the demo to end", () => exit ?? undefined, 120_000);
  t.equal(exit!.exitCode, 130, "exits 130 after Ctrl-C");
  // the pty's exit can be seen before its last output has been read here
  await waitForLine("the clean-up heading", shown, /== Cleaning up$/, 20_000);
  t.match(shown(), /\(SIGINT\)[\s\S]*Cleaning up/, "said it was interrupted, and cleaned up");
  t.notOk(kernelPid !== undefined && alive(kernelPid), "etoken-ca-server stopped");
  t.notOk(fs.existsSync(dir), "the demo's directory is removed");
});
