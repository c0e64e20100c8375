// `etoken-ca status` for everyone who may watch: the status file is readable by all, a
// permission problem is never "not running", a stopped server claims nothing about the token,
// and --json answers in JSON in every case.
import t from "tap";
import * as fs from "node:fs";
import { BIN, createInstallation, runCommand, startServer, waitForState } from "../fixtures/server.js";

const inst = createInstallation({ prefix: "etca-status" });
t.teardown(() => inst.cleanup());
const watcher = inst.users.CLIENT_USER; // any user without a role in the CA
const status = (args: string[], as?: { uid: number; gid: number }) => runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath, ...args], as ?? {});

t.test("a running server: readable by a user without root", async (t) => {
  const server = startServer(inst);
  t.teardown(() => server.stop());
  await waitForState(inst, "NEED_PIN", 60_000);
  t.equal(fs.statSync(inst.config.STATUS_FILE).mode & 0o777, 0o644, "the status file is 0644 despite the kernel's umask 077");
  const r = status([], { uid: watcher.uid, gid: watcher.gid });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^state:\s+NEED_PIN since/m);
  t.match(r.stdout, new RegExp(`^token:\\s+present, label "${inst.token.label}"`, "m"));
  await server.stop();
});

t.test("a stopped server: the token is not claimed present", async (t) => {
  const r = status([]);
  t.equal(r.code, 3);
  t.match(r.stdout, /^state:\s+NOT RUNNING \(last state STOPPING\)/m);
  t.match(r.stdout, /^token:\s+unknown: the server is not running \(it last saw: present/m);
  t.notMatch(r.stdout, /^token:\s+present/m);
  const j = status(["--json"]);
  t.equal(j.code, 3);
  t.equal(JSON.parse(j.stdout).running, false);
});

t.test("a status file the user may not read: unknown (4), never 'not running'", async (t) => {
  fs.chmodSync(inst.config.STATUS_FILE, 0o600);
  const r = status([], { uid: watcher.uid, gid: watcher.gid });
  t.equal(r.code, 4);
  t.match(r.stderr, /permission denied: cannot tell whether the server runs/);
  t.notMatch(r.stderr, /not running/);
  const j = status(["--json"], { uid: watcher.uid, gid: watcher.gid });
  t.equal(j.code, 4);
  const answer = JSON.parse(j.stdout) as Record<string, unknown>;
  t.same(Object.keys(answer).sort(), ["error", "running", "statusFile"]);
  t.match(answer, { running: null, statusFile: inst.config.STATUS_FILE, error: /permission denied/ });
});

t.test("no status file: --json still answers in JSON", async (t) => {
  fs.rmSync(inst.config.STATUS_FILE);
  const j = status(["--json"]);
  t.equal(j.code, 3);
  t.match(JSON.parse(j.stdout), { running: false, error: /no status file/ });
});
