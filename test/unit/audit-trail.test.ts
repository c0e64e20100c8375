// The audit trail: the signer's writer (audit-log.ts), CRLs that carry its head, and the verifier
// (etoken-ca audit verify) finding every kind of tampering; relying parties still accept the CRLs.
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { AuditLog } from "../../services/signer/audit-log.js";
import { CaDatabase } from "../../services/signer/cadb.js";
import { CrlPublisher } from "../../services/signer/crl-publisher.js";
import { assembleCertificate, loadCaCertificate } from "../../services/common/x509/certificate.js";
import { CertificateTemplate } from "../../services/signer/profile.js";
import { buildSubject, compileDnFormat } from "../../services/common/x509/dn.js";
import { pemEncode } from "../../services/common/x509/pem.js";
import { assembleCrl, buildTbsCrl } from "../../services/signer/crl.js";
import { AUDIT_CHECKPOINT_OID, AUDIT_CHECKPOINT_UUID, checkpointExtension, readCrl } from "../../services/common/audit/checkpoint.js";
import { crossCheck, readTrailFacts } from "../../services/common/audit/cross-check.js";
import { GENESIS, formatLine, lineHash, parseLine, readTrail, trailFiles, type ChainHead } from "../../services/common/audit/trail.js";
import { verifyTrail, type VerifyReport } from "../../services/common/audit/verify.js";
import { crlConfig } from "../../services/signer/openssl-backend.js";
import { buildTrustFiles, writeTrustFiles } from "../../services/operator/trust-files.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-audit-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const p = (...f: string[]): string => path.join(dir, ...f);
const openssl = (...args: string[]): string => execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
const status = (cmd: string, args: string[], env?: NodeJS.ProcessEnv): { status: number | null; out: string } => {
  const r = spawnSync(cmd, args, { cwd: dir, encoding: "utf8", env });
  return { status: r.status, out: r.stdout + r.stderr };
};

openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30",
  "-subj", "/DC=org/DC=example/CN=Audit Test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("other.key"), "-out", p("other.pem"), "-days", "30", "-subj", "/DC=org/DC=example/CN=Audit Test CA");
const caKey = crypto.createPrivateKey(fs.readFileSync(p("ca.key")));
const otherKey = crypto.createPrivateKey(fs.readFileSync(p("other.key")));
const ca = loadCaCertificate(fs.readFileSync(p("ca.pem")), "ca.pem");
const profile = new CertificateTemplate({ caCert: ca, policies: [], crlUrls: [] });
const DN = compileDnFormat("/DC=org/DC=example/CN=%s");
const userKeys = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const userSpki = userKeys.publicKey.export({ format: "der", type: "spki" });
fs.writeFileSync(p("user.key"), userKeys.privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });

const RULES = { rotateBytes: Number.POSITIVE_INFINITY };

/** A CA directory, a CRL directory and a trail, written the way the signer writes them. */
function setup(name: string, rotateBytes = RULES.rotateBytes) {
  const base = p(name);
  fs.mkdirSync(base);
  const db = CaDatabase.open(path.join(base, "ca"), { create: true });
  const crlDir = path.join(base, "crl");
  fs.mkdirSync(crlDir);
  const crls = new CrlPublisher(crlDir, ca);
  const logPath = path.join(base, "log", "audit.log");
  fs.mkdirSync(path.dirname(logPath));
  const audit = AuditLog.open(logPath, { rotateBytes });
  if (audit.isNew) audit.append("trail-begin", { indexLines: db.size }, { sync: true });
  const issue = (user: string): string => {
    const serial = db.newSerial();
    const now = new Date();
    const notAfter = new Date(now.getTime() + 3600_000);
    const subject = buildSubject(DN, user);
    const tbs = profile.tbs({ serial, subjectDer: subject.der, publicKey: userSpki, emails: [], notBefore: now, notAfter });
    const cert = assembleCertificate(tbs, crypto.sign("sha256", tbs, caKey));
    const e = db.record({ serial, notAfter, subject: subject.slash, certificate: cert });
    audit.append("issued", { serial: e.serialHex, subject: subject.slash, lifetime: 3600, keySha256: crypto.createHash("sha256").update(userSpki).digest("hex") });
    fs.writeFileSync(path.join(base, `${user}.pem`), pemEncode(cert, "CERTIFICATE"));
    return e.serialHex;
  };
  const revoke = (serial: string): void => {
    db.revoke([{ serialHex: serial, reason: "keyCompromise", revokedAt: new Date() }]);
    audit.append("revoked", { serial, reason: "keyCompromise", by: "revoke-cert (revoke queue entry): rev.1.test" }, { sync: true });
  };
  const crl = (): { number: number; file: string; head: ChainHead } => {
    const head = audit.checkpoint();
    const info = crls.publish(db, 86400_000, (tbs) => crypto.sign("sha256", tbs, caKey), head);
    audit.append("crl", { number: info.number, entries: info.entries, checkpoint: head }, { sync: true });
    return { number: info.number, file: info.path, head };
  };
  const verify = (o: { from?: number; logPath?: string; crlFiles?: string[] } = {}): VerifyReport =>
    verifyTrail({ logPath: o.logPath ?? logPath, crlDirs: [crlDir], crlFiles: o.crlFiles, caKey: ca.publicKey, from: o.from });
  return { base, db, crlDir, logPath, audit, issue, revoke, crl, verify };
}

