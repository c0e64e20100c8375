// Faults under load: 16 clients issue continuously while, in turn, the spool, the signer, the
// monitor, the notifier and the kernel itself are killed with SIGKILL (the kernel is then started
// again with the same configuration and the PIN typed again, as systemd + the operator would),
// and the token is pulled out and put back. After each round: every client got a certificate
// that verifies and certifies its own key, or one clear error line; every certificate handed out
// is V in index.txt with its newcerts file; no serial twice; nothing signed during a removal
// window was handed out; the CRL chain is intact. Each kill comes at a random moment of the load.
// At the end, once every client has finished: the valid certificates in index.txt are exactly the
// certificates the clients received (every one signed and not delivered, whoever died when, was
// revoked by then). Counts per round are printed.
import t, { type Test } from "tap";
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { LoadGenerator, type LoadResult } from "../fixtures/load.js";
import { openssl } from "../fixtures/pki.js";
import { reinsertToken, removeToken } from "../fixtures/softhsm.js";
import { countPrompts, createInstallation, processTree, startReady, startServer, typePin, waitFor, waitForState, type RunningServer } from "../fixtures/server.js";
import { indexRows, sleep, status, waitAlive } from "./lib.js";

const LOAD_BEFORE_MS = 4_000;
/** The kill comes up to this much later than LOAD_BEFORE_MS, at random: anywhere in a request's path. */
const KILL_JITTER_MS = 3_000;
const LOAD_AFTER_MS = 4_000;
const BACKDATE_MS = 300_000; // profile.ts: notBefore = signing time - 300 s

const inst = createInstallation({ prefix: "etca-faults", extraConfig: { MAX_LIFETIME: "12h", CLIENT_TIMEOUT: "8" } });
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
let server: RunningServer = await startReady(inst);
const caCert = new X509Certificate(fs.readFileSync(inst.token.caCertPath));
const hexSerial = (s: string): string => {
  const h = s.toUpperCase().replace(/^(00)+(?=..)/, "");
  return h.length % 2 ? `0${h}` : h;
};
const WORKERS = 16;
const load = new LoadGenerator(inst, WORKERS, work);
t.teardown(async () => {
  await load.stop().catch(() => {});
  await server.stop();
  inst.cleanup();
});

interface Window {
  from: number;
  to: number;
}
const removals: Window[] = [];
const handedOut = new Map<string, LoadResult>();
/**
 * Certificates a client read and the CA then revoked as undelivered (README, "Certificates that do
 * not reach their client"), by round. Only two windows may have them, each checked by the cause
 * the log gives for the revocation:
 * - spool: killed between publishing the result (link(2)) and writing its `delivered` report. The
 *   supervisor reads a dead service's socket to its end before handling the death, so a report
 *   the spool wrote is processed; the kernel revokes at the spool's death exactly what was
 *   returned to it and never reported.
 * - kernel: its record of the deliveries dies with it; the signer, restarted with it, revokes
 *   what its journal never saw confirmed (a report on its way through the kernel).
 * Either is bounded by the writers in flight at the kill.
 */
const revokedInReportWindow = new Map<string, string>();
const REPORT_WINDOW_CAUSE: Record<string, RegExp> = {
  spool: /^the spool stopped before it reported the certificate delivered$/,
  kernel: /^signer: certificates signed but never delivered \(a process died\)$/,
};
/** Why the running kernel's log says a serial was revoked as undelivered. */
function undeliveredCause(serial: string): string | undefined {
  for (const l of server.logs()) {
    if (!l.includes("never delivered") && !l.includes("not delivered to its client")) continue;
    let rec: { msg?: string; serial?: string; serials?: string; reason?: string };
    try {
      rec = JSON.parse(l.slice(l.indexOf("{"))) as typeof rec;
    } catch {
      continue;
    }
    if (rec.msg === "certificate not delivered to its client: revoking" && rec.serial && hexSerial(rec.serial) === serial) return rec.reason;
    if (rec.msg === "certificates signed but never delivered (a process died): revoked" && rec.serials?.split(" ").some((x) => hexSerial(x) === serial)) return `signer: ${rec.msg.replace(/: revoked$/, "")}`;
  }
  return undefined;
}
const summary: string[] = [];
let checkedUpTo = 0;

