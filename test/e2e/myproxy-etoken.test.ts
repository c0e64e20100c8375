// End to end with the real MyProxy: Debian's myproxy-server in CA mode on loopback, run as user
// myproxy, with certificate_issuer_program = our etoken-ca-client (also run as myproxy, so
// CLIENT_USER=myproxy in this installation), the real myproxy-logon as the end user, and a whole
// etoken-ca installation (kernel as root, PIN typed on a pseudo-terminal, SoftHSM2 token).
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { myproxyLogon, processAlive, startMyProxy, writeIssuerWrapper, type MyProxyServer } from "../fixtures/myproxy.js";
import { BIN, CLEAN_PATH, createInstallation, readStatus, runCommand, startReady, countPrompts, typePin, TEST_CRL_URL, TEST_POLICY_OID, waitFor, waitForState, processTree, type RunningServer } from "../fixtures/server.js";
import { certField, certText, makeCsr, mustOpenssl, publicKeyOfCert, verifyCert } from "../fixtures/pki.js";
import { lookupUser } from "../../services/common/identity.js";
import { reinsertToken, removeToken } from "../fixtures/softhsm.js";

const PASSWORD = "e2e-Pass-4711";
const MAX_CERT_LIFETIME_HOURS = 6; // myproxy-server.config max_cert_lifetime
const USER_PLAIN = "jdoe";
const USER_EMAIL = "Jane Roe email=jroe@example.org email=jane.roe@example.net info:project=atlas";

interface Ctx {
  inst: ReturnType<typeof createInstallation>;
  server: RunningServer;
  mp: MyProxyServer;
  mpDir: string;
  work: string;
}

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function indexLines(caDir: string): string[] {
  try {
    return fs.readFileSync(path.join(caDir, "index.txt"), "utf8").split("\n").filter((l) => l.length > 0);
  } catch {
    return [];
  }
}

function newcertsCount(caDir: string): number {
  try {
    return fs.readdirSync(path.join(caDir, "newcerts")).length;
  } catch {
    return 0;
  }
}

/** Files the client left in the spool (requests, results, the lock link). */
function spoolEntries(spoolDir: string): string[] {
  try {
    return fs.readdirSync(spoolDir);
  } catch {
    return [];
  }
}

/**
 * The certificate_issuer_program for MyProxy: etoken-ca-client for `inst`, whose stderr is also
 * kept in a file (MyProxy sends it to syslog only). env -i: the test runner injects NODE_OPTIONS
 * into every process it spawns (myproxy-server included, and MyProxy hands its environment to
 * the callout); a real server has none of that.
 */
function writeIssuer(inst: ReturnType<typeof createInstallation>, mpDir: string): { issuer: string; calloutErrors: () => string } {
  const calloutLog = path.join(mpDir, "callout-stderr.log");
  fs.writeFileSync(calloutLog, "", { mode: 0o600 });
  fs.chownSync(calloutLog, lookupUser("myproxy").uid, lookupUser("myproxy").gid);
  const issuerScript = path.join(mpDir, "etoken-ca-issuer.sh");
  fs.writeFileSync(
    issuerScript,
    `#!/bin/sh
err=$(mktemp) || exit 1
${["/usr/bin/env", "-i", `PATH=${CLEAN_PATH}`, process.execPath, BIN.client, "--config", inst.configPath].map(shQuote).join(" ")} 2>"$err"
rc=$?
cat "$err" >&2
cat "$err" >> ${shQuote(calloutLog)}
rm -f "$err"
exit $rc
`,
    { mode: 0o755 },
  );
  const issuer = writeIssuerWrapper(path.join(mpDir, "etoken-ca-issuer"), ["/bin/sh", issuerScript]);
  return { issuer, calloutErrors: () => fs.readFileSync(calloutLog, "utf8").trim() };
}

