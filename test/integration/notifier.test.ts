// The notifier as a real process under its own user (etca-notify); the test plays the kernel on
// fd 3, runs real hook scripts and a real SMTP server (smtp-server on 127.0.0.1).
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { SMTPServer } from "smtp-server";
import t, { type Test } from "tap";
import { parseConfig } from "../../services/common/config.js";
import { FakeKernel, spawnService } from "../fixtures/fake-kernel.js";
import { ensureTestUsers } from "../fixtures/users.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const users = ensureTestUsers();
const notify = users.NOTIFIER_USER;

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-notifier-"));
fs.chmodSync(base, 0o711);
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
const hooks = path.join(base, "hooks"); // root-owned scripts, readable and executable by all
const out = path.join(base, "out"); // written by the hooks (as etca-notify)
fs.mkdirSync(hooks, { mode: 0o755 });
fs.mkdirSync(out, { mode: 0o700 });
fs.chownSync(out, notify.uid, notify.gid);

function script(name: string, body: string, mode = 0o755): string {
  const p = path.join(hooks, name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}`);
  fs.chmodSync(p, mode);
  return p;
}

// records argv, the environment and stdin in out/<event>; token-removed hangs (with a child
// in its process group), policy-violation fails
const recordHook = script(
  "record",
  `case "$1" in
  token-removed) sleep 1000 & echo $! > ${out}/sleeper.pid; wait ;;
