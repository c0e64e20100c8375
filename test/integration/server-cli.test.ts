// Start-up errors of etoken-ca-server: one precise line, a non-zero exit, nothing started.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, makeBaseDir, runCommand, writeConfig } from "../fixtures/server.js";
import { ensureTestUsers, TEST_USERS } from "../fixtures/users.js";

const users = ensureTestUsers();
const dir = makeBaseDir("etca-cli");
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const good: Record<string, string> = {
  DN_FORMAT: "/DC=org/DC=example/CN=%s",
  CA_OIDS: "1.3.6.1.4.1.99999.1.1",
  CRL_URLS: "URI:http://ca.example.org/crl.der",
  PKCS11_MODULE: "/usr/lib/softhsm/libsofthsm2.so",
  CA_CERT: "/nonexistent/ca.pem",
  CA_DIR: path.join(dir, "ca"),
  CRL_DIR: path.join(dir, "crl"),
  SPOOL_DIR: path.join(dir, "spool"),
  REVOKE_DIR: path.join(dir, "revoke"),
  PIDFILE: path.join(dir, "run/pid"),
  STATUS_FILE: path.join(dir, "run/status.json"),
  AUDIT_LOG: path.join(dir, "log/audit.log"),
  ...TEST_USERS,
  CONSOLE: "/dev/null",
};

function serverWith(text: string, opts: { uid?: number; gid?: number } = {}) {
  const file = path.join(dir, `conf-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(file, text, { mode: 0o644 });
  const r = runCommand(process.execPath, [BIN.server, "--config", file], opts);
  return { ...r, file };
}

function goodText(extra = ""): string {
  const file = path.join(dir, "base");
  writeConfig(file, good);
  return fs.readFileSync(file, "utf8") + extra;
}

t.test("unknown key", async (t) => {
  const r = serverWith(goodText("FOO=bar\n"));
  t.not(r.code, 0);
  const lines = r.stderr.trim().split("\n");
  t.equal(lines.length, 1, "one line");
  t.equal(lines[0], `etoken-ca-server: ${r.file}:${goodText().split("\n").length}: unknown key FOO`);
});

t.test("bad quote", async (t) => {
  const r = serverWith(goodText("LOG_LEVEL='info\n"));
  t.not(r.code, 0);
  t.match(r.stderr, new RegExp(`^etoken-ca-server: ${r.file}:\\d+: unterminated single quote in the value of LOG_LEVEL\\n$`));
});

t.test("bad number", async (t) => {
  const r = serverWith(goodText("MIN_KEY_BITS=lots\n"));
  t.not(r.code, 0);
  t.match(r.stderr, /:\d+: MIN_KEY_BITS="lots": expected a whole number\n$/);
  t.notMatch(r.stderr, /\n    at /, "no stack trace");
});

t.test("missing user", async (t) => {
  const r = serverWith(goodText().replace("SIGNER_USER='etca-signer'", "SIGNER_USER='etca-nosuchuser'"));
  t.not(r.code, 0);
  t.match(r.stderr, /user SIGNER_USER=etca-nosuchuser does not exist/);
  t.equal(r.stderr.trim().split("\n").length, 1);
});

t.test("missing file", async (t) => {
  const r = runCommand(process.execPath, [BIN.server, "--config", path.join(dir, "nope")]);
  t.not(r.code, 0);
  t.equal(r.stderr, `etoken-ca-server: ${path.join(dir, "nope")}: cannot read configuration: no such file\n`);
});

t.test("not root", async (t) => {
  const r = serverWith(goodText(), { uid: users.CLIENT_USER.uid, gid: users.CLIENT_USER.gid });
  t.not(r.code, 0);
  t.match(r.stderr, /^etoken-ca-server: etoken-ca-server must run as root/);
});

t.test("CA_CERT missing", async (t) => {
  const r = serverWith(goodText());
  t.not(r.code, 0);
  t.match(r.stderr, /CA_CERT=\/nonexistent\/ca.pem: no such file or not readable/);
});

t.test("a directory that lets the wrong user in", async (t) => {
  const spool = path.join(dir, "spool");
  fs.mkdirSync(spool, { recursive: true });
  fs.chownSync(spool, 0, 0);
  fs.chmodSync(spool, 0o777);
  const cert = path.join(dir, "ca.pem");
  fs.writeFileSync(cert, "x", { mode: 0o644 });
  const text = goodText().replace("CA_CERT='/nonexistent/ca.pem'", `CA_CERT='${cert}'`);
  const r = serverWith(text);
  t.not(r.code, 0);
  t.match(r.stderr, new RegExp(`SPOOL_DIR=${spool}: owned by uid 0, expected uid ${users.SPOOL_USER.uid}`));
  fs.chownSync(spool, users.SPOOL_USER.uid, users.CLIENT_USER.gid);
  const r2 = serverWith(text);
  t.match(r2.stderr, new RegExp(`SPOOL_DIR=${spool}: mode 0777 lets the wrong users in`));
  fs.rmSync(spool, { recursive: true });
});

t.test("a console that is not a virtual terminal", async (t) => {
  const cert = path.join(dir, "ca.pem");
  fs.writeFileSync(cert, "x", { mode: 0o644 });
  const r = serverWith(goodText().replace("CA_CERT='/nonexistent/ca.pem'", `CA_CERT='${cert}'`).replace("CONSOLE='/dev/null'", "CONSOLE='/dev/ptmx'"));
  t.not(r.code, 0);
  t.match(r.stderr, /CONSOLE=\/dev\/ptmx: not a Linux virtual terminal/);
  t.notOk(fs.existsSync(path.join(dir, "run/pid")), "no pid file left behind");
});