t.test("myproxy-logon through a real MyProxy CA signs with etoken-ca", async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail("this test needs root (it runs myproxy-server as myproxy, services as their users, writes /etc/pam.d)");
    return;
  }
  const inst = createInstallation({
    prefix: "etca-e2e",
    extraConfig: { CLIENT_USER: "myproxy", MAX_LIFETIME: "12h", CLIENT_TIMEOUT: "20" },
  });
  const ctx: Partial<Ctx> = { inst };
  t.teardown(async () => {
    // Every server this test started, by its pid.
    await ctx.mp?.stop();
    await ctx.server?.stop();
    inst.cleanup();
    if (ctx.mpDir) fs.rmSync(ctx.mpDir, { recursive: true, force: true });
  });

  ctx.server = await startReady(inst);
  const server = ctx.server;
  t.equal(readStatus(inst)?.state, "READY", "the CA is READY after the PIN was typed on its console");

  const mpDir = fs.mkdtempSync("/tmp/etca-e2e-myproxy-");
  ctx.mpDir = mpDir;
  fs.chmodSync(mpDir, 0o755);
  const { issuer, calloutErrors } = writeIssuer(inst, mpDir);
  const mp = await startMyProxy({
    dir: mpDir,
    issuerProgram: issuer,
    maxCertLifetimeHours: MAX_CERT_LIFETIME_HOURS,
    requestTimeoutSeconds: 60,
    users: [
      { name: USER_PLAIN, password: PASSWORD },
      { name: USER_EMAIL, password: PASSWORD },
    ],
  });
  ctx.mp = mp;
  // Clients trust the host's CA (done by the harness) and ours, installed from `etoken-ca trust-files`
  // (its signing_policy and namespaces cover DN_FORMAT's namespace).
  const trustFiles = runCommand("/usr/bin/env", ["-i", `PATH=${CLEAN_PATH}`, process.execPath, BIN.ca, "trust-files", "--out", mp.trustDir, "--config", inst.configPath]);
  t.equal(trustFiles.code, 0, `etoken-ca trust-files succeeds (stderr: ${trustFiles.stderr.trim()})`);
  const ourHash = mustOpenssl(["x509", "-noout", "-subject_hash", "-in", inst.token.caCertPath]).trim();
  t.match(
    fs.readFileSync(path.join(mp.trustDir, `${ourHash}.signing_policy`), "utf8"),
    /^cond_subjects +globus +'"\/DC=org\/DC=example\/O=etoken-ca tests\/CN=\*"'$/m,
    "the signing_policy it wrote for our CA covers DN_FORMAT's namespace",
  );
  t.ok(processAlive(mp.pid), `myproxy-server runs (pid ${mp.pid}, port ${mp.port})`);

  const work = path.join(mpDir, "client");
  fs.mkdirSync(work, { mode: 0o700 });
  ctx.work = work;

  await t.test("the certificate is for the user's key, named by DN_FORMAT, lifetime clamped, verifiable", async (t) => {
    const csr = makeCsr(work, "jdoe");
    const out = path.join(work, "jdoe-cert.pem");
    const before = indexLines(inst.config.CA_DIR).length;
    const r = await myproxyLogon({ server: mp, username: USER_PLAIN, password: PASSWORD, hours: 24, csrPath: csr.csrPath, outPath: out, trustDir: mp.trustDir });
    t.equal(r.code, 0, `myproxy-logon succeeds (stderr: ${r.stderr.trim()}; issuer program: ${calloutErrors()})`);
    if (r.code !== 0) return;
    const pem = fs.readFileSync(out, "utf8");
    const certPub = publicKeyOfCert(pem);
    t.equal(certPub, mustOpenssl(["pkey", "-pubout", "-in", csr.keyPath]), "the certificate carries the user's own public key");
    t.equal(certField(pem, "subject"), `CN=${USER_PLAIN},O=etoken-ca tests,DC=example,DC=org`, "subject = DN_FORMAT with the username");
    const v = verifyCert(inst.token.caCertPath, pem);
    t.ok(v.ok, `openssl verify -x509_strict against our CA: ${v.output.trim()}`);
    t.match(mustOpenssl(["x509", "-noout", "-issuer", "-nameopt", "RFC2253"], pem), /CN=etoken-ca test CA/, "issued by our CA, not the host's");
    fs.chmodSync(csr.keyPath, 0o600); // grid-proxy-init refuses a key others may read
    const gpi = runCommand("grid-proxy-init", ["-cert", out, "-key", csr.keyPath, "-verify", "-hours", "1", "-out", path.join(work, "jdoe-proxy.pem")], {
      env: { PATH: CLEAN_PATH, X509_CERT_DIR: mp.trustDir },
    });
    t.equal(gpi.code, 0, `grid-proxy-init -verify accepts it with the trust-files directory (${gpi.stderr.trim()})`);
    t.match(gpi.stdout, /Proxy Verify OK/);
    const end = Date.parse(certField(pem, "enddate"));
    const hours = (end - Date.now()) / 3_600_000;
    t.ok(Math.abs(hours - MAX_CERT_LIFETIME_HOURS) < 0.05, `24 h asked, clamped to MyProxy's max_cert_lifetime ${MAX_CERT_LIFETIME_HOURS} h (got ${hours.toFixed(3)} h)`);
    const text = certText(pem);
    t.notMatch(text, /Proxy Certificate|1\.3\.6\.1\.5\.5\.7\.1\.14/, "no proxyCertInfo copied from MyProxy's CSR");
    t.match(text, new RegExp(`Policy: ${TEST_POLICY_OID.replace(/\./g, "\\.")}`), "certificatePolicies from CA_OIDS");
    t.match(text, new RegExp(`URI:${TEST_CRL_URL.replace(/\./g, "\\.")}`), "crlDistributionPoints from CRL_URLS");
    t.notMatch(text, /Subject Alternative Name/, "no subjectAltName without email= suffixes");
    const serial = certField(pem, "serial").toUpperCase();
    const lines = indexLines(inst.config.CA_DIR);
    t.equal(lines.length, before + 1, "one entry added to the CA database");
    t.match(lines[lines.length - 1], new RegExp(`^V\\t\\d{12}Z\\t\\t${serial}\\t`), "the entry is this certificate");
    t.same(spoolEntries(inst.config.SPOOL_DIR), [], "the client left nothing in the spool");

    const shortOut = path.join(work, "jdoe-2h.pem");
    const r2 = await myproxyLogon({ server: mp, username: USER_PLAIN, password: PASSWORD, hours: 2, csrPath: csr.csrPath, outPath: shortOut, trustDir: mp.trustDir });
    t.equal(r2.code, 0, `a second logon asking for 2 h (stderr: ${r2.stderr.trim()})`);
    if (r2.code === 0) {
      const h2 = (Date.parse(certField(fs.readFileSync(shortOut, "utf8"), "enddate")) - Date.now()) / 3_600_000;
      t.ok(Math.abs(h2 - 2) < 0.05, `a shorter request is honoured (got ${h2.toFixed(3)} h)`);
    }
  });

  await t.test("without -Q: myproxy-logon's own key pair, verified with the private key it stored", async (t) => {
    const out = path.join(work, "jdoe-proxy.pem");
    const r = await myproxyLogon({ server: mp, username: USER_PLAIN, password: PASSWORD, hours: 1, outPath: out, trustDir: mp.trustDir });
    t.equal(r.code, 0, `myproxy-logon succeeds (stderr: ${r.stderr.trim()}; issuer program: ${calloutErrors()})`);
    if (r.code !== 0) return;
    // The credential file holds the certificate followed by the key myproxy-logon generated.
    t.equal(mustOpenssl(["x509", "-noout", "-pubkey", "-in", out]), mustOpenssl(["pkey", "-pubout", "-in", out]), "certificate key = the private key myproxy-logon generated");
    t.equal(certField(fs.readFileSync(out, "utf8"), "subject"), `CN=${USER_PLAIN},O=etoken-ca tests,DC=example,DC=org`);
  });

  await t.test("email= suffixes become subjectAltName entries", async (t) => {
    const csr = makeCsr(work, "jroe");
    const out = path.join(work, "jroe-cert.pem");
    const r = await myproxyLogon({ server: mp, username: USER_EMAIL, password: PASSWORD, hours: 1, csrPath: csr.csrPath, outPath: out, trustDir: mp.trustDir });
    t.equal(r.code, 0, `myproxy-logon succeeds (stderr: ${r.stderr.trim()}; issuer program: ${calloutErrors()})`);
    if (r.code !== 0) return;
    const pem = fs.readFileSync(out, "utf8");
    t.equal(certField(pem, "subject"), "CN=Jane Roe,O=etoken-ca tests,DC=example,DC=org", "suffixes stripped from the subject");
    t.match(certText(pem), /X509v3 Subject Alternative Name: \n\s+email:jroe@example.org, email:jane.roe@example.net\n/, "both addresses as rfc822Name");
    t.ok(verifyCert(inst.token.caCertPath, pem).ok, "verifies against our CA");
    t.equal(publicKeyOfCert(pem), mustOpenssl(["pkey", "-pubout", "-in", csr.keyPath]), "for the user's key");
  });

  await t.test("a wrong password fails in MyProxy, before the CA is involved", async (t) => {
    const csr = makeCsr(work, "wrongpw");
    const out = path.join(work, "wrong.pem");
    // The status file's counters are written at most once per STATUS_COUNTER_INTERVAL_MS (1 s), so
    // the last logon's delivery can reach it up to a second late: wait until every certificate in
    // the CA database (all delivered, none revoked so far) is counted, else the next check races it.
    const issuedSoFar = indexLines(inst.config.CA_DIR).length;
    await waitFor("every delivered certificate in the status counters", () => (readStatus(inst)?.counters.issued === issuedSoFar ? true : undefined), 10_000).catch(() => undefined);
    const before = { index: indexLines(inst.config.CA_DIR).length, counters: readStatus(inst)!.counters };
    t.equal(before.counters.issued, before.index, "before: the status counters count every certificate delivered so far");
    const logsBefore = server.logs().length;
    const r = await myproxyLogon({ server: mp, username: USER_PLAIN, password: "not-the-password", hours: 1, csrPath: csr.csrPath, outPath: out, trustDir: mp.trustDir });
    t.not(r.code, 0, "myproxy-logon fails");
    t.match(r.stderr, /authentication failed/i, "with MyProxy's authentication error");
    t.notOk(fs.existsSync(out), "no credential written");
    // Give a stray request time to show up before concluding nothing happened.
    await new Promise((r) => setTimeout(r, 1000));
    t.equal(indexLines(inst.config.CA_DIR).length, before.index, "nothing signed");
    t.same(readStatus(inst)!.counters, before.counters, "the CA's counters did not move (no request reached it)");
    t.same(spoolEntries(inst.config.SPOOL_DIR), [], "no request file in the spool");
    t.notOk(server.logs().slice(logsBefore).some((l) => /"msg":"(request forwarded|issued|request refused|request failed)/.test(l)), "the CA logged no request");
  });

  await t.test("token removed: the CA is SUSPENDED, the logon fails cleanly, nothing is signed", async (t) => {
    const csr = makeCsr(work, "suspended");
    const out = path.join(work, "suspended.pem");
    removeToken(inst.token);
    await waitForState(inst, "SUSPENDED", 30_000);
    const c0 = readStatus(inst)!.counters;
    const before = { index: indexLines(inst.config.CA_DIR).length, newcerts: newcertsCount(inst.config.CA_DIR), issued: c0.issued, refused: c0.failed + c0.rejected };
    const r = await myproxyLogon({ server: mp, username: USER_PLAIN, password: PASSWORD, hours: 1, csrPath: csr.csrPath, outPath: out, trustDir: mp.trustDir });
    t.not(r.code, 0, "myproxy-logon fails");
    t.match(r.stderr, /Certificate generation failure/i, `with MyProxy's generic error for a failed issuer program (stderr: ${r.stderr.trim()})`);
    t.notOk(fs.existsSync(out), "no credential written");
    t.equal(indexLines(inst.config.CA_DIR).length, before.index, "no entry in the CA database");
    t.equal(newcertsCount(inst.config.CA_DIR), before.newcerts, "no new certificate file");
    // The status file is written with a short debounce.
    const st = await waitFor("the refusal in the status counters", () => {
      const s = readStatus(inst);
      return s && s.counters.failed + s.counters.rejected > before.refused ? s : undefined;
    }, 10_000).catch(() => readStatus(inst)!);
    t.equal(st.state, "SUSPENDED", "still SUSPENDED");
    t.equal(st.counters.issued, before.issued, "the issued counter did not move");
    t.ok(st.counters.failed + st.counters.rejected > before.refused, "the refusal is counted");
    // the client leaves its marker with the error result; the spool removes both when it sees the marker
    await waitFor("an empty spool", () => (spoolEntries(inst.config.SPOOL_DIR).length === 0 ? true : undefined), 10_000).catch(() => undefined);
    t.same(spoolEntries(inst.config.SPOOL_DIR), [], "nothing left in the spool");
    t.notOk(server.logs().some((l) => l.includes(PASSWORD)), "the user's password reached no log line");

    // Put it back: NEED_PIN, the PIN again, and MyProxy works again.
    const prompts = countPrompts(inst);
    reinsertToken(inst.token);
    await waitForState(inst, "NEED_PIN", 30_000);
    await typePin(inst, inst.token.userPin, prompts + 1);
    await waitForState(inst, "READY", 30_000);
    const again = path.join(work, "again.pem");
    const r2 = await myproxyLogon({ server: mp, username: USER_PLAIN, password: PASSWORD, hours: 1, csrPath: csr.csrPath, outPath: again, trustDir: mp.trustDir });
    t.equal(r2.code, 0, `after re-insertion and the PIN, logons work again (stderr: ${r2.stderr.trim()})`);
  });

  await t.test("every server the test started is stopped by its pid", async (t) => {
    const mpPid = mp.pid;
    const tree = processTree(server.pid);
    await mp.stop();
    t.notOk(processAlive(mpPid), "myproxy-server is gone");
    await server.stop();
    await waitFor("the kernel's services to exit", () => (tree.every((p) => !processAlive(p)) ? true : undefined), 15_000).catch(() => undefined);
    t.same(tree.filter((p) => processAlive(p)), [], "etoken-ca-server and all its services are gone");
  });
});