esac
msg=$(cat)
{ printf 'argv=%s\\n' "$*"; printf 'uid=%s\\n' "$(id -u)"; env | sort; printf 'stdin=%s\\n' "$msg"; } > ${out}/.$1.tmp
mv ${out}/.$1.tmp ${out}/$1
[ "$1" != policy-violation ] || { echo "policy hook broke" >&2; exit 3; }
`,
);
const crlHook = script("crl", `printf '%s\\n' "$@" > ${out}/.crl.tmp && mv ${out}/.crl.tmp ${out}/crl-hook\n`);
const notExecutable = script("not-executable", "exit 0\n", 0o644);

/** Waits for a condition that the notifier makes true asynchronously (no time assertion). */
async function until<T>(what: string, f: () => T | undefined, limitMs = 30_000): Promise<T> {
  const end = Date.now() + limitMs;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
function readOut(name: string): string | undefined {
  try {
    return fs.readFileSync(path.join(out, name), "utf8");
  } catch {
    return undefined;
  }
}

function readProc(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
}

interface Mail {
  rcpt: string[];
  from: string;
  subject: string;
  raw: string;
}
async function smtpServer(t: Test): Promise<{ port: number; mails: Mail[] }> {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        const subject = /^Subject: (.*(?:\r\n[ \t].*)*)/m.exec(raw)?.[1]?.replace(/\r\n[ \t]/g, " ") ?? "";
        mails.push({ rcpt: session.envelope.rcptTo.map((r) => r.address), from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "", subject, raw });
        cb();
      });
    },
  });
  server.on("error", () => {}); // a client connection cut when the notifier stops is not a test failure
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.server.address() as AddressInfo).port, mails };
}

function notifyVia(k: FakeKernel, event: string, message: string, details: Record<string, string> = {}): void {
  k.channel.send("notify", { event, message, details });
}

function startNotifier(t: Test, lines: string[]): FakeKernel {
  const config = parseConfig(["DN_FORMAT=/DC=org/DC=example/CN=%s", "CA_OIDS=1.3.6.1.4.1.99999.1.1", "CRL_URLS=URI:http://ca.example.org/crl.der", "PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so", "CA_CERT=/etc/ca.pem", `NOTIFIER_USER=${notify.name}`, ...lines, ""].join("\n"), "test");
  const k = spawnService("notifier", notify, config, { captureStderr: true });
  t.teardown(() => k.kill());
  return k;
}

function envOf(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

t.test("hooks, post-CRL hook, timeouts, e-mail and rate limiting", async (t) => {
  const smtp = await smtpServer(t);
  const k = startNotifier(t, [
    `NOTIFY_HOOK=${recordHook}`,
    `POST_CRL_HOOK=${crlHook}`,
    "HOOK_TIMEOUT=1500ms",
    "NOTIFY_EMAIL=ops@example.org,backup@example.org",
    "NOTIFY_FROM=etoken-ca@example.org",
    `SMTP_URL=smtp://127.0.0.1:${smtp.port}`,
    "NOTIFY_RATE_LIMIT=1h",
  ]);
  const hello = await k.next("hello");
  t.equal(hello.message.uid, notify.uid);

  await t.test("NOTIFY_HOOK: argument, environment, stdin", async (t) => {
    notifyVia(k, "ready", "CA ready: issuing certificates", { serial: "0ff4db451c5801e9", label: "etoken ca" });
    const rec = envOf(await until("the ready hook", () => readOut("ready")));
    t.equal(rec.get("argv"), "ready", "event name is the only argument");
    t.equal(rec.get("uid"), String(notify.uid), "runs as the notifier user");
    t.equal(rec.get("ETOKEN_EVENT"), "ready");
    t.equal(rec.get("ETOKEN_MESSAGE"), "CA ready: issuing certificates");
    t.equal(rec.get("ETOKEN_SERIAL"), "0ff4db451c5801e9");
    t.equal(rec.get("ETOKEN_LABEL"), "etoken ca");
    t.equal(rec.get("PATH"), "/usr/sbin:/usr/bin:/sbin:/bin");
    t.equal(rec.get("stdin"), "CA ready: issuing certificates", "the message on stdin");
    const names = [...rec.keys()].filter((n) => n !== "argv" && n !== "uid" && n !== "stdin");
    const unexpected = names.filter((n) => !n.startsWith("ETOKEN_") && !["PATH", "PWD", "SHLVL", "_", "OLDPWD"].includes(n));
    t.same(unexpected, [], "nothing else in the environment");
    t.notOk(rec.has("ETOKEN_CA_CONFIG"), "the service's configuration does not leak to hooks");
  });

  await t.test("POST_CRL_HOOK gets the CRL path", async (t) => {
    notifyVia(k, "crl-updated", "CRL 7 published", { path: "/var/lib/etoken-ca/crl/7.pem", number: "7" });
    t.equal(await until("the post-CRL hook", () => readOut("crl-hook")), "/var/lib/etoken-ca/crl/7.pem\n");
    const rec = envOf(await until("the crl-updated notify hook", () => readOut("crl-updated")));
    t.equal(rec.get("ETOKEN_PATH"), "/var/lib/etoken-ca/crl/7.pem");
    t.equal(rec.get("ETOKEN_NUMBER"), "7");
  });

  await t.test("a hanging hook is killed with its process group; the next notify is not held up", async (t) => {
    notifyVia(k, "token-removed", "CA token removed, issuing suspended", { serial: "0ff4db451c5801e9" });
    const sleeper = Number(await until("the sleeper", () => readOut("sleeper.pid")?.trim() || undefined));
    notifyVia(k, "token-inserted", "CA token inserted");
    await until("the token-inserted hook", () => readOut("token-inserted"));
    t.notOk(k.frames.some((f) => f.type === "hookFailed"), "the next event's hook ran while the first still hung");
    const failed = await k.next("hookFailed");
    t.equal(failed.message.hook, "NOTIFY_HOOK");
    t.equal(failed.message.event, "token-removed");
    t.match(failed.message.message, /killed after 1500 ms \(HOOK_TIMEOUT\)/);
    // gone or a zombie waiting for its new parent to reap it
    const gone = await until("the sleeper's end", () => {
      const stat = readProc(sleeper);
      return stat === undefined || / Z /.test(stat) ? true : undefined;
    });
    t.ok(gone, "the hook's background child was killed too");
  });

  await t.test("a failing hook is reported with its stderr", async (t) => {
    notifyVia(k, "policy-violation", "spool sent a forbidden message");
    const failed = await k.next("hookFailed", (f) => f.message.event === "policy-violation");
    t.equal(failed.message.hook, "NOTIFY_HOOK");
    t.match(failed.message.message, /exited with status 3: policy hook broke/);
  });

  await t.test("e-mail: subject, recipients, rate limit", async (t) => {
    notifyVia(k, "pin-needed", "PIN needed on the console");
    notifyVia(k, "pin-needed", "PIN needed on the console");
    notifyVia(k, "pin-needed", "PIN needed on the console");
    notifyVia(k, "service-restarted", "spool restarted");
    // mail goes out one at a time, in order: once service-restarted is there, pin-needed is done
    await until("the service-restarted mail", () => smtp.mails.find((m) => m.subject.includes("service-restarted")));
    const host = os.hostname();
    const pin = smtp.mails.filter((m) => m.subject.includes("pin-needed"));
    t.equal(pin.length, 1, "3 identical events quickly -> 1 mail");
    t.equal(pin[0]!.subject, `[etoken-ca ${host}] pin-needed: PIN needed on the console`);
    t.same(pin[0]!.rcpt.sort(), ["backup@example.org", "ops@example.org"]);
    t.equal(pin[0]!.from, "etoken-ca@example.org");
    const removed = smtp.mails.find((m) => m.subject.includes("token-removed"));
    t.equal(removed?.subject, `[etoken-ca ${host}] token-removed: CA token removed, issuing suspended`);
    t.match(removed?.raw, /serial: 0ff4db451c5801e9/, "details in the body");
  });

  await t.test("control characters in a notification become spaces: no header injection", async (t) => {
    notifyVia(k, "crl-expiring", "line one\nSubject: injected", { hours: "12\r\nBcc: evil@example.org" });
    const rec = envOf(await until("the crl-expiring hook", () => readOut("crl-expiring")));
    t.equal(rec.get("ETOKEN_MESSAGE"), "line one Subject: injected", "control characters become spaces");
    t.equal(rec.get("ETOKEN_HOURS"), "12  Bcc: evil@example.org");
    const mail = await until("the crl-expiring mail", () => smtp.mails.find((m) => m.subject.includes("crl-expiring")));
    t.notMatch(mail.raw, /^Bcc:/m, "no header injection");
    t.same(mail.rcpt.sort(), ["backup@example.org", "ops@example.org"]);
    t.equal(k.child.exitCode, null, "still running");
  });

  k.channel.send("shutdown", { reason: "test done" });
  await new Promise((r) => k.child.once("exit", r));
  t.equal(k.child.exitCode, 0);
});