function checkCrlChain(t: Test, label: string): void {
  const dir = inst.config.CRL_DIR;
  const files = fs.readdirSync(dir).filter((f) => /^crl-\d{6}\.pem$/.test(f)).sort();
  t.ok(files.length > 0, `${label}: CRLs exist`);
  let prev = 0;
  const gaps: string[] = [];
  for (const f of files) {
    const n = Number(f.slice(4, 10));
    const v = openssl(["crl", "-in", path.join(dir, f), "-CAfile", inst.token.caCertPath, "-noout", "-verify", "-crlnumber"]);
    t.match(v.stderr + v.stdout, /verify OK/, `${label}: ${f} verifies with the CA certificate`);
    const inFile = /crlNumber=(?:0x)?([0-9A-F]+)/i.exec(v.stdout);
    t.equal(inFile ? parseInt(inFile[1]!, 16) : -1, n, `${label}: ${f} carries CRL number ${n}`);
    if (prev && n !== prev + 1) gaps.push(`${prev}->${n}`);
    prev = n;
  }
  t.same(gaps, [], `${label}: CRL numbers without gaps (${files.length} CRLs)`);
  const latest = fs.readlinkSync(path.join(dir, "crl.pem"));
  t.equal(latest, files[files.length - 1], `${label}: crl.pem points at the newest CRL`);
  const text = openssl(["crl", "-in", path.join(dir, "crl.pem"), "-noout", "-text"]).stdout.toUpperCase();
  const revoked = indexRows(inst).filter((r) => r.status === "R").map((r) => r.serial);
  const missing = revoked.filter((s) => !text.includes(s));
  t.same(missing, [], `${label}: the newest CRL lists every revoked serial (${revoked.length})`);
}

/** Checks every client that finished since the last check; returns the counts. */
function checkClients(t: Test, label: string, upTo: number): { ok: number; errors: number; bad: number; errorKinds: Record<string, number> } {
  const rows = indexRows(inst);
  const byserial = new Map<string, number>();
  for (const r of rows) byserial.set(r.serial, (byserial.get(r.serial) ?? 0) + 1);
  const dup = [...byserial].filter(([, n]) => n > 1).map(([s]) => s);
  t.same(dup, [], `${label}: no serial twice in index.txt (${rows.length} entries)`);
  const status = new Map(rows.map((r) => [r.serial, r.status]));
  const now = load.results.filter((r) => r.endedAt > checkedUpTo && r.endedAt <= upTo);
  checkedUpTo = upTo;
  let ok = 0;
  let errors = 0;
  let bad = 0;
  const errorKinds: Record<string, number> = {};
  const pems: string[] = [];
  for (const r of now) {
    if (r.code === 0) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(r.stdout);
      } catch (err) {
        bad++;
        t.fail(`${label}: ${r.username}: unreadable certificate: ${String(err)}`);
        continue;
      }
      const serial = hexSerial(cert.serialNumber);
      const problems: string[] = [];
      if (cert.publicKey.export({ type: "spki", format: "pem" }).toString() !== load.workers[r.worker]!.publicKey) problems.push("certifies another key");
      if (!cert.subject.split("\n").includes(`CN=${r.username}`)) problems.push(`subject ${cert.subject.replace(/\n/g, ",")}`);
      if (handedOut.has(serial)) problems.push(`serial ${serial} handed out twice`);
      const cause = status.get(serial) === "R" && REPORT_WINDOW_CAUSE[label] ? undeliveredCause(serial) : undefined;
      if (cause !== undefined && REPORT_WINDOW_CAUSE[label]!.test(cause)) revokedInReportWindow.set(serial, label);
      else if (status.get(serial) === "R") problems.push(`revoked (${cause ?? "no undelivered revocation logged"}), though its client received it`);
      else if (status.get(serial) !== "V") problems.push(`index.txt status ${status.get(serial) ?? "missing"}`);
      if (!fs.existsSync(path.join(inst.config.CA_DIR, "newcerts", `${serial}.pem`))) problems.push("no newcerts file");
      const signed = Date.parse(cert.validFrom) + BACKDATE_MS; // whole second, <= the signing time
      for (const w of removals) if (signed >= Math.ceil(w.from / 1000) * 1000 && signed + 1000 <= w.to) problems.push(`signed in ${new Date(signed).toISOString()}+1s, inside the removal window ${new Date(w.from).toISOString()}..${new Date(w.to).toISOString()}`);
      if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) problems.push("signature does not verify with the CA certificate");
      handedOut.set(serial, r);
      pems.push(r.stdout);
      if (problems.length) {
        bad++;
        t.fail(`${label}: ${r.username} (${serial}): ${problems.join("; ")}`);
      } else ok++;
    } else if (r.code === 1 && /^etoken-ca-client: [^\n]{5,400}\n$/.test(r.stderr) && r.stdout === "") {
      errors++;
      const kind = r.stderr.replace(/^etoken-ca-client: /, "").replace(/[0-9A-F]{8,}|\d+(\.\d+)? s\b/g, "#").slice(0, 70).trim();
      errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
    } else {
      bad++;
      t.fail(`${label}: ${r.username}: neither a certificate nor one clear error line: code ${r.code} signal ${r.signal} stderr ${JSON.stringify(r.stderr.slice(0, 300))}`);
    }
  }
  if (pems.length > 0) {
    // one openssl run for the whole round: -x509_strict and the client purpose
    const file = path.join(work, `round-${label}.pem`);
    const files = pems.map((p, i) => {
      const f = `${file}.${i}`;
      fs.writeFileSync(f, p);
      return f;
    });
    const v = openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", inst.token.caCertPath, ...files]);
    t.equal(v.stdout.split("\n").filter((l) => l.endsWith(": OK")).length, pems.length, `${label}: openssl verify -x509_strict accepts all ${pems.length} certificates ${v.stderr}`);
    for (const f of files) fs.rmSync(f, { force: true });
  }
  return { ok, errors, bad, errorKinds };
}

