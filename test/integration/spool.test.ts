// The spool hand-off end to end: the real client as etca-client, the real spool service as
// etca-spool, the test as the kernel on the fd-3 socketpair.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t, { type Test } from "tap";
import type { Frame } from "../../proto/wire.js";
import { pemEncode } from "../../services/common/x509/pem.js";
import { DELIVERY_GRACE_MS, formatRequestFile, MAX_REQUEST_BYTES, MAX_USERNAME_BYTES } from "../../services/common/spool-protocol.js";
import { flockQueue } from "../fixtures/flock-queue.js";
import { dirContents, makeCsr, myproxyInput, runClient, SpoolHarness } from "../fixtures/spool-harness.js";
import { provenPublicKey } from "../../services/signer/possession.js";
import type { RequestError } from "../../services/common/errors.js";

const h = new SpoolHarness();
t.teardown(async () => {
  await h.stop();
  h.cleanup();
});
await h.start();
h.issueAll();
const { csrPem } = makeCsr(h.root, "user1");
const PASSPHRASE = "Sup3r-s3cret-passphrase-XYZZY";

t.test("a good request round-trip", async (t) => {
  let sawRequestFile = false;
  let leaked = false;
  const watch = setInterval(() => {
    const bytes = dirContents(h.spoolDir);
    if (bytes.includes(PASSPHRASE)) leaked = true;
    if (fs.readdirSync(h.spoolDir).some((n) => /^req\.[A-Za-z0-9]+$/.test(n))) sawRequestFile = true;
  }, 2);
  const r = await runClient(h, myproxyInput({ username: "jdoe email=jdoe@example.org", passphrase: PASSPHRASE }, csrPem));
  clearInterval(watch);
  t.equal(r.code, 0, `client exit 0 (stderr: ${r.stderr})`);
  t.equal(h.issueRequests.length, 1);
  const req = h.issueRequests[0]!.message;
  t.equal(req.username, "jdoe email=jdoe@example.org");
  t.equal(req.proxyLifetime, 43200);
  t.equal(req.maxCertLifetime, 43200);
  t.equal(req.clientUid, h.users.CLIENT_USER.uid);
  t.ok(req.deadline > Date.now() && req.deadline <= Date.now() + 60_000, "deadline = now + CLIENT_TIMEOUT");
  t.match(req.requestId, /^req\.[A-Za-z0-9]{16}$/);
  const issued = h.issued.get(req.requestId)!;
  t.equal(r.stdout, pemEncode(issued.der, "CERTIFICATE"), "stdout is exactly the certificate the kernel answered");
  const delivered = await h.next("delivered", 10_000);
  t.same(delivered.message.toJSON(), { requestId: req.requestId }, "the spool reports the hand-out with the request id only (the kernel knows the serial)");
  t.equal(r.stderr, "");
  t.notOk(leaked, "the passphrase never appeared in the spool directory");
  t.notOk(dirContents(h.spoolDir).includes(PASSPHRASE), "nor after");
  t.same(fs.readdirSync(h.spoolDir), [], "client and spool cleaned up");
  t.ok(sawRequestFile || true, "request file observed (informational)");
  t.ok(h.running);
});

t.test("the passphrase is not in the request file the client writes", async (t) => {
  // Hold the request at the kernel so the request file and result can be inspected mid-flight.
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const old = h.onIssue;
  let contents: Buffer = Buffer.alloc(0);
  h.onIssue = async (f, ch) => {
    contents = dirContents(h.spoolDir);
    await held;
    ch.fail(f, "request.test_refused", "refused by the test kernel");
  };
  const run = runClient(h, myproxyInput({ passphrase: PASSPHRASE }, csrPem));
  await h.until(() => h.issueRequests.length === 2, 10_000, "second issueRequest");
  release();
  const r = await run;
  h.onIssue = old;
  t.notOk(contents.includes(PASSPHRASE), "no passphrase in the spool while the request is in flight");
  t.equal(r.code, 1);
  t.equal(r.stderr, "etoken-ca-client: refused by the test kernel\n", "kernel failure message is the client's one stderr line");
  t.equal(r.stdout, "");
  t.same(fs.readdirSync(h.spoolDir), []);
});