const lines = (file: string): string[] => fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "");
const writeLines = (file: string, l: string[]): void => fs.writeFileSync(file, l.map((x) => `${x}\n`).join(""));

t.test("the OID is the documented 2.25 arc of the UUID", async (t) => {
  t.equal(AUDIT_CHECKPOINT_OID, `2.25.${BigInt(`0x${AUDIT_CHECKPOINT_UUID.replace(/-/g, "")}`)}`);
  t.equal(AUDIT_CHECKPOINT_OID, "2.25.322458238101142744022614818992570561992");
});

t.test("a whole trail verifies; every CRL commits to the head at the time it was signed", async (t) => {
  const s = setup("whole");
  const alice = s.issue("alice");
  s.issue("bob");
  const c1 = s.crl();
  s.revoke(alice);
  const c2 = s.crl();
  s.issue("carol");
  const r = s.verify();
  t.same(r.problems, [], "no problems");
  t.ok(r.chainIntact);
  t.equal(r.first, 1);
  t.equal(r.last, 7, "trail-begin, 2 issued, crl, revoked, crl, issued");
  t.equal(r.checkpoints.length, 2, "both CRLs checked");
  t.same(r.checkpoints.map((c) => c.checkpoint.seq).sort(), [c1.head.seq, c2.head.seq].sort());
  t.match(r.notes.join("\n"), /lines 6\.\.7 are not yet committed by a CRL/);
  // the CRL's checkpoint is the SHA-256 of the line it names
  const l = lines(s.logPath);
  t.equal(c2.head.hash, lineHash(l[c2.head.seq - 1]!), "head = SHA-256 of that line");
  t.equal(c1.head.seq, 3, "CRL #1 was signed after line 3");
  // every line chains to the one before it
  let prev = GENESIS;
  for (const text of l) {
    const rec = parseLine(text);
    if (typeof rec === "string") throw new Error(rec);
    t.equal(rec.prev, prev);
    prev = lineHash(text);
  }
});

