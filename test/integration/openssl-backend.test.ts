// SIGNER_BACKEND=openssl on the real parts: the PIN reaches `openssl` only through fd 3 (a
// recording wrapper shows what every openssl process got in /proc/<pid>/cmdline and
// /proc/<pid>/environ, and every process on the machine is scanned while issuing), CRLs from
// `openssl ca -gencrl` are published in the CRL_DIR layout, and a configuration that would
// copy CSR extensions is refused.
import t from "tap";
import crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, CLEAN_PATH, createInstallation, readStatus, runCommand, startReady, startServer, waitFor, waitForState, runClient } from "../fixtures/server.js";
import { calloutInput, certField, certText, makeCsr, openssl, verifyCert } from "../fixtures/pki.js";
import { findInMemory } from "../fixtures/memory.js";
import { recordingOpenssl, useOpensslBackend } from "../fixtures/openssl-ca.js";
import { extensionFile, subjArgument } from "../../services/signer/openssl-backend.js";
import { buildSubject, compileDnFormat } from "../../services/common/x509/dn.js";
import { bitString, integer, nul, oid, seq, set, TAG, tlv } from "../../services/common/x509/der.js";
import { pemEncode } from "../../services/common/x509/pem.js";
import { AUDIT_CHECKPOINT_OID } from "../../services/common/audit/checkpoint.js";

const PIN = "pin-5e1f0a77";
const inst = createInstallation({ prefix: "etca-ossl", extraConfig: { MAX_LIFETIME: "12h", CRL_LIFETIME: "2d", CRL_REISSUE_BEFORE: "1d" } });
// a PIN no other string in the test can contain by accident
const changed = runCommand("pkcs11-tool", ["--module", inst.token.modulePath, "--token-label", inst.token.label, "--login", "--pin", inst.token.userPin, "--change-pin", "--new-pin", PIN], { env: { PATH: CLEAN_PATH, ...inst.token.env } });
if (changed.code !== 0) throw new Error(`pkcs11-tool --change-pin: ${changed.stderr}`);
function chownTokens(p: string): void {
  fs.chownSync(p, inst.users.SIGNER_USER.uid, inst.users.MONITOR_USER.gid);
  if (fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) chownTokens(path.join(p, e));
}
chownTokens(inst.token.tokenDir);
(inst.token as { userPin: string }).userPin = PIN;
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const rec = recordingOpenssl(path.join(inst.dir, "wrap"));
useOpensslBackend(inst, { opensslBin: rec.bin });
t.teardown(() => inst.cleanup());

const client = (input: string) => runClient(inst, input);

/** Every process's cmdline and environ that holds the PIN (pids). */
function processesHoldingPin(): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    for (const f of ["cmdline", "environ"]) {
      try {
        if (fs.readFileSync(`/proc/${pid}/${f}`).includes(PIN)) found.push(`${pid}/${f}`);
      } catch {
        // gone, or a kernel thread
      }
    }
  }
  return found;
}

t.test("pure helpers: -subj escaping and the extension file", async (t) => {
  const dn = compileDnFormat("/DC=org/O=A\\/B/CN=%s");
  const s = buildSubject(dn, "Jöhn Doe");
  t.equal(subjArgument(s.der), "/DC=org/O=A\\/B/CN=Jöhn Doe");
  const ext = extensionFile({ policies: ["1.2.3.4"], crlUrls: ["http://a.example/c.crl", "http://b.example/c$1.crl"], emails: ["a@b.org"] });
  t.match(ext, /^crlDistributionPoints = etoken_ca_crldp$/m);
  t.match(ext, /^fullname = URI:http:\/\/a\.example\/c\.crl, URI:http:\/\/b\.example\/c\\\$1\.crl$/m, "$ escaped for the config parser");
  t.match(ext, /^email\.1 = a@b\.org$/m);
});

