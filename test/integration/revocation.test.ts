// Revocation, CRLs signed by the token, and the notifier's hooks and e-mail, through the real
// server: revoke-cert -> revoke queue -> SIGUSR1 -> kernel reads the queue -> signer -> CRL -> post-CRL hook.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { SMTPServer } from "smtp-server";
import { BIN, createInstallation, nextCrl, readStatus, runCommand, startServer, typePin, countPrompts, waitFor, waitForState } from "../fixtures/server.js";
import { openssl } from "../fixtures/pki.js";
import { readyServer } from "../fixtures/ready-server.js";

const mails: { to: string[]; subject: string }[] = [];
const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ["STARTTLS", "AUTH"],
  logger: false,
  onData(stream, session, cb) {
    let data = "";
    stream.on("data", (d: Buffer) => (data += d.toString("utf8")));
    stream.on("end", () => {
      const subject = /^Subject: (.*)$/im.exec(data)?.[1] ?? "";
      mails.push({ to: session.envelope.rcptTo.map((r) => r.address), subject });
      cb();
    });
  },
});
// the notifier's connection is cut when the server stops at teardown: not a test failure
smtp.on("error", () => {});
await new Promise<void>((resolve) => smtp.listen(0, "127.0.0.1", () => resolve()));
const smtpPort = (smtp.server.address() as { port: number }).port;

const hookDir = fs.mkdtempSync("/tmp/etca-hooks-");
fs.chmodSync(hookDir, 0o755);
const eventLog = path.join(hookDir, "events.log");
const hook = path.join(hookDir, "notify-hook");
fs.writeFileSync(hook, `#!/bin/sh\nmsg=$(cat)\nprintf '%s|%s|%s|%s\\n' "$1" "$ETOKEN_EVENT" "$ETOKEN_PATH" "$msg" >> ${eventLog}\n`, { mode: 0o755 });
const postCrl = path.join(hookDir, "post-crl-hook");
fs.writeFileSync(postCrl, `#!/bin/sh\necho "post-crl $1" >> ${eventLog}\nexec sleep 600\n`, { mode: 0o755 });

const inst = createInstallation({
  prefix: "etca-revoke",
  extraConfig: {
    NOTIFY_HOOK: hook,
    POST_CRL_HOOK: postCrl,
    HOOK_TIMEOUT: "2",
    NOTIFY_EMAIL: "ca-operator@example.org",
    NOTIFY_FROM: "etoken-ca@example.org",
    SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
    CRL_LIFETIME: "7d",
    CRL_REISSUE_BEFORE: "1d",
  },
});
fs.writeFileSync(eventLog, "", { mode: 0o644 });
fs.chownSync(eventLog, inst.users.NOTIFIER_USER.uid, inst.users.NOTIFIER_USER.gid);
const ready = await readyServer(t, inst, {
  cleanup: () => {
    fs.rmSync(hookDir, { recursive: true, force: true });
    smtp.close();
  },
});
const { work, issue } = ready;

function revokeCert(args: string[]) {
  return runCommand(process.execPath, [BIN.revoke, ...args, "--config", inst.configPath]);
}

const latestPem = () => path.join(inst.config.CRL_DIR, "crl.pem");


function crlVerifies(): boolean {
  const r = openssl(["crl", "-in", latestPem(), "-noout", "-verify", "-CAfile", inst.token.caCertPath]);
  return r.code === 0 && /verify OK/.test(r.stdout + r.stderr);
}

function chainStatus(certFile: string): string {
  const r = openssl(["verify", "-crl_check", "-CAfile", inst.token.caCertPath, "-CRLfile", latestPem(), certFile]);
  return r.stdout + r.stderr;
}

const caCnf = path.join(work, "openssl-status.cnf");
fs.writeFileSync(caCnf, `[ca]\ndefault_ca=d\n[d]\ndir=${inst.config.CA_DIR}\ndatabase=$dir/index.txt\nnew_certs_dir=$dir/newcerts\nserial=$dir/serial\n`);
const opensslStatus = (serial: string) => {
  const r = openssl(["ca", "-config", caCnf, "-status", serial]);
  return r.stdout + r.stderr;
};