t.test("relying parties accept the CRL: openssl crl -verify, openssl verify -crl_check, Globus", async (t) => {
  const s = setup("relying");
  const alice = s.issue("alice");
  s.issue("bob");
  s.revoke(alice);
  const c = s.crl();
  const pem = c.file.replace(/\.der$/, ".pem");
  const v = status("openssl", ["crl", "-in", pem, "-noout", "-verify", "-CAfile", p("ca.pem")]);
  t.equal(v.status, 0, v.out);
  t.match(v.out, /verify OK/);
  const text = openssl("crl", "-in", pem, "-noout", "-text");
  t.match(text, new RegExp(`${AUDIT_CHECKPOINT_OID.replace(/\./g, "\\.")}:\\s*\\n`), "the checkpoint extension is there, not marked critical");
  t.notMatch(text, new RegExp(`${AUDIT_CHECKPOINT_OID.replace(/\./g, "\\.")}: critical`));
  const good = status("openssl", ["verify", "-crl_check", "-CAfile", p("ca.pem"), "-CRLfile", pem, path.join(s.base, "bob.pem")]);
  t.equal(good.status, 0, `a valid certificate passes the CRL check: ${good.out}`);
  const bad = status("openssl", ["verify", "-crl_check", "-CAfile", p("ca.pem"), "-CRLfile", pem, path.join(s.base, "alice.pem")]);
  t.not(bad.status, 0);
  t.match(bad.out, /certificate revoked/, "the revoked one is refused: the CRL was read, not skipped");
  // Globus GSI with the CRL as <hash>.r0 in the trust directory
  const trust = path.join(s.base, "trust");
  const tf = buildTrustFiles(ca, "/DC=org/DC=example/CN=%s", [], {});
  writeTrustFiles(trust, tf);
  fs.copyFileSync(pem, path.join(trust, `${tf.hash}.r0`));
  const gpi = (user: string) =>
    status("grid-proxy-init", ["-cert", path.join(s.base, `${user}.pem`), "-key", p("user.key"), "-verify", "-debug", "-hours", "1", "-out", path.join(s.base, `${user}.proxy`)], {
      PATH: "/usr/bin:/bin",
      X509_CERT_DIR: trust,
    });
  const ok = gpi("bob");
  t.equal(ok.status, 0, `grid-proxy-init -verify accepts a certificate with the CRL in the trust directory: ${ok.out}`);
  const refused = gpi("alice");
  t.not(refused.status, 0, "and refuses the revoked one (Globus read the CRL with its extension)");
  t.match(refused.out, /revoked/i);
});

t.test("a changed line is found at the next line", async (t) => {
  const s = setup("tamper");
  s.issue("alice");
  s.issue("bob");
  s.crl();
  s.issue("carol");
  s.issue("dave");
  const l = lines(s.logPath);
  l[4] = l[4]!.replace("/CN=carol", "/CN=mallory");
  writeLines(s.logPath, l);
  const r = s.verify();
  t.notOk(r.chainIntact);
  t.equal(r.problems.length, 1, "one problem: the first broken line");
  t.match(r.problems[0], `${s.logPath}:6: line 6's prev`);
  t.match(r.problems[0], /line 5 was changed, or a line between them was removed/);
});

t.test("a deleted line is found by its seq", async (t) => {
  const s = setup("delete");
  s.issue("alice");
  s.issue("bob");
  s.issue("carol");
  const l = lines(s.logPath);
  l.splice(2, 1);
  writeLines(s.logPath, l);
  const r = s.verify();
  t.notOk(r.chainIntact);
  t.match(r.problems[0], `${s.logPath}:3: seq 4 follows seq 2: line 3 was removed`);
});

t.test("a rewritten tail (every prev recomputed) no longer matches the CRL that committed to it", async (t) => {
  const s = setup("rewrite");
  s.issue("alice");
  s.issue("bob");
  const c = s.crl();
  s.issue("carol");
  // the forger drops bob's issuance and re-chains everything after it
  const kept = lines(s.logPath).filter((x) => !x.includes("/CN=bob"));
  const rewritten: string[] = [];
  let head: ChainHead = { seq: 0, hash: GENESIS };
  for (const text of kept) {
    const { seq: _s, time, prev: _p, event, ...fields } = JSON.parse(text) as Record<string, unknown>;
    const line = formatLine(head, event as "issued", fields, new Date(time as string));
    rewritten.push(line);
    head = { seq: head.seq + 1, hash: lineHash(line) };
  }
  writeLines(s.logPath, rewritten);
  const r = s.verify();
  t.ok(r.chainIntact, "the chain alone looks fine");
  t.equal(r.problems.length, 1);
  t.match(r.problems[0], `(CRL #${c.number}): commits to line ${c.head.seq} with SHA-256`);
  t.match(r.problems[0], /the trail was rewritten up to there/);
});

t.test("a truncated trail is found by the CRL that committed to the lost lines", async (t) => {
  const s = setup("truncate");
  s.issue("alice");
  s.issue("bob");
  s.issue("carol");
  const c = s.crl();
  const l = lines(s.logPath);
  writeLines(s.logPath, l.slice(0, 2));
  const r = s.verify();
  t.ok(r.chainIntact, "what is left chains");
  t.match(r.problems.join("\n"), `(CRL #${c.number}): commits to line 4, but the trail ends at line 2: lines 3..4 were removed (the trail was truncated)`);
});

