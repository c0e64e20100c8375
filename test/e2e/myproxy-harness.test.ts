// Proves the MyProxy harness (test/fixtures/myproxy.ts) with a stand-in issuer program: a real
// myproxy-server in CA mode, the real myproxy-logon, and a shell script that signs with a file CA.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { addTrustedCa, myproxyLogon, processAlive, startMyProxy, writeIssuerWrapper, type MyProxyServer } from "../fixtures/myproxy.js";
import { lookupUser } from "../../services/common/identity.js";

const HEADER_KEYS = [
  "username", "passphrase", "proxy_lifetime", "retrievers", "renewers", "credname", "creddesc",
  "authzcreds", "keyretrieve", "trusted_retrievers", "max_cert_lifetime",
];

function openssl(...args: string[]): string {
  return execFileSync("openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function derOfPem(kind: "req" | "x509", pemText: string): Buffer {
  return execFileSync("openssl", [kind, "-outform", "DER"], { input: pemText, stdio: ["pipe", "pipe", "pipe"] });
}

t.test("a real MyProxy CA calls the issuer program and returns its certificate", async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail("the MyProxy harness needs root (it runs myproxy-server as user myproxy and writes /etc/pam.d)");
    return;
  }
  const dir = fs.mkdtempSync("/tmp/etca-myproxy-");
  fs.chmodSync(dir, 0o755); // startMyProxy does this too; the wrapper check below needs it first
  const mp = lookupUser("myproxy");

  // The stand-in CA and issuer program, readable by the myproxy user only.
  const issuerDir = path.join(dir, "issuer");
  fs.mkdirSync(issuerDir, { mode: 0o700 });
  const caCert = path.join(issuerDir, "ca.pem");
  const caKey = path.join(issuerDir, "ca.key");
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", caCert, "-days", "2",
    "-subj", "/DC=org/DC=example/CN=Stand-in Issuer CA", "-addext", "basicConstraints=critical,CA:true",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  const calloutDir = path.join(dir, "callout");
  fs.mkdirSync(calloutDir, { mode: 0o700 });
  const dump = path.join(calloutDir, "stdin.txt");
  const idDump = path.join(calloutDir, "id.txt");
  const program = path.join(issuerDir, "issue.sh");
  fs.writeFileSync(
    program,
    `#!/bin/sh
set -e
umask 077
cat > '${dump}'
printf 'uid=%s args=%s marker=%s\\n' "$(id -u)" "$#" "$HARNESS_MARKER" > '${idDump}'
user=$(sed -n 's/^username=//p' '${dump}')
sed -n '/^-----BEGIN CERTIFICATE REQUEST-----$/,/^-----END CERTIFICATE REQUEST-----$/p' '${dump}' > '${calloutDir}/req.pem'
exec openssl x509 -req -in '${calloutDir}/req.pem' -CA '${caCert}' -CAkey '${caKey}' \\
  -set_serial 0x$(openssl rand -hex 8) -days 1 -subj "/DC=org/DC=example/CN=$user"
`,
    { mode: 0o755 },
  );
  for (const p of [issuerDir, calloutDir, caKey, caCert, program]) fs.chownSync(p, mp.uid, mp.gid);
  // MyProxy runs the wrapper (as the real test runs node + dist/client/bin/etoken-ca-client.js --config ...).
  const secret = path.join(dir, "root-only");
  fs.mkdirSync(secret, { mode: 0o700 });
  fs.writeFileSync(path.join(secret, "x.js"), "");
  t.throws(() => writeIssuerWrapper(path.join(dir, "bad-wrapper"), ["/bin/sh", path.join(secret, "x.js")]), /not readable by user myproxy/, "a wrapper whose program myproxy cannot read is refused");
  const wrapper = writeIssuerWrapper(path.join(dir, "issuer-wrapper"), ["/bin/sh", program]);

  let server: MyProxyServer | undefined;
  t.teardown(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  server = await startMyProxy({
    dir,
    issuerProgram: wrapper,
    maxCertLifetimeHours: 12,
    users: [{ name: "alice", password: "secret123" }],
    extraEnv: { HARNESS_MARKER: "from-extraEnv" },
  });
  t.ok(server.port > 0, "the server listens on a port of its own choosing");
  t.ok(processAlive(server.pid), "the daemon's pid is known");
  t.equal(fs.readFileSync(`/proc/${server.pid}/status`, "utf8").match(/^Uid:\s+(\d+)/m)?.[1], String(mp.uid), "myproxy-server runs as myproxy");
  t.ok(fs.existsSync(`/etc/pam.d/${server.pamService}`), "the harness's own PAM service exists");
  t.notOk(fs.existsSync("/etc/pam.d/myproxy") && fs.readFileSync("/etc/pam.d/myproxy", "utf8").includes(server.pamService), "the system's PAM service is left alone");
  addTrustedCa(server.trustDir, caCert, "/DC=org/DC=example");

  const clientDir = path.join(dir, "client");
  fs.mkdirSync(clientDir, { mode: 0o700 });
  const userKey = path.join(clientDir, "user.key");
  const csr = path.join(clientDir, "user.csr");
  openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", userKey, "-out", csr, "-subj", "/CN=placeholder");

  await t.test("right password: a certificate for the CSR's key", async (t) => {
    const out = path.join(clientDir, "alice.pem");
    const r = await myproxyLogon({ server: server!, username: "alice", password: "secret123", hours: 2, csrPath: csr, outPath: out, trustDir: server!.trustDir });
    t.equal(r.code, 0, `myproxy-logon succeeds (stderr: ${r.stderr.trim()})`);
    t.ok(fs.existsSync(out), "the credential file is written");
    const certPub = openssl("x509", "-noout", "-pubkey", "-in", out);
    t.equal(certPub, openssl("req", "-noout", "-pubkey", "-in", csr), "certificate key = CSR key");
    t.equal(certPub, openssl("pkey", "-pubout", "-in", userKey), "certificate key = the test's private key");
    t.match(openssl("x509", "-noout", "-subject", "-nameopt", "compat", "-in", out), /\/DC=org\/DC=example\/CN=alice/);
    t.match(openssl("verify", "-CAfile", caCert, out), /: OK/, "signed by the stand-in CA");

    // The exact call-out format of reference/myproxy.md.
    const text = fs.readFileSync(dump, "utf8");
    const blank = text.indexOf("\n\n");
    t.ok(blank > 0, "header, an empty line, then the CSR");
    const header = text.slice(0, blank).split("\n");
    t.same(header.map((l) => l.slice(0, l.indexOf("="))), HEADER_KEYS, "the header keys in MyProxy's order");
    const values = Object.fromEntries(header.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    t.equal(values.username, "alice");
    t.equal(values.passphrase, "secret123", "the user's password IS in the callout's stdin (our client must drop it)");
    t.equal(values.proxy_lifetime, String(2 * 3600), "proxy_lifetime = -t hours in seconds");
    t.equal(values.max_cert_lifetime, String(12 * 3600), "max_cert_lifetime = the server's setting in seconds");
    for (const k of ["retrievers", "renewers", "credname", "creddesc", "authzcreds", "keyretrieve", "trusted_retrievers"]) {
      t.equal(values[k], "NULL", `${k} unset is the literal NULL`);
    }
    const body = text.slice(blank + 2);
    t.match(body, /^-----BEGIN CERTIFICATE REQUEST-----\n[\s\S]+\n-----END CERTIFICATE REQUEST-----\n?$/, "then one PEM CSR and EOF");
    t.same(derOfPem("req", body), derOfPem("req", fs.readFileSync(csr, "utf8")), "the CSR given with -Q is passed on unchanged");
    t.equal(fs.readFileSync(idDump, "utf8"), `uid=${mp.uid} args=0 marker=from-extraEnv\n`, "the callout runs as myproxy, with no arguments, with the server's environment");
  });

  await t.test("wrong password: refused before the issuer program runs", async (t) => {
    fs.rmSync(dump, { force: true });
    const out = path.join(clientDir, "wrong.pem");
    const r = await myproxyLogon({ server: server!, username: "alice", password: "not-the-password", hours: 2, csrPath: csr, outPath: out, trustDir: server!.trustDir });
    t.not(r.code, 0, "myproxy-logon fails");
    t.match(r.stderr, /authentication failed/i, "with MyProxy's authentication error");
    t.notOk(fs.existsSync(out), "no credential file");
    t.notOk(fs.existsSync(dump), "the issuer program was not run");
  });

  await t.test("unknown user: refused before the issuer program runs", async (t) => {
    const out = path.join(clientDir, "nobody.pem");
    const r = await myproxyLogon({ server: server!, username: "mallory", password: "secret123", hours: 2, csrPath: csr, outPath: out, trustDir: server!.trustDir });
    t.not(r.code, 0, "myproxy-logon fails");
    t.notOk(fs.existsSync(dump), "the issuer program was not run");
  });

  await t.test("the server serves more than one connection", async (t) => {
    const out = path.join(clientDir, "again.pem");
    const r = await myproxyLogon({ server: server!, username: "alice", password: "secret123", hours: 1, csrPath: csr, outPath: out, trustDir: server!.trustDir });
    t.equal(r.code, 0, `second successful logon (stderr: ${r.stderr.trim()})`);
  });

  await t.test("stop() ends the daemon and removes the PAM service", async (t) => {
    const pid = server!.pid;
    const pam = `/etc/pam.d/${server!.pamService}`;
    await server!.stop();
    t.notOk(processAlive(pid), "the daemon is gone");
    t.notOk(fs.existsSync(pam), "the PAM service file is removed");
    await server!.stop(); // idempotent
  });
});
