#!/usr/bin/env node
// Regenerates the hostile-input corpus (data files + manifest.json) in this directory.
// Not run by the tests: the files it writes are committed as data. Run it by hand after
// changing a case:  node test/reliability/corpus/generate.mjs
//
// Placeholders the test substitutes at run time (binary-safe):
//   @CSR@           a fresh, valid MyProxy-like CSR (PEM, RSA 2048)
//   @DEADLINE@      now + 15 s (ms)          @DEADLINE_PAST@  now - 60 s
//   @DEADLINE_FAR@  now + 1 day
// Outcomes: "refuse" (a clear error matching `error`, nothing signed) or "issue-safe" (the
// value is data per DESIGN §5: the certificate is issued, and `check` says what it must look like).
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const cases = [];
const write = (rel, data) => {
  fs.mkdirSync(path.dirname(path.join(HERE, rel)), { recursive: true });
  fs.writeFileSync(path.join(HERE, rel), data);
};
for (const d of ["request", "stdin", "csr", "revoke"]) fs.rmSync(path.join(HERE, d), { recursive: true, force: true });

// ---------------------------------------------------------------------------------------------
// request files (written straight into the spool as CLIENT_USER)

const HDR = (o = {}) => {
  const f = { version: "1", username: "corpus user", proxy_lifetime: "43200", max_cert_lifetime: "0", deadline: "@DEADLINE@", ...o };
  return Object.entries(f)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}\n`)
    .join("");
};
const REQ = (o, csr = "@CSR@", end = "end\n") => `${HDR(o)}\n${csr}${end}`;
let n = 0;
const req = (name, data, outcome, error, extra = {}) => {
  const file = `request/${String(++n).padStart(3, "0")}-${name}.req`;
  write(file, data);
  cases.push({ id: `request/${name}`, kind: "request", file, outcome, error, ...extra });
};
const refuse = (name, data, error) => req(name, data, "refuse", error);
const user = (name, u, error) => refuse(name, REQ({ username: u }), error);
const userOk = (name, u, check) => req(name, REQ({ username: u }), "issue-safe", undefined, { check });

refuse("empty", "", "request\\.incomplete");
refuse("truncated-no-end-marker", REQ({}).slice(0, -4), "request\\.incomplete");
refuse("truncated-in-header", HDR().slice(0, 30), "request\\.incomplete");
refuse("truncated-csr-with-end", `${HDR()}\n-----BEGIN CERTIFICATE REQUEST-----\nMIIC\nend\n`, "request\\.(bad_csr|bad_pem)");
refuse("huge-70k", REQ({}, "@CSR@" + "A".repeat(70 * 1024) + "\n"), "request\\.too_large");
refuse("huge-header-value", REQ({ username: "x".repeat(65 * 1024) }), "request\\.too_large");
refuse("binary-random", crypto.randomBytes(3000), "request\\.(bad_format|incomplete)");
refuse("binary-random-with-end", Buffer.concat([crypto.randomBytes(2000).map((b) => (b === 0 ? 1 : b)), Buffer.from("\nend\n")]), "request\\.(bad_format|bad_header)");
refuse("nul-in-username", REQ({ username: "a\0b" }), "request\\.bad_format");
refuse("nul-after-end", REQ({}) + "\0", "request\\.bad_format");
refuse("latin1-not-utf8", Buffer.from(REQ({ username: "Jos\u00e9" }), "latin1"), "request\\.bad_format");
refuse("overlong-utf8-slash", Buffer.concat([Buffer.from("version=1\nusername=evil"), Buffer.from([0xc0, 0xaf]), Buffer.from("CN=admin\nproxy_lifetime=0\nmax_cert_lifetime=0\ndeadline=@DEADLINE@\n\n@CSR@end\n")]), "request\\.bad_format");
refuse("utf16le-bom", Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(REQ({}), "utf16le")]), "request\\.bad_format");
refuse("utf8-bom", "\ufeff" + REQ({}), "request\\.bad_header");
refuse("crlf-line-ends", REQ({}).replace(/\n/g, "\r\n"), "request\\.(bad_format|incomplete)");
refuse("lone-cr-in-username", REQ({ username: "a\rb" }), "request\\.bad_format");
refuse("duplicate-username", REQ({}).replace("username=corpus user\n", "username=corpus user\nusername=root\n"), "request\\.bad_header");
refuse("duplicate-deadline", REQ({}).replace("deadline=@DEADLINE@\n", "deadline=@DEADLINE@\ndeadline=@DEADLINE_FAR@\n"), "request\\.bad_header");
refuse("duplicate-version", REQ({}).replace("version=1\n", "version=1\nversion=1\n"), "request\\.bad_header");
refuse("missing-username", REQ({ username: undefined }), "request\\.bad_header");
refuse("missing-deadline", REQ({ deadline: undefined }), "request\\.bad_header");
refuse("missing-version", REQ({ version: undefined }), "request\\.bad_header");
refuse("missing-proxy-lifetime", REQ({ proxy_lifetime: undefined }), "request\\.bad_header");
refuse("missing-max-cert-lifetime", REQ({ max_cert_lifetime: undefined }), "request\\.bad_header");
refuse("version-2", REQ({ version: "2" }), "request\\.bad_version");
refuse("version-null", REQ({ version: "NULL" }), "request\\.bad_version");
refuse("username-null", REQ({ username: "NULL" }), "request\\.bad_username");
refuse("username-empty", REQ({ username: "" }), "request\\.bad_username");
refuse("proxy-lifetime-null", REQ({ proxy_lifetime: "NULL" }), "request\\.bad_header");
refuse("proxy-lifetime-negative", REQ({ proxy_lifetime: "-1" }), "request\\.bad_header");
refuse("proxy-lifetime-exponent", REQ({ proxy_lifetime: "1e9" }), "request\\.bad_header");
refuse("proxy-lifetime-enormous", REQ({ proxy_lifetime: "99999999999" }), "request\\.bad_header");
refuse("proxy-lifetime-hex", REQ({ proxy_lifetime: "0x10" }), "request\\.bad_header");
refuse("proxy-lifetime-leading-space", REQ({ proxy_lifetime: " 100" }), "request\\.bad_header");
refuse("proxy-lifetime-leading-zero", REQ({ proxy_lifetime: "007" }), "request\\.bad_header");
refuse("proxy-lifetime-fraction", REQ({ proxy_lifetime: "3600.5" }), "request\\.bad_header");
refuse("proxy-lifetime-just-above-10y", REQ({ proxy_lifetime: String(10 * 366 * 24 * 3600 + 1) }), "request\\.bad_header");
refuse("max-cert-lifetime-negative", REQ({ max_cert_lifetime: "-86400" }), "request\\.bad_header");
refuse("max-cert-lifetime-2pow64", REQ({ max_cert_lifetime: "18446744073709551616" }), "request\\.bad_header");
refuse("max-cert-lifetime-null", REQ({ max_cert_lifetime: "NULL" }), "request\\.bad_header");
refuse("deadline-past", REQ({ deadline: "@DEADLINE_PAST@" }), "request\\.expired");
refuse("deadline-far-future", REQ({ deadline: "@DEADLINE_FAR@" }), "request\\.bad_deadline");
refuse("deadline-zero", REQ({ deadline: "0" }), "request\\.expired");
refuse("deadline-negative", REQ({ deadline: "-5" }), "request\\.bad_header");
refuse("deadline-huge", REQ({ deadline: "99999999999999999999" }), "request\\.bad_header");
refuse("deadline-null", REQ({ deadline: "NULL" }), "request\\.bad_header");
refuse("passphrase-key", REQ({ passphrase: "hunter2" }), "request\\.bad_header");
refuse("subject-key", REQ({ subject: "/CN=admin" }), "request\\.bad_header");
refuse("extensions-key", REQ({ extensions: "basicConstraints=CA:TRUE" }), "request\\.bad_header");
refuse("line-without-equals", REQ({}).replace("version=1\n", "version=1\nhello\n"), "request\\.bad_header");
refuse("key-with-space", REQ({}).replace("username=", "username ="), "request\\.bad_header");
refuse("key-uppercase", REQ({}).replace("username=", "USERNAME="), "request\\.bad_header");
refuse("empty-key", REQ({}).replace("version=1\n", "version=1\n=x\n"), "request\\.bad_header");
refuse("no-empty-line", `${HDR()}@CSR@end\n`, "request\\.(bad_format|bad_header)");
refuse("no-csr", `${HDR()}\nend\n`, "request\\.(bad_csr|incomplete|bad_format)");
refuse("csr-raw-base64", REQ({}, "MIICWjCCAUICAQAwFTETMBEGA1UEAwwKY29ycHVzIHVzZXI=\n"), "request\\.(bad_csr|bad_pem)");
refuse("two-csrs", REQ({}, "@CSR@@CSR@"), "request\\.(bad_csr|bad_pem)");
refuse("end-marker-twice", REQ({}, "@CSR@end\n"), "request\\.(bad_csr|bad_pem)");
refuse("header-after-csr", REQ({}, "@CSR@username=root\n"), "request\\.(bad_csr|bad_pem)");
refuse("header-only-many-lines", "version=1\n".repeat(2000) + "\nend\n", "request\\.bad_header");
refuse("pem-header-in-csr", REQ({}, "-----BEGIN CERTIFICATE REQUEST-----\nProc-Type: 4,ENCRYPTED\n-----END CERTIFICATE REQUEST-----\n"), "request\\.(bad_csr|bad_pem)");
// usernames: every DN metacharacter, controls, invisible characters
user("username-escape-sequence", "evil\x1b[2J", "request\\.bad_username");
user("username-del", "evil\x7f", "request\\.bad_username");
user("username-tab", "evil\tname", "request\\.bad_username");
user("username-1025-bytes", "x".repeat(1025), "request\\.bad_username");
user("username-300-bytes", "x".repeat(300), "request\\.bad_subject");
user("username-cn-over-64", "y".repeat(100), "request\\.bad_subject");
user("username-slash-rdn", "evil/CN=admin", "request\\.bad_subject");
user("username-slash-o", "x/O=Other Org/CN=root", "request\\.bad_subject");
user("username-plus-multivalued", "evil+UID=root", "request\\.bad_subject");
user("username-backslash", "evil\\/CN=admin", "request\\.bad_subject");
user("username-leading-space", " evil", "request\\.bad_(username|subject)");
user("username-trailing-space", "evil ", "request\\.bad_(username|subject)");
user("username-rlo-bidi", "evil\u202egnp.exe", "request\\.bad_subject");
user("username-zero-width-space", "ev\u200bil", "request\\.bad_subject");
user("username-nbsp", "ev\u00a0il", "request\\.bad_subject");
user("username-c1-control", "ev\u0085il", "request\\.bad_(username|subject)");
user("username-private-use", "ev\ue000il", "request\\.bad_subject");
user("username-bom-inside", "ev\ufeffil", "request\\.bad_subject");
user("username-line-separator", "ev\u2028il", "request\\.bad_subject");
user("username-replacement-char", "ev\ufffdil", "request\\.bad_(username|subject)");
userOk("username-comma-cn", "evil,CN=admin", { cn: "evil,CN=admin", rdns: 4 });
userOk("username-equals", "a=b", { cn: "a=b", rdns: 4 });
userOk("username-quotes-semicolon", "\"x\";'y'<z>#", { cn: "\"x\";'y'<z>#", rdns: 4 });
userOk("username-leading-hash", "#3003020101", { cn: "#3003020101", rdns: 4 });
userOk("username-unicode", "J\u00fcrgen M\u00fcller", { cn: "J\u00fcrgen M\u00fcller", rdns: 4 });
// email= and info:
user("email-only-no-name", "email=evil@example.org", "request\\.bad_username");
user("email-comma-dns", "u email=a@example.org,DNS:evil.com", "request\\.bad_email");
user("email-comma-email", "u email=a@example.org,email:b@example.net", "request\\.bad_email");
user("email-dns-type", "u email=DNS:evil.example.com", "request\\.bad_email");
user("email-uri-type", "u email=URI:http://evil.example.com/", "request\\.bad_email");
user("email-ip-type", "u email=IP:10.0.0.1", "request\\.bad_email");
user("email-othername", "u email=otherName:1.3.6.1.4.1.311.20.2.3;UTF8:admin@corp", "request\\.bad_email");
user("email-single-label", "u email=a@localhost", "request\\.bad_email");
user("email-angle-brackets", "u email=<a@example.org>", "request\\.bad_email");
user("email-two-at", "u email=a@b@example.org", "request\\.bad_email");
user("email-duplicate", "u email=a@example.org email=A@example.org", "request\\.bad_email");
user("email-nine", "u " + Array.from({ length: 9 }, (_, i) => `email=a${i}@example.org`).join(" "), "request\\.bad_email");
user("email-ip-literal", "u email=a@[10.0.0.1]", "request\\.bad_email");
user("email-unicode-local", "u email=\u00e4@example.org", "request\\.bad_email");
user("email-empty", "u email=", "request\\.bad_email");
user("email-quoted-local", "u email=\"a b\"@example.org", "request\\.bad_(email|username)");
// "/CN=x" starts an RDN, so the suffixes come after it: the whole is the name, and "/" is refused in it
user("email-slash-domain", "u email=a@example.org/CN=x", "request\\.(bad_email|bad_subject)");
user("info-twice", "u info:a=b info:c=d", "request\\.bad_info");
user("info-empty", "u info:", "request\\.bad_info");
user("info-space-split", "u info:a=b c=d", "request\\.bad_username");
user("info-double-comma", "u info:a=b,,c=d", "request\\.bad_info");
user("info-too-long", "u info:k=" + "v".repeat(250), "request\\.bad_(info|username)");
user("info-empty-key", "u info:=x", "request\\.bad_info");
user("info-no-equals", "u info:justtext", "request\\.bad_info");
user("name-after-suffix", "u email=a@example.org John", "request\\.bad_username");
user("double-space-between-suffixes", "u email=a@example.org  info:a=b", "request\\.bad_username");
// lifetimes that are plausible but enormous: clamped, never refused silently into a long cert
req("lifetime-10y-clamped", REQ({ proxy_lifetime: String(10 * 365 * 24 * 3600), max_cert_lifetime: "0" }), "issue-safe", undefined, { check: { cn: "corpus user", rdns: 4, maxLifetimeS: 12 * 3600 } });

// ---------------------------------------------------------------------------------------------
// CSRs (wrapped into a valid request file by the test)

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "etca-corpus-"));
const ossl = (args, input) => execFileSync("openssl", args, { input, stdio: ["pipe", "pipe", "pipe"] });
const csrFromKey = (keyArgs, reqArgs = []) => {
  const key = path.join(tmp, `k${crypto.randomBytes(4).toString("hex")}.pem`);
  ossl(["genpkey", ...keyArgs, "-out", key]);
  return ossl(["req", "-new", "-key", key, "-subj", "/CN=NULL SUBJECT NAME ENTRY", ...reqArgs]).toString();
};
const csrWithExt = (ext, bits = 2048) => {
  const cnf = path.join(tmp, `c${crypto.randomBytes(4).toString("hex")}.cnf`);
  fs.writeFileSync(cnf, `[req]\ndistinguished_name=dn\nreq_extensions=ext\n[dn]\n[ext]\n${ext}\n`);
  return csrFromKey(["-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${bits}`], ["-config", cnf]);
};
const pem = (der, label = "CERTIFICATE REQUEST") => `-----BEGIN ${label}-----\n${der.toString("base64").match(/.{1,64}/g).join("\n")}\n-----END ${label}-----\n`;
const derOf = (p) => Buffer.from(p.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
// minimal DER writer for crafted keys
const len = (n) => (n < 0x80 ? Buffer.from([n]) : (() => { const b = []; while (n > 0) { b.unshift(n & 0xff); n >>= 8; } return Buffer.from([0x80 | b.length, ...b]); })());
const tlv = (tag, body) => Buffer.concat([Buffer.from([tag]), len(body.length), body]);
const seq = (...x) => tlv(0x30, Buffer.concat(x));
const int = (b) => tlv(0x02, b[0] & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
const RSA_ALG = Buffer.from("300d06092a864886f70d0101010500", "hex");
const SHA256_RSA = Buffer.from("300d06092a864886f70d01010b0500", "hex");
const NAME = seq(tlv(0x31, seq(Buffer.from("0603550403", "hex"), tlv(0x0c, Buffer.from("x")))));
const craftedCsr = (modulus, exponent) => {
  const spki = seq(RSA_ALG, tlv(0x03, Buffer.concat([Buffer.from([0]), seq(int(modulus), int(exponent))])));
  const info = seq(int(Buffer.from([0])), NAME, spki, Buffer.from([0xa0, 0x00]));
  return pem(seq(info, SHA256_RSA, tlv(0x03, Buffer.concat([Buffer.from([0]), crypto.randomBytes(256)]))));
};
const oddModulus = (bits) => {
  const m = crypto.randomBytes(bits / 8);
  m[0] |= 0x80;
  m[m.length - 1] |= 1;
  return m;
};
let c = 0;
const csr = (name, data, outcome, error, extra = {}) => {
  const file = `csr/${String(++c).padStart(3, "0")}-${name}.pem`;
  write(file, data);
  cases.push({ id: `csr/${name}`, kind: "csr", file, outcome, error, ...extra });
};
const good = csrFromKey(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
const goodDer = derOf(good);
const flipped = Buffer.from(goodDer);
flipped[flipped.length - 10] ^= 0x01;
csr("bad-signature", pem(flipped), "refuse", "request\\.bad_csr_signature");
const flippedInfo = Buffer.from(goodDer);
flippedInfo[40] ^= 0x01; // inside the subject name of the signed part
csr("tampered-signed-part", pem(flippedInfo), "refuse", "request\\.(bad_csr_signature|bad_csr)");
csr("ec-p256", csrFromKey(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]), "refuse", "request\\.key_type");
csr("ec-p384", csrFromKey(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]), "refuse", "request\\.key_type");
{
  const params = path.join(tmp, "dsa.pem");
  ossl(["genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:2048", "-out", params]);
  const key = path.join(tmp, "dsakey.pem");
  ossl(["genpkey", "-paramfile", params, "-out", key]);
  csr("dsa-2048", ossl(["req", "-new", "-key", key, "-subj", "/CN=x"]).toString(), "refuse", "request\\.key_type");
}
csr("ed25519", csrFromKey(["-algorithm", "ED25519"]), "refuse", "request\\.key_type");
csr("rsa-pss-key", csrFromKey(["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"]), "refuse", "request\\.(key_type|bad_signature_algorithm)");
csr("rsa-512", csrFromKey(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"]), "refuse", "request\\.key_too_small");
csr("rsa-1024", csrFromKey(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]), "refuse", "request\\.key_too_small");
csr("rsa-2047", csrFromKey(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2047"]), "refuse", "request\\.key_too_small");
csr("rsa-exponent-3", csrFromKey(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt", "rsa_keygen_pubexp:3"]), "refuse", "request\\.key_exponent");
csr("rsa-huge-20000-bits", craftedCsr(oddModulus(20000), Buffer.from([1, 0, 1])), "refuse", "request\\.key_too_large");
csr("rsa-even-modulus", craftedCsr(Buffer.concat([oddModulus(2048).subarray(0, 255), Buffer.from([2])]), Buffer.from([1, 0, 1])), "refuse", "request\\.key_invalid");
csr("rsa-even-exponent", craftedCsr(oddModulus(2048), Buffer.from([1, 0, 0])), "refuse", "request\\.key_exponent");
csr("rsa-exponent-1", craftedCsr(oddModulus(2048), Buffer.from([1])), "refuse", "request\\.key_exponent");
csr("rsa-exponent-huge", craftedCsr(oddModulus(2048), oddModulus(2048)), "refuse", "request\\.key_exponent");
csr("md5-signature", csrFromKey(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], ["-md5"]), "refuse", "request\\.bad_signature_algorithm");
csr("ca-true-extension", csrWithExt("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign"), "issue-safe", undefined, { check: { rdns: 4, caFalse: true, noKeyCertSign: true } });
csr("san-dns-extension", csrWithExt("subjectAltName=DNS:www.evil.example.com,email:root@example.org"), "issue-safe", undefined, { check: { rdns: 4, noSan: true } });
csr("proxycertinfo-critical", csrWithExt("proxyCertInfo=critical,language:id-ppl-inheritAll"), "issue-safe", undefined, { check: { rdns: 4, caFalse: true } });
csr("garbage-der-in-armour", pem(crypto.randomBytes(300)), "refuse", "request\\.bad_csr");
csr("zero-bytes-in-armour", pem(Buffer.alloc(64)), "refuse", "request\\.bad_csr");
csr("truncated-der", pem(goodDer.subarray(0, goodDer.length - 40)), "refuse", "request\\.bad_csr");
csr("trailing-bytes-after-der", pem(Buffer.concat([goodDer, Buffer.from([0, 0, 0, 0])])), "refuse", "request\\.bad_csr");
csr("indefinite-length-ber", pem(Buffer.concat([Buffer.from([0x30, 0x80]), goodDer.subarray(4), Buffer.from([0, 0])])), "refuse", "request\\.bad_csr");
csr("length-overflow", pem(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00])), "refuse", "request\\.bad_csr");
csr("nesting-bomb", pem(Array.from({ length: 300 }).reduce((inner) => tlv(0x30, inner), Buffer.alloc(0))), "refuse", "request\\.bad_csr");
csr("certificate-not-csr", ossl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(tmp, "x.key"), "-subj", "/CN=x", "-days", "1"]).toString(), "refuse", "request\\.(bad_csr|bad_pem)");
csr("private-key-not-csr", fs.readFileSync(path.join(tmp, "x.key"), "utf8"), "refuse", "request\\.(bad_csr|bad_pem)");
csr("cert-der-in-csr-armour", pem(derOf(ossl(["req", "-x509", "-key", path.join(tmp, "x.key"), "-subj", "/CN=x", "-days", "1"]).toString())), "refuse", "request\\.bad_csr");
csr("csr-version-2", (() => {
  const d = Buffer.from(goodDer);
  const i = d.indexOf(Buffer.from([0x02, 0x01, 0x00]));
  d[i + 2] = 1;
  return pem(d);
})(), "refuse", "request\\.bad_csr");
csr("pem-with-blank-line", good.replace(/\n([A-Za-z0-9+/]{64})\n/, "\n$1\n\n"), "either", "request\\.(bad_csr|bad_pem)", { check: { rdns: 4 }, note: "a blank line inside the PEM block: refusing it (strict) or issuing for the CSR's own key are both safe" });
csr("base64-junk-char", good.replace(/\n([A-Za-z0-9+/]{10})/, "\n$1*"), "refuse", "request\\.(bad_csr|bad_pem)");
csr("wrong-pem-label", good.replace(/CERTIFICATE REQUEST/g, "CERTIFICATE"), "refuse", "request\\.(bad_csr|bad_pem)");
csr("new-certificate-request-label", good.replace(/CERTIFICATE REQUEST/g, "NEW CERTIFICATE REQUEST"), "refuse", "request\\.(bad_csr|bad_pem)");

// ---------------------------------------------------------------------------------------------
// MyProxy stdin (through the real etoken-ca-client); @PASS@ is the secret passphrase

const LINES = (o = {}) => {
  const f = {
    username: "stdin user", passphrase: "@PASS@", proxy_lifetime: "43200", retrievers: "NULL", renewers: "NULL", credname: "NULL",
    creddesc: "NULL", authzcreds: "NULL", keyretrieve: "NULL", trusted_retrievers: "NULL", max_cert_lifetime: "0", ...o,
  };
  return Object.entries(f).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}\n`).join("");
};
const IN = (o, csr = "@CSR@") => `${LINES(o)}\n${csr}`;
let s = 0;
const stdin = (name, data, outcome, error, extra = {}) => {
  const file = `stdin/${String(++s).padStart(3, "0")}-${name}.in`;
  write(file, data);
  cases.push({ id: `stdin/${name}`, kind: "stdin", file, outcome, error, ...extra });
};
const sref = (name, data, error) => stdin(name, data, "refuse", error);
sref("empty", "", "empty input");
sref("huge-100k", IN({}) + "A".repeat(100 * 1024), "larger than");
sref("binary", crypto.randomBytes(4000).map((b) => (b === 0 ? 7 : b)), "not valid UTF-8|expected key=value|no empty line");
sref("nul-byte", IN({ username: "a\0b" }), "NUL byte");
sref("latin1", Buffer.from(IN({ username: "Jos\u00e9" }), "latin1"), "not valid UTF-8");
sref("stray-cr", IN({ username: "a\rb" }), "carriage return");
sref("no-empty-line", `${LINES()}@CSR@`, "expected key=value|no empty line");
sref("duplicate-username", IN({}).replace("username=stdin user\n", "username=stdin user\nusername=root\n"), "username given twice");
sref("duplicate-passphrase", IN({}).replace("passphrase=@PASS@\n", "passphrase=@PASS@\npassphrase=@PASS@\n"), "passphrase given twice");
sref("missing-username", IN({ username: undefined }), "no username");
sref("username-null", IN({ username: "NULL" }), "empty username");
sref("proxy-lifetime-negative", IN({ proxy_lifetime: "-5" }), "whole number of seconds");
sref("proxy-lifetime-text", IN({ proxy_lifetime: "forever" }), "whole number of seconds");
sref("max-cert-lifetime-enormous", IN({ max_cert_lifetime: "99999999999" }), "whole number of seconds|plausible");
sref("uppercase-key", IN({}).replace("username=", "USERNAME="), "expected key=value");
sref("line-without-equals", IN({}).replace("retrievers=NULL\n", "retrievers\n"), "expected key=value");
sref("no-csr", `${LINES()}\n`, "PEM certificate request");
sref("csr-is-certificate", IN({}, "@CERT@"), "PEM certificate request");
sref("csr-is-private-key", IN({}, "@KEY@"), "PEM certificate request");
sref("two-csrs", IN({}, "@CSR@@CSR@"), "PEM certificate request");
sref("garbage-after-csr", IN({}, "@CSR@rm -rf /\n"), "PEM certificate request");
sref("escape-in-username", IN({ username: "evil\x1b]0;owned\x07" }), "control character");
sref("username-1025-bytes", IN({ username: "u".repeat(1025) }), "longer than");
sref("slash-in-username", IN({ username: "evil/CN=admin" }), "not allowed in a certificate name");
sref("email-injection", IN({ username: "u email=a@example.org,DNS:evil.example.com" }), "e-mail address");
sref("weak-key-1024", IN({}, "@CSR1024@"), "1024 bits is below the minimum");
stdin("crlf-line-ends", IN({}).replace(/\n/g, "\r\n"), "issue-safe", undefined, { check: { cn: "stdin user", rdns: 4 } });
stdin("proxy-lifetime-null", IN({ proxy_lifetime: "NULL" }), "issue-safe", undefined, { check: { cn: "stdin user", rdns: 4, maxLifetimeS: 12 * 3600 } });

// ---------------------------------------------------------------------------------------------
// revoke queue junk (written into REVOKE_DIR; the test processes the queue with SIGUSR1)
// Placeholders: @SERIAL@ a real, valid serial from the CA database; @NOW@ ms now.
// `owner`: root (default), spool, client.

let r = 0;
const rev = (name, fileName, data, extra = {}) => {
  const file = `revoke/${String(++r).padStart(3, "0")}-${name}.rev`;
  write(file, data);
  cases.push({ id: `revoke/${name}`, kind: "revoke", file, name: fileName, outcome: "refuse", ...extra });
};
const ENTRY = (o = {}) => {
  const f = { version: "1", serial: "@SERIAL@", reason: "keyCompromise", queued_at: "@NOW@", ...o };
  return Object.entries(f).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}\n`).join("") + "end\n";
};
const QN = "rev.@NOW@.@RAND@";
rev("owned-by-spool-user", QN, ENTRY(), { owner: "spool" });
rev("owned-by-client-user", QN, ENTRY(), { owner: "client" });
rev("bad-name", "evil-entry", ENTRY());
rev("name-dotdot", "rev.1234567890123..x", ENTRY());
rev("no-end-marker", QN, ENTRY().replace("end\n", ""));
rev("nul-byte", QN, ENTRY().replace("keyCompromise", "keyCompromise\0"));
rev("crlf", QN, ENTRY().replace(/\n/g, "\r\n"));
rev("lowercase-serial", QN, ENTRY({ serial: "@SERIAL_LOWER@" }));
rev("serial-not-hex", QN, ENTRY({ serial: "ZZ" }));
rev("serial-empty", QN, ENTRY({ serial: "" }));
rev("reason-unknown", QN, ENTRY({ reason: "becauseISaySo" }));
rev("reason-missing", QN, ENTRY({ reason: undefined }));
rev("duplicate-serial", QN, ENTRY().replace("reason=", "serial=00\nreason="));
rev("unknown-key", QN, ENTRY().replace("reason=", "command=rm -rf /\nreason="));
rev("version-9", QN, ENTRY({ version: "9" }));
rev("huge", QN, ENTRY() + "#".repeat(8000));
rev("binary", QN, crypto.randomBytes(500));
rev("queued-at-text", QN, ENTRY({ queued_at: "yesterday" }));
rev("symlink-to-shadow", QN, "", { special: "symlink", target: "/etc/shadow" });
rev("fifo", QN, "", { special: "fifo" });
rev("directory", QN, "", { special: "directory" });
rev("hard-link-to-root-file", QN, "", { special: "hardlink" });
rev("unknown-serial", QN, ENTRY({ serial: "0123456789ABCDEF0123" }), { outcome: "not-applied" });

