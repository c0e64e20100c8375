// End to end through the pure code: CSR -> subject -> TBS -> signature -> certificate,
// everything checked with the OpenSSL 3 command line.
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { pemDecode, pemEncode } from "../../services/common/x509/pem.js";
import { parseCsr } from "../../services/common/x509/csr.js";
import { buildSubject, compileDnFormat, splitUsername } from "../../services/common/x509/dn.js";
import { CertificateTemplate, clampLifetime } from "../../services/signer/profile.js";
import { randomSerial } from "../../services/signer/cadb.js";
import { assembleCertificate, loadCaCertificate, publicKeyMatches } from "../../services/common/x509/certificate.js";
import { ConfigError, RequestError } from "../../services/common/errors.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-cert-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const p = (f: string): string => path.join(dir, f);

function openssl(...args: string[]): string {
  return execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}
function opensslStatus(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

// CA: RSA 2048, self-signed, valid past 2050 (for the GeneralizedTime test)
openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "10000",
  "-subj", "/DC=org/DC=example/O=Example CA/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
  "-addext", "keyUsage=critical,keyCertSign,cRLSign");
const caKey = crypto.createPrivateKey(fs.readFileSync(p("ca.key")));
// A MyProxy-like CSR asking for CA:TRUE and a critical proxyCertInfo
openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p("u.key"), "-out", p("u.csr"),
  "-subj", "/CN=NULL SUBJECT NAME ENTRY", "-addext", "basicConstraints=critical,CA:TRUE",
  "-addext", "1.3.6.1.5.5.7.1.14=critical,DER:300c300a06082b06010505071501");

const ca = loadCaCertificate(fs.readFileSync(p("ca.pem")), p("ca.pem"));
const DN = compileDnFormat("/DC=org/DC=example/O=Example/CN=%s");
const POLICIES = ["1.3.6.1.4.1.99999.1.2.3", "1.2.840.113612.5.2.2.1"];
const URLS = ["http://ca.example.org/crl.pem", "https://mirror.example.net/ca/crl.der"];
const template = new CertificateTemplate({ caCert: ca, policies: POLICIES, crlUrls: URLS });

let n = 0;
function issue(tpl: CertificateTemplate, username: string, csrFile: string, opts: { now?: Date; lifetime?: number; serial?: Buffer } = {}) {
  const csr = parseCsr(pemDecode(fs.readFileSync(p(csrFile), "latin1"), "CERTIFICATE REQUEST"), { minKeyBits: 2048 });
  const u = splitUsername(username);
  const subject = buildSubject(DN, u.name);
  const now = opts.now ?? new Date();
  const serial = opts.serial ?? randomSerial(); // as the signer makes them: a random first byte 0 printed one digit pair short
  const tbs = tpl.tbs({
    serial, subjectDer: subject.der, publicKey: csr.publicKey, emails: u.emails,
    notBefore: now, notAfter: new Date(now.getTime() + (opts.lifetime ?? 43200) * 1000),
  });
  const der = assembleCertificate(tbs, crypto.sign("sha256", tbs, caKey));
  const file = `cert${++n}.pem`;
  fs.writeFileSync(p(file), pemEncode(der, "CERTIFICATE"));
  return { file, serial, now, subject, der };
}

/** The extensions of every certificate, in order (policies, CDPs and SAN follow when configured / given). */
const ALWAYS_PRESENT = [
  "X509v3 Basic Constraints critical",
  "X509v3 Key Usage critical",
  "X509v3 Extended Key Usage",
  "X509v3 Subject Key Identifier",
  "X509v3 Authority Key Identifier",
];

function extensionHeaders(text: string): string[] {
  const i = text.indexOf("X509v3 extensions:");
  const block = text.slice(i, text.indexOf("Signature Algorithm", i));
  return [...block.matchAll(/^ {12}(\S[^:\n]*):( critical)?\s*$/gm)].map((m) => m[1]! + (m[2] ?? ""));
}

