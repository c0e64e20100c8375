// The CA database against the real `openssl ca` (OpenSSL 3 CLI): same files, same answers.
import t from "tap";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DatabaseError } from "../../services/common/errors.js";
import { CaDatabase } from "../../services/signer/cadb.js";
import { formatTime, parseTime } from "../../services/common/ca-dir/index-format.js";
import { checkDatabase } from "../../services/common/ca-dir/check-db.js";
import { buildSubject, compileDnFormat } from "../../services/common/x509/dn.js";
import { thrown } from "../fixtures/thrown.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-cadb-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

function ossl(args: string[], input?: string): string {
  const r = spawnSync("openssl", args, { encoding: "utf8", input });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

// One file-key CA and one end-entity key for the whole file (key generation is the slow part).
const caKey = path.join(work, "ca.key");
const caCert = path.join(work, "ca.pem");
const eeKey = path.join(work, "ee.key");
ossl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", caKey]);
ossl(["req", "-new", "-x509", "-key", caKey, "-out", caCert, "-days", "30", "-subj", "/DC=org/DC=example/CN=cadb test CA",
  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
ossl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", eeKey]);

let n = 0;
function csr(subject: string): string {
  const f = path.join(work, `req-${++n}.csr`);
  ossl(["req", "-new", "-utf8", "-key", eeKey, "-out", f, "-subj", subject]);
  return f;
}

/** A real certificate with this serial and subject, signed by the file CA; DER. */
function issue(serial: Buffer, subject: string, days = 1): { der: Buffer; cert: X509Certificate } {
  const out = path.join(work, `cert-${++n}.pem`);
  ossl(["x509", "-req", "-in", csr(subject), "-CA", caCert, "-CAkey", caKey, "-set_serial", `0x${serial.toString("hex")}`, "-days", String(days), "-out", out]);
  const cert = new X509Certificate(fs.readFileSync(out));
  return { der: cert.raw, cert };
}

function cnf(dir: string): string {
  const f = path.join(dir, "..", `${path.basename(dir)}.cnf`);
  fs.writeFileSync(
    f,
    `[ ca ]
default_ca = CA_default
[ CA_default ]
dir = ${dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = ${caCert}
private_key = ${caKey}
default_md = sha256
default_days = 1
default_crl_days = 7
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[ policy_any ]
domainComponent = optional
organizationName = optional
commonName = supplied
`,
  );
  return f;
}

/** What `openssl ca -status SERIAL` says: "Valid", "Revoked", "Expired" or "absent". */
function opensslStatus(dir: string, serial: string): string {
  const r = spawnSync("openssl", ["ca", "-config", cnf(dir), "-status", serial], { encoding: "utf8" });
  const text = r.stdout + r.stderr;
  const m = /=(Valid|Revoked|Expired|Suspended) \(/.exec(text);
  if (m) return m[1]!;
  if (/not present in db/.test(text)) return "absent";
  throw new Error(`unexpected openssl ca -status output: ${text}`);
}

const dbError = (fn: () => unknown): DatabaseError => thrown(DatabaseError, fn);

t.test("times: UTCTime until 2049, GeneralizedTime after, strict parsing", async (t) => {
  t.equal(formatTime(new Date(Date.UTC(2031, 0, 2, 3, 4, 5))), "310102030405Z");
  t.equal(formatTime(new Date(Date.UTC(2050, 0, 1, 0, 0, 0))), "20500101000000Z");
  t.equal(parseTime("490101000000Z")!.toISOString(), "2049-01-01T00:00:00.000Z");
  t.equal(parseTime("500101000000Z")!.toISOString(), "1950-01-01T00:00:00.000Z");
  t.equal(parseTime("20510101000000Z")!.toISOString(), "2051-01-01T00:00:00.000Z");
  t.equal(parseTime("310231000000Z"), undefined, "31 February");
  t.equal(parseTime("3101010000Z"), undefined);
});

t.test("record, get, revoke: openssl ca -status agrees; files as openssl expects", async (t) => {
  const dir = path.join(work, "ours");
  const db = CaDatabase.open(dir, { create: true });
  t.teardown(() => db.close());
  t.equal(fs.readFileSync(path.join(dir, "index.txt.attr"), "utf8"), "unique_subject = no\n");

  const serials: string[] = [];
  const subject = "/DC=org/DC=example/CN=John Doe";
  for (let i = 0; i < 3; i++) {
    const serial = db.newSerial();
    t.equal(serial.length, 16);
    t.equal(serial[0]! & 0x80, 0, "top bit cleared");
    t.not(serial[0], 0, "first byte non-zero");
    const { der, cert } = issue(serial, subject);
    db.record({ serial, notAfter: new Date(cert.validTo), subject, certificate: der });
    serials.push(cert.serialNumber);
  }
  t.equal(new Set(serials).size, 3);
  t.equal(db.size, 3);

  // The serial file holds last + 1, which openssl ca accepts as its next serial.
  db.flushPending();
  const next = fs.readFileSync(path.join(dir, "serial"), "utf8").trim();
  t.equal(BigInt(`0x${next}`), BigInt(`0x${serials[2]}`) + 1n);

  for (const s of serials) {
    t.equal(opensslStatus(dir, s), "Valid", `openssl: ${s} valid`);
    const e = db.get(s.toLowerCase())!;
    t.equal(e.status, "V");
    t.equal(e.subject, subject);
  }
  t.equal(opensslStatus(dir, "0123456789ABCDEF"), "absent");
  t.equal(db.get("0123456789ABCDEF"), undefined);

  const ino = fs.statSync(path.join(dir, "index.txt")).ino;
  const res = db.revoke([
    { serialHex: serials[0]!, reason: "keyCompromise", revokedAt: new Date(Date.UTC(2030, 5, 1, 12, 0, 0)) },
    { serialHex: serials[1]!.toLowerCase(), reason: "unspecified", revokedAt: new Date() },
    { serialHex: serials[0]!, reason: "superseded", revokedAt: new Date() },
    { serialHex: "ABCDEF", reason: "superseded", revokedAt: new Date() },
  ]);
  t.same(res.map((r) => r.result), ["revoked", "revoked", "already-revoked", "unknown"]);
  t.not(fs.statSync(path.join(dir, "index.txt")).ino, ino, "index.txt was rewritten (rename)");
  t.equal(db.revokedCount, 2);
  t.equal(opensslStatus(dir, serials[0]!), "Revoked");
  t.equal(opensslStatus(dir, serials[1]!), "Revoked");
  t.equal(opensslStatus(dir, serials[2]!), "Valid");

  const ino2 = fs.statSync(path.join(dir, "index.txt")).ino;
  t.same(db.revoke([{ serialHex: serials[0]!, reason: "keyCompromise", revokedAt: new Date() }]).map((r) => r.result), ["already-revoked"]);
  t.equal(fs.statSync(path.join(dir, "index.txt")).ino, ino2, "nothing changed: no rewrite");

  const revoked = [...db.revokedEntries()];
  t.equal(revoked.length, 2);
  t.equal(revoked[0]!.reasonCode, 1);
  t.equal(revoked[0]!.revokedAt.toISOString(), "2030-06-01T12:00:00.000Z");
  t.equal(revoked[1]!.reasonCode, undefined, "unspecified is a bare date, as openssl ca -revoke writes it");

  // Recorded after the rewrite: appended to the new file.
  const s4 = db.newSerial();
  const c4 = issue(s4, "/DC=org/DC=example/CN=Jane Roe");
  db.record({ serial: s4, notAfter: new Date(c4.cert.validTo), subject: "/DC=org/DC=example/CN=Jane Roe", certificate: c4.der });
  t.equal(opensslStatus(dir, c4.cert.serialNumber), "Valid");

  // crlnumber: ours, then openssl ca -gencrl uses what we left; its CRL lists our revocations.
  const first = db.nextCrlNumber();
  t.equal(db.nextCrlNumber(), first + 1n);
  const crl = path.join(work, "ours.crl");
  ossl(["ca", "-config", cnf(dir), "-gencrl", "-out", crl]);
  const crlText = ossl(["crl", "-in", crl, "-noout", "-text"]);
  const crlNum = /X509v3 CRL Number:\s*\n\s*([0-9]+)/.exec(crlText);
  t.equal(BigInt(crlNum![1]!), first + 2n, "openssl ca -gencrl takes the CRL number we left in crlnumber");
  t.match(crlText, new RegExp(`Serial Number: ${serials[0]}[\\s\\S]*Key Compromise`));
  t.match(crlText, new RegExp(`Serial Number: ${serials[1]}`));
  t.notMatch(crlText, new RegExp(`Serial Number: ${serials[2]}`));

  // Everything survives a reopen, and check-db finds nothing wrong.
  db.close();
  const again = CaDatabase.open(dir);
  t.teardown(() => again.close());
  t.equal(again.size, 4);
  t.equal(again.revokedCount, 2);
  t.equal(again.get(serials[0]!)!.reason, "keyCompromise");
  t.equal(again.get(c4.cert.serialNumber)!.line, 4);
  const report = checkDatabase(dir);
  t.same(report.problems, []);
  t.same(report.counts, { lines: 4, valid: 2, revoked: 2, expired: 0, certificateFiles: 4 });
});

t.test("a directory written by real openssl ca opens correctly, and openssl keeps working after us", async (t) => {
  const dir = path.join(work, "openssl");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  fs.writeFileSync(path.join(dir, "index.txt"), "");
  fs.writeFileSync(path.join(dir, "serial"), "1000\n");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
  const conf = cnf(dir);
  const out1 = path.join(work, "o1.pem");
  const out2 = path.join(work, "o2.pem");
  ossl(["ca", "-config", conf, "-batch", "-in", csr("/DC=org/DC=example/CN=Alice"), "-out", out1]);
  ossl(["ca", "-config", conf, "-batch", "-in", csr("/DC=org/DC=example/O=Example/CN=Bob Smith"), "-out", out2]);
  ossl(["ca", "-config", conf, "-revoke", out1, "-crl_reason", "keyCompromise"]);
  const c1 = new X509Certificate(fs.readFileSync(out1));
  const c2 = new X509Certificate(fs.readFileSync(out2));

  const db = CaDatabase.open(dir);
  t.teardown(() => db.close());
  t.equal(db.size, 2);
  t.equal(db.revokedCount, 1);
  const e1 = db.get(c1.serialNumber)!;
  t.equal(e1.status, "R");
  t.equal(e1.reason, "keyCompromise");
  t.equal(e1.reasonCode, 1);
  t.equal(e1.notAfter.getTime(), new Date(c1.validTo).getTime());
  t.equal(e1.subject, "/DC=org/DC=example/CN=Alice");
  const e2 = db.get(c2.serialNumber)!;
  t.equal(e2.status, "V");
  t.equal(e2.subject, "/DC=org/DC=example/O=Example/CN=Bob Smith");
  t.equal(fs.readFileSync(path.join(dir, "index.txt.attr"), "utf8"), "unique_subject = no\n", "openssl ca wrote it; kept");
  t.same(checkDatabase(dir).problems, [], "check-db reads openssl's newcerts files (text before the PEM)");

  // We record one, then openssl ca issues another on the same directory (serial file valid).
  const s = db.newSerial();
  const c = issue(s, "/DC=org/DC=example/CN=Carol");
  db.record({ serial: s, notAfter: new Date(c.cert.validTo), subject: "/DC=org/DC=example/CN=Carol", certificate: c.der });
  db.flushPending();
  const out3 = path.join(work, "o3.pem");
  ossl(["ca", "-config", conf, "-batch", "-in", csr("/DC=org/DC=example/CN=Dave"), "-out", out3]);
  const c3 = new X509Certificate(fs.readFileSync(out3));
  t.equal(BigInt(`0x${c3.serialNumber}`), BigInt(`0x${s.toString("hex")}`) + 1n, "openssl ca took its serial from our serial file");
  t.equal(opensslStatus(dir, c.cert.serialNumber), "Valid", "openssl sees our line");

  // openssl replaced index.txt behind our back: the next record re-reads it first.
  const s5 = db.newSerial();
  const c5 = issue(s5, "/DC=org/DC=example/CN=Eve");
  db.record({ serial: s5, notAfter: new Date(c5.cert.validTo), subject: "/DC=org/DC=example/CN=Eve", certificate: c5.der });
  t.equal(db.size, 5);
  t.equal(db.get(c3.serialNumber)!.subject, "/DC=org/DC=example/CN=Dave");
  t.equal(opensslStatus(dir, c3.serialNumber), "Valid");
  t.equal(opensslStatus(dir, c5.cert.serialNumber), "Valid");
  t.same(checkDatabase(dir).problems, []);
});

t.test("corrupt index.txt: precise errors", async (t) => {
  const V = "V\t310101000000Z\t\t0A1B\tunknown\t/CN=a\n";
  const cases: [string, string, RegExp][] = [
    ["fields", V + "V\t310101000000Z\t0A1C\tunknown\t/CN=b\n", /index\.txt:2: 5 tab-separated fields, expected 6 \(status, expiry, revocation date, serial, file name, subject\)/],
    ["date", V + "V\t311301000000Z\t\t0A1C\tunknown\t/CN=b\n", /index\.txt:2: bad expiry date "311301000000Z": expected YYMMDDHHMMSSZ/],
    ["revdate", "R\t310101000000Z\t2501\t0A1C\tunknown\t/CN=b\n", /index\.txt:1: bad revocation date "2501": expected YYMMDDHHMMSSZ\[,reason\] on an R line/],
    ["reason", "R\t310101000000Z\t250101000000Z,stolen\t0A1C\tunknown\t/CN=b\n", /index\.txt:1: unknown revocation reason "stolen"/],
    ["serial", V + V.replace("0A1B", "A1G"), /index\.txt:2: bad serial "A1G": expected upper-case hex with an even number of digits/],
    ["lowercase", V.replace("0A1B", "0a1b"), /index\.txt:1: bad serial "0a1b"/],
    ["duplicate", V + "V\t320101000000Z\t\t0A1B\tunknown\t/CN=c\n", /index\.txt:2: duplicate serial 0A1B, already on line 1/],
    ["status", V + V.replace(/^V/, "X").replace("0A1B", "0A1C"), /index\.txt:2: unknown status "X": expected V \(valid\), R \(revoked\) or E \(expired\)/],
    ["crlf", V.replace("\n", "\r\n"), /index\.txt:1: line ends with CR LF \(DOS line ending\): expected LF only/],
    ["torn", V + "V\t3101", /index\.txt:2: last line has no newline at its end \(interrupted write\?\)/],
    ["empty", V + "\n" + V.replace("0A1B", "0A1C"), /index\.txt:2: empty line/],
    ["V with revdate", "V\t310101000000Z\t250101000000Z\t0A1B\tunknown\t/CN=a\n", /index\.txt:1: revocation field "250101000000Z" on a V line: expected it empty/],
  ];
  for (const [name, text, re] of cases) {
    const dir = path.join(work, `corrupt-${name}`);
    fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
    fs.writeFileSync(path.join(dir, "index.txt"), text);
    const e = dbError(() => CaDatabase.open(dir));
    t.equal(e.code, "db.corrupt_index", name);
    t.match(e.message, re, name);
    t.equal(e.context.line, Number(/index\.txt:(\d+)/.exec(e.message)![1]), `${name}: line in the context too`);
    const report = checkDatabase(dir);
    t.ok(report.problems.some((p) => re.test(p)), `${name}: check-db reports the same problem`);
  }

  const noNewcerts = path.join(work, "no-newcerts");
  fs.mkdirSync(noNewcerts);
  fs.writeFileSync(path.join(noNewcerts, "index.txt"), V);
  const e = dbError(() => CaDatabase.open(noNewcerts));
  t.equal(e.code, "db.missing_newcerts");
  t.match(e.message, /no-newcerts\/newcerts: the newcerts directory is missing/);

  const noIndex = path.join(work, "no-index");
  fs.mkdirSync(path.join(noIndex, "newcerts"), { recursive: true });
  t.equal(dbError(() => CaDatabase.open(noIndex)).code, "db.missing_index");
  t.notOk(fs.existsSync(path.join(noIndex, "index.txt")), "open without create writes nothing");
});

t.test("read-only, duplicate record, bad subject", async (t) => {
  const dir = path.join(work, "ro");
  const w = CaDatabase.open(dir, { create: true });
  const s = w.newSerial();
  const c = issue(s, "/CN=ro");
  w.record({ serial: s, notAfter: new Date(c.cert.validTo), subject: "/CN=ro", certificate: c.der });
  const dup = dbError(() => w.record({ serial: s, notAfter: new Date(c.cert.validTo), subject: "/CN=ro", certificate: c.der }));
  t.equal(dup.code, "db.duplicate_serial");
  t.match(dup.message, /serial [0-9A-F]+ is already recorded \(line 1\)/);
  const bad = dbError(() => w.record({ serial: w.newSerial(), notAfter: new Date(), subject: "/CN=a\tb", certificate: c.der }));
  t.equal(bad.code, "db.bad_subject");
  w.close();
  const idx = fs.readFileSync(path.join(dir, "index.txt"), "utf8");
  t.equal(idx.split("\n").length, 2, "only the good line was written");

  fs.rmSync(path.join(dir, "index.txt.attr"));
  const ro = CaDatabase.open(dir, { readOnly: true });
  t.equal(ro.size, 1);
  t.equal(dbError(() => ro.record({ serial: ro.newSerial(), notAfter: new Date(), subject: "/CN=x", certificate: c.der })).code, "db.read_only");
  t.equal(dbError(() => ro.nextCrlNumber()).code, "db.read_only");
  t.notOk(fs.existsSync(path.join(dir, "index.txt.attr")), "read-only open writes nothing");
});

t.test("privilegeWithdrawn and AACompromise: read from an existing index.txt, never written", async (t) => {
  const dir = path.join(work, "reasons");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  fs.writeFileSync(
    path.join(dir, "index.txt"),
    "R\t301231000000Z\t250101000000Z,privilegeWithdrawn\t0A\tunknown\t/CN=a\nR\t301231000000Z\t250101000000Z,AACompromise\t0B\tunknown\t/CN=b\nV\t301231000000Z\t\t0C\tunknown\t/CN=c\n",
  );
  const db = CaDatabase.open(dir);
  t.teardown(() => db.close());
  t.equal(db.get("0A")!.reasonCode, 9, "privilegeWithdrawn keeps its RFC 5280 code");
  t.equal(db.get("0B")!.reasonCode, 10, "AACompromise keeps its RFC 5280 code");
  const refused = dbError(() => db.revoke([{ serialHex: "0C", reason: "privilegeWithdrawn" as never, revokedAt: new Date() }]));
  t.equal(refused.code, "db.bad_reason", "openssl ca -gencrl would refuse the index.txt afterwards");
  t.match(fs.readFileSync(path.join(dir, "index.txt"), "utf8"), /^V\t301231000000Z\t\t0C\t/m, "the line is unchanged");
});

t.test("check-db accepts every subject the signer writes: non-ASCII letters, commas, escaped slashes", async (t) => {
  const dir = path.join(work, "subjects");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  fs.writeFileSync(path.join(dir, "index.txt"), "");
  fs.writeFileSync(path.join(dir, "serial"), "01\n");
  const db = CaDatabase.open(dir);
  t.teardown(() => db.close());
  const dn = compileDnFormat("/DC=org/DC=example%s");
  const names = ["/O=Universität Zürich/CN=José Müller", "/O=Example, Inc./CN=Doe, John", "/O=R\\/D/CN=名前", "/CN=a=b; \"q\" <x> #1"];
  for (const name of names) {
    const s = buildSubject(dn, name);
    const serial = db.newSerial();
    // the certificate's subject is the same Name, made by openssl from the unescaped text
    const c = issue(serial, s.slash.replace(/(?:\\x[0-9A-F]{2})+/g, (m) => Buffer.from(m.replace(/\\x/g, ""), "hex").toString("utf8")));
    db.record({ serial, notAfter: new Date(c.cert.validTo), subject: s.slash, certificate: c.der });
  }
  t.match(fs.readFileSync(path.join(dir, "index.txt"), "latin1"), /\/CN=Jos\\xC3\\xA9 M\\xC3\\xBCller\n/, "index.txt holds X509_NAME_oneline's \\xHH form");
  t.same(checkDatabase(dir).problems, [], "no problem reported for lines the CA wrote itself");
});

t.test("check-db: missing files, stray files, mismatched serial and subject", async (t) => {
  const dir = path.join(work, "check");
  const db = CaDatabase.open(dir, { create: true });
  const made: { hex: string; subject: string }[] = [];
  for (const subject of ["/CN=one", "/CN=two", "/CN=three"]) {
    const s = db.newSerial();
    const c = issue(s, subject, made.length + 1);
    db.record({ serial: s, notAfter: new Date(c.cert.validTo), subject, certificate: c.der });
    made.push({ hex: c.cert.serialNumber, subject });
  }
  db.close();
  const nc = (hex: string) => path.join(dir, "newcerts", `${hex}.pem`);
  fs.rmSync(nc(made[0]!.hex));
  fs.copyFileSync(nc(made[2]!.hex), nc(made[1]!.hex)); // file of "two" now holds "three"
  fs.writeFileSync(nc("0BADF00D"), fs.readFileSync(nc(made[2]!.hex)));
  fs.writeFileSync(path.join(dir, "newcerts", "notes.txt"), "x");

  const r = checkDatabase(dir);
  t.equal(r.problems.length, 6, r.problems.join("\n"));
  t.ok(r.problems.some((p) => p.includes(`index.txt:1: serial ${made[0]!.hex}: certificate file`) && p.endsWith("is missing")));
  t.ok(r.problems.some((p) => p.includes(`${made[1]!.hex}.pem: certificate serial ${made[2]!.hex} differs from the file name and index.txt line 2`)));
  t.ok(r.problems.some((p) => p.includes(`${made[1]!.hex}.pem: certificate subject /CN=three differs from index.txt line 2 (/CN=two)`)));
  t.ok(r.problems.some((p) => p.includes("0BADF00D.pem: no line for serial 0BADF00D")));
  t.ok(r.problems.some((p) => p.includes("notes.txt: unexpected file name")));
  t.ok(r.problems.some((p) => new RegExp(`${made[1]!.hex}\\.pem: certificate notAfter \\S+ differs from index\\.txt line 2`).test(p)));
  t.same(r.counts, { lines: 3, valid: 3, revoked: 0, expired: 0, certificateFiles: 3 });
});
