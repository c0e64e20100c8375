// The token-loss rules on the real server: removal suspends at once and forgets the PIN,
// re-insertion asks for the PIN again, another token is refused, and a certificate signed while
// the token was being pulled out is revoked and never handed out (the presence fence).
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, runCommand, runClient, countPrompts, createInstallation, pinAgain, promptShown, readStatus, startReady, typePin, waitFor, waitForLine, waitForState } from "../fixtures/server.js";
import { calloutInput, certField, makeCsr, openssl } from "../fixtures/pki.js";
import { findInMemory } from "../fixtures/memory.js";
import { reinsertToken, removeToken, replaceToken } from "../fixtures/softhsm.js";

const hookDir = fs.mkdtempSync("/tmp/etca-hooks-");
fs.chmodSync(hookDir, 0o755);
const eventLog = path.join(hookDir, "events.log");
const hook = path.join(hookDir, "notify-hook");
fs.writeFileSync(hook, `#!/bin/sh\nprintf '%s %s\\n' "$1" "$ETOKEN_SERIAL" >> ${eventLog}\n`, { mode: 0o755 });

// a PIN that nothing else in a process spells, so that its memory can be searched for it
const PIN = `loss-${Date.now().toString(36)}-${process.pid}-pin`;
const inst = createInstallation({ prefix: "etca-loss", extraConfig: { NOTIFY_HOOK: hook, TOKEN_POLL_INTERVAL: "300ms" }, token: { userPin: PIN } });
fs.writeFileSync(eventLog, "", { mode: 0o644 });
fs.chownSync(eventLog, inst.users.NOTIFIER_USER.uid, inst.users.NOTIFIER_USER.gid);
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const server = await startReady(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
  fs.rmSync(hookDir, { recursive: true, force: true });
});

const client = (input: string) => runClient(inst, input);

const request = (name: string) => client(calloutInput({ username: name, passphrase: "pw-irrelevant", csrPem: makeCsr(work, name).csrPem }));
const indexText = () => fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8");
const events = () => fs.readFileSync(eventLog, "utf8");

