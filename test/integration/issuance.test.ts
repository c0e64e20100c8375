// Issuance end to end on the real parts: PIN through a pseudo-terminal, the signer on a SoftHSM2
// token, the CA database, the spool, and etoken-ca-client run as CLIENT_USER.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, runClient, createInstallation, readStatus, runCommand, startServer, TEST_CRL_URL, TEST_POLICY_OID, typePin, waitFor, waitForLine, waitForState } from "../fixtures/server.js";
import { useOpensslBackend } from "../fixtures/openssl-ca.js";
import { calloutInput, certField, certText, filesContaining, makeCsr, openssl, publicKeyOfCert, publicKeyOfCsr, verifyCert } from "../fixtures/pki.js";

const PASSPHRASE = "pass-9f8e7d6c-never-on-disk";
const inst = createInstallation({ prefix: "etca-issue", extraConfig: { MAX_LIFETIME: "12h", LOG_LEVEL: "debug" } });
// test/integration/issuance-openssl.test.ts runs this whole file again with the openssl backend
if (process.env.ETCA_SIGNER_BACKEND === "openssl") useOpensslBackend(inst);
const server = startServer(inst);
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

const client = (input: string) => runClient(inst, input);

t.test("PIN entry through the console", async (t) => {
  await waitForState(inst, "NEED_PIN", 60_000);
  await typePin(inst, "000000", 1);
  // the whole line: it can reach this test in pieces (waitForLine)
  const failed = await waitForLine("the login failure on the console", inst.consoleText, /LOGIN FAILED/);
  t.match(failed, /LOGIN FAILED: .*(wrong PIN|incorrect)/i, "the console says the PIN was wrong");
  t.match(failed, /\(token reports: [^)]*count-low[^)]*\)$/, "and shows what the token says about remaining tries");
  t.equal(readStatus(inst)!.state, "NEED_PIN", "still NEED_PIN after a wrong PIN");
  t.notMatch(inst.consoleText(), /000000/, "the PIN was not echoed");
  const refused = await client(calloutInput({ username: "early", passphrase: PASSPHRASE, csrPem: makeCsr(work, "early").csrPem }));
  t.equal(refused.code, 1, "no certificate without the PIN");
  t.match(refused.stderr, /CA token not available/);
  await typePin(inst, inst.token.userPin, 2);
  const st = await waitForState(inst, "READY", 30_000);
  t.equal(st.token.serial, inst.token.serial, "status shows the token serial");
  t.notMatch(inst.consoleText(), new RegExp(inst.token.userPin), "the PIN never appears on the console");
});