// The notify grammar is the contract's (proto/contract.ts), checked on receipt like every frame:
// one that breaks it is a protocol violation, fatal to the channel; the kernel never sends one
// (it cuts texts to the bounds and refuses a malformed one: kernel-stand-in.test.ts).
t.test("a notify that breaks the contract: refused as a protocol violation, no hook runs", async (t) => {
  const hostile: [string, string, Record<string, string>][] = [
    ["../../etc/passwd", "x", {}],
    ["ready", "nul\0byte", {}],
    ["ready", "bad key", { LD_PRELOAD: "/tmp/x.so" }],
  ];
  for (const [event, message, details] of hostile) {
    const k = startNotifier(t, [`NOTIFY_HOOK=${recordHook}`]);
    await k.next("hello");
    notifyVia(k, event, message, details);
    await new Promise((r) => k.child.once("exit", r));
    t.equal(k.child.exitCode, 70, `${JSON.stringify(event)}: the notifier stops on a broken contract`);
    t.match(k.stderr, /invalid message from kernel: fatal.*notify failed validation/, "and says why");
  }
  t.notOk(readOut("../../etc/passwd"), "no hook ran for them");
});

t.test("failures: mail server down, hook not executable, missing CRL path", async (t) => {
  // port 1 on the loopback: nobody listens, the connection is refused
  const k0 = startNotifier(t, [
    `POST_CRL_HOOK=${notExecutable}`,
    "HOOK_TIMEOUT=3s",
    "NOTIFY_EMAIL=ops@example.org",
    `SMTP_URL=smtp://mail-user:pw-s3cret@127.0.0.1:1`,
  ]);
  await k0.next("hello");
  notifyVia(k0, "crl-updated", "CRL 8 published", { path: "/var/lib/etoken-ca/crl/8.pem" });
  const hook = await k0.next("hookFailed", (f) => f.message.hook === "POST_CRL_HOOK");
  t.equal(hook.message.event, "crl-updated");
  t.match(hook.message.message, /cannot be run: EACCES/);
  const mail = await k0.next("hookFailed", (f) => f.message.hook === "email");
  t.equal(mail.message.event, "crl-updated");
  t.match(mail.message.message, /e-mail for crl-updated to ops@example.org through smtp:\/\/\*\*\*@127\.0\.0\.1:1 failed/, "credentials redacted");

  notifyVia(k0, "crl-updated", "CRL 9 published", { path: "relative/9.pem" });
  const nopath = await k0.next("hookFailed", (f) => f.message.hook === "POST_CRL_HOOK");
  t.match(nopath.message.message, /no absolute CRL path/);

  notifyVia(k0, "hook-failed", "POST_CRL_HOOK failed");
  notifyVia(k0, "ready", "marker");
  await k0.next("hookFailed", (f) => f.message.event === "ready");
  t.notOk(k0.frames.some((f) => f.type === "hookFailed" && f.message.event === "hook-failed"), "no report loop for hook-failed events");
  t.match(k0.stderr, /NOTIFY_HOOK|POST_CRL_HOOK=.*cannot be run by the notifier user/, "start-up warning about the hook");
  t.notMatch(k0.stderr, /pw-s3cret|mail-user/, "no SMTP credentials in the notifier's log");
  k0.channel.send("shutdown", { reason: "test done" });
  await new Promise((r) => k0.child.once("exit", r));
});