const auditRecords = (): Record<string, unknown>[] =>
  fs.readFileSync(inst.config.AUDIT_LOG, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

t.test("removal while idle suspends, requests fail fast, re-insertion asks for the PIN", async (t) => {
  const ok = await request("before");
  t.equal(ok.code, 0, ok.stderr);
  const prompts = countPrompts(inst);
  removeToken(inst.token);
  const st = await waitForState(inst, "SUSPENDED", 10_000);
  t.equal(st.token.present, false, "status shows the token absent");
  await waitFor("token-removed hook", () => (events().includes(`token-removed ${inst.token.serial}`) ? true : undefined), 10_000);
  t.match(events(), new RegExp(`^token-removed ${inst.token.serial}$`, "m"), "the notifier hook got token-removed");
  // the status file and the hook's file can be seen before the console's line (waitForLine says why)
  const suspended = await waitForLine("the console's SUSPENDED line", inst.consoleText, /SUSPENDED:/, 10_000);
  t.match(suspended, /SUSPENDED: token removed; issuing stopped, PIN forgotten$/);
  for (const svc of [{ name: "kernel", pid: st.kernelPid }, st.services.find((x) => x.name === "signer")!]) {
    const found = findInMemory(svc.pid!, Buffer.from(PIN, "latin1"));
    t.equal(found.hits, 0, `${svc.name}: no copy of the PIN left in its memory (${found.scannedMiB.toFixed(0)} MiB searched)`);
  }
  const lines = indexText().split("\n").length;
  const refused = await request("during");
  t.equal(refused.code, 1);
  t.match(refused.stderr, /^etoken-ca-client: CA token not available/, "a clear error, at once");
  t.equal(indexText().split("\n").length, lines, "nothing signed");
  reinsertToken(inst.token);
  await waitForState(inst, "NEED_PIN", 10_000);
  await waitFor("the PIN prompt again", () => (countPrompts(inst) > prompts ? true : undefined), 10_000);
  t.ok(countPrompts(inst) > prompts, "the console asks for the PIN again: it was forgotten");
  await typePin(inst, inst.token.userPin, countPrompts(inst));
  await waitForState(inst, "READY", 20_000);
  const after = await request("after");
  t.equal(after.code, 0, after.stderr);
});

t.test("a replacement token with another key is refused", async (t) => {
  const other = replaceToken(inst.token, { label: "impostor" });
  const st = await waitFor("the other token seen", () => {
    const s = readStatus(inst);
    return s && s.token.present && s.token.serial === other.serial ? s : undefined;
  }, 10_000);
  t.equal(st.state, "SUSPENDED", "the kernel stays out of READY");
  const refusedLine = await waitForLine("the console's REFUSED line", inst.consoleText, /REFUSED:/, 10_000);
  t.match(refusedLine, new RegExp(`REFUSED: token serial ${other.serial} is not the CA token \\(expected serial ${inst.token.serial}\\); insert the CA token$`));
  await waitFor("token-refused hook", () => (events().includes(`token-refused ${other.serial}`) ? true : undefined), 10_000);
  t.pass("the notifier hook got token-refused");
  await waitFor("the refusal in the audit trail", () => (auditRecords().some((x) => x.event === "token" && x.token === "refused" && x.tokenSerial === other.serial) ? true : undefined), 10_000);
  t.pass("the audit trail has the refused token");
  const refused = await request("impostor");
  t.match(refused.stderr, /CA token not available/);
  removeToken(other);
  await waitFor("the impostor gone", () => (readStatus(inst)?.token.present === false ? true : undefined), 10_000);
  reinsertToken(inst.token);
  await pinAgain(inst);
  t.equal(readStatus(inst)!.token.serial, inst.token.serial);
});

t.test("presence fence: removal between signature and release revokes and withholds", async (t) => {
  const monitorPid = readStatus(inst)!.services.find((s) => s.name === "monitor")!.pid!;
  const before = indexText().split("\n").filter(Boolean).length;
  process.kill(monitorPid, "SIGSTOP"); // the monitor cannot confirm presence until we let it
  let pending: Promise<{ code: number | null; stdout: string; stderr: string }>;
  try {
    pending = request("fenced");
    await waitFor("the signature recorded", () => (indexText().split("\n").filter(Boolean).length > before ? true : undefined), 20_000);
    removeToken(inst.token);
  } finally {
    process.kill(monitorPid, "SIGCONT");
  }
  const r = await pending;
  t.equal(r.code, 1, "the client got an error, not the certificate");
  t.match(r.stderr, /removed while the certificate was being signed/);
  t.notMatch(r.stdout, /BEGIN CERTIFICATE/);
  const line = indexText().split("\n").filter(Boolean)[before]!;
  const serial = line.split("\t")[3]!;
  t.match(line, /^R\t\d{12}Z\t\d{12}Z\t/, `the certificate is R in index.txt: ${line}`);
  await waitForState(inst, "SUSPENDED", 10_000);
  await waitFor("fence-revoked hook", () => (events().includes("fence-revoked") ? true : undefined), 10_000);
  t.pass("the operator is told");
  const crlBefore = readStatus(inst)!.crl!.number;
  reinsertToken(inst.token);
  await pinAgain(inst);
  const st = await waitFor("a new CRL after the PIN", () => {
    const s = readStatus(inst);
    return s && s.crl && s.crl.number > crlBefore ? s : undefined;
  }, 20_000);
  const text = openssl(["crl", "-in", st.crl!.path, "-noout", "-text"]).stdout;
  t.match(text, new RegExp(`Serial Number: ${serial}`), "the revoked certificate is in the next CRL");
  t.equal(readStatus(inst)!.counters.fenceRevoked, 1);
  const trail = auditRecords();
  t.ok(trail.some((x) => x.event === "issued" && x.serial === serial), "the audit trail has the signature");
  t.match(trail.find((x) => x.event === "revoked" && x.serial === serial), { by: /^the presence fence/ }, "and the fence revocation, by whom");
  t.ok(trail.some((x) => x.event === "token" && x.token === "removed"), "and the removal");
  const verify = runCommand(process.execPath, [BIN.ca, "audit", "verify", "--config", inst.configPath]);
  t.equal(verify.code, 0, verify.stdout);
});

t.test("removal while the PIN prompt is open: the prompt's line ends, the state line is a whole line", async (t) => {
  removeToken(inst.token);
  await waitForState(inst, "SUSPENDED", 10_000);
  reinsertToken(inst.token);
  await waitForState(inst, "NEED_PIN", 10_000);
  await promptShown(inst, 20_000);
  const from = inst.consoleText().lastIndexOf("PIN for CA token");
  removeToken(inst.token);
  const line = await waitForLine("the console's SUSPENDED state line", inst.consoleText, /state SUSPENDED/, 10_000, from);
  t.match(line, /^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] state SUSPENDED \| /, "a line of its own, starting with the time stamp (not after the prompt's ': ')");
  t.match(inst.consoleText().slice(from).replace(/\r/g, ""), /^PIN for CA token [^\n]*\): \n/, "the aborted prompt's line ends there");
  reinsertToken(inst.token);
  await pinAgain(inst);
});

t.test("issuing works again afterwards", async (t) => {
  const r = await request("final");
  t.equal(r.code, 0, r.stderr);
  t.ok(certField(r.stdout, "serial"));
});