// ---------------------------------------------------------------------------------------------
// filesystem attacks in the spool (described as data; the test performs them)

const fsCases = [
  ["link-to-etc-shadow", "request link -> /etc/shadow (absolute path)"],
  ["link-dotdot", "request link -> ../../etc/passwd"],
  ["link-to-symlink-to-root-file", "request -> req.X, req.X is a symlink to a root-owned 0644 file"],
  ["link-to-symlink-to-signer-index", "request -> req.X, req.X is a symlink into CA_DIR/index.txt"],
  ["hard-link-to-root-file", "req.X is a hard link to a root-owned file in the same filesystem"],
  ["hard-link-to-own-request", "req.X has a second hard link (a valid request, 2 links)"],
  ["fifo", "req.X is a FIFO (must not block the spool)"],
  ["directory", "req.X is a directory"],
  ["unix-socket", "req.X is a listening Unix socket"],
  ["owned-by-root", "req.X is a valid request owned by root"],
  ["owned-by-spool-user", "req.X is a valid request owned by SPOOL_USER"],
  ["owned-by-monitor-user", "req.X is a valid request owned by MONITOR_USER"],
  ["missing-target", "request -> req.X, which does not exist"],
  ["request-is-regular-file", "request is a regular file, not a symlink"],
  ["request-is-directory", "request is a directory"],
  ["request-is-fifo", "request is a FIFO"],
  ["link-target-with-newline", "request -> 'req.AAAAAAAA\\n'"],
  ["link-target-too-long-name", "request -> req.<64 characters>"],
  ["link-target-result-file", "request -> req.X.result (a result name, not a request)"],
  ["swap-race", "req.X is swapped between a valid request and a symlink to a root file in a tight loop while the spool reads it"],
  ["swap-to-other-owner-race", "req.X is swapped between the client's valid request and a root-owned copy while the spool reads it"],
  ["grow-after-fstat", "req.X keeps growing past 64 KiB while the spool reads it"],
];
for (const [name, description] of fsCases) cases.push({ id: `fs/${name}`, kind: "fs", attack: name, description, outcome: "refuse" });

fs.writeFileSync(path.join(HERE, "manifest.json"), JSON.stringify({ generatedBy: "generate.mjs", cases }, null, 1) + "\n");
fs.rmSync(tmp, { recursive: true, force: true });
const by = {};
for (const x of cases) by[x.kind] = (by[x.kind] ?? 0) + 1;
console.log(`${cases.length} cases`, by);
