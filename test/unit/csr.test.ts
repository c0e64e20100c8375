// CSR checks against requests made by the OpenSSL command line.
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { pemDecode, pemEncode } from "../../services/common/x509/pem.js";
import { bitString, contextTag, integer, nul, oid, seq, set, TAG, tlv } from "../../services/common/x509/der.js";
import { checkRsaPublicKey, parseCsr } from "../../services/common/x509/csr.js";
import { RequestError } from "../../services/common/errors.js";
import { thrown } from "../fixtures/thrown.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-csr-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const p = (f: string): string => path.join(dir, f);
const openssl = (...args: string[]): Buffer => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });

function csr(name: string, keyArgs: string[], reqArgs: string[] = []): Buffer {
  openssl("genpkey", ...keyArgs, "-out", p(`${name}.key`));
  openssl("req", "-new", "-key", p(`${name}.key`), "-subj", "/CN=NULL SUBJECT NAME ENTRY", "-out", p(`${name}.csr`), ...reqArgs);
  return pemDecode(fs.readFileSync(p(`${name}.csr`), "latin1"), "CERTIFICATE REQUEST");
}
const RSA = (bits: number): string[] => ["-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${bits}`];

const POLICY = { minKeyBits: 2048 };

const refusal = (fn: () => unknown): RequestError => thrown(RequestError, fn);

const rsa2048 = csr("rsa2048", RSA(2048), ["-addext", "basicConstraints=critical,CA:TRUE",
  "-addext", "1.3.6.1.5.5.7.1.14=critical,DER:300c300a06082b06010505071501"]);

t.test("RSA 2048 with MyProxy-like extensions is accepted; the key is the CSR's", async (t) => {
  const r = parseCsr(rsa2048, POLICY);
  t.equal(r.keyBits, 2048);
  const pub = execFileSync("openssl", ["pkey", "-pubin", "-outform", "DER"], { input: openssl("req", "-in", p("rsa2048.csr"), "-noout", "-pubkey") });
  t.same(r.publicKey, pub);
  t.same(checkRsaPublicKey(r.publicKey, 2048), { keyBits: 2048 });
});

t.test("sha1, sha384 and sha512 signatures are accepted, md5 is not", async (t) => {
  for (const md of ["sha1", "sha384", "sha512"]) {
    openssl("req", "-new", `-${md}`, "-key", p("rsa2048.key"), "-subj", "/CN=x", "-out", p(`${md}.csr`));
    const der = pemDecode(fs.readFileSync(p(`${md}.csr`), "latin1"), "CERTIFICATE REQUEST");
    t.match(openssl("req", "-in", p(`${md}.csr`), "-noout", "-text").toString(), new RegExp(`${md}WithRSAEncryption`));
    t.equal(parseCsr(der, POLICY).keyBits, 2048, md);
  }
  openssl("req", "-new", "-md5", "-key", p("rsa2048.key"), "-subj", "/CN=x", "-out", p("md5.csr"));
  const md5 = pemDecode(fs.readFileSync(p("md5.csr"), "latin1"), "CERTIFICATE REQUEST");
  t.match(refusal(() => parseCsr(md5, POLICY)).message, /md5WithRSAEncryption is not accepted/);
});

t.test("small, large, non-RSA keys and small exponents are refused", async (t) => {
  const r1024 = csr("rsa1024", RSA(1024));
  t.equal(refusal(() => parseCsr(r1024, POLICY)).message, "RSA key of 1024 bits is below the minimum of 2048");
  t.equal(refusal(() => parseCsr(rsa2048, { minKeyBits: 1024, maxKeyBits: 2047 })).message, "RSA key of 2048 bits is above the maximum of 2047");
  t.equal(parseCsr(r1024, { minKeyBits: 1024 }).keyBits, 1024);

  const ec = csr("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
  t.match(refusal(() => parseCsr(ec, POLICY)).message, /^only RSA keys are accepted \(this request has an EC key\)$/);
  const ed = csr("ed", ["-algorithm", "ED25519"]);
  t.match(refusal(() => parseCsr(ed, POLICY)).message, /^only RSA keys are accepted \(this request has an Ed25519 key\)$/);

  const e3 = csr("e3", [...RSA(2048), "-pkeyopt", "rsa_keygen_pubexp:3"]);
  t.match(openssl("req", "-in", p("e3.csr"), "-noout", "-text").toString(), /Exponent: 3 \(0x3\)/);
  t.equal(refusal(() => parseCsr(e3, POLICY)).message, "RSA public exponent 3 is below 65537");
});

t.test("the spool's parse leaves the self-signature to the signer, and only that", async (t) => {
  // the signer verifies it in any case (services/signer/possession.ts); the spool's copy of the
  // check cost ~0.25 ms per certificate and refused nothing the signer does not refuse with the
  // same code and message
  const SPOOL = { ...POLICY, verifySignature: false };
  const sig = Buffer.from(rsa2048);
  sig[sig.length - 1]! ^= 0x01;
  t.equal(parseCsr(sig, SPOOL).keyBits, 2048, "a signature that does not verify passes the spool's parse");
  t.same(parseCsr(sig, SPOOL).publicKey, parseCsr(rsa2048, POLICY).publicKey, "with the key the signer then checks it against");
  t.equal(refusal(() => parseCsr(sig, POLICY)).message, "CSR signature does not verify", "the signer's parse (the default) still refuses it");
  openssl("req", "-new", "-md5", "-key", p("rsa2048.key"), "-subj", "/CN=x", "-out", p("md5-spool.csr"));
  const md5 = pemDecode(fs.readFileSync(p("md5-spool.csr"), "latin1"), "CERTIFICATE REQUEST");
  t.match(refusal(() => parseCsr(md5, SPOOL)).message, /md5WithRSAEncryption is not accepted/, "the signature algorithm is still the spool's check");
  const r1024 = csr("r1024-spool", RSA(1024));
  t.equal(refusal(() => parseCsr(r1024, SPOOL)).code, "request.key_too_small", "and the key policy");
});

t.test("tampered requests are refused", async (t) => {
  const sig = Buffer.from(rsa2048);
  sig[sig.length - 1]! ^= 0x01;
  t.equal(refusal(() => parseCsr(sig, POLICY)).message, "CSR signature does not verify");

  // change one byte of the subject ("NULL" -> "NULM"): the DER stays valid, the signature does not
  const body = Buffer.from(rsa2048);
  const at = body.indexOf("NULL SUBJECT");
  body[at + 3] = 0x4d;
  t.equal(refusal(() => parseCsr(body, POLICY)).message, "CSR signature does not verify");

  // garbage inside a valid PEM armour
  const junk = pemDecode(pemEncode(crypto.randomBytes(300), "CERTIFICATE REQUEST"), "CERTIFICATE REQUEST");
  t.match(refusal(() => parseCsr(junk, POLICY)).message, /^CSR is not valid DER: /);
  t.match(refusal(() => parseCsr(rsa2048.subarray(0, rsa2048.length - 10), POLICY)).message, /^CSR is not valid DER: .*runs past the end/);
  t.match(refusal(() => parseCsr(Buffer.concat([rsa2048, Buffer.from([0])]), POLICY)).message, /^CSR is not valid DER: 1 trailing bytes/);
  const indef = Buffer.from(rsa2048);
  indef[1] = 0x80;
  t.match(refusal(() => parseCsr(indef, POLICY)).message, /indefinite length/);
  t.match(refusal(() => parseCsr(Buffer.alloc(0), POLICY)).message, /empty input/);
  t.match(refusal(() => parseCsr(Buffer.alloc(100_000, 0x30), POLICY)).message, /more than the limit/);
  // a certificate is not a request
  openssl("req", "-x509", "-key", p("rsa2048.key"), "-subj", "/CN=x", "-days", "1", "-out", p("x.pem"));
  const cert = pemDecode(fs.readFileSync(p("x.pem"), "latin1"), "CERTIFICATE");
  t.match(refusal(() => parseCsr(cert, POLICY)).message, /^CSR is not valid DER: /);
});

/** A request signed by `key` whose certificationRequestInfo carries `attributes` ([0]). */
function signedCsr(key: crypto.KeyObject, spki: Buffer, attributes: Buffer[], sigAlg = seq(oid("1.2.840.113549.1.1.11"), nul())): Buffer {
  const info = seq(integer(0), seq(), spki, tlv(contextTag(0, true), ...attributes));
  return seq(info, sigAlg, bitString(crypto.sign("sha256", info, key)));
}

t.test("an OBJECT IDENTIFIER of 47 KB is refused at once, in a short message", async (t) => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const spki = publicKey.export({ format: "der", type: "spki" });
  t.equal(parseCsr(signedCsr(privateKey, spki, [seq(oid("1.2.840.113549.1.9.7"), set(tlv(TAG.UTF8_STRING, Buffer.from("x"))))]), POLICY).keyBits, 2048, "the builder makes requests we accept");
  const hugeOid = tlv(TAG.OID, Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(47_000, 0x81), Buffer.from([0x01])]));
  const attribute = refusal(() => parseCsr(signedCsr(privateKey, spki, [seq(hugeOid, set())]), POLICY));
  t.match(attribute.message, /^CSR is not valid DER: attribute type: OBJECT IDENTIFIER of 47002 bytes is longer than the limit of 64$/, "a correctly signed request with a huge attribute OID");
  const algorithm = refusal(() => parseCsr(signedCsr(privateKey, spki, [], seq(hugeOid, nul())), POLICY));
  t.match(algorithm.message, /OBJECT IDENTIFIER of 47002 bytes is longer than the limit/, "a huge signature algorithm OID");
  t.ok(algorithm.message.length < 120, `the message does not echo it (${algorithm.message.length} characters)`);
});