t.test("deploy/hooks/post-crl-publish publishes the DER CRL under the name its URL uses", async (t) => {
  const pub = path.join(base, "pub");
  fs.mkdirSync(pub);
  const crl = path.join(base, "crl-000012.der");
  fs.writeFileSync(crl, Buffer.from([0x30, 0x82, 0x01, 0x00, 0xff]));
  const hook = path.join(REPO, "deploy/hooks/post-crl-publish");
  execFileSync(hook, [crl], { env: { PATH: "/usr/bin:/bin", PUBLISH_DIR: pub, ETOKEN_CRL_URLS: "http://ca.example.org/crl/example-ca.crl http://mirror.example.net/x.der" } });
  t.same(fs.readFileSync(path.join(pub, "example-ca.crl")), fs.readFileSync(crl), "the DER bytes, under the first URL's name");
  t.equal(fs.statSync(path.join(pub, "example-ca.crl")).mode & 0o777, 0o644);
  t.same(fs.readdirSync(pub), ["example-ca.crl"], "no temporary file left");
  t.throws(() => execFileSync(hook, ["relative.der"], { env: { PATH: "/usr/bin:/bin", PUBLISH_DIR: pub, ETOKEN_CRL_URLS: "http://a.example.org/c.crl" }, stdio: "pipe" }), "relative path refused");
  t.throws(() => execFileSync(hook, [crl], { env: { PATH: "/usr/bin:/bin", PUBLISH_DIR: pub, ETOKEN_CRL_URLS: "http://a.example.org/" }, stdio: "pipe" }), "a URL without a file name is refused");
});

t.test("deploy/hooks/notify-sendmail builds a mail for sendmail", async (t) => {
  const fake = path.join(base, "fake-sendmail");
  const sent = path.join(base, "sent");
  fs.writeFileSync(fake, `#!/bin/sh\nprintf '%s\\n' "$*" > ${sent}.args\ncat > ${sent}\n`);
  fs.chmodSync(fake, 0o755);
  const copy = path.join(base, "notify-sendmail");
  fs.writeFileSync(copy, fs.readFileSync(path.join(REPO, "deploy/hooks/notify-sendmail"), "utf8").replace('SENDMAIL="/usr/sbin/sendmail"', `SENDMAIL="${fake}"`));
  fs.chmodSync(copy, 0o755);
  execFileSync(copy, ["token-removed"], { input: "CA token removed, issuing suspended\n", env: { PATH: "/usr/bin:/bin", ETOKEN_EVENT: "token-removed", ETOKEN_MESSAGE: "CA token removed, issuing suspended", ETOKEN_SERIAL: "abc" } });
  const mail = fs.readFileSync(sent, "utf8");
  t.match(mail, /^To: root$/m);
  t.match(mail, /^Subject: \[etoken-ca .+\] token-removed: CA token removed, issuing suspended$/m);
  t.match(mail, /^ETOKEN_SERIAL=abc$/m);
  t.equal(fs.readFileSync(`${sent}.args`, "utf8"), "-t -oi\n");
});