t.test("issuing through openssl: PIN only on fd 3", async (t) => {
  const server = await startReady(inst);
  t.teardown(() => server.stop());
  let scanning = true;
  const holders = new Set<string>();
  const scanner = (async () => {
    while (scanning) {
      for (const h of processesHoldingPin()) holders.add(h);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const csrs = Array.from({ length: 8 }, (_, i) => makeCsr(work, `s${i}`));
  const results = await Promise.all(csrs.map((c, i) => client(calloutInput({ username: `ossl${i} email=o${i}@example.org`, passphrase: "pass-xyz-123", csrPem: c.csrPem }))));
  scanning = false;
  await scanner;
  for (const [i, r] of results.entries()) {
    t.equal(r.code, 0, r.stderr);
    t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok);
    t.match(certText(r.stdout), new RegExp(`email:o${i}@example.org`));
  }
  t.same([...holders], [], "no process had the PIN in its command line or environment");
  const runs = rec.records();
  const ca = runs.filter((r) => r.argv.includes("ca"));
  t.ok(ca.length >= 8, `openssl ca ran for each request (${ca.length} runs recorded)`);
  t.ok(runs.some((r) => r.argv.includes("dgst")), "the login self-test signed through the engine");
  for (const r of runs) t.notOk(r.argv.join(" ").includes(PIN) || r.env.join(" ").includes(PIN), "no PIN in argv or environ");
  // the runs that use the token key (openssl version -e and openssl crl -verify need no PIN)
  const engineRuns = runs.filter((r) => r.argv.includes("-engine"));
  t.ok(engineRuns.length >= 9, `${engineRuns.length} runs with the engine`);
  for (const r of engineRuns) {
    t.ok(r.argv.includes("-passin") && r.argv[r.argv.indexOf("-passin") + 1] === "fd:3", "-passin fd:3");
    t.match(r.fd3, /^socket:/, "fd 3 is the socketpair");
    t.notOk(r.env.some((e) => e.startsWith("ETOKEN_CA_OPENSSL=")), "the binary override is not passed on");
    t.ok(r.env.some((e) => e.startsWith("OPENSSL_CONF=")), "the engine config comes through OPENSSL_CONF");
  }
  const engineConf = engineRuns[0]!.env.find((e) => e.startsWith("OPENSSL_CONF="))!.slice("OPENSSL_CONF=".length);
  t.notOk(fs.existsSync(engineConf) && fs.readFileSync(engineConf, "utf8").includes(PIN), "the engine config holds no PIN");
  t.notOk(server.logs().some((l) => l.includes(PIN)), "no log line holds the PIN");
  // in memory: the signer keeps one Buffer of it for the runs, the kernel one; no other copy
  const st = readStatus(inst)!;
  const signerPid = st.services.find((s) => s.name === "signer")!.pid!;
  t.equal(findInMemory(signerPid, Buffer.from(PIN)).hits, 1, "the signer's memory holds the PIN once, after 8 runs");
  t.equal(findInMemory(st.kernelPid, Buffer.from(PIN)).hits, 1, "the kernel's memory holds the PIN once");
});

t.test("a CSR whose subject OpenSSL cannot read is a request error, not a backend fault", async (t) => {
  const server = await startReady(inst);
  t.teardown(() => server.stop());
  // found by test/unit/parser-fuzz.test.ts: a correctly signed request whose subject is an
  // invalid UTF8String; `openssl ca` cannot load it, and its failure probed the token
  const csr = makeCsr(work, "bad-utf8");
  const key = crypto.createPrivateKey(fs.readFileSync(csr.keyPath));
  const spki = crypto.createPublicKey(key).export({ format: "der", type: "spki" });
  const info = seq(integer(0), seq(set(seq(oid("2.5.4.3"), tlv(TAG.UTF8_STRING, Buffer.from([0x4e, 0xd8, 0x4c]))))), spki);
  const der = seq(info, seq(oid("1.2.840.113549.1.1.11"), nul()), bitString(crypto.sign("sha256", info, key)));
  const caRuns = rec.records().filter((r) => r.argv.includes("ca")).length;
  const logLines = server.logs().length;
  const r = await client(calloutInput({ username: "bad utf8", passphrase: "pass-xyz-123", csrPem: pemEncode(der, "CERTIFICATE REQUEST") }));
  t.equal(r.code, 1, "refused");
  t.match(r.stderr, /CSR subject: 2\.5\.4\.3: not a valid UTF8String/, "with what is wrong in the request");
  t.equal(rec.records().filter((x) => x.argv.includes("ca")).length, caRuns, "openssl ca never ran for it");
  t.notMatch(server.logs().slice(logLines).join("\n"), /openssl ca could not sign|backend\.openssl|probe/, "no backend failure");
  t.equal(readStatus(inst)!.state, "READY", "still READY");
  const ok = await client(calloutInput({ username: "after bad utf8", passphrase: "pass-xyz-123", csrPem: makeCsr(work, "after-bad").csrPem }));
  t.equal(ok.code, 0, `the next request issues: ${ok.stderr}`);
});

t.test("CRLs from openssl ca -gencrl in the CRL_DIR layout", async (t) => {
  const server = await startReady(inst);
  t.teardown(() => server.stop());
  const r = await client(calloutInput({ username: "to be revoked", passphrase: "pass-xyz-123", csrPem: makeCsr(work, "rv").csrPem }));
  t.equal(r.code, 0, r.stderr);
  const serial = certField(r.stdout, "serial").toUpperCase();
  const before = readStatus(inst)?.crl?.number ?? 0;
  const rv = runCommand(process.execPath, [BIN.revoke, "--config", inst.configPath, "--serial", serial, "--reason", "keyCompromise"], { env: { PATH: CLEAN_PATH } });
  t.equal(rv.code, 0, rv.stderr);
  const crlDir = inst.config.CRL_DIR;
  await waitFor("a CRL listing the serial", () => {
    const x = openssl(["crl", "-in", path.join(crlDir, "crl.pem"), "-noout", "-text"]);
    return x.code === 0 && x.stdout.includes(serial) ? true : undefined;
  }, 30_000);
  const text = openssl(["crl", "-in", path.join(crlDir, "crl.pem"), "-noout", "-text"]).stdout;
  t.match(text, /X509v3 CRL Number: \n\s+\d+/);
  t.match(text, /Key Compromise/);
  t.match(text, /Authority Key Identifier/);
  t.match(openssl(["crl", "-in", path.join(crlDir, "crl.pem"), "-noout", "-CAfile", inst.token.caCertPath, "-verify"]).stderr, /verify OK/);
  t.match(openssl(["crl", "-inform", "DER", "-in", path.join(crlDir, "crl.der"), "-noout", "-CAfile", inst.token.caCertPath, "-verify"]).stderr, /verify OK/);
  const target = fs.readlinkSync(path.join(crlDir, "crl.pem"));
  t.match(target, /^crl-\d{6}\.pem$/);
  const meta = JSON.parse(fs.readFileSync(path.join(crlDir, target.replace(/\.pem$/, ".json")), "utf8")) as { number: number; entries: number; nextUpdate: number; thisUpdate: number };
  t.ok(meta.entries >= 1);
  t.equal(meta.nextUpdate - meta.thisUpdate, 2 * 86400_000, "nextUpdate from CRL_LIFETIME");
  const st = await waitFor("status with the new CRL", () => {
    const s = readStatus(inst);
    return s?.crl && s.crl.number > before ? s : undefined;
  }, 10_000).catch(() => readStatus(inst));
  t.ok(st, "status shows the CRL");
  const s = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.match(s.stdout, /state:\s+READY/);
  // openssl ca's CRLs carry the audit trail's head too, and the trail verifies against them
  t.match(text, AUDIT_CHECKPOINT_OID, "the audit checkpoint extension");
  const audit = runCommand(process.execPath, [BIN.ca, "audit", "verify", "--config", inst.configPath]);
  t.equal(audit.code, 0, audit.stdout + audit.stderr);
  t.match(audit.stdout, /checkpoints: [1-9]\d* CRLs? signed by the CA key match the trail/);
  const trail = fs.readFileSync(inst.config.AUDIT_LOG, "utf8");
  t.match(trail, new RegExp(`"event":"issued","serial":"${serial}"`), "the issuance through openssl ca is in the trail");
  t.notOk(trail.includes(PIN), "no PIN in the trail");
});

t.test("a configuration that copies CSR extensions is refused", async (t) => {
  const conf = inst.config.OPENSSL_CA_CONF;
  const orig = fs.readFileSync(conf, "utf8");
  fs.writeFileSync(conf, orig.replace(/^copy_extensions\s*=.*$/m, "copy_extensions = copyall"));
  t.teardown(() => fs.writeFileSync(conf, orig));
  const server = startServer(inst);
  t.teardown(() => server.stop());
  await waitFor("the signer's refusal", () => (server.logs().some((l) => /copy_extensions = copyall/.test(l)) ? true : undefined), 30_000);
  t.ok(server.logs().some((l) => /copy_extensions = copyall would copy extensions/.test(l) && l.includes(conf)), "names the file, the line and what is expected");
  t.not(readStatus(inst)?.state, "READY");
  void waitForState;
});