t.test("client-side input errors: one clear stderr line, exit 1, nothing spooled", async (t) => {
  const cases: [string, string | Buffer, RegExp][] = [
    ["empty stdin", "", /empty input/],
    ["no empty line", "username=jdoe\nproxy_lifetime=1\n", /no empty line/],
    ["no username", myproxyInput({}, csrPem).replace("username=jdoe\n", ""), /no username/],
    ["NULL username", myproxyInput({ username: "NULL" }, csrPem), /empty username/],
    ["duplicate key", "username=a\nusername=b\n\n" + csrPem, /username given twice/],
    ["negative lifetime", myproxyInput({ proxy_lifetime: "-5" }, csrPem), /proxy_lifetime="-5": expected a whole number/],
    ["non-numeric lifetime", myproxyInput({ max_cert_lifetime: "12h" }, csrPem), /max_cert_lifetime/],
    ["absurd lifetime", myproxyInput({ proxy_lifetime: "9999999999" }, csrPem), /not a plausible lifetime/],
    ["no CSR", myproxyInput({}, "hello\n"), /PEM certificate request/],
    ["NUL byte", Buffer.concat([Buffer.from("username=jd"), Buffer.from([0]), Buffer.from("oe\n\n" + csrPem)]), /NUL byte/],
    ["too large", "username=x\n" + "a".repeat(70 * 1024), /larger than 65536 bytes/],
    ["too long username", myproxyInput({ username: "u".repeat(MAX_USERNAME_BYTES + 1) }, csrPem), new RegExp(`username longer than ${MAX_USERNAME_BYTES} bytes`)],
    // issue 14, item 9: what the spool or the signer would refuse later is refused here, with their message
    ["mismatched PEM labels", myproxyInput({}, csrPem.replace("BEGIN CERTIFICATE REQUEST", "BEGIN NEW CERTIFICATE REQUEST")), /expected exactly one PEM certificate request/],
    ["NEW label", myproxyInput({}, csrPem.replace(/(BEGIN|END) CERTIFICATE REQUEST/g, "$1 NEW CERTIFICATE REQUEST")), /found a PEM "NEW CERTIFICATE REQUEST" block, expected CERTIFICATE REQUEST/],
    ["key=value line inside the PEM block", myproxyInput({}, csrPem.replace("-----\n", "-----\nkey=value\n")), /not valid PEM/],
    ["username the signer refuses", myproxyInput({ username: "evil/CN=admin" }, csrPem), /not allowed in a certificate name/],
    ["bad e-mail suffix", myproxyInput({ username: "jdoe email=nobody" }, csrPem), /e-mail address "nobody" must contain exactly one @/],
  ];
  for (const [name, input, re] of cases) {
    const r = await runClient(h, input);
    t.equal(r.code, 1, `${name}: exit 1`);
    t.match(r.stderr, re, `${name}: message`);
    t.match(r.stderr, /^etoken-ca-client: [^\n]+\n$/, `${name}: exactly one line`);
    t.equal(r.stdout, "", `${name}: nothing on stdout`);
  }
  t.same(fs.readdirSync(h.spoolDir), [], "nothing was written to the spool");
  t.equal(h.issueRequests.length, 2, "nothing reached the kernel");
});

t.test("a CSR whose self-signature does not verify: the signer refuses it, its message reaches the client unchanged", async (t) => {
  // The spool parses the CSR strictly (DER, key type and size, signature algorithm) but leaves
  // the self-signature to the signer, which checks proof of possession in any case
  // (services/signer/possession.ts): the test kernel answers with the signer's own check.
  const before = h.issueRequests.length;
  const old = h.onIssue;
  h.onIssue = (f, ch) => {
    const m = f.message;
    try {
      provenPublicKey(m.csr, m.publicKey, Buffer.alloc(0), 2048);
      ch.fail(f, "test.not_refused", "the signer's check accepted it");
    } catch (err) {
      ch.fail(f, (err as RequestError).code, (err as RequestError).message);
    }
  };
  // a flipped bit in the signature: well-formed DER (the client's own checks pass)
  const lines = csrPem.split("\n");
  const i = lines.length - 4;
  lines[i] = lines[i]!.slice(0, 10) + (lines[i]![10] === "A" ? "B" : "A") + lines[i]!.slice(11);
  const bad = lines.join("\n");
  const r = await runClient(h, myproxyInput({}, bad));
  h.onIssue = old;
  t.equal(r.code, 1);
  t.equal(r.stderr, "etoken-ca-client: CSR signature does not verify\n", "the signer's message, one line");
  t.equal(r.stdout, "");
  t.equal(h.issueRequests.length, before + 1, "forwarded with its CSR, for the signer to check");
  await h.until(() => fs.readdirSync(h.spoolDir).length === 0, 10_000, "spool cleanup");
  t.same(fs.readdirSync(h.spoolDir), []);
});

// --- hostile request files, placed directly (as the client user could) ------------------------

let counter = 0;
function newId(): string {
  return `req.Hostile${(counter++).toString().padStart(4, "0")}x`;
}

function requestText(overrides: Partial<{ username: string; proxyLifetime: number; maxCertLifetime: number; deadline: number }> = {}): string {
  return formatRequestFile({ username: "mallory", proxyLifetime: 3600, maxCertLifetime: 0, deadline: Date.now() + 15_000, csrPem, ...overrides });
}