t.test("a forged checkpoint (a CRL not signed by the CA key) is refused", async (t) => {
  const s = setup("forged");
  s.issue("alice");
  s.crl();
  s.issue("bob");
  const l = lines(s.logPath);
  const head: ChainHead = { seq: l.length, hash: lineHash(l[l.length - 1]!) };
  const tbs = buildTbsCrl({
    issuerDer: ca.subjectDer, authorityKeyId: ca.keyId, crlNumber: 99n, thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 86400_000), entries: [],
    extensions: [checkpointExtension(head)],
  });
  const forged = path.join(s.crlDir, "crl-000099.der");
  fs.writeFileSync(forged, assembleCrl(tbs, crypto.sign("sha256", tbs, otherKey)));
  const r = s.verify();
  t.equal(r.problems.length, 1);
  t.equal(r.problems[0], `${forged} (CRL #99): its signature does not verify with CA_CERT: a forged checkpoint (or another CA's CRL)`);
  t.equal(r.checkpoints.length, 1, "the genuine CRL still counts");
});

t.test("a crash mid-append: the torn last line is reported, then recorded and cut off at the next open; the chain goes on", async (t) => {
  const s = setup("torn");
  s.issue("alice");
  s.crl();
  s.audit.close();
  const fragment = '{"seq":4,"time":"2026-12-03T10:00:00.000Z","prev":"ab';
  fs.appendFileSync(s.logPath, fragment);
  const before = s.verify();
  t.same(before.problems, [], "not a break: nothing chains to an incomplete line");
  t.match(before.notes.join("\n"), `${s.logPath}:4: an incomplete last line (${fragment.length} bytes, no newline)`);
  const reopened = AuditLog.open(s.logPath, RULES);
  t.equal(reopened.head().seq, 4, "the torn-line record is line 4");
  reopened.append("issued", { serial: "AB", subject: "/CN=x" });
  reopened.close();
  const l = lines(s.logPath);
  const torn = JSON.parse(l[3]!) as Record<string, unknown>;
  t.equal(torn.event, "torn-line");
  t.equal(torn.fragment, fragment, "the fragment's bytes are kept in the record");
  const after = s.verify();
  t.same(after.problems, []);
  t.equal(after.last, 5);
});

t.test("a restart continues the chain; so does rotation by size, across files", async (t) => {
  const s = setup("rotate", 600);
  for (const u of ["a1", "a2", "a3"]) s.issue(u);
  s.crl();
  s.audit.close();
  const again = AuditLog.open(s.logPath, { rotateBytes: 600 });
  t.equal(again.head().seq, 5, "the head is the last line written before");
  t.notOk(again.isNew);
  again.append("signer-start", { backend: "pkcs11" });
  again.close();
  const s2 = AuditLog.open(s.logPath, { rotateBytes: 600 });
  for (let i = 0; i < 6; i++) s2.append("issued", { serial: `0${i}`, subject: `/CN=r${i}` });
  s2.close();
  const files = trailFiles(s.logPath);
  t.ok(files.length >= 3, `rotated into ${files.length} files`);
  t.match(path.basename(files[0]!), /^audit\.log\.000000000001$/);
  const r = s.verify();
  t.same(r.problems, []);
  t.equal(r.last, 12);
  t.equal(r.files, files.length);
  // the oldest file archived away: --from the first line still here
  const firstOfSecond = JSON.parse(lines(files[1]!)[0]!) as { seq: number };
  fs.rmSync(files[0]!);
  t.notOk(s.verify().chainIntact, "without --from a missing beginning is a break");
  const from = s.verify({ from: firstOfSecond.seq });
  t.same(from.problems, [], "--from N verifies from there");
});

t.test("a damaged last line stops the signer from writing on: a precise error", async (t) => {
  const s = setup("damaged");
  s.issue("alice");
  s.audit.close();
  fs.appendFileSync(s.logPath, "not json at all\n");
  t.throws(() => AuditLog.open(s.logPath, RULES), { message: /the last line of the audit trail is not an audit record \(not JSON\)/ });
});

