// Usernames, DN_FORMAT and subject encoding, checked with the OpenSSL command line.
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { buildSubject, compileDnFormat, nameToSlash, splitUsername } from "../../services/common/x509/dn.js";
import { CertificateTemplate } from "../../services/signer/profile.js";
import { assembleCertificate, loadCaCertificate } from "../../services/common/x509/certificate.js";
import { pemEncode } from "../../services/common/x509/pem.js";
import { ConfigError, RequestError } from "../../services/common/errors.js";
import { MAX_USERNAME_BYTES, usernameProblem } from "../../services/common/spool-protocol.js";
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
    ["x".repeat(MAX_USERNAME_BYTES + 1), new RegExp(`${MAX_USERNAME_BYTES + 1} bytes is longer than ${MAX_USERNAME_BYTES}$`)],
    ["jdoe " + Array.from({ length: 9 }, (_, i) => `email=u${i}@example.org`).join(" "), /more than 8 email=/],
  ];
  for (const [raw, why] of refused) {
    const e = requestError(() => splitUsername(raw));
    t.match(e.message, why, JSON.stringify(raw));
  }
});

t.test("DN_FORMAT parsing", async (t) => {
  t.equal(DN.slashBefore, "/DC=org/DC=example/O=Example");
  const e = configError(() => compileDnFormat("/DC=org/XX=y/CN=%s"));
  t.match(e.message, /^DN_FORMAT="\/DC=org\/XX=y\/CN=%s": unknown attribute type "XX"/, "names the key, the value and the rule");
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
    ["/DC=org/%s", /not in an attribute name/],
    ["%sx", /followed by '\/' or end DN_FORMAT/],
    ["/DC=org%s%s", /exactly one %s \(found 2\)/],
    ["/O=a\\,b/CN=%s", /a backslash escapes only \/ \\ and \+ \(found \\,\)/],
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

t.test("the position of %s in DN_FORMAT chooses the username's shape", async (t) => {
  const modes: [string, string][] = [
    ["/DC=org/DC=example/CN=%s", "value"],
    ["/CN=%s/O=Example", "value"],
    ["/CN=user %s", "value"],
    ["/CN=a%sb", "value"],
    ["/DC=org/DC=example%s", "rdns"],
    ["%s", "rdns"],
    ["/DC=org%s/CN=robot", "rdns"],
    ["%s/CN=robot", "rdns"],
  ];
  for (const [f, mode] of modes) t.equal(compileDnFormat(f).mode, mode, f);
  // before: /DC=org%s was read as the value "org" + username and gave DC=orgJane Roe
  const suffixTpl = compileDnFormat("/DC=org%s");
  t.match(requestError(() => buildSubject(suffixTpl, "Jane Roe")).message, /must be a slash-form RDN sequence starting with '\/'/);
});

/** OpenSSL's view of the subject built for `username` (suffixes split off first) */
function issuedSubject(tpl: ReturnType<typeof compileDnFormat>, username: string): { lines: [string, string][]; slash: string; compat: string } {
  const s = buildSubject(tpl, splitUsername(username).name);
  const f = certWith(s.der);
  return { lines: subjectLines(f), slash: s.slash, compat: openssl("x509", "-in", f, "-noout", "-subject", "-nameopt", "compat").trim() };
}

t.test("DN-suffix usernames (the seed's convention)", async (t) => {
  const seed = "/DC=org/O=Example/CN=John Doe email=jdoe@example.org info:key=value";
  t.same(splitUsername(seed), { name: "/DC=org/O=Example/CN=John Doe", emails: ["jdoe@example.org"], info: "key=value" }, "the seed's example verbatim");
  const alone = issuedSubject(compileDnFormat("%s"), seed);
  t.same(alone.lines, [["domainComponent", "org"], ["organizationName", "Example"], ["commonName", "John Doe"]], "DN_FORMAT=%s");
  t.equal(alone.compat, `subject=${alone.slash}`);
  t.equal(alone.slash, "/DC=org/O=Example/CN=John Doe");

  const prefixed = issuedSubject(compileDnFormat("/DC=org/DC=example%s"), seed);
  t.same(prefixed.lines, [["domainComponent", "org"], ["domainComponent", "example"], ["domainComponent", "org"], ["organizationName", "Example"], ["commonName", "John Doe"]],
    "the fixed part stays the prefix");

  const frontEnd = issuedSubject(compileDnFormat("/DC=org/DC=example%s"), "/O=Example Org/CN=Jane Doe a1b2c3 email=jane@example.org info:sub=a1b2c3");
  t.same(frontEnd.lines, [["domainComponent", "org"], ["domainComponent", "example"], ["organizationName", "Example Org"], ["commonName", "Jane Doe a1b2c3"]], "the front-end's shape");
  t.equal(frontEnd.slash, "/DC=org/DC=example/O=Example Org/CN=Jane Doe a1b2c3");

  const between = issuedSubject(compileDnFormat("/DC=org%s/CN=robot"), "/O=Example/OU=Grid");
  t.same(between.lines, [["domainComponent", "org"], ["organizationName", "Example"], ["organizationalUnitName", "Grid"], ["commonName", "robot"]]);

  const escaped = issuedSubject(compileDnFormat("/DC=org%s"), "/O=A\\/S Co\\+ \\\\ Partners/CN=Jane\\/Doe");
  t.same(escaped.lines, [["domainComponent", "org"], ["organizationName", "A/S Co+ \\\\ Partners"], ["commonName", "Jane/Doe"]], "\\/ \\+ \\\\ are data");
  t.equal(escaped.slash, "/DC=org/O=A\\/S Co\\+ \\ Partners/CN=Jane\\/Doe");
  t.equal(escaped.compat, `subject=${escaped.slash}`);

  const utf8 = issuedSubject(compileDnFormat("%s"), "/O=Universität/CN=José Müller, Jr.");
  t.same(utf8.lines, [["organizationName", "Universität"], ["commonName", "José Müller, Jr."]]);
});

t.test("suffixes are split only after the username's last RDN", async (t) => {
  t.same(splitUsername("/O=Dept email=x/CN=Jane email=jane@example.org"), { name: "/O=Dept email=x/CN=Jane", emails: ["jane@example.org"], info: undefined },
    "email= text in an RDN that another RDN follows is data");
  const s = issuedSubject(compileDnFormat("%s"), "/O=Dept email=x/CN=Jane email=jane@example.org");
  t.same(s.lines, [["organizationName", "Dept email=x"], ["commonName", "Jane"]]);
  t.same(splitUsername("/O=A\\/CN=b email=a@example.org"), { name: "/O=A\\/CN=b", emails: ["a@example.org"], info: undefined }, "an escaped / starts no RDN");
  t.same(splitUsername("/CN=Jane info:url=http://h.example.org/p email=j@example.org"), { name: "/CN=Jane", emails: ["j@example.org"], info: "url=http://h.example.org/p" },
    "a / in a suffix does not start an RDN");
  t.match(requestError(() => splitUsername("/CN=Jane email=j@example.org Doe")).message, /unexpected "Doe" after/);
  t.same(splitUsername("Jane email=j@example.org"), { name: "Jane", emails: ["j@example.org"], info: undefined }, "value mode splits as before");
});

t.test("DN-suffix usernames that are refused", async (t) => {
  const tpl = compileDnFormat("/DC=org/DC=example%s");
  const refused: [string, RegExp][] = [
    ["Jane Doe", /must be a slash-form RDN sequence starting with '\/'/],
    ["/C=US/CN=x", /brings the attribute type C, which USERNAME_RDN_TYPES \(DC,O,OU,CN\) does not allow/],
    ["/CN=x/emailAddress=x@example.org", /attribute type emailAddress, which USERNAME_RDN_TYPES/],
    ["/serialNumber=1/CN=x", /attribute type serialNumber, which USERNAME_RDN_TYPES/],
    ["/XX=y", /unknown attribute type "XX"/],
    ["/O=a+CN=b", /multi-valued RDNs/],
    ["/O=/CN=x", /O value is empty/],
    ["/CN=x//O=y", /empty RDN/],
    ["/CN=x/", /empty RDN/],
    ["/", /empty RDN/],
    ["/CN", /no '='/],
    ["/CN=a\\,b", /a backslash escapes only/],
    ["/CN=x\\", /lone backslash/],
    ["/CN= Jane", /leading or trailing spaces in its CN value/],
    ["/CN=Jane ", /leading or trailing spaces/],
    ["/CN=" + "x".repeat(65), /CN value of 65 characters is longer than the limit of 64/],
    ["/O=" + "é".repeat(65), /O value of 65 characters is longer than the limit of 64/],
    ["/DC=" + "x".repeat(64), /limit of 63/],
    ["/DC=exämple", /must be ASCII/],
    ["/CN=a\u202Eb", /U\+202E/],
    ["/CN=zero\u200Bwidth", /U\+200B/],
    ["/CN=nb\u00A0sp", /U\+00A0/],
  ];
  for (const [name, why] of refused) t.match(requestError(() => buildSubject(tpl, name)).message, why, JSON.stringify(name));
  const cnOnly = compileDnFormat("/DC=org/O=Example%s", ["commonName"]);
  t.same(cnOnly.usernameTypes, ["CN"]);
  t.match(requestError(() => buildSubject(cnOnly, "/O=Other/CN=x")).message, /attribute type O, which USERNAME_RDN_TYPES \(CN\) does not allow/);
  const withC = compileDnFormat("%s", ["C", "CN"]);
  t.match(requestError(() => buildSubject(withC, "/C=USA/CN=x")).message, /two-letter/);
  t.same(subjectLines(certWith(buildSubject(withC, "/C=DE/CN=x").der)), [["countryName", "DE"], ["commonName", "x"]]);
});

t.test("one username limit for client, spool and signer", async (t) => {
  const longest = "/O=" + "o".repeat(64) + "/CN=" + "x".repeat(64) + " " + Array.from({ length: 8 }, (_, i) => `email=user.number${i}@physics.example.org`).join(" ");
  t.ok(Buffer.byteLength(longest) < MAX_USERNAME_BYTES, "a long DN-suffix username fits");
  t.equal(usernameProblem(longest), undefined);
  t.equal(splitUsername(longest).emails.length, 8);
  const over = "/CN=" + "x".repeat(MAX_USERNAME_BYTES);
  t.match(usernameProblem(over)!, new RegExp(`longer than ${MAX_USERNAME_BYTES} bytes`));
  t.match(requestError(() => splitUsername(over)).message, new RegExp(`longer than ${MAX_USERNAME_BYTES}$`));
});

t.test("text checks: every printable ASCII character passes, a control or invisible one anywhere is refused", async (t) => {
  const template = compileDnFormat("/DC=org/name=%s"); // name: no 64-character bound
  let ascii = "a";
  for (let c = 0x20; c <= 0x7e; c++) if (!"/+\\".includes(String.fromCharCode(c))) ascii += String.fromCharCode(c);
  ascii += "z";
  t.ok(buildSubject(template, ascii).der.length > 0, "printable ASCII (the value-mode separators aside)");
  for (const [bad, code] of [["\u200b", "U+200B"], ["\u00a0", "U+00A0"], ["\u0085", "U+0085"], ["\ue000", "U+E000"], ["\u0378", "U+0378"], ["\u2028", "U+2028"], ["\ufffd", "U+FFFD"], ["\x7f", "U+007F"]] as const) {
    t.match(thrown(RequestError, () => buildSubject(template, `${ascii}${bad}x`)).message, `invisible character ${code}`, code);
    t.match(thrown(ConfigError, () => compileDnFormat(`/O=a${bad}/CN=%s`)).message, `invisible character ${code}`, `${code} in DN_FORMAT`);
  }
  t.match(thrown(RequestError, () => buildSubject(template, "a\ud800b")).message, "is not valid Unicode");
});
