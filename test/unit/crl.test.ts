// CRLs built by crl.ts, signed with node:crypto, checked with `openssl crl` and `openssl verify`.
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { pemEncode } from "../../services/common/x509/pem.js";
import { assembleCrl, buildTbsCrl, type CrlEntry } from "../../services/signer/crl.js";
import { CertificateTemplate } from "../../services/signer/profile.js";
import { assembleCertificate, loadCaCertificate } from "../../services/common/x509/certificate.js";
import { buildSubject, compileDnFormat } from "../../services/common/x509/dn.js";
import { DatabaseError } from "../../services/common/errors.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-crl-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const p = (f: string): string => path.join(dir, f);
const openssl = (...args: string[]): string =>
  execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 256 << 20 });
const status = (...args: string[]): { status: number | null; out: string } => {
  const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
};

openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30",
  "-subj", "/DC=org/DC=example/CN=CRL Test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
const caKey = crypto.createPrivateKey(fs.readFileSync(p("ca.key")));
const ca = loadCaCertificate(fs.readFileSync(p("ca.pem")), "ca.pem");
const profile = new CertificateTemplate({ caCert: ca, policies: [], crlUrls: [] });
const DN = compileDnFormat("/DC=org/DC=example/CN=%s");
const userKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ format: "der", type: "spki" });

function issue(name: string, serialHex: string): string {
  const now = new Date();
  const tbs = profile.tbs({ serial: Buffer.from(serialHex, "hex"), subjectDer: buildSubject(DN, name).der, publicKey: userKey, emails: [], notBefore: now, notAfter: new Date(now.getTime() + 3600_000) });
  fs.writeFileSync(p(`${name}.pem`), pemEncode(assembleCertificate(tbs, crypto.sign("sha256", tbs, caKey)), "CERTIFICATE"));
  return `${name}.pem`;
}

function writeCrl(file: string, entries: Iterable<CrlEntry>, crlNumber = 7n, thisUpdate = new Date()): Buffer {
  const tbs = buildTbsCrl({
    issuerDer: ca.subjectDer, authorityKeyId: ca.keyId, crlNumber, thisUpdate,
    nextUpdate: new Date(thisUpdate.getTime() + 30 * 86400_000), entries,
  });
  const der = assembleCrl(tbs, crypto.sign("sha256", tbs, caKey));
  fs.writeFileSync(p(file), pemEncode(der, "X509 CRL"));
  return der;
}

const revoked = issue("revoked", "00c0ffee00000000000000000000000001");
const good = issue("good", "0a0000000000000001");

