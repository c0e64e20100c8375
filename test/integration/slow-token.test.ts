// A slow and misbehaving token (issue 18, parts 1 and 4), on the eToken-like test module: a
// C_Sign that hangs must not hang the CA (the kernel kills and replaces the signer, the PIN is
// re-used, the waiting request gets a clear error), a signature that completes after the token
// was pulled still meets the presence fence, and under load the token is the only queue: arrival
// order, no signature for a client that gave up, "CA busy" at once for a request the queue
// cannot serve before its deadline, and the measured sign time in the status file; a CRL behind
// queued certificates on a slow token is timed from when the token starts it.
// No timings are asserted: order, counts, messages and status fields.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { BIN, countPrompts, createInstallation, pinAgain, readStatus, runClient, runCommand, startReady, waitFor, waitForState, type ClientResult } from "../fixtures/server.js";
import { calloutInput, makeCsr, verifyCert } from "../fixtures/pki.js";
import { simOf } from "../fixtures/etoken-sim.js";

const SIGN_TIMEOUT_S = 5;
const inst = createInstallation({
  prefix: "etca-slow",
  token: { pkcs11: "etoken-sim" },
  extraConfig: { CLIENT_TIMEOUT: "20", SIGN_TIMEOUT: `${SIGN_TIMEOUT_S}s` },
});
const sim = simOf(inst.token);
const chip = path.dirname(sim.controlPath); // the module flocks it while the token signs
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const csrPem = makeCsr(work, "shared").csrPem; // one key for the crowd: the subject differs by username
const server = await startReady(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

const indexFile = path.join(inst.config.CA_DIR, "index.txt");
const indexLines = (): string[] => fs.readFileSync(indexFile, "utf8").split("\n").filter((l) => l.length > 0);
const linesFor = (names: readonly string[]): string[] => indexLines().filter((l) => names.some((n) => l.endsWith(`/CN=${n}`)));

function issue(name: string, started?: (pid: number) => void): Promise<ClientResult> {
  return runClient(inst, calloutInput({ username: name, passphrase: "irrelevant-passphrase", csrPem }), 120_000, started);
}

/** The token is inside a C_Sign (the module holds its chip lock). */
function tokenSigning(): boolean {
  try {
    execFileSync("flock", ["-n", chip, "true"], { stdio: "ignore" });
    return false;
  } catch {
    return true;
  }
}

type LogRecord = Record<string, unknown>;
function logRecords(): LogRecord[] {
  const out: LogRecord[] = [];
  for (const line of server.logs()) {
    try {
      out.push(JSON.parse(line) as LogRecord);
    } catch {
      // not a log record
    }
  }
  return out;
}
const forwarded = (): string[] => logRecords().filter((r) => r["msg"] === "request forwarded").map((r) => String(r["username"]));
const signerOf = () => readStatus(inst)!.services.find((s) => s.name === "signer")!;

/** The status as the kernel writes it after this call (it writes within 100 ms of a change, and every 5 s). */
async function freshStatus() {
  const asked = Date.now();
  return waitFor("a status file written after now", () => {
    const st = readStatus(inst);
    return st && st.updatedAt > asked ? st : undefined;
  }, 10_000);
}

/** Sequential requests so that the measured sign time reflects the module's current setting. */
async function warmUp(prefix: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await issue(`${prefix}-${i}`);
    if (r.code !== 0) throw new Error(`warm-up request failed: ${r.stderr}`);
  }
}

