// The real signer (its user, a SoftHSM2 token, the CA database) with the test playing the kernel,
// which forwards whatever a compromised spool sends: the signer checks proof of possession itself
// (issue 14, item 6), and revokes at its next start every certificate signed and never confirmed
// delivered, except what the kernel still has in flight (item 5).
import t from "tap";
import { randomBytes, createPrivateKey, createPublicKey } from "node:crypto";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { RemoteFailure } from "../../services/common/channel.js";
import { prepareDirectories } from "../../services/common/directories.js";
import { spawnService, type FakeKernel } from "../fixtures/fake-kernel.js";
import { makeCsr, mustOpenssl } from "../fixtures/pki.js";
import { createInstallation, waitFor } from "../fixtures/server.js";
import { caKeyPemOf } from "../fixtures/softhsm.js";

const inst = createInstallation({ prefix: "etca-signer-delivery" });
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o700 });
const u = inst.users;
prepareDirectories(inst.config, { signer: u.SIGNER_USER, spool: u.SPOOL_USER, monitor: u.MONITOR_USER, notifier: u.NOTIFIER_USER, client: u.CLIENT_USER });
const indexFile = path.join(inst.config.CA_DIR, "index.txt");
let signer: FakeKernel | undefined;
/** signed in the first test and never confirmed delivered */
let signedFirst = "";
t.teardown(async () => {
  signer?.kill();
  await signer?.exited;
  inst.cleanup();
});

const der = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
const spkiOf = (csrPem: string): Buffer => createPublicKey(mustOpenssl(["req", "-noout", "-pubkey"], csrPem)).export({ type: "spki", format: "der" });
const indexLines = (): string[] => (fs.existsSync(indexFile) ? fs.readFileSync(indexFile, "utf8").split("\n").filter(Boolean) : []);

async function startSigner(): Promise<FakeKernel> {
  const k = spawnService("signer", u.SIGNER_USER, inst.config, { env: inst.token.env });
  await k.next("hello");
  return k;
}

async function login(k: FakeKernel): Promise<void> {
  const pin = Buffer.from(inst.token.userPin);
  const r = await k.channel.request("login", { pin, expectedSerial: inst.token.serial }, "loginResult", 30_000, { secret: true });
  if (!r.message.ok) throw new Error(`login failed: ${r.message.message}`);
}

let n = 0;
/** An IssueRequest as the kernel forwards it from the spool. */
function issueRequest(csr: Buffer, publicKey: Buffer) {
  const requestId = `req.${randomBytes(8).toString("hex").slice(0, 12)}${++n}`;
  return { requestId, username: `user${n}`, proxyLifetime: 3600, maxCertLifetime: 0, publicKey, csr, deadline: Date.now() + 30_000, clientUid: u.CLIENT_USER.uid, fenceEpoch: 1 };
}

async function issue(k: FakeKernel, csr: Buffer, publicKey: Buffer): Promise<{ serial?: string; failure?: RemoteFailure }> {
  try {
    const r = await k.channel.request("issueRequest", issueRequest(csr, publicKey), "issued", 30_000);
    return { serial: r.message.serial };
  } catch (err) {
    if (err instanceof RemoteFailure) return { failure: err };
    throw err;
  }
}

const good = makeCsr(work, "good");
const other = makeCsr(work, "other");

