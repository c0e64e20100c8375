// Usernames, DN_FORMAT and subject encoding, checked with the OpenSSL command line.
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { buildSubject, compileDnFormat, nameToSlash, splitUsername } from "../../services/common/dn.js";
import { CertificateTemplate } from "../../services/signer/profile.js";
import { assembleCertificate, loadCaCertificate } from "../../services/signer/certificate.js";
import { pemEncode } from "../../services/common/pem.js";
import { ConfigError, RequestError } from "../../services/common/errors.js";
import { thrown } from "../fixtures/thrown.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-dn-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const p = (f: string): string => path.join(dir, f);
const openssl = (...args: string[]): string => execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30",
  "-subj", "/DC=org/DC=example/CN=DN Test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
const caKey = crypto.createPrivateKey(fs.readFileSync(p("ca.key")));
const ca = loadCaCertificate(fs.readFileSync(p("ca.pem")), "ca.pem");
const profile = new CertificateTemplate({ caCert: ca, policies: [], crlUrls: [] });
const userKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ format: "der", type: "spki" });

let n = 0;
/** A real certificate with this subject; returns its file name. */
function certWith(subjectDer: Buffer): string {
  const now = new Date();
  const tbs = profile.tbs({ serial: crypto.randomBytes(12), subjectDer, publicKey: userKey, emails: [], notBefore: now, notAfter: new Date(now.getTime() + 3600_000) });
  const f = `c${++n}.pem`;
  fs.writeFileSync(p(f), pemEncode(assembleCertificate(tbs, crypto.sign("sha256", tbs, caKey)), "CERTIFICATE"));
  return f;
}
/** OpenSSL's one-RDN-per-line view of the subject, values unescaped: [longName, value][] */
function subjectLines(file: string): [string, string][] {
  const out = openssl("x509", "-in", file, "-noout", "-subject", "-nameopt", "multiline,-esc_msb,utf8");
  return out.split("\n").slice(1).filter((l) => l.trim()).map((l) => {
    const m = /^\s+(\S+)\s+= (.*)$/.exec(l)!;
    return [m[1]!, m[2]!];
  });
}
const requestError = (fn: () => unknown): RequestError => thrown(RequestError, fn);
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

const DN = compileDnFormat("/DC=org/DC=example/O=Example/CN=%s");

t.test("splitUsername", async (t) => {
  t.same(splitUsername("John Doe email=jdoe@example.org email=x@y.org info:key=value,k2=v2"),
    { name: "John Doe", emails: ["jdoe@example.org", "x@y.org"], info: "key=value,k2=v2" });
  t.same(splitUsername("jdoe"), { name: "jdoe", emails: [], info: undefined });
  t.same(splitUsername("jdoe info:a=1 email=J.Doe+grid@Sub.Example-Site.co.uk"), { name: "jdoe", emails: ["J.Doe+grid@Sub.Example-Site.co.uk"], info: "a=1" });
  t.same(splitUsername("José María"), { name: "José María", emails: [], info: undefined });

  const refused: [string, RegExp][] = [
    ["", /empty/],
    ["email=a@example.org", /no name before/],
    ["jdoe email=a@example.org John", /unexpected "John" after/],
    ["jdoe  email=a@example.org", /leading or trailing spaces/],
    ["jdoe email=a@example.org  email=b@example.org", /single spaces/],
    ["jdoe email=a@b", /at least two labels/],
    ["jdoe email=a,b@example.org", /characters other than/],
    ["jdoe email=a@example.org,DNS:evil.org", /invalid domain label|invalid top-level/],
    ["jdoe email=<a@example.org>", /characters other than/],
    ["jdoe email=a@@example.org", /exactly one @/],
    ["jdoe email=", /exactly one @/],
    ["jdoe email=a@-x.org", /invalid domain label/],
    ["jdoe email=a@example.org.", /invalid domain label ""/],
    ["jdoe email=a@example.123", /top-level/],
    ["jdoe email=\"a\"@example.org", /characters other than/],
    ["jdoe email=a..b@example.org", /characters other than/],
    ["jdoe email=jé@example.org", /characters other than/],
    ["jdoe email=a@exämple.org", /invalid domain label/],
    ["jdoe email=a@example.org email=A@EXAMPLE.ORG", /given twice/],
    ["jdoe info:a=1 info:b=2", /more than one info/],
    ["jdoe info:", /empty/],
    ["jdoe info:novalue", /key=value/],
    ["jdoe info:a=1,,b=2", /key=value/],
    ["jd\u0000oe", /control character U\+0000/],
    ["jdoe\nemail=a@example.org", /control character U\+000A/],
    ["jdoe\tx", /control character U\+0009/],
    ["jdoe\u0085", /control character U\+0085/],
    ["x".repeat(257), /257 bytes is longer than 256/],
    ["jdoe " + Array.from({ length: 9 }, (_, i) => `email=u${i}@example.org`).join(" "), /more than 8 email=/],
  ];
  for (const [raw, why] of refused) {
    const e = requestError(() => splitUsername(raw));
    t.match(e.message, why, JSON.stringify(raw));
  }
});

