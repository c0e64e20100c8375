// Cost of the pure profile code: subject + TBSCertificate per certificate, CSR parse, and
// TBSCertList for 1k and 100k revoked entries (signature excluded: that is the token's).
// With BENCH_OPENSSL=1 it also times `openssl ca -gencrl` on the same 100k revocations.
// Prints figures only; asserts nothing.  Run: node dist/bench/build-cost.js
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { pemDecode } from "../services/common/x509/pem.js";
import { parseCsr } from "../services/common/x509/csr.js";
import { buildSubject, compileDnFormat, splitUsername } from "../services/common/x509/dn.js";
import { CertificateTemplate } from "../services/signer/profile.js";
import { loadCaCertificate } from "../services/common/x509/certificate.js";
import { buildTbsCrl, type CrlEntry } from "../services/signer/crl.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-bench-build-"));
const p = (f: string): string => path.join(dir, f);
const openssl = (...args: string[]): string => execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
/** Runs fn in `batches` batches of `per` calls; per-call microseconds p50/p99 over batches. */
function timeUs(fn: () => unknown, batches: number, per: number): { p50: number; p99: number } {
  for (let i = 0; i < per * 5; i++) fn(); // warm-up (JIT)
  const t: number[] = [];
  for (let b = 0; b < batches; b++) {
    const s = performance.now();
    for (let i = 0; i < per; i++) fn();
    t.push(((performance.now() - s) * 1000) / per);
  }
  t.sort((a, b) => a - b);
  return { p50: percentile(t, 0.5), p99: percentile(t, 0.99) };
}

try {
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "3650",
    "-subj", "/DC=org/DC=example/O=Example/CN=Bench CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p("u.key"), "-out", p("u.csr"), "-subj", "/CN=NULL SUBJECT NAME ENTRY");
  const ca = loadCaCertificate(fs.readFileSync(p("ca.pem")), p("ca.pem"));
  const tpl = new CertificateTemplate({ caCert: ca, policies: ["1.3.6.1.4.1.99999.1.2"], crlUrls: ["http://ca.example.org/crl.pem"] });
  const dn = compileDnFormat("/DC=org/DC=example/O=Example/CN=%s");
  const csrDer = pemDecode(fs.readFileSync(p("u.csr"), "latin1"), "CERTIFICATE REQUEST");
  const { publicKey } = parseCsr(csrDer, { minKeyBits: 2048 });
  const serial = crypto.randomBytes(16);
  const subjectDer = buildSubject(dn, "John Doe").der;

  const tbsOnly = timeUs(() => {
    const now = new Date();
    return tpl.tbs({ serial, subjectDer, publicKey, emails: [], notBefore: now, notAfter: new Date(now.getTime() + 43200_000) });
  }, 200, 100);
  const full = timeUs(() => {
    const u = splitUsername("John Doe email=jdoe@example.org info:site=a");
    const s = buildSubject(dn, u.name);
    const now = new Date();
    return tpl.tbs({ serial, subjectDer: s.der, publicKey, emails: u.emails, notBefore: now, notAfter: new Date(now.getTime() + 43200_000) });
  }, 200, 100);
  const csr = timeUs(() => parseCsr(csrDer, { minKeyBits: 2048 }), 50, 20);
  console.log(`TBSCertificate (template.tbs):                  p50 ${tbsOnly.p50.toFixed(1)} us  p99 ${tbsOnly.p99.toFixed(1)} us`);
  console.log(`username split + subject + TBSCertificate:     p50 ${full.p50.toFixed(1)} us  p99 ${full.p99.toFixed(1)} us`);
  console.log(`parseCsr (DER parse + RSA-2048 signature check): p50 ${csr.p50.toFixed(1)} us  p99 ${csr.p99.toFixed(1)} us`);

  const at = new Date("2026-03-01T00:00:00Z");
  const entries = (n: number): CrlEntry[] =>
    Array.from({ length: n }, (_, i) => ({ serialHex: crypto.randomBytes(16).toString("hex").toUpperCase(), revokedAt: at, reasonCode: i % 4 === 0 ? 4 : undefined }));
  for (const n of [1_000, 100_000]) {
    const list = entries(n);
    const runs: number[] = [];
    let size = 0;
    for (let r = 0; r < 7; r++) {
      const s = performance.now();
      size = buildTbsCrl({ issuerDer: ca.subjectDer, authorityKeyId: ca.keyId, crlNumber: 42n, thisUpdate: at, nextUpdate: new Date(at.getTime() + 30 * 86400_000), entries: list }).length;
      runs.push(performance.now() - s);
    }
    runs.sort((a, b) => a - b);
    console.log(`TBSCertList, ${String(n).padStart(7)} entries: median ${percentile(runs, 0.5).toFixed(2)} ms  min ${runs[0]!.toFixed(2)} ms  (${(size / 1024).toFixed(0)} KiB)`);
    if (n === 100_000 && process.env.BENCH_OPENSSL === "1") {
      fs.mkdirSync(p("newcerts"));
      fs.writeFileSync(p("index.txt"), list.map((e) => `R\t360101000000Z\t260301000000Z${e.reasonCode ? ",superseded" : ""}\t${e.serialHex}\tunknown\t/DC=org/CN=u\n`).join(""));
      fs.writeFileSync(p("crlnumber"), "01\n");
      fs.writeFileSync(p("ca.cnf"), `[ca]\ndefault_ca=d\n[d]\ndir=${dir}\ndatabase=$dir/index.txt\nnew_certs_dir=$dir/newcerts\ncertificate=$dir/ca.pem\nprivate_key=$dir/ca.key\ncrlnumber=$dir/crlnumber\ndefault_md=sha256\ndefault_crl_days=30\npolicy=p\n[p]\n`);
      const s = performance.now();
      openssl("ca", "-batch", "-config", p("ca.cnf"), "-gencrl", "-out", p("openssl-crl.pem"));
      console.log(`openssl ca -gencrl, 100000 entries (incl. process start and signature): ${(performance.now() - s).toFixed(0)} ms`);
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
