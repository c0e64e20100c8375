// revoke-cert (as root) queues into root's REVOKE_DIR (0700); the kernel's reader
// (services/kernel/revoke-queue.ts) refuses junk and deletes exactly the applied entries; the
// spool (as etca-spool) can neither read, forge nor delete an entry.
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { parseRevokeEntry, REVOKE_NAME } from "../../services/common/spool-protocol.js";
import { readRevokeQueue, removeQueueFiles } from "../../services/kernel/revoke-queue.js";
import { NO_TAP_HOOKS, REVOKE_JS, SpoolHarness } from "../fixtures/spool-harness.js";

const h = new SpoolHarness();
t.teardown(async () => {
  await h.stop();
  h.cleanup();
});
await h.start();

// A CA database in openssl ca's format (index.txt, serial, crlnumber, newcerts/).
fs.mkdirSync(path.join(h.caDir, "newcerts"));
fs.writeFileSync(path.join(h.caDir, "serial"), "1000\n");
fs.writeFileSync(path.join(h.caDir, "crlnumber"), "01\n");
const certFile = path.join(h.root, "c.pem");
execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(h.root, "c.key"), "-out", certFile, "-subj", "/CN=by-cert", "-set_serial", "0x0E0F", "-days", "1"], { stdio: "pipe" });
fs.writeFileSync(
  path.join(h.caDir, "index.txt"),
  ["V\t301231235959Z\t\t0A1B\tunknown\t/CN=valid", "R\t301231235959Z\t240101000000Z,keyCompromise\t0C0D\tunknown\t/CN=revoked", "V\t301231235959Z\t\t0E0F\tunknown\t/CN=by-cert", ""].join("\n"),
);