t.test("a MyProxy request becomes a verified certificate", async (t) => {
  const csr = makeCsr(work, "jdoe");
  const username = "John Doe email=jdoe@example.org email=john.doe@example.net info:project=atlas,role=user";
  const r = await client(calloutInput({ username, passphrase: PASSPHRASE, proxyLifetime: 24 * 3600, maxCertLifetime: 8 * 3600, csrPem: csr.csrPem }));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
  const pem = r.stdout;
  const certPath = path.join(work, "jdoe.pem");
  fs.writeFileSync(certPath, pem);
  const v = verifyCert(inst.token.caCertPath, pem);
  t.ok(v.ok, `openssl verify -x509_strict: ${v.output}`);
  t.equal(publicKeyOfCert(pem), publicKeyOfCsr(csr.csrPem), "the certificate carries the CSR's public key");
  t.equal(certField(pem, "subject"), "CN=John Doe,O=etoken-ca tests,DC=example,DC=org", "subject from DN_FORMAT and the stripped username");
  const text = certText(pem);
  t.match(text, /X509v3 Subject Alternative Name: \n\s+email:jdoe@example.org, email:john.doe@example.net/);
  t.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
  t.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment/);
  t.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication/);
  t.match(text, new RegExp(`Policy: ${TEST_POLICY_OID.replace(/\./g, "\\.")}`));
  t.match(text, new RegExp(`URI:${TEST_CRL_URL.replace(/\./g, "\\.")}`));
  t.notMatch(text, /Proxy Certificate|1\.3\.6\.1\.5\.5\.7\.1\.14/, "no proxyCertInfo copied from the CSR");
  const start = Date.parse(certField(pem, "startdate"));
  const end = Date.parse(certField(pem, "enddate"));
  const now = Date.now();
  t.ok(Math.abs(end - now - 8 * 3600 * 1000) < 120_000, `lifetime clamped to MyProxy's max_cert_lifetime (8h): ends ${new Date(end).toISOString()}`);
  t.ok(start <= now, "valid now");
  t.equal(end - start, (8 * 3600 + 300) * 1000, "notBefore 5 minutes before the signing time, notAfter the lifetime after it (README, etoken-ca-server(8))");
  const serial = certField(pem, "serial").toUpperCase();
  t.ok(serial.length >= 16, `serial of at least 64 bits (${serial})`);
  const index = fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8");
  t.match(index, new RegExp(`^V\\t\\d{12}Z\\t\\t${serial}\\tunknown\\t/DC=org/DC=example/O=etoken-ca tests/CN=John Doe$`, "m"), "index line recorded");
  t.ok(fs.existsSync(path.join(inst.config.CA_DIR, "newcerts", `${serial}.pem`)), "newcerts file written");
  const cnf = path.join(work, "openssl-status.cnf");
  fs.writeFileSync(cnf, `[ca]\ndefault_ca=d\n[d]\ndir=${inst.config.CA_DIR}\ndatabase=$dir/index.txt\nnew_certs_dir=$dir/newcerts\nserial=$dir/serial\n`);
  const status = openssl(["ca", "-config", cnf, "-status", serial]);
  t.match(status.stdout + status.stderr, new RegExp(`${serial}=Valid`), "openssl ca -status agrees");

  const defaulted = await client(calloutInput({ username: "plain", passphrase: PASSPHRASE, proxyLifetime: 7 * 24 * 3600, csrPem: makeCsr(work, "plain").csrPem }));
  t.equal(defaulted.code, 0, defaulted.stderr);
  const validity = Date.parse(certField(defaulted.stdout, "enddate")) - Date.parse(certField(defaulted.stdout, "startdate"));
  t.equal(validity, 12 * 3600 * 1000, "notAfter - notBefore = MAX_LIFETIME (12h), the 5-minute backdating included, when MyProxy sets no maximum");
});

t.test("the presence fence starts as soon as the token has signed", async (t) => {
  const before = server.logs().length;
  const r = await client(calloutInput({ username: "fence timing", passphrase: PASSPHRASE, csrPem: makeCsr(work, "fence").csrPem }));
  t.equal(r.code, 0, r.stderr);
  // the kernel's stderr reaches this test through a pipe read on its own event loop: the client's
  // exit can be seen before the fence's line, written earlier, has been read here
  const fenceLines = (): string[] => server.logs().slice(before).filter((l) => l.includes('"msg":"presence fence started'));
  await waitFor("the fence's log line", () => fenceLines().length > 0 || undefined, 10_000).catch(() => undefined);
  const started = fenceLines().map((l) => (JSON.parse(l) as { msg: string }).msg);
  if (process.env.ETCA_SIGNER_BACKEND === "openssl") {
    // openssl ca signs and records in one run: the kernel learns of the signature from Issued
    t.same(started, ["presence fence started after Issued"], "one fence, after the openssl backend's answer");
  } else {
    // Signed travels before Issued on the same socket: the check overlaps the record's sync
    t.same(started, ["presence fence started on Signed"], "one fence, started when the token had signed");
  }
});

t.test("the passphrase reaches no file and no log", async (t) => {
  const dirs = [inst.config.SPOOL_DIR, inst.config.CA_DIR, inst.config.CRL_DIR, path.dirname(inst.config.STATUS_FILE), inst.configPath];
  t.same(filesContaining(dirs, PASSPHRASE), [], "no file holds the passphrase");
  t.notOk(server.logs().some((l) => l.includes(PASSPHRASE)), "no log line holds the passphrase");
  t.notOk(server.logs().some((l) => l.includes(inst.token.userPin)), "no log line holds the PIN");
});