t.test("proof of possession: the signer itself refuses what a compromised spool may forward", async (t) => {
  signer = await startSigner();
  await login(signer);
  const caSpki = createPublicKey(fs.readFileSync(inst.token.caCertPath)).export({ type: "spki", format: "der" });
  // a CSR correctly self-signed by the CA's own key (the attacker would need the key; the check stands on its own)
  const caKeyFile = path.join(work, "ca.key");
  fs.writeFileSync(caKeyFile, createPrivateKey(caKeyPemOf(inst.token)).export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  const caCsr = der(mustOpenssl(["req", "-new", "-key", caKeyFile, "-subj", "/CN=NULL SUBJECT NAME ENTRY"]));
  fs.rmSync(caKeyFile);
  const goodCsr = der(good.csrPem);
  const badSignature = Buffer.from(goodCsr);
  badSignature[badSignature.length - 10]! ^= 0x01; // last bytes: the signature's
  const before = indexLines();
  const cases: [string, Buffer, Buffer, RegExp][] = [
    ["the CA's public key with another key's CSR", goodCsr, caSpki, /request\.csr_mismatch/],
    ["a CSR self-signed by the CA's key", caCsr, caSpki, /request\.ca_key/],
    ["another key than the CSR's", goodCsr, spkiOf(other.csrPem), /request\.csr_mismatch/],
    ["a CSR whose signature does not verify", badSignature, spkiOf(good.csrPem), /request\.bad_csr_signature/],
    ["no CSR at all", Buffer.alloc(0), spkiOf(good.csrPem), /request\.no_csr/],
  ];
  for (const [what, csr, key, code] of cases) {
    const r = await issue(signer, csr, key);
    t.equal(r.serial, undefined, `${what}: nothing signed`);
    t.match(r.failure?.code ?? "", code, `${what}: refused (${r.failure?.message})`);
  }
  t.same(indexLines(), before, "index.txt unchanged by the refused requests");
  t.same(fs.readdirSync(path.join(inst.config.CA_DIR, "newcerts")), [], "no certificate file written");
  const ok = await issue(signer, goodCsr, spkiOf(good.csrPem));
  t.match(ok.serial ?? "", /^[0-9A-F]+$/, `the same signer signs a request with its proof of possession (${ok.failure?.message ?? "ok"})`);
  signedFirst = ok.serial ?? "";
});

t.test("signed, never confirmed delivered: revoked at the signer's next start unless still in flight", async (t) => {
  const csr = der(good.csrPem);
  const key = spkiOf(good.csrPem);
  const signed = async (): Promise<string> => (await issue(signer!, csr, key)).serial!;
  const delivered = await signed();
  const inFlight = await signed();
  // no answer: the next Issued says how far the journal has the batches
  signer!.channel.send("confirmDelivery", { serials: [delivered], batch: 1 });
  const next = await signer!.channel.request("issueRequest", issueRequest(csr, key), "issued", 30_000);
  t.equal(next.message.confirmedThrough, 1, "the next Issued: batch 1 is in the journal");
  const lost = next.message.serial;
  signer!.kill();
  await signer!.exited;
  signer = await startSigner();
  const r = await signer.channel.request("settleUndelivered", { inFlight: [inFlight] }, "undeliveredRevoked", 10_000);
  t.same([...r.message.serials].sort(), [lost, signedFirst].sort(), "only the certificates nobody received and nobody holds are revoked (this one, and the first test's)");
  t.equal(r.message.reason, "cessationOfOperation", "with UNDELIVERED_REVOKE_REASON");
  const status = (serial: string): string => indexLines().find((l) => l.split("\t")[3] === serial)?.split("\t").slice(0, 3).join(" ") ?? "missing";
  t.match(status(lost), /^R \d{12}Z \d{12}Z,cessationOfOperation$/, "index.txt: revoked with the configured reason");
  t.match(status(delivered), /^V /, "the delivered one stays valid");
  t.match(status(inFlight), /^V /, "the one in flight stays valid (the kernel decides)");
  // the kernel then confirms it; the next start revokes nothing
  signer.channel.send("confirmDelivery", { serials: [inFlight], batch: 2 });
  const journal = path.join(inst.config.CA_DIR, "delivery.journal");
  while (!fs.readFileSync(journal, "utf8").includes(`D ${inFlight}\n`)) await new Promise((r) => setTimeout(r, 20));
  signer.kill();
  await signer.exited;
  signer = await startSigner();
  const again = await signer.channel.request("settleUndelivered", { inFlight: [] }, "undeliveredRevoked", 10_000);
  t.same(again.message.serials, [], "nothing left to settle");
  t.match(status(inFlight), /^V /);
});

t.test("the audit trail: who revoked (RevokeEntry.origin) and the kernel's token events; anything else is refused", async (t) => {
  const trail = (): Record<string, unknown>[] => fs.readFileSync(inst.config.AUDIT_LOG, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const serial = indexLines().map((l) => l.split("\t")).find((f) => f[0] === "V")![3]!;
  const revoke = (origin: string) =>
    signer!.channel.request("revoke", { entries: [{ queueFile: "", serial, reason: "keyCompromise", queuedAt: Date.now(), origin }] }, "revokeResults", 10_000);
  const bad = revoke("somebody").catch((err: unknown) => err);
  t.not(await signer!.exited, 0, "an origin the contract does not know is a broken kernel: the signer stops");
  await bad;
  t.notOk(trail().some((x) => x.event === "revoked" && x.serial === serial), "and revokes nothing");
  signer = await startSigner();
  const good = await revoke("presence-fence");
  t.match(good.message.results[0], { applied: true });
  t.match(trail().find((x) => x.event === "revoked" && x.serial === serial), { reason: "keyCompromise", by: /^the presence fence/ });
  signer!.channel.send("tokenAudit", { event: "removed", serial: "0123abcd", label: "CA token", detail: "C_GetTokenInfo: CKR_TOKEN_NOT_PRESENT" });
  await signer!.channel.request("getSignerStatus", {}, "signerStatus", 10_000); // answered after the note: frames are handled in order
  t.match(trail().at(-1), { event: "token", token: "removed", tokenSerial: "0123abcd", detail: /CKR_TOKEN_NOT_PRESENT/ });
  signer!.channel.send("tokenAudit", { event: "exploded", serial: "", label: "", detail: "" });
  t.not(await signer!.exited, 0, "a TokenAudit with an unknown event breaks the contract: the signer stops");
  t.notOk(trail().some((x) => x.token === "exploded"));
  signer = await startSigner();
  const journal = fs.readFileSync(path.join(inst.config.CA_DIR, "delivery.journal"), "utf8");
  signer.channel.send("confirmDelivery", { serials: [serial], batch: 0 });
  t.not(await signer.exited, 0, "a ConfirmDelivery without its batch number breaks the contract: the signer stops");
  t.equal(fs.readFileSync(path.join(inst.config.CA_DIR, "delivery.journal"), "utf8"), journal, "and records nothing");
  signer = await startSigner();
});

// The kernel's watchdog (services/kernel/sign-queue.ts) restarts its clock on every report that
// the token finished something, and those reports must leave in the order the token did the
// work. A MakeCrl and an IssueRequest read together (the kernel sends the next certificate as
// soon as the one before the CRL is signed; a signer that comes back to its socket late reads
// both at once): the CRL is signed first, but its answer waited behind the certificate's
// synchronous C_Sign, so the kernel saw the token finish nothing for two signatures and, on a
// slow token, called the CRL hung (the slow-token CI failures of session 8). The signer now
// reports the CRL's signature at once (Signed with crl set), before it takes the next frame.
t.test("a CRL and a certificate read at once: the CRL's signature is reported before the certificate's", async (t) => {
  await login(signer!);
  const csr = der(good.csrPem);
  const key = spkiOf(good.csrPem);
  signer!.drain();
  // post() holds the frames of this turn: the two requests leave with it in one write
  signer!.channel.post("tokenAudit", { event: "inserted", serial: inst.token.serial, label: "", detail: "two requests in one write follow" });
  const crl = signer!.channel.request("makeCrl", { reason: "test: read with a certificate" }, "crlInfo", 30_000);
  const cert = signer!.channel.request("issueRequest", issueRequest(csr, key), "issued", 30_000);
  const [crlInfo, issued] = await Promise.all([crl, cert]);
  const certSigned = await signer!.next("signed", (f) => f.message.requestId === issued.message.requestId);
  const crlSigned = signer!.frames.find((f) => f.type === "signed" && (f.message as { crl?: boolean }).crl === true);
  // the first word that the token finished the CRL: its Signed, or else its answer
  const crlReported = Math.min(crlSigned?.id ?? Number.POSITIVE_INFINITY, crlInfo.id);
  t.ok(crlReported < certSigned.id, `the CRL's signature (frame ${crlReported}) is reported before the certificate's (frame ${certSigned.id})`);
  t.ok(crlSigned, "by a Signed for the CRL, which leaves at once (its answer waits for the CRL's files)");
  t.ok(crlSigned === undefined || crlSigned.id < crlInfo.id, "the Signed comes before the CRL's answer");
});

// A confirmation the journal cannot take (the disk refuses the append): the signer must not say
// it recorded it (the kernel keeps that delivery in flight), and must record it with the next
// confirmation once the disk takes writes again, without losing or duplicating a line. The fault
// is the real file system's: the journal made immutable (chattr +i), so the append and the
// rewrite after it both fail (EPERM), as on a disk that refuses writes.
t.test("a delivery-journal write that fails: not claimed, written with the next confirmation", async (t) => {
  const journal = path.join(inst.config.CA_DIR, "delivery.journal");
  signer!.kill();
  await signer!.exited;
  const k = spawnService("signer", u.SIGNER_USER, inst.config, { env: inst.token.env, captureStderr: true });
  signer = k;
  await k.next("hello");
  await k.channel.request("settleUndelivered", { inFlight: [] }, "undeliveredRevoked", 10_000);
  await login(k);
  const csr = der(good.csrPem);
  const key = spkiOf(good.csrPem);
  const issueOne = () => k.channel.request("issueRequest", issueRequest(csr, key), "issued", 30_000);
  const lines = (): string[] => fs.readFileSync(journal, "utf8").split("\n").filter(Boolean);
  const a = (await issueOne()).message.serial;
  const b = await issueOne();
  t.equal(b.message.confirmedThrough, 0, "nothing confirmed to this signer yet");
  execFileSync("chattr", ["+i", journal]);
  let immutable = true;
  t.teardown(() => {
    if (immutable) execFileSync("chattr", ["-i", journal]);
  });
  k.channel.send("confirmDelivery", { serials: [a], batch: 1 });
  await waitFor("the signer's error", () => /cannot record delivered certificates/.test(k.stderr) || undefined, 10_000);
  t.match(k.stderr, /delivery\.journal: cannot append to the delivery journal: EPERM/, "the error names the journal and why");
  const c = await issueOne();
  t.equal(c.message.confirmedThrough, 0, "the next Issued does not claim the batch the journal refused");
  t.notOk(lines().includes(`D ${a}`), "and the journal does not have it");
  execFileSync("chattr", ["-i", journal]);
  immutable = false;
  k.channel.send("confirmDelivery", { serials: [b.message.serial], batch: 2 });
  const d = await issueOne();
  t.notMatch(k.stderr, /must be of type number/, "no error about a missing descriptor");
  t.equal(d.message.confirmedThrough, 2, "with the next confirmation both batches are written and claimed");
  t.same(lines().filter((l) => l === `D ${a}` || l === `D ${b.message.serial}`).sort(), [`D ${a}`, `D ${b.message.serial}`].sort(), "each delivery once in the journal");
  t.ok(lines().every((l) => /^(from \d+|D [0-9A-F]+)$/.test(l)), "no torn line");
  t.same(fs.readdirSync(inst.config.CA_DIR).filter((n) => n.includes("delivery.journal")), ["delivery.journal"], "no temporary file left by the failed rewrite");
  // a new signer settles: only the two never confirmed are revoked
  k.kill();
  await k.exited;
  signer = await startSigner();
  const settled = await signer.channel.request("settleUndelivered", { inFlight: [] }, "undeliveredRevoked", 10_000);
  t.same([...settled.message.serials].sort(), [c.message.serial, d.message.serial].sort(), "the delivered ones stay valid; the two never confirmed are revoked");
});
