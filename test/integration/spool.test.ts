// The spool hand-off end to end: the real client as etca-client, the real spool service as
// etca-spool, the test as the kernel on the fd-3 socketpair.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t, { type Test } from "tap";
import type { Frame } from "../../proto/wire.js";
import { pemEncode } from "../../services/common/pem.js";
import { DELIVERY_GRACE_MS, formatRequestFile, MAX_REQUEST_BYTES, MAX_USERNAME_BYTES } from "../../services/common/spool-protocol.js";
import { dirContents, makeCsr, myproxyInput, runClient, SpoolHarness } from "../fixtures/spool-harness.js";

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

t.test("a bad CSR is refused by the spool: error result, requestRejected, no issueRequest", async (t) => {
  const before = h.issueRequests.length;
  const bad = csrPem.replace(/\n([A-Za-z0-9+/]{10})/, (_m, s: string) => "\n" + (s[0] === "A" ? "B" : "A") + s.slice(1));
  const r = await runClient(h, myproxyInput({}, bad));
  t.equal(r.code, 1);
  t.match(r.stderr, /^etoken-ca-client: .*(CSR|certificate request|DER|signature)/i);
  const rej = await h.next("requestRejected");
  t.match(rej.message.code, /^request\./);
  t.equal(h.issueRequests.length, before);
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
t.test("the spool keeps serving after all of that", async (t) => {
  const r = await runClient(h, myproxyInput({ username: "after" }, csrPem));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^-----BEGIN CERTIFICATE-----\n/);
  t.ok(h.running);
});

t.test("50 concurrent clients each get their own certificate", async (t) => {
  const n = 50;
  const before = h.issueRequests.length;
  await h.premake(h.issueRequests[0]!.message.publicKey, n);
  const runs = await Promise.all(Array.from({ length: n }, (_, i) => runClient(h, myproxyInput({ username: `user${i}` }, csrPem))));
  const byUser = new Map<string, string>();
  for (const f of h.issueRequests.slice(before)) byUser.set(f.message.username, pemEncode(h.issued.get(f.message.requestId)!.der, "CERTIFICATE"));
  t.equal(h.issueRequests.length - before, n, "n issueRequests");
  runs.forEach((r, i) => {
    t.equal(r.code, 0, `client ${i} exit 0 ${r.stderr}`);
    t.equal(r.stdout, byUser.get(`user${i}`), `client ${i} got the certificate issued for user${i}`);
  });
  t.equal(new Set(runs.map((r) => r.stdout)).size, n, "all different");
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