t.test("50 concurrent clients all get distinct valid certificates", async (t) => {
  const csrs = Array.from({ length: 50 }, (_, i) => makeCsr(work, `c${i}`, { bits: 2048 }));
  const results = await Promise.all(csrs.map((c, i) => client(calloutInput({ username: `user${i}`, passphrase: PASSPHRASE, csrPem: c.csrPem }))));
  const serials = new Set<string>();
  results.forEach((r, i) => {
    t.equal(r.code, 0, `client ${i}: ${r.stderr}`);
    if (r.code !== 0) return;
    serials.add(certField(r.stdout, "serial"));
    t.equal(publicKeyOfCert(r.stdout), publicKeyOfCsr(csrs[i]!.csrPem), `client ${i} got its own key certified`);
    t.equal(certField(r.stdout, "subject"), `CN=user${i},O=etoken-ca tests,DC=example,DC=org`);
  });
  t.equal(serials.size, 50, "50 distinct serials");
  const files = results.map((r, i) => {
    const p = path.join(work, `c${i}.pem`);
    fs.writeFileSync(p, r.stdout);
    return p;
  });
  const v = openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", inst.token.caCertPath, ...files]);
  t.equal(v.code, 0, v.stderr);
  t.equal(v.stdout.split("\n").filter((l) => l.endsWith(": OK")).length, 50, "openssl verifies all 50");
});

t.test("refusals reach the client as one clear line", async (t) => {
  const weak = await client(calloutInput({ username: "weak", passphrase: PASSPHRASE, csrPem: makeCsr(work, "weak", { bits: 1024 }).csrPem }));
  t.equal(weak.code, 1);
  t.match(weak.stderr, /^etoken-ca-client: .*1024 bits is below the minimum of 2048\n$/);
  const e3 = await client(calloutInput({ username: "e3", passphrase: PASSPHRASE, csrPem: makeCsr(work, "e3", { exponent3: true }).csrPem }));
  t.equal(e3.code, 1);
  t.match(e3.stderr, /exponent/);
  const inject = await client(calloutInput({ username: "evil/CN=admin", passphrase: PASSPHRASE, csrPem: makeCsr(work, "inject").csrPem }));
  if (inject.code === 0) {
    t.equal(certField(inject.stdout, "subject").split(",").filter((x) => x.startsWith("CN=")).length, 1, "a slash in the username never adds an RDN");
  } else {
    t.match(inject.stderr, /^etoken-ca-client: .*\n$/, "or it is refused with one line");
  }
  const nul = await client(calloutInput({ username: "a\u0001b", passphrase: PASSPHRASE, csrPem: makeCsr(work, "ctl").csrPem }));
  t.equal(nul.code, 1, "control characters are refused");
  const issued = 53 + (inject.code === 0 ? 1 : 0); // jdoe, lifetime, fence timing, 50 concurrent
  const st = await waitFor("the status counters", () => {
    const s = readStatus(inst);
    return s && s.counters.issued === issued && s.counters.rejected >= 2 ? s : undefined;
  }, 10_000).catch(() => readStatus(inst)!);
  t.equal(st.counters.issued, issued, "status counts issued certificates");
  t.ok(st.counters.rejected >= 2, `refusals by the spool are counted (${st.counters.rejected}: weak key, exponent 3)`);
  t.ok(st.counters.failed >= 1, `and failures in the kernel (${st.counters.failed}: the request made before the PIN)`);
  const r = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.match(r.stdout, /state:\s+READY/);
  t.match(r.stdout, new RegExp(`serial ${inst.token.serial}`));
  t.match(r.stdout, /issued:\s+\d+ certificates/);
  t.match(r.stdout, /queue depth:/);
});