t.test("the trail and index.txt agree; what a crash left out is recovered from index.txt", async (t) => {
  const s = setup("cross");
  const a = s.issue("alice");
  s.issue("bob");
  s.revoke(a);
  const rows = () => [...s.db.entries()].map((e) => ({ line: e.line, serial: e.serialHex, status: e.status, subject: e.subject, revokedAt: e.revokedAt, reason: e.reason, notAfter: e.notAfter }));
  t.same(crossCheck(rows(), readTrailFacts(s.logPath), "index.txt", s.logPath), [], "they agree");
  // a certificate recorded in index.txt whose audit line was never written (crash in between)
  const serial = s.db.newSerial();
  const subject = buildSubject(DN, "lost");
  const tbs = profile.tbs({ serial, subjectDer: subject.der, publicKey: userSpki, emails: [], notBefore: new Date(), notAfter: new Date(Date.now() + 3600_000) });
  const e = s.db.record({ serial, notAfter: new Date(Date.now() + 3600_000), subject: subject.slash, certificate: assembleCertificate(tbs, crypto.sign("sha256", tbs, caKey)) });
  const missing = crossCheck(rows(), readTrailFacts(s.logPath), "index.txt", s.logPath);
  t.equal(missing.length, 1);
  t.equal(missing[0]!.message, `index.txt:3: serial ${e.serialHex} has no issued line in the audit trail ${s.logPath}`);
  t.equal(s.audit.recoverFromIndex(s.db), 1);
  t.same(crossCheck(rows(), readTrailFacts(s.logPath), "index.txt", s.logPath), [], "after the recovery they agree");
  const last = JSON.parse(lines(s.logPath).at(-1)!) as Record<string, unknown>;
  t.match(last, { event: "issued", serial: e.serialHex, recovered: /index.txt line 3 had no audit line/ });
  // a revocation recorded in index.txt whose audit line was never written
  s.db.revoke([{ serialHex: e.serialHex, reason: "superseded", revokedAt: new Date() }]);
  t.equal(crossCheck(rows(), readTrailFacts(s.logPath), "index.txt", s.logPath).length, 1, "the revocation is missing");
  t.equal(s.audit.recoverFromIndex(s.db), 1, "and recovered");
  t.match(JSON.parse(lines(s.logPath).at(-1)!), { event: "revoked", serial: e.serialHex, reason: "superseded", recovered: /index.txt line 3/ });
  t.same(crossCheck(rows(), readTrailFacts(s.logPath), "index.txt", s.logPath), []);
  t.equal(s.audit.recoverFromIndex(s.db), 0, "nothing more to recover");
  // a line in the trail for a certificate index.txt does not have
  s.audit.append("issued", { serial: "0123456789ABCDEF", subject: "/CN=ghost" });
  const ghost = crossCheck(rows(), readTrailFacts(s.logPath), "index.txt", s.logPath);
  t.equal(ghost.length, 1);
  t.match(ghost[0]!.message, /line \d+: serial 0123456789ABCDEF was issued, but index.txt has no line for it/);
  t.same([...readTrail(s.logPath)].filter((l) => typeof l.record === "string"), [], "every line parses");
});

t.test("openssl ca -gencrl with the generated configuration carries the same checkpoint", async (t) => {
  const s = setup("openssl");
  s.issue("alice");
  const head = s.audit.checkpoint();
  const caDir = path.join(s.base, "ca");
  const conf = path.join(s.base, "operator.cnf");
  fs.writeFileSync(conf, `[ca]\ndefault_ca = d\n[d]\ndir = ${caDir}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/newcerts\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\npolicy = p\n[p]\n`);
  const gen = path.join(s.base, "gencrl.cnf");
  fs.writeFileSync(gen, crlConfig(conf, head));
  const out = path.join(s.base, "openssl-crl.pem");
  const r = status("openssl", ["ca", "-batch", "-gencrl", "-config", gen, "-crlexts", "etoken_ca_crl", "-keyfile", p("ca.key"), "-cert", p("ca.pem"), "-out", out]);
  t.equal(r.status, 0, r.out);
  const der = Buffer.from(fs.readFileSync(out, "utf8").replace(/-----[^-]+-----|\s/g, ""), "base64");
  const read = readCrl(der, ca.publicKey, (m) => new Error(m));
  t.ok(read.signatureValid);
  t.same(read.checkpoint, head, "the checkpoint as the native CRLs carry it");
  const v = s.verify({ crlFiles: [out] });
  t.same(v.problems, []);
  t.equal(v.checkpoints.length, 1);
});