t.test("a C_Sign that hangs: the signer is replaced, the request fails clearly, the PIN is re-used", async (t) => {
  sim.set({ signMs: 0, signFault: "1 hang 600" });
  const prompts = countPrompts(inst);
  const restartsBefore = signerOf().restarts;
  const pending = issue("hung");
  await waitFor("the token hanging in C_Sign", () => tokenSigning() || undefined, 20_000);
  sim.set({ signFault: undefined }); // the restarted signer's token works again
  const r = await pending;
  t.equal(r.code, 1, "the request fails");
  t.match(r.stderr, /CA token did not answer a signature within SIGN_TIMEOUT/, `a clear error: ${r.stderr.trim()}`);
  t.notMatch(r.stdout, /BEGIN CERTIFICATE/);
  const signer = await waitFor("the signer restarted", () => (signerOf().restarts > restartsBefore && signerOf().up ? signerOf() : undefined), 30_000);
  t.match(signer.lastError ?? "", /SIGN_TIMEOUT/, `status says why the signer was replaced: ${signer.lastError}`);
  // the status file can show the restart before the kernel's log line, written earlier, has been read here
  const hungEvent = (): boolean => logRecords().some((l) => l["msg"] === "event" && l["event"] === "signer-hung");
  await waitFor("the signer-hung event in the log", () => hungEvent() || undefined, 10_000).catch(() => undefined);
  t.ok(hungEvent(), "a signer-hung event went to the notifier");
  t.equal(linesFor(["hung"]).length, 0, "nothing was signed for the hung request");
  await waitForState(inst, "READY", 30_000);
  const again = await issue("after-hang");
  t.equal(again.code, 0, again.stderr);
  t.ok(verifyCert(inst.token.caCertPath, again.stdout).ok, "the replaced signer signs");
  t.equal(countPrompts(inst), prompts, "the PIN the kernel holds logged the new signer in: no prompt");
});

t.test("a C_Sign that hangs while signing a CRL: the same recovery, the next CRL is made", async (t) => {
  const crlBefore = readStatus(inst)!.crl?.number ?? 0;
  const prompts = countPrompts(inst);
  const restartsBefore = signerOf().restarts;
  const hungEvents = logRecords().filter((l) => l["msg"] === "event" && l["event"] === "signer-hung").length;
  const reLogins = logRecords().filter((l) => l["msg"] === "restarted signer logged in again").length;
  sim.set({ signMs: 0, signFault: "1 hang 600" });
  process.kill(server.pid, "SIGUSR1"); // a CRL now
  await waitFor("the token hanging in C_Sign", () => tokenSigning() || undefined, 20_000);
  sim.set({ signFault: undefined });
  const signer = await waitFor("the signer restarted", () => (signerOf().restarts > restartsBefore && signerOf().up ? signerOf() : undefined), 60_000);
  t.match(signer.lastError ?? "", /no answer to a CRL signature within [\d.]+ s \(SIGN_TIMEOUT and its size\): the token hangs/, `status says why the signer was replaced: ${signer.lastError}`);
  // the status file can show the restart before the kernel's log line, written earlier, has been read here
  const hungEvent = (): boolean => logRecords().filter((l) => l["msg"] === "event" && l["event"] === "signer-hung").length > hungEvents;
  await waitFor("the signer-hung event in the log", () => hungEvent() || undefined, 10_000).catch(() => undefined);
  t.ok(hungEvent(), "a signer-hung event went to the notifier");
  t.notOk(logRecords().some((l) => l["msg"] === "security event: service broke the protocol; killing it"), "not taken for a protocol violation (the ping)");
  await waitForState(inst, "READY", 30_000);
  await waitFor("the restarted signer logged in", () => logRecords().filter((l) => l["msg"] === "restarted signer logged in again").length > reLogins || undefined, 30_000);
  t.equal(readStatus(inst)!.crl?.number ?? 0, crlBefore, "no CRL from the hung signature");
  process.kill(server.pid, "SIGUSR1");
  await waitFor("a new CRL", () => ((readStatus(inst)!.crl?.number ?? 0) > crlBefore ? true : undefined), 30_000);
  t.equal(countPrompts(inst), prompts, "the PIN the kernel holds logged the new signer in: no prompt");
});

t.test("a signature that completes after the token was pulled is caught by the presence fence", async (t) => {
  sim.set({ signMs: 0, signFault: "1 hang 2" });
  const pending = issue("pulled");
  await waitFor("the token hanging in C_Sign", () => tokenSigning() || undefined, 20_000);
  sim.set({ present: false, signFault: undefined });
  const r = await pending;
  t.equal(r.code, 1, "the request fails");
  t.match(r.stderr, /CA token was removed while the certificate was being signed/, r.stderr.trim());
  const lines = linesFor(["pulled"]);
  t.equal(lines.length, 1, "the late signature is in the database");
  t.match(lines[0] ?? "", /^R\t/, "and revoked");
  sim.insert();
  await pinAgain(inst);
});