t.test("the subject is checked as strictly as OpenSSL reads it", async (t) => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const spki = publicKey.export({ format: "der", type: "spki" });
  const withSubject = (subject: Buffer): Buffer => {
    const info = seq(integer(0), subject, spki);
    return seq(info, seq(oid("1.2.840.113549.1.1.11"), nul()), bitString(crypto.sign("sha256", info, privateKey)));
  };
  const cn = (value: Buffer): Buffer => seq(set(seq(oid("2.5.4.3"), value)));
  const good = seq(
    set(seq(oid("2.5.4.6"), tlv(TAG.PRINTABLE_STRING, Buffer.from("DE")))),
    set(seq(oid("2.5.4.3"), tlv(TAG.UTF8_STRING, Buffer.from("Jürgen 名前"))), seq(oid("2.5.4.5"), tlv(0x12, Buffer.from("12")))),
    set(seq(oid("2.5.4.11"), tlv(TAG.BMP_STRING, Buffer.from("00410042", "hex")))),
    set(seq(oid("2.5.4.7"), tlv(TAG.UNIVERSAL_STRING, Buffer.from("0001f600", "hex")))),
    set(seq(oid("2.5.4.8"), tlv(TAG.T61_STRING, Buffer.from([0x5a, 0xfc])))),
    set(seq(oid("0.9.2342.19200300.100.1.25"), tlv(TAG.IA5_STRING, Buffer.from("org")))),
  );
  t.equal(parseCsr(withSubject(good), POLICY).keyBits, 2048, "string types OpenSSL reads are accepted");
  for (const [what, subject, message] of [
    ["invalid UTF-8", cn(tlv(TAG.UTF8_STRING, Buffer.from([0x4e, 0xd8, 0x4c]))), "2.5.4.3: not a valid UTF8String"],
    ["a UTF-8 surrogate", cn(tlv(TAG.UTF8_STRING, Buffer.from("eda080", "hex"))), "2.5.4.3: not a valid UTF8String"],
    ["an odd BMPString", cn(tlv(TAG.BMP_STRING, Buffer.from("004100", "hex"))), "2.5.4.3: not a valid BMPString"],
    ["a UniversalString beyond U+10FFFF", cn(tlv(TAG.UNIVERSAL_STRING, Buffer.from("00110000", "hex"))), "2.5.4.3: not a valid UniversalString"],
    ["an INTEGER value", cn(integer(5)), "2.5.4.3: value with tag 0x02 is not a string type"],
    ["a context-specific value", cn(tlv(0x80, Buffer.from("x"))), "2.5.4.3: value with tag 0x80 is not a string type"],
    ["an empty RDN", seq(set()), "empty RelativeDistinguishedName"],
    ["an RDN that is not a SET", seq(seq(seq(oid("2.5.4.3"), tlv(TAG.UTF8_STRING, Buffer.from("x"))))), "Name: RelativeDistinguishedName has tag 0x30, expected 0x31"],
  ] as const) {
    t.equal(refusal(() => parseCsr(withSubject(subject), POLICY)).message, `CSR subject: ${message}`, what);
  }
});