async function bringBack(t: Test, label: string): Promise<number> {
  const t0 = Date.now();
  await waitForState(inst, "READY", 60_000);
  const alive = await waitAlive(inst, 60_000);
  t.ok(alive, `${label}: kernel and all services up again`);
  return Date.now() - t0;
}

async function makeCrl(t: Test, label: string): Promise<void> {
  const before = status(inst).crl?.number ?? 0;
  process.kill(server.pid, "SIGUSR1");
  await waitFor(`${label}: a new CRL`, () => (status(inst).crl?.number ?? 0) > before || undefined, 30_000).catch(() => t.fail(`${label}: no new CRL after SIGUSR1`));
}

// the kernel first: its counters then cover every other fault
const FAULTS = ["kernel", "spool", "signer", "monitor", "notifier", "token"] as const;
/** When the restarted kernel was READY: every certificate received after that was counted by it. */
let kernelReadyAt = 0;
const killsOf = (fault: (typeof FAULTS)[number]): number => (fault === "spool" || fault === "signer" ? 5 : 1);
let survived = 0;

t.test("faults under load", async (t) => {
  load.start();
  await makeCrl(t, "start");
  for (const fault of FAULTS) {
    await t.test(`round: ${fault === "token" ? "token removed and re-inserted" : `kill -9 ${fault}${killsOf(fault) > 1 ? ` (${killsOf(fault)} times)` : ""}`}`, async (t) => {
      await sleep(LOAD_BEFORE_MS + Math.floor(Math.random() * KILL_JITTER_MS));
      const s = status(inst);
      const at = Date.now();
      if (fault === "kernel") {
        const tree = processTree(server.pid);
        const nth = countPrompts(inst) + 1;
        process.kill(server.pid, "SIGKILL");
        await server.exited;
        await waitFor("every child of the dead kernel gone", () => tree.every((p) => !fs.existsSync(`/proc/${p}`)) || undefined, 15_000).catch(() =>
          t.fail(`children of the killed kernel still running: ${tree.filter((p) => fs.existsSync(`/proc/${p}`)).join(" ")}`),
        );
        server = startServer(inst); // "systemd" restarts it with the same configuration
        await typePin(inst, inst.token.userPin, nth);
      } else if (fault === "token") {
        removeToken(inst.token);
        await waitForState(inst, "SUSPENDED", 20_000);
        await sleep(1500);
        const nth = countPrompts(inst) + 1;
        reinsertToken(inst.token);
        await waitForState(inst, "NEED_PIN", 20_000);
        await typePin(inst, inst.token.userPin, nth);
      } else {
        // the services on the issuing path are killed several times: each kill lands at a random
        // point of the requests in flight (taken, at the signer, signed, returned, being published)
        for (let k = 0; k < killsOf(fault); k++) {
          if (k > 0) await sleep(300 + Math.floor(Math.random() * 1200));
          const svc = status(inst).services.find((x) => x.name === fault)!;
          process.kill(svc.pid!, "SIGKILL");
          await waitFor(`${fault} restarted`, () => {
            const n = status(inst).services.find((x) => x.name === fault)!;
            return (n.up && n.pid !== svc.pid) || undefined;
          }, 30_000);
        }
      }
      const recovery = await bringBack(t, fault);
      if (fault === "token") removals.push({ from: at, to: status(inst).stateSince }); // READY again since
      if (fault === "kernel") {
        t.not(status(inst).kernelPid, s.kernelPid, "a new kernel runs");
        kernelReadyAt = status(inst).stateSince;
      }
      // stays up: a restarted service must not be killed again by its own first messages
      await sleep(LOAD_AFTER_MS);
      const after = status(inst);
      const restartedAgain = after.services.filter((x) => {
        const b = s.services.find((y) => y.name === x.name)!;
        return fault === "kernel" ? x.restarts > 0 : x.restarts > b.restarts + (x.name === fault ? killsOf(fault) : 0);
      });
      t.same(restartedAgain.map((x) => `${x.name}: ${x.lastError}`), [], `${fault}: no service restarted beyond the one killed`);
      t.equal(after.state, "READY", `${fault}: READY after the round`);
      await makeCrl(t, fault);
      checkCrlChain(t, fault);
      const c = checkClients(t, fault, Date.now());
      if (c.bad === 0 && after.state === "READY" && restartedAgain.length === 0) survived++;
      const kinds = Object.entries(c.errorKinds).map(([k, v]) => `${v}x "${k}"`).join("; ");
      const line = `ROUND ${fault.padEnd(8)} recovered in ${recovery} ms: ${c.ok} certificates ok, ${c.errors} clear errors, ${c.bad} bad; fence-revoked ${after.counters.fenceRevoked}, undelivered ${after.counters.undelivered}, ${indexRows(inst).filter((r) => r.status === "V" && !handedOut.has(r.serial)).length} valid in index.txt and not (yet) received${kinds ? `; errors: ${kinds}` : ""}`;
      summary.push(line);
      t.comment(line);
      t.ok(c.ok > 0, `${fault}: certificates were issued in this round (${c.ok})`);
      t.equal(c.bad, 0, `${fault}: every client got a certificate or a clear error`);
      const internal = Object.keys(c.errorKinds).filter((k) => /internal error/.test(k));
      t.same(internal, [], `${fault}: no client is told "internal error": each fault has its own message`);
    });
  }
  await load.stop();
  const last = checkClients(t, "drain", Date.now());
  summary.push(`DRAIN: ${last.ok} certificates ok, ${last.errors} clear errors, ${last.bad} bad`);
  t.equal(last.bad, 0, "clients still running at the end also got a certificate or a clear error");
  checkCrlChain(t, "end");
  // every client has finished; what the CA still owes (an undelivered report in flight) settles at once
  const validNotReceived = (): string[] => indexRows(inst).filter((r) => r.status === "V" && !handedOut.has(r.serial)).map((r) => r.serial);
  await waitFor("every certificate not received revoked", () => validNotReceived().length === 0 || undefined, 15_000).catch(() => undefined);
  const rows = indexRows(inst);
  const orphans = validNotReceived().length;
  const validSerials = rows.filter((r) => r.status === "V").map((r) => r.serial).sort();
  t.same(validNotReceived(), [], "every certificate signed and not received by its client is revoked");
  t.same(validSerials, [...handedOut.keys()].filter((s) => !revokedInReportWindow.has(s)).sort(), "index.txt's valid certificates are exactly the certificates the clients received (less those revoked in a killed spool's or kernel's report window)");
  for (const round of Object.keys(REPORT_WINDOW_CAUSE)) {
    const n = [...revokedInReportWindow.values()].filter((r) => r === round).length;
    t.ok(n <= WORKERS, `${round} round: ${n} certificates read by a client and revoked because the ${round} died before their delivery report was recorded, at most the writers in flight`);
    summary.push(`REPORT WINDOW ${round}: ${n} certificates read by their client and revoked (${round} killed before the delivery report was recorded)`);
  }
  // a certificate revoked in a report window never counts as issued: the kernel had no delivery report
  const receivedSinceRestart = [...handedOut].filter(([serial, r]) => r.endedAt >= kernelReadyAt && !revokedInReportWindow.has(serial)).length;
  await waitFor("the status file's counters", () => status(inst).counters.issued === receivedSinceRestart || undefined, 5_000).catch(() => undefined);
  t.equal(status(inst).counters.issued, receivedSinceRestart, "status counts as issued exactly the certificates clients received (since the kernel's restart), less those revoked in a report window");
  const total = load.results.length;
  summary.push(
    `FAULTS: ${survived}/${FAULTS.length} survived; ${total} client runs, ${handedOut.size} certificates handed out (all V, distinct), ` +
      `${rows.filter((r) => r.status === "R").length} revoked (fence/undelivered), ${orphans} signed but never handed out nor revoked`,
  );
  for (const l of summary) t.comment(l);
  t.equal(survived, FAULTS.length, "every fault survived");
});