function revokeCert(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn("/usr/bin/env", [...NO_TAP_HOOKS, process.execPath, REVOKE_JS, "--config", h.configFile, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    c.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    c.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const queueFiles = (): string[] => fs.readdirSync(h.revokeDir).filter((n) => REVOKE_NAME.test(n)).sort();

t.test("revoke-cert queues a known serial", async (t) => {
  const r = await revokeCert(["--serial", "0a:1b", "--reason", "keyCompromise", "--no-signal"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /queued serial 0A1B \(keyCompromise\)/);
  const files = queueFiles();
  t.equal(files.length, 1);
  const st = fs.statSync(path.join(h.revokeDir, files[0]!));
  t.equal(st.uid, 0, "owned by root");
  t.equal(st.gid, 0, "group root");
  t.equal(st.mode & 0o777, 0o600, "root's alone");
  const e = parseRevokeEntry(fs.readFileSync(path.join(h.revokeDir, files[0]!), "utf8"));
  t.equal(e.serial, "0A1B");
  t.equal(e.reason, "keyCompromise");
});

t.test("revoke-cert refuses what it must refuse", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--serial", "0A1B"], /already queued/],
    [["--serial", "0C0D"], /already revoked/],
    [["--serial", "BEEF"], /not in the CA database/],
    [["--serial", "xyz"], /not hexadecimal/],
    [["--serial", "0A1B", "--reason", "because"], /unknown reason "because"/],
    // stock openssl ca -gencrl refuses an index.txt that holds these: CA_DIR must stay openssl's
    [["--serial", "0A1B", "--reason", "privilegeWithdrawn"], /privilegeWithdrawn is an RFC 5280 reason that openssl ca does not know/],
    [["--serial", "0A1B", "--reason", "AACompromise"], /AACompromise is an RFC 5280 reason that openssl ca does not know/],
    // a full-CRL entry with it is "not revoked" to OpenSSL and "revoked" to Globus
    [["--serial", "0A1B", "--reason", "removeFromCRL"], /removeFromCRL is only meaningful in delta CRLs \(RFC 5280 §5\.3\.1\)/],
    [[], /exactly one of --serial and --cert/],
    [["--serial", "0A1B", "--cert", certFile], /exactly one of --serial and --cert/],
    [["--frobnicate"], /unknown option --frobnicate/],
  ];
  for (const [args, re] of cases) {
    const r = await revokeCert(args);
    t.not(r.code, 0, `${args.join(" ")}: non-zero exit`);
    t.match(r.stderr, re, `${args.join(" ")}: message`);
    t.match(r.stderr, /^revoke-cert: /);
    t.notMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
  t.equal(queueFiles().length, 1, "nothing more queued");
});

t.test("--cert, and signalling: server not running, wrong process, real server", async (t) => {
  const noServer = await revokeCert(["--cert", certFile]);
  t.equal(noServer.code, 0, noServer.stderr);
  t.match(noServer.stdout, /queued serial 0E0F/);
  t.match(noServer.stdout, /etoken-ca-server is not running \(no pid file .*\); the revocation will be recorded at its next start/);

  // A process that is not etoken-ca-server must not be signalled.
  const other = spawn("sleep", ["60"], { stdio: "ignore" });
  t.teardown(() => void other.kill("SIGKILL"));
  fs.writeFileSync(h.config.PIDFILE, `${other.pid}\n`);
  // A fake server: its command line says etoken-ca-server; it reports SIGUSR1 on stdout.
  const fake = spawn("/usr/bin/env", [...NO_TAP_HOOKS, process.execPath, "-e", "process.on('SIGUSR1',()=>{process.stdout.write('usr1\\n');process.exit(0)});setInterval(()=>{},1000);process.stdout.write('ready\\n')", "etoken-ca-server"], { stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => void fake.kill("SIGKILL"));
  let fakeOut = "";
  fake.stdout.setEncoding("utf8").on("data", (d: string) => (fakeOut += d));
  await h.until(() => fakeOut.includes("ready"), 10_000, "fake server");
  fs.appendFileSync(path.join(h.caDir, "index.txt"), "V\t301231235959Z\t\t1234\tunknown\t/CN=x\nV\t301231235959Z\t\t5678\tunknown\t/CN=y\n");
  const wrong = await revokeCert(["--serial", "1234"]);
  t.equal(wrong.code, 0);
  t.match(wrong.stdout, new RegExp(`process ${other.pid} .* is not etoken-ca-server`));
  t.equal(other.exitCode, null, "the other process was not signalled");

  fs.writeFileSync(h.config.PIDFILE, `${fake.pid}\n`);
  const real = await revokeCert(["--serial", "5678", "--reason", "superseded"]);
  t.equal(real.code, 0, real.stderr);
  t.match(real.stdout, new RegExp(`asked etoken-ca-server \\(pid ${fake.pid}\\)`));
  await h.until(() => fakeOut.includes("usr1"), 10_000, "SIGUSR1 at the fake server");
  t.equal(queueFiles().length, 4);
});

t.test("REVOKE_DIR is root's alone: revoke-cert creates it 0700 and refuses a directory the spool's group can enter", async (t) => {
  const fresh = path.join(h.root, "fresh-queue");
  const oldStyle = path.join(h.root, "old-queue");
  fs.mkdirSync(oldStyle);
  fs.chownSync(oldStyle, 0, h.users.SPOOL_USER.gid);
  fs.chmodSync(oldStyle, 0o770);
  const conf = (dir: string): string => {
    const file = path.join(h.root, `conf-${path.basename(dir)}`);
    fs.writeFileSync(file, fs.readFileSync(h.configFile, "utf8").replace(/^REVOKE_DIR=.*$/m, `REVOKE_DIR=${dir}`));
    return file;
  };
  const run = (file: string): Promise<{ code: number | null; stderr: string }> =>
    new Promise((resolve) => {
      const c = spawn("/usr/bin/env", [...NO_TAP_HOOKS, process.execPath, REVOKE_JS, "--config", file, "--serial", "0A1B", "--no-signal"], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      c.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      c.on("close", (code) => resolve({ code, stderr }));
    });
  const created = await run(conf(fresh));
  t.equal(created.code, 0, created.stderr);
  const st = fs.statSync(fresh);
  t.same([st.uid, st.gid, st.mode & 0o7777], [0, 0, 0o700], "created root:root 0700");
  const refused = await run(conf(oldStyle));
  t.not(refused.code, 0, "a group-accessible queue is refused");
  t.match(refused.stderr, /REVOKE_DIR .* is accessible to others \(mode 770\), expected 700/);
  t.same(fs.readdirSync(oldStyle), [], "nothing queued there");
});

t.test("the spool user can neither list, read, forge nor delete root's queue", async (t) => {
  const entry = queueFiles()[0]!;
  const asSpool = (code: string): string =>
    execFileSync("/usr/bin/env", [...NO_TAP_HOOKS, process.execPath, "-e", code], { uid: h.users.SPOOL_USER.uid, gid: h.users.SPOOL_USER.gid, encoding: "utf8", cwd: "/" }).trim();
  const attempt = (op: string): string =>
    asSpool(`const fs=require("fs");try{${op};console.log("ALLOWED")}catch(e){console.log(e.code)}`);
  const file = JSON.stringify(path.join(h.revokeDir, entry));
  t.equal(attempt(`fs.readdirSync(${JSON.stringify(h.revokeDir)})`), "EACCES", "list");
  t.equal(attempt(`fs.readFileSync(${file})`), "EACCES", "read");
  t.equal(attempt(`fs.unlinkSync(${file})`), "EACCES", "delete");
  t.equal(attempt(`fs.writeFileSync(${JSON.stringify(path.join(h.revokeDir, "rev.1700000000000.ForgedBySpool1"))}, "x")`), "EACCES", "create");
  t.ok(fs.existsSync(path.join(h.revokeDir, entry)), "the entry is still queued");
});

t.test("the kernel's reader refuses junk and deletes only what was applied", async (t) => {
  const valid = queueFiles();
  const dir = h.revokeDir;
  const junk = (name: string, content: string, uid = 0): void => {
    fs.writeFileSync(path.join(dir, name), content);
    fs.chownSync(path.join(dir, name), uid, 0);
    fs.chmodSync(path.join(dir, name), 0o600);
  };
  const good = fs.readFileSync(path.join(dir, valid[0]!), "utf8");
  junk("notes.txt", "hello");
  junk("rev.1700000000000.NotRootOwned01", good.replace(/serial=\w+/, "serial=AAAA"), h.users.SPOOL_USER.uid);
  junk("rev.1700000000000.BadContent0001", "version=1\nserial=zz\nreason=keyCompromise\nqueued_at=1700000000000\nend\n");
  junk("rev.1700000000000.NoEndMarker001", "version=1\nserial=AB\nreason=keyCompromise\nqueued_at=1700000000000\n");
  junk("rev.1700000000000.UnknownKey0001", "version=1\nserial=AB\nreason=keyCompromise\nqueued_at=1700000000000\nuser=x\nend\n");
  junk("rev.1700000000000.HardLink000001", good);
  fs.linkSync(path.join(dir, "rev.1700000000000.HardLink000001"), path.join(h.root, "second-link"));
  fs.symlinkSync("/etc/passwd", path.join(dir, "rev.1700000000000.Symlink0000001"));
  fs.mkdirSync(path.join(dir, "rev.1700000000000.Directory00001"));
  execFileSync("mkfifo", [path.join(dir, "rev.1700000000000.Fifo0000000001")]);
  junk(".rev.1700000000000.InProgress01.tmp", "partial");

  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  const log = createLogger("kernel");
  const q = await readRevokeQueue(dir, log);
  t.same(q.entries.map((e) => e.queueFile).sort(), valid, "exactly the valid entries");
  const e0 = q.entries.find((e) => e.serial === "0A1B")!;
  t.equal(e0.reason, "keyCompromise");
  t.ok(e0.queuedAt > 1.7e12);
  const rejected = q.rejected.join("\n");
  for (const [name, why] of [
    ["notes.txt", /does not match/],
    ["NotRootOwned01", /owned by uid/],
    ["BadContent0001", /not upper-case hex/],
    ["NoEndMarker001", /no end marker/],
    ["UnknownKey0001", /unknown or malformed line/],
    ["HardLink000001", /2 links/],
    ["Symlink0000001", /symbolic link/],
    ["Directory00001", /directory, not a regular file/],
    ["Fifo0000000001", /FIFO, not a regular file/],
  ] as const) {
    t.match(rejected, new RegExp(`${name.replace(".", "\\.")}[^\\n]*: [^\\n]*${why.source}`), `${name} rejected`);
  }
  t.notMatch(rejected, /InProgress/, "revoke-cert's temp files are not touched");
  t.match(lines.join(""), /"msg":"revoke queue entry refused"/);
  t.ok(fs.existsSync(path.join(dir, "bad.notes.txt")), "junk moved aside");

  // A second read: valid entries still there (nothing deleted before they are applied), junk not re-reported.
  const q2 = await readRevokeQueue(dir, log);
  t.same(q2.entries.map((e) => e.queueFile).sort(), valid);
  t.same(q2.rejected, []);

  const done = [valid[0]!, valid[1]!, "../revoke/" + valid[2]!, "bad.notes.txt"];
  t.equal(await removeQueueFiles(dir, done, log), 2);
  t.same(queueFiles(), valid.slice(2), "exactly the applied entries were deleted");
  t.ok(fs.existsSync(path.join(dir, "bad.notes.txt")), "names outside the pattern are not deleted");
});