t.test("a certificate passes openssl verify -x509_strict and has exactly the profile", async (t) => {
  const c = issue(template, "John Doe email=jdoe@example.org email=j.doe+grid@mail.example.com info:dept=grid,site=a", "u.csr");
  t.match(openssl("verify", "-x509_strict", "-CAfile", "ca.pem", c.file), /: OK\n$/);

  const text = openssl("x509", "-in", c.file, "-noout", "-text");
  t.same(extensionHeaders(text), [...ALWAYS_PRESENT, "X509v3 Certificate Policies", "X509v3 CRL Distribution Points", "X509v3 Subject Alternative Name"]);
  t.match(text, /Version: 3 \(0x2\)/);
  t.match(text, /Signature Algorithm: sha256WithRSAEncryption/);
  t.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
  t.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment\n/);
  t.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication\n/);
  t.match(text, /X509v3 Subject Alternative Name: \n\s+email:jdoe@example.org, email:j.doe\+grid@mail.example.com\n/);
  t.match(text, /Policy: 1\.3\.6\.1\.4\.1\.99999\.1\.2\.3\n\s+Policy: 1\.2\.840\.113612\.5\.2\.2\.1\n/);
  t.match(text, /Full Name:\n\s+URI:http:\/\/ca\.example\.org\/crl\.pem\n\s+URI:https:\/\/mirror\.example\.net\/ca\/crl\.der\n/);
  t.notMatch(text, /CA:TRUE|Proxy|NULL SUBJECT/, "nothing from the CSR but its key");

  t.equal(openssl("x509", "-in", c.file, "-noout", "-subject", "-nameopt", "RFC2253").trim(), "subject=CN=John Doe,O=Example,DC=example,DC=org");
  t.equal(openssl("x509", "-in", c.file, "-noout", "-issuer", "-nameopt", "RFC2253").trim(), "issuer=CN=Test CA,O=Example CA,DC=example,DC=org");
  t.equal(openssl("x509", "-in", c.file, "-noout", "-subject", "-nameopt", "compat").trim(), `subject=${c.subject.slash}`);
  t.equal(openssl("x509", "-in", c.file, "-noout", "-serial").trim().toLowerCase(), `serial=${c.serial.toString("hex")}`);

  // validity: notBefore backdated 5 minutes, notAfter = now + lifetime, whole seconds
  const dates = openssl("x509", "-in", c.file, "-noout", "-startdate", "-enddate");
  const nb = Date.parse(/notBefore=(.*)/.exec(dates)![1]!);
  const na = Date.parse(/notAfter=(.*)/.exec(dates)![1]!);
  const nowS = Math.floor(c.now.getTime() / 1000) * 1000;
  t.equal(nb, nowS - 300_000);
  t.equal(na, nowS + 43200_000);

  // the public key is the CSR's
  t.equal(openssl("x509", "-in", c.file, "-noout", "-pubkey"), openssl("req", "-in", "u.csr", "-noout", "-pubkey"));

  // AKI = CA's SKI (as OpenSSL prints them)
  const caSki = /Identifier: \n\s+(\S+)/.exec(openssl("x509", "-in", "ca.pem", "-noout", "-ext", "subjectKeyIdentifier"))![1]!;
  t.match(openssl("x509", "-in", c.file, "-noout", "-ext", "authorityKeyIdentifier"), new RegExp(caSki.replace(/:/g, ":")));
  // SKI = what OpenSSL computes for the same key (RFC 5280 method 1)
  openssl("req", "-new", "-x509", "-key", "u.key", "-subj", "/CN=ref", "-out", "ref.pem", "-days", "1");
  const skiOf = (f: string): string => /Identifier: \n\s+(\S+)/.exec(openssl("x509", "-in", f, "-noout", "-ext", "subjectKeyIdentifier"))![1]!;
  t.equal(skiOf(c.file), skiOf("ref.pem"));

  // string types: DC IA5String, O/CN PrintableString
  const asn = openssl("asn1parse", "-in", c.file);
  t.match(asn, /domainComponent\n.*IA5STRING\s+:org\n/);
  t.match(asn, /commonName\n.*PRINTABLESTRING\s+:John Doe\n/);
});