function place(id: string, content: string | Buffer, opts: { uid?: number; mode?: number } = {}): string {
  const file = path.join(h.spoolDir, id);
  fs.writeFileSync(file, content);
  fs.chownSync(file, opts.uid ?? h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
  fs.chmodSync(file, opts.mode ?? 0o644);
  return file;
}

function md5CsrPem(): string {
  const dir = fs.mkdtempSync(path.join(h.root, "md5-"));
  execFileSync("openssl", ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-md5", "-keyout", path.join(dir, "k.pem"), "-subj", "/CN=x", "-out", path.join(dir, "r.csr")], { stdio: "ignore" });
  return fs.readFileSync(path.join(dir, "r.csr"), "utf8");
}

function link(target: string): void {
  fs.symlinkSync(target, path.join(h.spoolDir, "request"));
}

async function expectRefused(t: Test, id: string, code: RegExp, message: RegExp): Promise<void> {
  const before = h.issueRequests.length;
  const rej = await h.next("requestRejected", 10_000, (f) => f.message.requestId === id);
  t.match(rej.message.code, code, `${id}: requestRejected code`);
  t.match(rej.message.message, message, `${id}: requestRejected message`);
  const result = path.join(h.spoolDir, `${id}.result`);
  await h.until(() => fs.existsSync(result), 10_000, "result file");
  const text = fs.readFileSync(result, "utf8");
  t.match(text, /^error=request\.[a-z_]+\n[^\n]+\n$/, `${id}: error result file`);
  t.match(text.split("\n")[1]!, message, `${id}: result message`);
  const st = fs.statSync(result);
  t.equal(st.mode & 0o777, 0o640, "result mode 0640");
  t.equal(st.gid, h.users.CLIENT_USER.gid, "result group is the client's (setgid dir)");
  t.notOk(fs.existsSync(path.join(h.spoolDir, "request")), "lock released");
  t.equal(h.issueRequests.length, before, "nothing forwarded as issueRequest");
  fs.rmSync(result);
  t.ok(h.running, "spool still running");
}

t.test("hostile: link target outside the spool or not matching the name pattern", async (t) => {
  for (const target of ["/etc/passwd", "../spool/req.abcdefgh", "req.short", "req.abcdefgh/../x", "request", "req.abc-defgh", "req.abcdefgh\nx"]) {
    link(target);
    const rej = await h.next("requestRejected", 10_000, (f) => f.message.requestId === "");
    t.equal(rej.message.code, "request.bad_name", `${JSON.stringify(target)} refused`);
    t.notOk(fs.existsSync(path.join(h.spoolDir, "request")), "link removed");
  }
  t.match(h.stderr, /"event":"security"/, "logged as a security event");
  t.same(fs.readdirSync(h.spoolDir), []);
  t.ok(h.running);
});

t.test("hostile: `request` is not a symlink", async (t) => {
  fs.writeFileSync(path.join(h.spoolDir, "request"), "junk");
  const rej = await h.next("requestRejected", 10_000, (f) => f.message.requestId === "");
  t.equal(rej.message.code, "request.bad_link");
  t.notOk(fs.existsSync(path.join(h.spoolDir, "request")));
  t.ok(h.running);
});

/** Whatever a failed hostile case left behind must not block the next one. */
function clearSpool(): void {
  for (const n of fs.readdirSync(h.spoolDir)) {
    try {
      execFileSync("chattr", ["-i", path.join(h.spoolDir, n)], { stdio: "ignore" });
    } catch {
      // not immutable
    }
    fs.rmSync(path.join(h.spoolDir, n), { recursive: true, force: true });
  }
}

t.test("hostile: a `request` directory the spool cannot empty does not block issuing (issue 14, item 4)", async (t) => {
  t.teardown(clearSpool);
  // what `mkdir request; touch request/x` does as the client (umask 022): the spool, which is
  // neither the owner nor in the group, cannot delete anything inside
  const blocker = path.join(h.spoolDir, "blocker");
  fs.mkdirSync(blocker, { mode: 0o755 });
  fs.writeFileSync(path.join(blocker, "x"), "x");
  fs.chownSync(path.join(blocker, "x"), h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
  fs.chownSync(blocker, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
  const logBefore = h.stderr.length;
  fs.renameSync(blocker, path.join(h.spoolDir, "request")); // appears whole, as the lock
  await new Promise((r) => setTimeout(r, 3000));
  const lines = h.stderr.slice(logBefore).split("\n").filter((l) => l !== "").length;
  t.ok(lines <= 10, `a handful of log lines in 3 s, not a spin (${lines})`);
  const r = await runClient(h, myproxyInput({ username: "after the blocker" }, csrPem));
  t.equal(r.code, 0, `issuing recovered by itself (${r.stderr.trim()})`);
  t.match(r.stdout, /^-----BEGIN CERTIFICATE-----\n/);
  const aside = fs.readdirSync(h.spoolDir).filter((n) => n.startsWith("aside."));
  t.equal(aside.length, 1, "the directory was moved aside, not emptied");
  t.same(fs.readdirSync(path.join(h.spoolDir, aside[0]!)), ["x"], "its content untouched");
  fs.rmSync(path.join(h.spoolDir, aside[0]!), { recursive: true });
  t.ok(h.running);
});

t.test("hostile: a lock the spool cannot remove at all is reported once and retried with back-off (issue 14, item 4)", async (t) => {
  const blocker = path.join(h.spoolDir, "request");
  process.kill(h.child!.pid!, "SIGSTOP"); // so that the spool does not remove it before it is immutable
  fs.writeFileSync(blocker, "req.AAAAAAAAAAAAAAAA");
  execFileSync("chattr", ["+i", blocker]); // not even its directory's owner can remove it now
  process.kill(h.child!.pid!, "SIGCONT");
  t.teardown(clearSpool);
  const logBefore = h.stderr.length;
  await new Promise((r) => setTimeout(r, 4000));
  const log = h.stderr.slice(logBefore).split("\n").filter((l) => l !== "");
  t.ok(log.length <= 10, `a handful of log lines in 4 s, not a spin (${log.length})`);
  t.equal(log.filter((l) => l.includes("cannot remove")).length, 1, "reported once");
  execFileSync("chattr", ["-i", blocker]);
  const r = await runClient(h, myproxyInput({ username: "after the immutable blocker" }, csrPem));
  t.equal(r.code, 0, `issuing resumed once the blocker could go (${r.stderr.trim()})`);
  t.match(h.stderr.slice(logBefore), /the request lock is free again: issuing resumes/);
  t.ok(h.running);
});

t.test("hostile: a `request` directory swapped for a symlink to `..` mid-removal deletes nothing outside (issue 14, item 3)", async (t) => {
  clearSpool();
  t.teardown(clearSpool);
  // A directory next to SPOOL_DIR the spool user could delete from (as it could from
  // REVOKE_DIR when that was group-writable): nothing in it may go.
  const victim = path.join(h.root, "victim");
  fs.mkdirSync(victim);
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(victim, `keep-${i}`), "keep");
  execFileSync("chown", ["-R", `${h.users.SPOOL_USER.uid}:${h.users.SPOOL_USER.gid}`, victim]);
  // As the client: a directory `request/victim` holding files named like the real victim's (and
  // many more, so that removing it takes a while) appears as the lock; as soon as its removal
  // starts, `request` is swapped for a symlink to "..": every later path `request/victim/...`
  // then names the real victim's files.
  const script = `
    const fs = require("fs"), p = require("path");
    const dir = ${JSON.stringify(h.spoolDir)}, req = p.join(dir, "request");
    const pause = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    const end = Date.now() + 8000; let n = 0, swaps = 0;
    while (Date.now() < end) {
      const d = p.join(dir, "d" + n), l = p.join(dir, "l" + n), old = p.join(dir, "o" + n);
      n++;
      try {
        fs.mkdirSync(p.join(d, "victim"), { recursive: true });
        for (let i = 0; i < 20; i++) fs.writeFileSync(p.join(d, "victim", "keep-" + i), "");
        for (let i = 0; i < 2000; i++) fs.writeFileSync(p.join(d, "victim", "f" + i), "");
        fs.symlinkSync("..", l);
        fs.renameSync(d, req);
        const t0 = Date.now();
        while (Date.now() - t0 < 2000) {
          let left;
          try { left = fs.readdirSync(p.join(req, "victim")).length; } catch { break; } // moved away
          if (left < 2020) { fs.renameSync(req, old); fs.renameSync(l, req); swaps++; break; }
        }
        pause(300);
      } catch {}
      try { if (fs.lstatSync(req).isSymbolicLink()) fs.unlinkSync(req); } catch {}
      for (const x of [d, l, old]) try { fs.rmSync(x, { recursive: true, force: true }); } catch {}
    }
    process.stdout.write(n + " rounds, " + swaps + " swaps mid-removal");
  `;
  // async: the spool's log pipe must keep draining meanwhile
  const rounds = await new Promise<string>((resolve, reject) =>
    execFile("/usr/bin/env", ["-u", "NODE_OPTIONS", process.execPath, "-e", script], { uid: h.users.CLIENT_USER.uid, gid: h.users.CLIENT_USER.gid, cwd: "/", encoding: "utf8" }, (err, out) => (err ? reject(err) : resolve(out))),
  );
  const seen = (re: RegExp): number => (h.stderr.match(re) ?? []).length;
  t.comment(`${rounds}; the spool met ${seen(/is a directory, not a symbolic link/g)} directories and ${seen(/not a request file name/g)} symlinks`);
  t.same(fs.readdirSync(victim).sort(), Array.from({ length: 20 }, (_, i) => `keep-${i}`).sort(), "nothing outside the spool was deleted");
  t.ok(fs.existsSync(h.revokeDir), "REVOKE_DIR is still there");
  t.ok(h.running);
});

t.test("hostile: request files", async (t) => {
  const cases: [string, (id: string) => void, RegExp, RegExp][] = [
    ["owned by root", (id) => place(id, requestText(), { uid: 0 }), /wrong_owner/, /not owned by the client user/],
    [
      "hard link (nlink 2)",
      (id) => {
        const f = place(id, requestText());
        fs.linkSync(f, path.join(h.root, `${id}-second-link`));
      },
      /hard_link/,
      /more than one link/,
    ],
    [
      "FIFO",
      (id) => {
        const f = path.join(h.spoolDir, id);
        fs.rmSync(f, { force: true });
        require_mkfifo(f);
        fs.chownSync(f, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
      },
      /not_regular/,
      /not a regular file/,
    ],
    [
      "directory",
      (id) => {
        const f = path.join(h.spoolDir, id);
        fs.mkdirSync(f);
        fs.chownSync(f, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
      },
      /not_regular/,
      /not a regular file/,
    ],
    ["symlink to /etc/shadow", (id) => fs.symlinkSync("/etc/shadow", path.join(h.spoolDir, id)), /not_regular/, /symbolic link/],
    ["over-size", (id) => place(id, requestText() + "x".repeat(MAX_REQUEST_BYTES)), /too_large/, /larger than 65536 bytes/],
    ["missing", () => {}, /missing/, /does not exist/],
    ["non-PEM CSR", (id) => place(id, requestText().replace(/-----BEGIN[^]*-----END CERTIFICATE REQUEST-----\n/, "this is not PEM\n")), /request\.bad_pem|request\.bad_csr/, /BEGIN|PEM/],
    ["MD5-signed CSR (the spool's parse refuses the signature algorithm)", (id) => place(id, requestText().replace(csrPem, md5CsrPem())), /request\.bad_signature_algorithm/, /md5WithRSAEncryption is not accepted/],
    ["PEM of the wrong kind", (id) => place(id, requestText().replace(/CERTIFICATE REQUEST/g, "X509 CRL")), /request\.bad_pem/, /CRL|expected CERTIFICATE REQUEST/],
    ["duplicate key", (id) => place(id, requestText().replace("username=mallory\n", "username=mallory\nusername=eve\n")), /bad_header/, /username given twice/],
    ["unknown key", (id) => place(id, requestText().replace("username=mallory\n", "username=mallory\npassphrase=x\n")), /bad_header/, /unknown key "passphrase"/],
    ["NUL byte", (id) => place(id, requestText().replace("mallory", "mal\0lory")), /bad_format/, /NUL byte/],
    ["CR", (id) => place(id, requestText().replace("mallory\n", "mallory\r\n")), /bad_format/, /carriage return/],
    ["negative lifetime", (id) => place(id, requestText().replace("proxy_lifetime=3600", "proxy_lifetime=-1")), /bad_header/, /proxy_lifetime="-1"/],
    ["non-numeric lifetime", (id) => place(id, requestText().replace("max_cert_lifetime=0", "max_cert_lifetime=12h")), /bad_header/, /max_cert_lifetime="12h"/],
    ["absurd lifetime", (id) => place(id, requestText({ proxyLifetime: 2 ** 40 })), /bad_header/, /larger than/],
    ["empty username", (id) => place(id, requestText({ username: "" })), /bad_username/, /empty username/],
    ["too long username", (id) => place(id, requestText({ username: "u".repeat(MAX_USERNAME_BYTES + 1) })), /bad_username/, new RegExp(`longer than ${MAX_USERNAME_BYTES}`)],
    ["missing end marker", (id) => place(id, requestText().replace(/end\n$/, "")), /incomplete/, /no end marker/],
    ["truncated file", (id) => place(id, requestText().slice(0, 200)), /incomplete/, /no end marker/],
    ["expired deadline", (id) => place(id, requestText({ deadline: Date.now() - 1000 })), /expired/, /deadline passed/],
    ["deadline absurdly far", (id) => place(id, requestText({ deadline: Date.now() + 86_400_000 })), /bad_deadline/, /more than CLIENT_TIMEOUT/],
    [
      "abandoned marker",
      (id) => {
        place(id, requestText());
        place(`${id}.abandoned`, "");
      },
      /abandoned/,
      /gave up/,
    ],
    ["bad version", (id) => place(id, requestText().replace("version=1", "version=2")), /bad_version/, /version "2"/],
  ];
  for (const [name, make, code, message] of cases) {
    await t.test(name, async (t) => {
      const id = newId();
      make(id);
      link(id);
      if (name === "abandoned marker") {
        // the client gave up: nobody reads the error result, the spool removes it with the marker
        const rej = await h.next("requestRejected", 10_000, (f) => f.message.requestId === id);
        t.match(rej.message.code, code, `${id}: requestRejected code`);
        t.match(rej.message.message, message, `${id}: requestRejected message`);
        await h.until(() => !fs.readdirSync(h.spoolDir).some((n) => n.startsWith(id)), 10_000, "marker and error result removed");
        t.ok(h.running, "spool still running");
        return;
      }
      await expectRefused(t, id, code, message);
      t.notOk(fs.existsSync(path.join(h.spoolDir, id)), "request file removed");
      for (const n of fs.readdirSync(h.spoolDir)) if (n.startsWith(id)) fs.rmSync(path.join(h.spoolDir, n), { force: true });
    });
  }
});

function require_mkfifo(file: string): void {
  // Node has no mkfifo; coreutils does.
  execFileSync("mkfifo", ["-m", "0644", file]);
}
t.test("a planted result file: the client refuses a certificate that is not for its key, and the CA's is revoked (issue 14, item 7)", async (t) => {
  clearSpool();
  // The myproxy account (the client's user) plants another logon's certificate as this
  // request's result while the CA is signing; the spool's own certificate then cannot be published.
  const other = makeCsr(h.root, "other-user");
  const otherSpki = execFileSync("openssl", ["req", "-noout", "-pubkey"], { input: other.csrPem });
  const planted = h.makeCertificate(Buffer.from(otherSpki.toString().replace(/-----[^-]+-----|\s/g, ""), "base64"), "jdoe");
  const old = h.onIssue;
  let release: () => void = () => {};
  const clientDone = new Promise<void>((r) => (release = r));
  let signed: { serial: string; requestId: string } | undefined;
  h.onIssue = async (f, ch) => {
    const m = f.message;
    const result = path.join(h.spoolDir, `${m.requestId}.result`);
    const tmp = `${result}.planting`;
    fs.writeFileSync(tmp, pemEncode(planted.der, "CERTIFICATE"), { mode: 0o644 });
    fs.chownSync(tmp, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
    fs.renameSync(tmp, result); // appears whole
    await clientDone; // the CA answers after the client looked at the planted file
    const cert = h.makeCertificate(m.publicKey, m.username);
    signed = { serial: cert.serial, requestId: m.requestId };
    ch.reply(f, "issued", { requestId: m.requestId, serial: cert.serial, certificate: cert.der, notAfter: Date.now() + 3600_000, subject: `/CN=${m.username}` });
  };
  t.teardown(() => {
    h.onIssue = old;
  });
  const r = await runClient(h, myproxyInput({ username: "jdoe" }, csrPem));
  release();
  t.equal(r.code, 1, "the client refuses");
  t.equal(r.stdout, "", "no certificate printed");
  t.match(r.stderr, /^etoken-ca-client: the result file for this request holds a certificate that is not ours \(it certifies another public key than the one in our request\)/);
  const u = await h.next("undelivered", 20_000);
  h.onIssue = old;
  t.ok(signed, "the CA signed the real request");
  t.equal(u.message.requestId, signed?.requestId, "what the CA issued for the request is reported undelivered");
  t.equal(u.message.serial, signed?.serial, "(and so revoked by the kernel)");
  await h.until(() => fs.readdirSync(h.spoolDir).length === 0, 10_000, "spool cleanup");
  t.ok(h.running);
});

t.test("a result replaced after the spool published it: what the CA issued is reported undelivered (issue 14, item 7)", async (t) => {
  clearSpool();
  // The myproxy account swaps the published result for another logon's certificate before the
  // client reads it (the client is held stopped meanwhile): the spool has already said `delivered`.
  const other = makeCsr(h.root, "other-user-a");
  const otherSpki = execFileSync("openssl", ["req", "-noout", "-pubkey"], { input: other.csrPem });
  const planted = h.makeCertificate(Buffer.from(otherSpki.toString().replace(/-----[^-]+-----|\s/g, ""), "base64"), "jdoe");
  const old = h.onIssue;
  let client: ChildProcess | undefined;
  let signed: { serial: string; requestId: string } | undefined;
  h.onIssue = async (f, ch) => {
    const m = f.message;
    const cert = h.makeCertificate(m.publicKey, m.username);
    signed = { serial: cert.serial, requestId: m.requestId };
    process.kill(client!.pid!, "SIGSTOP");
    try {
      ch.reply(f, "issued", { requestId: m.requestId, serial: cert.serial, certificate: cert.der, notAfter: Date.now() + 3600_000, subject: `/CN=${m.username}` });
      await h.next("delivered", 10_000, (d) => d.message.requestId === m.requestId);
      const result = path.join(h.spoolDir, `${m.requestId}.result`);
      const tmp = `${result}.planting`;
      fs.writeFileSync(tmp, pemEncode(planted.der, "CERTIFICATE"), { mode: 0o644 });
      fs.chownSync(tmp, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
      fs.renameSync(tmp, result);
    } finally {
      process.kill(client!.pid!, "SIGCONT");
    }
  };
  t.teardown(() => {
    h.onIssue = old;
  });
  const r = await runClient(h, myproxyInput({ username: "jdoe" }, csrPem), { onSpawn: (c) => (client = c) });
  t.equal(r.code, 1, "the client refuses");
  t.equal(r.stdout, "", "no certificate printed");
  t.match(r.stderr, /not ours \(it certifies another public key/);
  t.ok(signed, "the CA signed the real request");
  const u = await h.next("undelivered", 20_000, (f) => f.message.requestId === signed?.requestId);
  h.onIssue = old;
  t.equal(u.message.serial, signed?.serial, "what the CA issued for the request is reported undelivered (and so revoked)");
  await h.until(() => fs.readdirSync(h.spoolDir).length === 0, 10_000, "spool cleanup");
  t.ok(h.running);
});

t.test("a planted error result: the client stops, and what the CA issued is reported undelivered (issue 14, item 7)", async (t) => {
  clearSpool();
  const old = h.onIssue;
  let release: () => void = () => {};
  const clientDone = new Promise<void>((r) => (release = r));
  let signed: { serial: string; requestId: string } | undefined;
  h.onIssue = async (f, ch) => {
    const m = f.message;
    const result = path.join(h.spoolDir, `${m.requestId}.result`);
    const tmp = `${result}.planting`;
    fs.writeFileSync(tmp, "error=planted\nplanted by the myproxy account\n", { mode: 0o644 });
    fs.chownSync(tmp, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
    fs.renameSync(tmp, result);
    await clientDone; // the CA answers after the client read the planted error
    const cert = h.makeCertificate(m.publicKey, m.username);
    signed = { serial: cert.serial, requestId: m.requestId };
    ch.reply(f, "issued", { requestId: m.requestId, serial: cert.serial, certificate: cert.der, notAfter: Date.now() + 3600_000, subject: `/CN=${m.username}` });
  };
  t.teardown(() => {
    h.onIssue = old;
  });
  const r = await runClient(h, myproxyInput({ username: "jdoe" }, csrPem));
  release();
  t.equal(r.code, 1, "the client reports the error");
  t.equal(r.stdout, "");
  t.match(r.stderr, /planted by the myproxy account/);
  const u = await h.next("undelivered", 20_000);
  h.onIssue = old;
  t.ok(signed, "the CA signed the real request");
  t.equal(u.message.requestId, signed?.requestId, "what the CA issued for the request is reported undelivered");
  t.equal(u.message.serial, signed?.serial, "(and so revoked by the kernel)");
  t.notOk(h.received.some((f) => f.type === "delivered" && f.message.requestId === signed?.requestId), "and never reported delivered");
  await h.until(() => fs.readdirSync(h.spoolDir).length === 0, 10_000, "spool cleanup");
  t.ok(h.running);
});

t.test("the spool keeps serving after all of that", async (t) => {
  const r = await runClient(h, myproxyInput({ username: "after" }, csrPem));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^-----BEGIN CERTIFICATE-----\n/);
  t.ok(h.running);
});

t.test("50 concurrent clients each get their own certificate", async (t) => {
  const n = 50;
  const before = h.issueRequests.length;
  await h.premake(h.issueRequests[0]!.message.publicKey, Array.from({ length: n }, (_, i) => `user${i}`));
  const runs = await Promise.all(Array.from({ length: n }, (_, i) => runClient(h, myproxyInput({ username: `user${i}` }, csrPem))));
  const byUser = new Map<string, string>();
  for (const f of h.issueRequests.slice(before)) byUser.set(f.message.username, pemEncode(h.issued.get(f.message.requestId)!.der, "CERTIFICATE"));
  const extra = h.issueRequests.slice(before).filter((f) => !/^user[0-9]+$/.test(f.message.username));
  if (extra.length) t.comment(`issueRequests from before this test: ${extra.map((f) => JSON.stringify(f.message.username)).join(" ")}`);
  t.equal(h.issueRequests.length - before - extra.length, n, "n issueRequests");
  runs.forEach((r, i) => {
    t.equal(r.code, 0, `client ${i} exit 0 ${r.stderr}`);
    t.equal(r.stdout, byUser.get(`user${i}`), `client ${i} got the certificate issued for user${i}`);
  });
  t.equal(new Set(runs.map((r) => r.stdout)).size, n, "all different");
  // the spool unlinks its temporary result files after the hand-out, off the client's path
  await h.until(() => fs.readdirSync(h.spoolDir).length === 0, 10_000, "spool cleanup");
  t.same(fs.readdirSync(h.spoolDir), []);
});

t.test("a request with the kernel never answering in time: abandoned marker, undelivered", async (t) => {
  const h2 = new SpoolHarness({ clientTimeout: "1" });
  t.teardown(async () => {
    await h2.stop();
    h2.cleanup();
  });
  await h2.start();
  let hold: Frame<"issueRequest"> | undefined;
  h2.onIssue = (f) => {
    hold = f;
  };
  const r = await runClient(h2, myproxyInput({}, csrPem));
  t.equal(r.code, 1);
  t.match(r.stderr, /^etoken-ca-client: no answer from the CA within 1 s; request abandoned/);
  t.ok(hold, "the request reached the kernel");
  const id = hold!.message.requestId;
  t.ok(fs.existsSync(path.join(h2.spoolDir, `${id}.abandoned`)), "abandoned marker left for the spool");
  t.ok(Date.now() >= Number(hold!.message.deadline) + DELIVERY_GRACE_MS, `client waited deadline + grace (${typeof hold!.message.deadline} ${hold!.message.deadline} now ${Date.now()})`);
  // The certificate arrives late: the spool must not deliver it and must report it.
  const cert = h2.makeCertificate(hold!.message.publicKey, "late");
  h2.channel!.reply(hold!, "issued", { requestId: id, serial: cert.serial, certificate: cert.der, notAfter: 0, subject: "/CN=late" });
  const u = await h2.next("undelivered");
  t.equal(u.message.requestId, id);
  t.equal(u.message.serial, cert.serial);
  t.notOk(h2.received.some((f) => f.type === "delivered"), "and never reports it delivered");
  await h2.until(() => fs.readdirSync(h2.spoolDir).length === 0, 10_000, "spool cleanup");
  t.same(fs.readdirSync(h2.spoolDir), [], "marker and claim removed by the spool");
  t.ok(h2.running);
});

t.test("no spool running: the client gives up on the lock or the answer with a clear error", async (t) => {
  const h3 = new SpoolHarness({ clientTimeout: "1" });
  t.teardown(() => h3.cleanup());
  const r = await runClient(h3, myproxyInput({}, csrPem));
  t.equal(r.code, 1);
  t.match(r.stderr, /no answer from the CA within 1 s; request abandoned/);
  const names = fs.readdirSync(h3.spoolDir).sort();
  t.equal(names.length, 2, "marker and claimed result remain for the sweeper");
  t.match(names[0], /^req\.[A-Za-z0-9]{16}\.abandoned$/);
  t.match(names[1], /^req\.[A-Za-z0-9]{16}\.result$/);
  // Another client finds the lock busy... no: the abandoning client removed its link.
  t.notOk(fs.existsSync(path.join(h3.spoolDir, "request")), "the abandoning client freed the lock");
  // Lock held by someone else for the whole deadline:
  fs.symlinkSync("req.SomeoneElse0001", path.join(h3.spoolDir, "request"));
  const r2 = await runClient(h3, myproxyInput({}, csrPem));
  t.equal(r2.code, 1);
  t.match(r2.stderr, /^etoken-ca-client: the CA's request spool stayed busy for 1 s/);
});

t.test("attack: the client user holds the queue in front of the lock forever; clients give up at their deadline as with a held link", async (t) => {
  // Only CLIENT_USER can open SPOOL_DIR; it could always hold the `request` link forever. Holding
  // the flock the clients queue with is the same denial of service, and ends the same way.
  const h4 = new SpoolHarness({ clientTimeout: "2" });
  // flock(1) forks `sleep`, which inherits the locked descriptor: the holder is a process group,
  // killed whole (a `sleep` left behind kept running as CLIENT_USER, and `userdel` then failed)
  const holder = spawn("flock", [h4.spoolDir, "sleep", "600"], { uid: h4.users.CLIENT_USER.uid, gid: h4.users.CLIENT_USER.gid, stdio: "ignore", detached: true });
  const exited = new Promise((resolve) => holder.on("exit", resolve));
  t.teardown(async () => {
    process.kill(-holder.pid!, "SIGKILL");
    await exited;
    h4.cleanup();
  });
  await h4.until(() => flockQueue(h4.spoolDir).holder === holder.pid, 10_000, "the attacker's flock");
  const pids: number[] = [];
  const runs = [0, 1].map(() => runClient(h4, myproxyInput({}, csrPem), { onSpawn: (c) => pids.push(c.pid!) }));
  await h4.until(() => pids.length === 2 && pids.every((p) => flockQueue(h4.spoolDir).waiters.includes(p)), 20_000, "both clients in the queue");
  for (const r of await Promise.all(runs)) {
    t.equal(r.code, 1);
    t.match(r.stderr, /^etoken-ca-client: the CA's request spool stayed busy for 2 s \(another request held it, or etoken-ca-server is not running\)\n$/);
  }
  t.same(fs.readdirSync(h4.spoolDir), [], "no request file left behind, no link made");
  t.same(flockQueue(h4.spoolDir).waiters, [], "and they left the queue");
});