t.test("revocations with and without reasons", async (t) => {
  const at = new Date("2026-01-02T03:04:05.678Z");
  writeCrl("crl.pem", [
    { serialHex: "C0FFEE00000000000000000000000001", revokedAt: at, reasonCode: 1 },
    { serialHex: "abc", revokedAt: at, reasonCode: undefined },
    { serialHex: "00FF", revokedAt: at, reasonCode: 0 },
    { serialHex: "7f", revokedAt: at, reasonCode: 4 },
    { serialHex: "01", revokedAt: at, reasonCode: 6 },
  ]);
  t.match(fs.readFileSync(p("crl.pem"), "latin1"), /^-----BEGIN X509 CRL-----\n/);
  const v = status("crl", "-in", "crl.pem", "-noout", "-verify", "-CAfile", "ca.pem");
  t.equal(v.status, 0);
  t.match(v.out, /verify OK/);

  const r = status("verify", "-x509_strict", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", revoked);
  t.not(r.status, 0);
  t.match(r.out, /certificate revoked/);
  t.match(openssl("verify", "-x509_strict", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", good), /good\.pem: OK/);

  const text = openssl("crl", "-in", "crl.pem", "-noout", "-text");
  t.match(text, /Version 2 \(0x1\)/);
  t.match(text, /Signature Algorithm: sha256WithRSAEncryption/);
  t.match(text, /Issuer: DC = org, DC = example, CN = CRL Test CA/);
  t.match(text, /X509v3 CRL Number: \n\s+7\n/);
  const caSki = /Identifier: \n\s+(\S+)/.exec(openssl("x509", "-in", "ca.pem", "-noout", "-ext", "subjectKeyIdentifier"))![1]!;
  t.match(text, new RegExp(`X509v3 Authority Key Identifier: \\n\\s+(keyid:)?${caSki}\\n`));
  // each entry as OpenSSL reads it: serial, date, reason (or no extensions at all)
  const entries = [...text.matchAll(/Serial Number: (\S+)\n\s+Revocation Date: ([^\n]+)\n(?:\s+CRL entry extensions:\n\s+X509v3 CRL Reason Code: \n\s+([^\n]+)\n)?/g)]
    .map((m) => [m[1], m[2], m[3]]);
  t.same(entries, [
    ["C0FFEE00000000000000000000000001", "Jan  2 03:04:05 2026 GMT", "Key Compromise"],
    ["0ABC", "Jan  2 03:04:05 2026 GMT", undefined],
    ["FF", "Jan  2 03:04:05 2026 GMT", undefined],
    ["7F", "Jan  2 03:04:05 2026 GMT", "Superseded"],
    ["01", "Jan  2 03:04:05 2026 GMT", "Certificate Hold"],
  ]);
  t.equal(text.match(/CRL entry extensions/g)?.length, 3, "entries without a reason have no extensions field");
});

t.test("an empty CRL verifies and has no revokedCertificates", async (t) => {
  writeCrl("empty.pem", [], 1n);
  const v = status("crl", "-in", "empty.pem", "-noout", "-verify", "-CAfile", "ca.pem");
  t.equal(v.status, 0);
  t.match(v.out, /verify OK/);
  t.match(openssl("crl", "-in", "empty.pem", "-noout", "-text"), /No Revoked Certificates\./);
  t.match(openssl("verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "empty.pem", revoked), /revoked\.pem: OK/);
});

t.test("a large CRL from a generator", async (t) => {
  const N = 100_000;
  function* many(): Generator<CrlEntry> {
    const at = new Date("2026-03-01T00:00:00Z");
    for (let i = 1; i <= N; i++) yield { serialHex: (BigInt(i) * 0x1000003n).toString(16), revokedAt: at, reasonCode: i % 3 === 0 ? 5 : undefined };
    yield { serialHex: "c0ffee00000000000000000000000001", revokedAt: at, reasonCode: 1 };
  }
  const der = writeCrl("big.pem", many(), 0x1234567890abcdefn);
  t.ok(der.length > N * 20);
  t.match(status("crl", "-in", "big.pem", "-noout", "-verify", "-CAfile", "ca.pem").out, /verify OK/);
  const text = openssl("crl", "-in", "big.pem", "-noout", "-text");
  t.equal(text.match(/Serial Number:/g)?.length, N + 1);
  t.equal(text.match(/Cessation Of Operation/g)?.length, Math.floor(N / 3));
  t.ok(text.includes(`X509v3 CRL Number: \n                ${0x1234567890abcdefn}\n`), "CRL number (OpenSSL prints it in decimal)");
  t.match(status("verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "big.pem", revoked).out, /certificate revoked/);
});

t.test("bad database entries are DatabaseErrors", async (t) => {
  const at = new Date();
  const build = (e: CrlEntry): Buffer =>
    buildTbsCrl({ issuerDer: ca.subjectDer, authorityKeyId: ca.keyId, crlNumber: 1n, thisUpdate: at, nextUpdate: new Date(at.getTime() + 1000), entries: [e] });
  for (const serialHex of ["", "00", "xyz", "12g4", "1".repeat(41), "ff".repeat(20)]) {
    t.throws(() => build({ serialHex, revokedAt: at, reasonCode: undefined }), DatabaseError, JSON.stringify(serialHex));
  }
  t.ok(build({ serialHex: "7f" + "ff".repeat(19), revokedAt: at, reasonCode: undefined }), "20 octets is the maximum");
  for (const reasonCode of [7, 11, -1, 1.5]) t.throws(() => build({ serialHex: "01", revokedAt: at, reasonCode }), DatabaseError, String(reasonCode));
  t.throws(() => build({ serialHex: "01", revokedAt: new Date(Number.NaN), reasonCode: undefined }), DatabaseError);
  t.throws(() => buildTbsCrl({ issuerDer: ca.subjectDer, authorityKeyId: ca.keyId, crlNumber: -1n, thisUpdate: at, nextUpdate: at, entries: [] }), RangeError);
});