t.test("optional extensions are left out when empty; UTF-8 names", async (t) => {
  const plain = new CertificateTemplate({ caCert: ca, policies: [], crlUrls: [] });
  const c = issue(plain, "Jürgen Müller", "u.csr");
  t.match(openssl("verify", "-x509_strict", "-CAfile", "ca.pem", c.file), /: OK\n$/);
  const text = openssl("x509", "-in", c.file, "-noout", "-text");
  t.same(extensionHeaders(text), ALWAYS_PRESENT, "only the extensions every certificate has");
  t.equal(openssl("x509", "-in", c.file, "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb").trim(), "subject=CN=Jürgen Müller,O=Example,DC=example,DC=org");
  t.match(openssl("asn1parse", "-in", c.file), /commonName\n.*UTF8STRING/);
  t.equal(c.subject.slash, "/DC=org/DC=example/O=Example/CN=J\\xC3\\xBCrgen M\\xC3\\xBCller");
  t.equal(openssl("x509", "-in", c.file, "-noout", "-subject", "-nameopt", "compat").trim(), `subject=${c.subject.slash}`);
});

t.test("serials: high bit set, leading zeros, limits", async (t) => {
  const c = issue(template, "jdoe", "u.csr", { serial: Buffer.from("00ff00000000000000000001", "hex") });
  t.match(openssl("verify", "-x509_strict", "-CAfile", "ca.pem", c.file), /: OK\n$/);
  t.equal(openssl("x509", "-in", c.file, "-noout", "-serial").trim(), "serial=FF00000000000000000001");
  t.throws(() => issue(template, "jdoe", "u.csr", { serial: Buffer.alloc(8) }), RequestError);
  t.throws(() => issue(template, "jdoe", "u.csr", { serial: Buffer.alloc(20, 0xff) }), RequestError);
});

t.test("UTCTime through 2049, GeneralizedTime from 2050", async (t) => {
  const now = new Date("2049-12-31T22:00:00Z");
  const c = issue(template, "jdoe", "u.csr", { now, lifetime: 6 * 3600 });
  const asn = openssl("asn1parse", "-in", c.file);
  t.match(asn, /UTCTIME\s+:491231215500Z/);
  t.match(asn, /GENERALIZEDTIME\s+:20500101040000Z/);
  const at = String(Date.parse("2050-01-01T00:00:00Z") / 1000);
  t.match(openssl("verify", "-x509_strict", "-attime", at, "-CAfile", "ca.pem", c.file), /: OK\n$/);
});

t.test("notAfter never beyond the CA certificate", async (t) => {
  const c = issue(template, "jdoe", "u.csr", { now: new Date(ca.notAfter.getTime() - 3600_000), lifetime: 43200 });
  const dates = openssl("x509", "-in", c.file, "-noout", "-enddate");
  t.equal(Date.parse(/notAfter=(.*)/.exec(dates)![1]!), Date.parse(/notAfter=(.*)/.exec(openssl("x509", "-in", "ca.pem", "-noout", "-enddate"))![1]!));
  t.throws(() => issue(template, "jdoe", "u.csr", { now: new Date(ca.notAfter.getTime() + 1000) }), { code: "request.ca_expired" });
});

t.test("another CA does not verify it (the signature is real)", async (t) => {
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("other.key"), "-out", p("other.pem"), "-days", "30",
    "-subj", "/DC=org/DC=example/O=Example CA/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  const c = issue(template, "jdoe", "u.csr");
  const r = opensslStatus("verify", "-x509_strict", "-CAfile", "other.pem", c.file);
  t.not(r.status, 0, r.out);
});