t.test("a client that gives up while queued is never signed", async (t) => {
  sim.set({ signMs: 1000 });
  const ahead = ["q-1", "q-2", "q-3"].map((n) => issue(n));
  await waitFor("three requests forwarded", () => (forwarded().filter((n) => n.startsWith("q-")).length === 3 ? true : undefined), 30_000);
  let pid = 0;
  const gone = issue("q-gone", (p) => (pid = p));
  await waitFor("the fourth request forwarded", () => forwarded().includes("q-gone") || undefined, 30_000);
  process.kill(pid, "SIGTERM"); // MyProxy gave up: the client leaves its .abandoned marker
  const g = await gone;
  t.not(g.code, 0, "the client that gave up has no certificate");
  const rs = await Promise.all(ahead);
  t.same(rs.map((r) => r.code), [0, 0, 0], "the others are served");
  await waitFor("the queue empty", () => (readStatus(inst)!.queueDepth === 0 ? true : undefined), 30_000);
  t.equal(linesFor(["q-gone"]).length, 0, "no signature was spent on the abandoned request");
});

t.test("more requests than the token can sign before their deadline: CA busy at once, never signed", async (t) => {
  sim.set({ signMs: 1000 });
  await warmUp("busy-warm", 2);
  const before = (await freshStatus()).signMs;
  const names = Array.from({ length: 30 }, (_, i) => `busy-${i}`);
  const results = await Promise.all(names.map((n) => issue(n)));
  const ok = results.filter((r) => r.code === 0);
  const busy = results.filter((r) => r.code !== 0 && /CA busy/.test(r.stderr));
  const other = results.filter((r) => r.code !== 0 && !/CA busy/.test(r.stderr));
  t.ok(busy.length > 0, `some requests are refused as CA busy (${busy.length})`);
  t.ok(ok.length > 0, `some are served (${ok.length})`);
  t.match(busy[0]?.stderr ?? "", /CA busy: \d+ requests? ahead/, busy[0]?.stderr.trim() ?? "no CA busy answer");
  for (const r of other) t.match(r.stderr, /expired/, `any other failure is an expiry before signing: ${r.stderr.trim()}`);
  const lines = linesFor(names);
  const valid = lines.filter((l) => l.startsWith("V\t"));
  const revoked = lines.filter((l) => l.startsWith("R\t"));
  t.equal(valid.length, ok.length, "every certificate delivered is in the database");
  const made = ok.length + revoked.length;
  const after = (await freshStatus()).signMs;
  t.equal((after?.count ?? 0) - (before?.count ?? 0), made, "signatures made = delivered + revoked as undelivered: none for refused requests");
});

t.test("40 call-outs at once on a 250 ms token: all served, in arrival order, status shows the sign time", async (t) => {
  sim.set({ signMs: 250 });
  await warmUp("load-warm", 5);
  const names = Array.from({ length: 40 }, (_, i) => `load-${i}`);
  const results = await Promise.all(names.map((n) => issue(n)));
  t.same(
    results.map((r, i) => (r.code === 0 ? 0 : `${names[i]}: ${r.stderr.trim()}`)),
    names.map(() => 0),
    "all 40 served",
  );
  // the spool's log lines reach this test through the kernel's stderr pipe, read on its own event
  // loop: the last clients' exits can be seen before every "request forwarded" line has been read
  const loadArrival = (): string[] => forwarded().filter((n) => n.startsWith("load-") && !n.startsWith("load-warm"));
  await waitFor("every load request's forwarded line", () => loadArrival().length >= names.length || undefined, 10_000).catch(() => undefined);
  const arrival = loadArrival();
  const signedOrder = linesFor(names).map((l) => l.slice(l.lastIndexOf("/CN=") + 4));
  t.same(signedOrder, arrival, "signed in the order the spool forwarded them");
  const st = await freshStatus();
  t.equal(st.queueDepth, 0, "queue empty afterwards");
  t.ok(st.signMs, "status has the measured sign time");
  t.ok(st.signMs!.count >= 45, `count covers every signature (${st.signMs!.count})`);
  t.ok(st.signMs!.p50 > 0 && st.signMs!.p50 <= st.signMs!.max, `p50 ${st.signMs!.p50} <= max ${st.signMs!.max}`);
  const shown = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.match(shown.stdout, /^queue depth: +0 requests waiting for the token or being signed$/m);
  t.match(shown.stdout, new RegExp(`^sign time: +p50 ${st.signMs!.p50} ms, max ${st.signMs!.max} ms \\(C_Sign, last \\d+ of ${st.signMs!.count} signatures\\)$`, "m"), "etoken-ca status shows the sign time");
});

