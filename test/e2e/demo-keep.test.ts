// The README's `bash demo/run --keep`, followed as an operator would: demo/run hands the shell
// back with the CA and MyProxy running; the printed instructions add a MyProxy account that then
// gets a certificate; the token is pulled and put back and the demo types the PIN again; "stop and
// clean up" stops everything and removes the demo's directory and its log file.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { CLEAN_PATH, ROOT, waitFor } from "../fixtures/server.js";
import type { StatusSnapshot } from "../../services/common/status-file.js";

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** demo/run --keep as the README says (but with the build CI has just made), without a terminal. */
const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
  const p = spawn("/usr/bin/env", ["-i", `PATH=${path.dirname(process.execPath)}:${CLEAN_PATH}`, "LANG=C", "bash", "demo/run", "--keep", "--no-build"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  p.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
  p.stderr.on("data", (d: Buffer) => (out += d.toString("utf8")));
  p.on("exit", (code) => resolve({ code, out }));
});
const said = (label: string): string | undefined => new RegExp(`^ {3}${label}: +(.*)$`, "m").exec(run.out)?.[1];
const demoPid = Number(/Stop it and clean up \(its log too\) with: kill (\d+)/.exec(run.out)?.[1] ?? NaN);
const logFile = /its output goes to (\S+)\.$/m.exec(run.out)?.[1];
const configFile = said("configuration");
const demoDir = configFile ? path.dirname(configFile) : undefined;
t.teardown(() => {
  if (Number.isInteger(demoPid) && alive(demoPid)) process.kill(demoPid, "SIGTERM");
});

const status = (): StatusSnapshot | undefined => {
  try {
    return JSON.parse(fs.readFileSync(path.join(demoDir!, "run/status.json"), "utf8")) as StatusSnapshot;
  } catch {
    return undefined;
  }
};
const sh = (command: string) => spawnSync("bash", ["--norc", "--noprofile", "-c", command], { encoding: "utf8", env: { PATH: CLEAN_PATH, LANG: "C" }, timeout: 120_000 });
const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

t.test("demo/run --keep hands the shell back and says how to stop the demo", async (t) => {
  t.equal(run.code, 0, "demo/run exits 0", { output: run.out.slice(-2000) });
  t.ok(Number.isInteger(demoPid) && alive(demoPid), `the demo (pid ${demoPid}) keeps running`);
  t.ok(logFile && fs.existsSync(logFile), `its log ${logFile}`);
  t.equal(status()?.state, "READY");
});

t.test("the printed instructions add a MyProxy account that gets a certificate", async (t) => {
  const add = said("add an account");
  const logon = said("another logon");
  t.ok(add && logon, "both instructions are printed");
  if (!add || !logon) return;
  // the demo ends with DN_FORMAT=/DC=org/DC=example%s: the account name is a DN suffix
  const name = "/O=etoken-ca demo/CN=Bob Keep";
  const password = "bobs-password";
  const added = sh(add.replace("NAME", quote(name)).replace("PASSWORD", quote(password)));
  t.equal(added.status, 0, `${add}: ${added.stderr}`);
  const cred = path.join(demoDir!, "bob-credential.pem");
  t.match(logon, /^echo (\S+) \| .* -l '[^']*' .* -o (\S+)$/, "the logon line: password, -l NAME, -o FILE");
  const mine = logon
    .replace(/^echo \S+/, `echo ${quote(password)}`)
    .replace(/-l '[^']*'/, `-l ${quote(name)}`)
    .replace(/-o \S+$/, `-o ${quote(cred)}`);
  const r = sh(mine);
  t.equal(r.status, 0, `${mine}: ${r.stdout}${r.stderr}`);
  const subject = spawnSync("openssl", ["x509", "-in", cred, "-noout", "-subject", "-nameopt", "compat"], { encoding: "utf8" }).stdout;
  t.match(subject, /^subject=\/DC=org\/DC=example\/O=etoken-ca demo\/CN=Bob Keep$/m, "the new account's certificate");
});

t.test("the token pulled and put back: the demo types the PIN again", async (t) => {
  const pull = said("pull the token");
  t.ok(pull, "the pull instruction is printed");
  if (!pull) return;
  const command = pull.replace(/ +\(state SUSPENDED.*$/, "");
  const m = /^mkdir -p (\S+) && mv (\S+)\/\* (\S+)\/$/.exec(command);
  t.ok(m, `a mkdir and a mv: ${command}`);
  if (!m) return;
  t.equal(sh(command).status, 0, command);
  await waitFor("SUSPENDED", () => status()?.state === "SUSPENDED", 30_000);
  const back = `mv ${m[3]}/* ${m[2]}/`; // "move it back"
  t.equal(sh(back).status, 0, back);
  const ready = await waitFor("READY again", () => (status()?.state === "READY" ? status() : undefined), 60_000);
  t.equal(ready.state, "READY", "READY with nobody at the console: the demo typed the PIN");
});

t.test("stop and clean up: everything stops, the directory and the log go", async (t) => {
  const kernelPid = status()?.kernelPid;
  t.match(run.out, new RegExp(`stop and clean up: kill ${demoPid} \\(removes ${logFile} too\\)`), "the instruction names the log");
  t.equal(sh(`kill ${demoPid}`).status, 0);
  await waitFor("the demo to end", () => !alive(demoPid), 60_000);
  t.notOk(kernelPid !== undefined && alive(kernelPid), "etoken-ca-server stopped");
  t.notOk(fs.existsSync(logFile!), "the log file is removed");
  t.notOk(fs.existsSync(demoDir!), "the demo's directory is removed");
});