t.test("DN_FORMAT parsing", async (t) => {
  t.equal(DN.slashBefore, "/DC=org/DC=example/O=Example");
  const e = configError(() => compileDnFormat("/DC=org/XX=y/CN=%s", { file: "/etc/sysconfig/etoken-ca", line: 3 }));
  t.match(e.message, /^\/etc\/sysconfig\/etoken-ca:3: DN_FORMAT .*unknown attribute type "XX"/);
  const bad: [string, RegExp][] = [
    ["DC=org/CN=%s", /must start with '\/'/],
    ["/DC=org/O=/CN=%s", /O value is empty/],
    ["/DC=org//CN=%s", /empty RDN/],
    ["/DC=org/CN=%s/", /empty RDN/],
    ["/DC=org/CN", /no '='/],
    ["/DC=org/O=x", /exactly one %s \(found 0\)/],
    ["/O=%s/CN=%s", /exactly one %s \(found 2\)/],
    ["/CN=%d", /'%' must be followed by 's'/],
    ["/%s=x", /inside a value/],
    ["/O=a+CN=b/CN=%s", /multi-valued RDNs/],
    ["/C=USA/CN=%s", /two-letter/],
    ["/C=us/CN=%s", /two-letter/],
    ["/DC=exämple/CN=%s", /must be ASCII/],
    ["/O=a\u0001b/CN=%s", /control or invisible character U\+0001/],
    ["/O=" + "x".repeat(65) + "/CN=%s", /65 characters is longer than the limit of 64/],
    ["/CN=%s\\", /lone backslash/],
    ["/serialNumber=é/CN=%s", /PrintableString/],
  ];
  for (const [f, why] of bad) t.match(configError(() => compileDnFormat(f)).message, why, f);
});

t.test("escapes, aliases and string types (OpenSSL's view)", async (t) => {
  const tpl = compileDnFormat("/dc=org/DC=example/C=DE/O=A\\/S \\\\ Co\\+/organizationalUnitName=Grid Users/emailAddress=ca@example.org/serialNumber=42/CN=user %s (grid)");
  const s = buildSubject(tpl, "jdoe");
  const f = certWith(s.der);
  t.same(subjectLines(f), [
    ["domainComponent", "org"],
    ["domainComponent", "example"],
    ["countryName", "DE"],
    ["organizationName", "A/S \\\\ Co+"], // OpenSSL always shows a backslash escaped
    ["organizationalUnitName", "Grid Users"],
    ["emailAddress", "ca@example.org"],
    ["serialNumber", "42"],
    ["commonName", "user jdoe (grid)"],
  ]);
  t.equal(s.slash, "/DC=org/DC=example/C=DE/O=A\\/S \\ Co\\+/OU=Grid Users/emailAddress=ca@example.org/serialNumber=42/CN=user jdoe (grid)");
  t.equal(openssl("x509", "-in", f, "-noout", "-subject", "-nameopt", "compat").trim(), `subject=${s.slash}`, "slash form = X509_NAME_oneline");
  t.equal(nameToSlash(s.der, (m) => new Error(m)), s.slash);
  const asn = openssl("asn1parse", "-in", f);
  const subjectPart = asn.slice(asn.lastIndexOf("domainComponent") - 200);
  t.match(subjectPart, /domainComponent\n.*IA5STRING\s+:example\n/);
  t.match(subjectPart, /countryName\n.*PRINTABLESTRING\s+:DE\n/);
  t.match(subjectPart, /organizationName\n.*UTF8STRING\s+:A\/S \\ Co\+\n/, "backslash is not PrintableString");
  t.match(subjectPart, /emailAddress\n.*IA5STRING\s+:ca@example.org\n/);
  t.match(subjectPart, /serialNumber\n.*PRINTABLESTRING\s+:42\n/);
  t.match(subjectPart, /commonName\n.*PRINTABLESTRING\s+:user jdoe \(grid\)\n/);
});

t.test("a username is data: it stays one RDN value", async (t) => {
  const accepted = ["a,CN=b", "a=b", "\"quoted\"", "O'Brien", "<b>x<b>", "a;b", "#hash", "José Müller", "名前 テスト", "Ωmega", "x".repeat(64)];
  for (const name of accepted) {
    const s = buildSubject(DN, name);
    const lines = subjectLines(certWith(s.der));
    t.same(lines, [["domainComponent", "org"], ["domainComponent", "example"], ["organizationName", "Example"], ["commonName", name]], name);
  }
  const rfc = openssl("x509", "-in", certWith(buildSubject(DN, "a,CN=b").der), "-noout", "-subject", "-nameopt", "RFC2253");
  t.equal(rfc.trim(), "subject=CN=a\\,CN=b,O=Example,DC=example,DC=org");

  const refused: [string, RegExp][] = [
    ["evil/CN=admin", /contains "\/"/],
    ["a+CN=b", /contains "\+"/],
    ["back\\slash", /contains "\\\\"/],
    ["nul\u0000", /U\+0000/],
    ["new\nline", /U\+000A/],
    ["\u202Eevil", /U\+202E/],
    ["zero\u200Bwidth", /U\+200B/],
    ["nb\u00A0sp", /U\+00A0/],
    ["\uD800x", /not valid Unicode/],
    [" lead", /leading or trailing/],
    ["trail ", /leading or trailing/],
    ["", /empty/],
    ["x".repeat(65), /65 characters is longer than the limit of 64/],
  ];
  for (const [name, why] of refused) t.match(requestError(() => buildSubject(DN, name)).message, why, JSON.stringify(name));
});

t.test("%s in IA5 and country attributes", async (t) => {
  const dcTpl = compileDnFormat("/DC=org/DC=%s/CN=users");
  const s = buildSubject(dcTpl, "grid");
  t.match(openssl("asn1parse", "-in", certWith(s.der)), /domainComponent\n.*IA5STRING\s+:grid\n/);
  t.match(requestError(() => buildSubject(dcTpl, "grïd")).message, /must be ASCII/);
  t.match(requestError(() => buildSubject(dcTpl, "x".repeat(64))).message, /longer than the limit of 63/);
});