t.test("the first CRL is made once the PIN is in", async (t) => {
  const st = await waitFor("a first CRL", () => readStatus(inst)?.crl ?? undefined, 30_000);
  t.ok(st.number >= 1);
  t.ok(crlVerifies(), "openssl crl -verify accepts it");
  t.equal(fs.readlinkSync(latestPem()), path.basename(st.path).replace(/\.der$/, ".pem"), "crl.pem points at the numbered file");
  t.ok(fs.existsSync(path.join(inst.config.CRL_DIR, "crl.der")), "DER beside it");
  const text = openssl(["crl", "-in", latestPem(), "-noout", "-text"]).stdout;
  t.match(text, /Version 2/);
  t.match(text, /X509v3 CRL Number/);
  t.match(text, /X509v3 Authority Key Identifier/);
  const thisUpdate = Date.parse(/Last Update: (.*)/.exec(text)![1]!);
  const nextUpdate = Date.parse(/Next Update: (.*)/.exec(text)![1]!);
  t.equal(nextUpdate - thisUpdate, 7 * 86400 * 1000, "nextUpdate = thisUpdate + CRL_LIFETIME");
});

t.test("revoke by serial and by certificate file", async (t) => {
  const a = await issue("alice");
  const b = await issue("bob");
  const c = await issue("carol");
  t.match(chainStatus(a.file), /: OK/, "valid before revocation");
  const before = readStatus(inst)!.crl!.number;
  const r1 = revokeCert(["--serial", a.serial, "--reason", "keyCompromise"]);
  t.equal(r1.code, 0, r1.stderr);
  const n1 = await nextCrl(inst, before);
  t.ok(crlVerifies());
  t.match(chainStatus(a.file), /certificate revoked/, "openssl verify -crl_check: revoked");
  t.match(chainStatus(b.file), /: OK/, "the other one is still fine");
  t.match(opensslStatus(a.serial), new RegExp(`${a.serial}=Revoked`), "openssl ca -status agrees");
  t.match(fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8"), new RegExp(`^R\\t\\d{12}Z\\t\\d{12}Z,keyCompromise\\t${a.serial}\\t`, "m"));
  const r2 = revokeCert(["--cert", b.file, "--reason", "superseded"]);
  t.equal(r2.code, 0, r2.stderr);
  const n2 = await nextCrl(inst, n1);
  t.ok(n2 > n1, "CRL numbers strictly increase");
  t.match(chainStatus(b.file), /certificate revoked/);
  const text = openssl(["crl", "-in", latestPem(), "-noout", "-text"]).stdout;
  t.match(text, new RegExp(`Serial Number: ${a.serial}[\\s\\S]*?Key Compromise`, "i"));
  t.match(text, new RegExp(`Serial Number: ${b.serial}[\\s\\S]*?Superseded`, "i"));
  t.match(chainStatus(c.file), /: OK/);
  t.equal(fs.readdirSync(inst.config.REVOKE_DIR).filter((n) => n.startsWith("rev.")).length, 0, "the queue is empty once applied");
});

t.test("unknown and already revoked serials are refused clearly", async (t) => {
  const r = revokeCert(["--serial", "0123456789ABCDEF"]);
  t.not(r.code, 0);
  t.match(r.stderr, /^revoke-cert: .*0123456789ABCDEF.*not in the CA database|^revoke-cert: .*unknown/m);
  t.equal(r.stderr.trim().split("\n").length, 1, "one line");
  const a = fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8").split("\n").find((l) => l.startsWith("R\t"))!.split("\t")[3]!;
  const again = revokeCert(["--serial", a]);
  t.not(again.code, 0);
  t.match(again.stderr, /already revoked/);
  const badReason = revokeCert(["--serial", a, "--reason", "becauseISaidSo"]);
  t.not(badReason.code, 0);
  t.match(badReason.stderr, /reason/);
});

t.test("a queue entry with a serial outside index.txt's form is refused once, kept aside, and restarts nothing", async (t) => {
  // issue 17: the queue took serial=A (1 to 64 hex digits), the signer refused it (whole bytes);
  // the entry was deleted as "not applied". One grammar now (proto/contract.ts): the kernel refuses it.
  const name = `rev.${Date.now()}.OddSerial0001`;
  const file = path.join(inst.config.REVOKE_DIR, name);
  fs.writeFileSync(file, `version=1\nserial=A\nreason=keyCompromise\nqueued_at=${Date.now()}\nend\n`, { mode: 0o600 });
  const before = readStatus(inst)!;
  let n = before.crl!.number;
  for (let i = 0; i < 2; i++) {
    process.kill(ready.server.pid, "SIGUSR1");
    n = await nextCrl(inst, n);
  }
  t.notOk(fs.existsSync(file), "no longer in the queue");
  t.ok(fs.existsSync(path.join(inst.config.REVOKE_DIR, `bad.${name}`)), "kept aside as bad.<name> for the operator");
  const after = readStatus(inst)!;
  t.same(
    after.services.map((x) => [x.name, x.restarts, x.pid]),
    before.services.map((x) => [x.name, x.restarts, x.pid]),
    "no service was killed or restarted, at either SIGUSR1",
  );
  t.equal(after.state, "READY");
});

t.test("the latest link never points at a partial file", async (t) => {
  let reads = 0;
  let bad = 0;
  let stop = false;
  const reader = (async () => {
    while (!stop) {
      const text = fs.readFileSync(latestPem(), "utf8");
      reads++;
      const m = /^-----BEGIN X509 CRL-----\n([A-Za-z0-9+/=\n]+)-----END X509 CRL-----\n$/.exec(text);
      if (!m) bad++;
      else {
        const der = Buffer.from(m[1]!, "base64");
        const len = der[1]! & 0x80 ? der.subarray(2, 2 + (der[1]! & 0x7f)).reduce((a, x) => a * 256 + x, 0) + 2 + (der[1]! & 0x7f) : der[1]! + 2;
        if (len !== der.length) bad++;
      }
      await new Promise((r) => setImmediate(r));
    }
  })();
  let n = readStatus(inst)!.crl!.number;
  const numbers: number[] = [n];
  for (let i = 0; i < 8; i++) {
    process.kill(ready.server.pid, "SIGUSR1");
    n = await nextCrl(inst, n);
    numbers.push(n);
  }
  stop = true;
  await reader;
  t.ok(reads > 20, `read the latest CRL ${reads} times while 8 new ones were made`);
  t.equal(bad, 0, "every read saw a complete CRL");
  t.same(numbers, [...numbers].sort((x, y) => x - y), "numbers increase");
  t.equal(new Set(numbers).size, numbers.length, "strictly");
  t.ok(crlVerifies());
});

t.test("hooks and e-mail", async (t) => {
  const events = await waitFor("hook events", () => {
    const text = fs.readFileSync(eventLog, "utf8");
    return /^ready\|ready\|/m.test(text) && /^crl-updated\|crl-updated\|\/.+crl-\d+\.der\|/m.test(text) && /^post-crl \//m.test(text) ? text : undefined;
  }, 60_000);
  t.match(events, /^pin-needed\|pin-needed\|\|.*PIN/m, "NOTIFY_HOOK got pin-needed with the message on stdin");
  t.match(events, /^ready\|ready\|/m, "and ready");
  t.match(events, new RegExp(`^crl-updated\\|crl-updated\\|${inst.config.CRL_DIR}/crl-\\d+\\.der\\|CRL #\\d+`, "m"), "crl-updated with the DER CRL's path in ETOKEN_PATH");
  t.match(events, new RegExp(`^post-crl ${inst.config.CRL_DIR}/crl-\\d+\\.der$`, "m"), "POST_CRL_HOOK got the new CRL's DER file (what an http distribution point serves)");
  const failure = await waitFor("the hanging post-CRL hook to be reported", () => readStatus(inst)?.lastHookFailure ?? undefined, 60_000);
  t.match(failure, /POST_CRL_HOOK/, `reported: ${failure}`);
  const still = await issue("dave");
  t.ok(still.serial, "issuing continues while hooks hang and are killed");
  const mail = await waitFor("an e-mail", () => mails.find((m) => /ready/.test(m.subject)), 60_000);
  t.same(mail.to, ["ca-operator@example.org"]);
  t.match(mail.subject, /\[etoken-ca .*\] ready/);
});

t.test("a revocation queued while the server is down is applied at start", async (t) => {
  const e = await issue("erin");
  await ready.server.stop();
  const r = revokeCert(["--serial", e.serial]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout + r.stderr, /not running/i, "revoke-cert says the server is not running");
  t.equal(fs.readdirSync(inst.config.REVOKE_DIR).filter((n) => n.startsWith("rev.")).length, 1, "the request stays queued");
  const prompts = countPrompts(inst);
  ready.server = startServer(inst);
  await waitForState(inst, "NEED_PIN", 60_000);
  await waitFor("the revocation applied", () => (fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8").includes(`\t${e.serial}\t`) &&
    /^R\t/m.test(fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8").split("\n").filter((l) => l.includes(e.serial)).join("\n")) ? true : undefined), 30_000);
  t.pass("applied at start, before the PIN");
  const before = readStatus(inst)?.crl?.number ?? 0;
  await typePin(inst, inst.token.userPin, prompts + 1);
  await waitForState(inst, "READY");
  await nextCrl(inst, before);
  t.match(chainStatus(e.file), /certificate revoked/, "and in the first CRL after the PIN");
});