t.test("a CSR's key without the NULL parameters is returned in canonical form, with them as it came", async (t) => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const canonical = publicKey.export({ format: "der", type: "spki" });
  const jwk = publicKey.export({ format: "jwk" });
  const rsaKey = seq(integer(Buffer.from(jwk.n!, "base64url")), integer(Buffer.from(jwk.e!, "base64url")));
  const request = (spki: Buffer): Buffer => {
    const info = seq(integer(0), seq(), spki, tlv(contextTag(0, true)));
    const sig = crypto.sign("sha256", info, privateKey);
    return seq(info, seq(oid("1.2.840.113549.1.1.11"), nul()), bitString(sig));
  };
  const withNull = parseCsr(request(seq(seq(oid("1.2.840.113549.1.1.1"), nul()), bitString(rsaKey))), POLICY);
  t.same(withNull.publicKey, canonical, "with NULL parameters: the key as it came, which is the canonical form");
  const withoutNull = parseCsr(request(seq(seq(oid("1.2.840.113549.1.1.1")), bitString(rsaKey))), POLICY);
  t.same(withoutNull.publicKey, canonical, "without: re-encoded with NULL parameters");
  t.same(checkRsaPublicKey(withoutNull.publicKey, 2048), { keyBits: 2048 });
});

t.test("checkRsaPublicKey", async (t) => {
  const pub = (n: Buffer, e: Buffer, params = true): Buffer =>
    seq(params ? seq(oid("1.2.840.113549.1.1.1"), nul()) : seq(oid("1.2.840.113549.1.1.1")), bitString(seq(integer(n), integer(e))));
  const key = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ format: "der", type: "spki" });
  t.same(checkRsaPublicKey(key, 2048), { keyBits: 2048 });
  t.match(refusal(() => checkRsaPublicKey(key, 3072)).message, /2048 bits is below the minimum of 3072/);
  const jwk = crypto.createPublicKey({ key, format: "der", type: "spki" }).export({ format: "jwk" });
  const n = Buffer.from(jwk.n!, "base64url");
  t.match(refusal(() => checkRsaPublicKey(pub(n, Buffer.from([0x01, 0x00, 0x00])), 2048)).message, /exponent is even/);
  t.match(refusal(() => checkRsaPublicKey(pub(n, Buffer.from([0x01, 0x00, 0x01]), false), 2048)).message, /canonical/);
  const asSet = Buffer.from(pub(n, Buffer.from([0x01, 0x00, 0x01])));
  asSet[0] = 0x31; // a SET where the SEQUENCE belongs: well-formed, not canonical
  t.match(refusal(() => checkRsaPublicKey(asSet, 2048)).message, /canonical/);
  const evenN = Buffer.from(n);
  evenN[evenN.length - 1]! &= 0xfe;
  t.match(refusal(() => checkRsaPublicKey(pub(evenN, Buffer.from([0x01, 0x00, 0x01])), 2048)).message, /modulus is even/);
  const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "der", type: "spki" });
  t.match(refusal(() => checkRsaPublicKey(ec, 2048)).message, /only RSA keys are accepted/);
  t.match(refusal(() => checkRsaPublicKey(Buffer.concat([key, Buffer.from([5])]), 2048)).message, /trailing/);
});