t.test("loadCaCertificate", async (t) => {
  t.equal(ca.subjectSlash, "/DC=org/DC=example/O=Example CA/CN=Test CA");
  t.equal(ca.subjectSlash, openssl("x509", "-in", "ca.pem", "-noout", "-subject", "-nameopt", "compat").trim().replace(/^subject=/, ""));
  const caSki = /Identifier: \n\s+(\S+)/.exec(openssl("x509", "-in", "ca.pem", "-noout", "-ext", "subjectKeyIdentifier"))![1]!;
  t.equal(ca.keyId.toString("hex"), caSki.replace(/:/g, "").toLowerCase());
  t.equal(ca.notAfter.getTime(), Date.parse(/notAfter=(.*)/.exec(openssl("x509", "-in", "ca.pem", "-noout", "-enddate"))![1]!));
  const der = execFileSync("openssl", ["x509", "-in", p("ca.pem"), "-outform", "DER"]);
  t.same(loadCaCertificate(der, "ca.der").keyId, ca.keyId, "DER input");

  // without SKI: the key id is computed the same way OpenSSL does
  openssl("req", "-x509", "-key", p("ca.key"), "-out", p("noski.pem"), "-days", "30", "-subj", "/CN=No SKI",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-addext", "subjectKeyIdentifier=none", "-addext", "authorityKeyIdentifier=none");
  t.notMatch(openssl("x509", "-in", "noski.pem", "-noout", "-text"), /Subject Key Identifier/);
  t.same(loadCaCertificate(fs.readFileSync(p("noski.pem")), "noski.pem").keyId, ca.keyId);

  const e = (input: string | Buffer, file: string): ConfigError => {
    try {
      loadCaCertificate(input, file);
    } catch (err) {
      if (err instanceof ConfigError) return err;
      throw err;
    }
    throw new Error("no error");
  };
  // an end-entity certificate is not a CA
  const leaf = issue(template, "jdoe", "u.csr");
  t.match(e(fs.readFileSync(p(leaf.file)), "/etc/etoken-ca/ca.pem").message, /^\/etc\/etoken-ca\/ca\.pem: CA certificate: not a CA certificate/);
  t.match(e(fs.readFileSync(p("ca.pem"), "latin1") + fs.readFileSync(p("other.pem"), "latin1"), "two.pem").message, /two\.pem: .*exactly one/);
  t.match(e(fs.readFileSync(p("u.csr"), "latin1"), "csr.pem").message, /CERTIFICATE REQUEST.*expected CERTIFICATE/);
  t.match(e(Buffer.from([0x30, 0x03, 0x02, 0x01]), "junk.der").message, /junk\.der: CA certificate: .*runs past the end/);
  // EC CA key
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("ec.key"), "-out", p("ec.pem"),
    "-days", "30", "-subj", "/CN=EC CA", "-addext", "basicConstraints=critical,CA:TRUE");
  t.match(e(fs.readFileSync(p("ec.pem")), "ec.pem").message, /the CA key is ec, but signing uses RSA/);
});

t.test("publicKeyMatches", async (t) => {
  t.equal(publicKeyMatches(ca, (d) => crypto.sign("sha256", d, caKey)), true);
  const otherKey = crypto.createPrivateKey(fs.readFileSync(p("other.key")));
  t.equal(publicKeyMatches(ca, (d) => crypto.sign("sha256", d, otherKey)), false);
  t.equal(publicKeyMatches(ca, () => Buffer.alloc(256)), false);
  t.throws(() => publicKeyMatches(ca, () => {
    throw new Error("token gone");
  }), /token gone/);
});

t.test("clampLifetime", async (t) => {
  t.equal(clampLifetime(43200, 0, 12 * 3600_000), 43200 - 300, "the 5-minute backdating of notBefore counts against MAX_LIFETIME");
  t.equal(clampLifetime(0, 0, 12 * 3600_000), 43200 - 300, "nothing given: the CA maximum");
  t.equal(clampLifetime(7 * 86400, 0, 12 * 3600_000), 43200 - 300, "never above the CA maximum");
  t.equal(clampLifetime(43200, 0, 12 * 3600_000, 0), 43200, "without backdating, all of it");
  t.equal(clampLifetime(7 * 86400, 3600, 12 * 3600_000), 3600, "MyProxy's max_cert_lifetime");
  t.equal(clampLifetime(600, 3600, 12 * 3600_000), 600);
  t.equal(clampLifetime(0, 7200, 12 * 3600_000), 7200);
  t.equal(clampLifetime(0.4, 0, 12 * 3600_000), 1, "at least one second");
  t.equal(clampLifetime(100, 0, 500), 1);
  t.throws(() => clampLifetime(-1, 0, 1000), RequestError);
  t.throws(() => clampLifetime(Number.NaN, 0, 1000), RequestError);
  t.throws(() => clampLifetime(1, 0, 0), RangeError);
});