t.test("DN-suffix usernames (the seed's convention) through a real MyProxy CA", async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail("this test needs root (it runs myproxy-server as myproxy, services as their users, writes /etc/pam.d)");
    return;
  }
  const inst = createInstallation({
    prefix: "etca-e2e-dn",
    extraConfig: { CLIENT_USER: "myproxy", DN_FORMAT: "/DC=org/DC=example%s", CLIENT_TIMEOUT: "20" },
  });
  const ctx: { server?: RunningServer; mp?: MyProxyServer; mpDir?: string } = {};
  t.teardown(async () => {
    await ctx.mp?.stop();
    await ctx.server?.stop();
    inst.cleanup();
    if (ctx.mpDir) fs.rmSync(ctx.mpDir, { recursive: true, force: true });
  });
  ctx.server = await startReady(inst);
  const mpDir = fs.mkdtempSync("/tmp/etca-e2e-dn-myproxy-");
  ctx.mpDir = mpDir;
  fs.chmodSync(mpDir, 0o755);
  const { issuer, calloutErrors } = writeIssuer(inst, mpDir);
  const seedUser = "/O=Example/CN=Jane Doe email=jane@example.org";
  const frontEndUser = "/O=Example Org/OU=R\\/D/CN=Jane Doe a1b2c3 email=jane@example.org info:sub=a1b2c3";
  const foreignType = "/C=US/CN=Mallory";
  const oneValue = "jdoe";
  const users = [seedUser, frontEndUser, foreignType, oneValue];
  const mp = await startMyProxy({ dir: mpDir, issuerProgram: issuer, maxCertLifetimeHours: 6, requestTimeoutSeconds: 60, users: users.map((name) => ({ name, password: PASSWORD })) });
  ctx.mp = mp;
  const trustFiles = runCommand("/usr/bin/env", ["-i", `PATH=${CLEAN_PATH}`, process.execPath, BIN.ca, "trust-files", "--out", mp.trustDir, "--config", inst.configPath]);
  t.equal(trustFiles.code, 0, `etoken-ca trust-files succeeds (stderr: ${trustFiles.stderr.trim()})`);
  const ourHash = mustOpenssl(["x509", "-noout", "-subject_hash", "-in", inst.token.caCertPath]).trim();
  t.match(fs.readFileSync(path.join(mp.trustDir, `${ourHash}.signing_policy`), "utf8"), /^cond_subjects +globus +'"\/DC=org\/DC=example\/\*"'$/m, "RDN mode: the namespace is the RDNs before %s");
  const work = path.join(mpDir, "client");
  fs.mkdirSync(work, { mode: 0o700 });

  const logon = async (username: string, name: string): Promise<{ code: number | null; pem: string; stderr: string; csr: ReturnType<typeof makeCsr> }> => {
    const csr = makeCsr(work, name);
    const out = path.join(work, `${name}-cert.pem`);
    const r = await myproxyLogon({ server: mp, username, password: PASSWORD, hours: 1, csrPath: csr.csrPath, outPath: out, trustDir: mp.trustDir });
    return { code: r.code, pem: r.code === 0 ? fs.readFileSync(out, "utf8") : "", stderr: r.stderr, csr };
  };

  await t.test(`myproxy-logon -l "${seedUser}"`, async (t) => {
    const r = await logon(seedUser, "seed");
    t.equal(r.code, 0, `myproxy-logon succeeds: MyProxy passes spaces and slashes to the call-out (stderr: ${r.stderr.trim()}; issuer program: ${calloutErrors()})`);
    if (r.code !== 0) return;
    t.equal(certField(r.pem, "subject"), "CN=Jane Doe,O=Example,DC=example,DC=org", "DN_FORMAT's RDNs, then the username's");
    t.match(certText(r.pem), /X509v3 Subject Alternative Name: \n\s+email:jane@example.org\n/, "the email= suffix as rfc822Name");
    t.ok(verifyCert(inst.token.caCertPath, r.pem).ok, "verifies against our CA");
    t.equal(publicKeyOfCert(r.pem), mustOpenssl(["pkey", "-pubout", "-in", r.csr.keyPath]), "for the user's key");
  });

  await t.test("the front-end's shape: an escaped slash and an info: suffix", async (t) => {
    const r = await logon(frontEndUser, "frontend");
    t.equal(r.code, 0, `myproxy-logon succeeds (stderr: ${r.stderr.trim()}; issuer program: ${calloutErrors()})`);
    if (r.code !== 0) return;
    t.equal(mustOpenssl(["x509", "-noout", "-subject", "-nameopt", "compat"], r.pem).trim(),
      "subject=/DC=org/DC=example/O=Example Org/OU=R\\/D/CN=Jane Doe a1b2c3");
    const index = fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8");
    t.match(index, /\t\/DC=org\/DC=example\/O=Example Org\/OU=R\\\/D\/CN=Jane Doe a1b2c3\n/, "index.txt holds the subject as openssl ca writes it");
  });

  await t.test("a type outside USERNAME_RDN_TYPES and a one-value name are refused, nothing is signed", async (t) => {
    const before = indexLines(inst.config.CA_DIR).length;
    for (const [username, why] of [[foreignType, /attribute type C, which USERNAME_RDN_TYPES \(DC,O,OU,CN\) does not allow/], [oneValue, /must be a slash-form RDN sequence/]] as const) {
      const r = await logon(username, username === oneValue ? "onevalue" : "foreign");
      t.not(r.code, 0, `${username}: the logon fails`);
      t.match(r.stderr, /Certificate generation failure/, "MyProxy tells the user");
      t.match(calloutErrors(), why, "the call-out says why (MyProxy logs it)");
    }
    t.equal(indexLines(inst.config.CA_DIR).length, before, "no certificate was recorded");
  });
});
