// Adoption of an existing `openssl ca` directory (DESIGN §6): a CA directory made with stock
// `openssl ca` and a file key (V, R and E lines, sequential serials, crlnumber, newcerts/),
// the key then imported into a SoftHSM token; CA_DIR points at it. Both backends issue,
// revoke (revoke-cert + SIGUSR1 -> CRL) on it in turn, and nothing is lost; `etoken-ca
// check-db` finds it clean, then reports damage precisely and exits non-zero.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, CLEAN_PATH, createInstallation, runCommand, startReady, waitFor, type Installation, runClient } from "../fixtures/server.js";
import { calloutInput, certField, makeCsr, mustOpenssl, openssl, verifyCert } from "../fixtures/pki.js";
import { setConfig, useNativeBackend, useOpensslBackend, opensslCaConfText } from "../fixtures/openssl-ca.js";

const inst = createInstallation({ prefix: "etca-adopt" });
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const caDir = inst.config.CA_DIR;
t.teardown(() => inst.cleanup());

const client = (input: string) => runClient(inst, input);

function indexLines(): string[] {
  return fs.readFileSync(path.join(caDir, "index.txt"), "utf8").split("\n").filter(Boolean);
}
function serialsOf(lines: string[]): string[] {
  return lines.map((l) => l.split("\t")[3]!);
}
function crlNumber(): bigint {
  return BigInt(`0x${fs.readFileSync(path.join(caDir, "crlnumber"), "utf8").trim()}`);
}
function checkDb(inst: Installation) {
  return runCommand(process.execPath, [BIN.ca, "check-db", "--config", inst.configPath]);
}
function chownTree(p: string, uid: number, gid: number, dirMode: number, fileMode: number): void {
  const st = fs.lstatSync(p);
  fs.chownSync(p, uid, gid);
  fs.chmodSync(p, st.isDirectory() ? dirMode : fileMode);
  if (st.isDirectory()) for (const e of fs.readdirSync(p)) chownTree(path.join(p, e), uid, gid, dirMode, fileMode);
}

// ---- the operator's existing CA: file key, stock openssl ca ---------------------------------
const oldKey = path.join(work, "old-ca.key");
const oldCert = path.join(work, "old-ca.pem");
mustOpenssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", oldKey]);
mustOpenssl([
  "req", "-new", "-x509", "-key", oldKey, "-out", oldCert, "-days", "3650", "-sha256", "-subj", "/DC=org/DC=example/CN=adopted CA",
  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash",
]);
fs.chmodSync(oldCert, 0o644);
fs.mkdirSync(path.join(caDir, "newcerts"), { recursive: true });
fs.writeFileSync(path.join(caDir, "index.txt"), "");
fs.writeFileSync(path.join(caDir, "serial"), "1000\n");
fs.writeFileSync(path.join(caDir, "crlnumber"), "05\n");
const oldConf = path.join(work, "old-openssl.cnf");
fs.writeFileSync(oldConf, opensslCaConfText(caDir, oldCert));
const ext = path.join(work, "old-ext.cnf");
fs.writeFileSync(ext, "[ e ]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n");
function oldCa(name: string, dates: string[]): string {
  const csr = makeCsr(work, `old-${name}`);
  mustOpenssl(["ca", "-batch", "-config", oldConf, "-keyfile", oldKey, "-cert", oldCert, "-in", csr.csrPath, "-out", path.join(work, `old-${name}.pem`), "-notext",
    "-subj", `/DC=org/DC=example/O=etoken-ca tests/CN=${name}`, "-extfile", ext, "-extensions", "e", ...dates]);
  return certField(fs.readFileSync(path.join(work, `old-${name}.pem`), "utf8"), "serial").toUpperCase();
}
const valid = oldCa("valid", ["-days", "30"]);
const revoked = oldCa("revoked", ["-days", "30"]);
const expired = oldCa("expired", ["-startdate", "200101000000Z", "-enddate", "200102000000Z"]);
mustOpenssl(["ca", "-config", oldConf, "-keyfile", oldKey, "-cert", oldCert, "-revoke", path.join(caDir, "newcerts", `${revoked}.pem`), "-crl_reason", "superseded"]);
openssl(["ca", "-config", oldConf, "-keyfile", oldKey, "-cert", oldCert, "-updatedb"]);
const adopted = indexLines();

// ---- the same key onto the token; the installation points at the old directory -----------
const keyId = "ad0b7ed0";
const pkcs8 = path.join(work, "old-ca.p8");
mustOpenssl(["pkcs8", "-topk8", "-nocrypt", "-in", oldKey, "-out", pkcs8]);
runCommand("softhsm2-util", ["--import", pkcs8, "--token", inst.token.label, "--label", "adopted CA key", "--id", keyId, "--pin", inst.token.userPin], {
  env: { PATH: CLEAN_PATH, ...inst.token.env },
});
fs.rmSync(pkcs8);
chownTree(inst.token.tokenDir, inst.users.SIGNER_USER.uid, inst.users.MONITOR_USER.gid, 0o750, 0o640);
chownTree(caDir, inst.users.SIGNER_USER.uid, inst.users.SIGNER_USER.gid, 0o700, 0o600);
setConfig(inst, { KEY: `0:${keyId}`, CA_CERT: oldCert });

t.test("the adopted directory is what openssl ca made", async (t) => {
  t.same(adopted.map((l) => l[0]).sort(), ["E", "R", "V"], "one V, one R, one E line");
  t.match(adopted.join("\n"), new RegExp(`^R\\t\\d{12}Z\\t\\d{12}Z,superseded\\t${revoked}\\t`, "m"));
  t.match(adopted.join("\n"), new RegExp(`^E\\t200102000000Z\\t\\t${expired}\\t`, "m"), "the expired one marked E by -updatedb");
  t.match(adopted.join("\n"), new RegExp(`^V\\t\\d{12}Z\\t\\t${valid}\\t`, "m"));
  const r = checkDb(inst);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^OK: 3 lines in \S+\/index\.txt \(1 valid, 1 revoked, 1 expired\) and 3 certificate files in newcerts\/; no audit trail at \S+ yet\.$/m);
});

const issuedBy: Record<string, string> = {};

for (const backend of ["openssl", "pkcs11", "openssl"] as const) {
  t.test(`${backend} backend on the adopted directory`, async (t) => {
    const before = indexLines();
    const crlBefore = crlNumber();
    if (backend === "openssl") useOpensslBackend(inst);
    else useNativeBackend(inst);
    const server = await startReady(inst);
    try {
      const csr = makeCsr(work, `new-${backend}-${before.length}`);
      const r = await client(calloutInput({ username: `adopt ${backend} ${before.length}`, passphrase: "adoption-pass", csrPem: csr.csrPem }));
      t.equal(r.code, 0, r.stderr);
      const v = verifyCert(oldCert, r.stdout);
      t.ok(v.ok, `the adopted CA's certificate verifies it: ${v.output}`);
      const serial = certField(r.stdout, "serial").toUpperCase();
      issuedBy[serial] = backend;
      t.ok(!serialsOf(before).includes(serial), "a new serial");

      // revoke the one the previous round issued (or the adopted valid one first)
      const victim = Object.keys(issuedBy).find((s) => s !== serial && !indexLines().some((l) => l.startsWith("R") && l.includes(`\t${s}\t`))) ?? valid;
      const rv = runCommand(process.execPath, [BIN.revoke, "--config", inst.configPath, "--serial", victim, "--reason", "keyCompromise"], { env: { PATH: CLEAN_PATH } });
      t.equal(rv.code, 0, rv.stderr);
      await waitFor("the revocation in a new CRL", () => {
        try {
          const text = openssl(["crl", "-in", path.join(inst.config.CRL_DIR, "crl.pem"), "-noout", "-text"]).stdout;
          return text.includes(victim.replace(/^0+(?=..)/, "")) && crlNumber() > crlBefore ? true : undefined;
        } catch {
          return undefined;
        }
      }, 30_000);
      const crl = path.join(inst.config.CRL_DIR, "crl.pem");
      const cv = openssl(["crl", "-in", crl, "-noout", "-CAfile", oldCert, "-verify"]);
      t.match(cv.stderr, /verify OK/, "the CRL verifies with the adopted CA certificate");
      t.match(openssl(["crl", "-in", crl, "-noout", "-text"]).stdout, new RegExp(`Serial Number: ${revoked}`), "the revocation made by openssl ca before adoption is still listed");
    } finally {
      await server.stop();
    }
    const after = indexLines();
    for (const line of before) {
      const s = line.split("\t")[3]!;
      const now = after.find((l) => l.split("\t")[3] === s);
      t.ok(now !== undefined, `line for ${s} kept`);
      if (now && now !== line) t.ok(line.startsWith("V") && now.startsWith("R"), `line for ${s} only changed from V to R`);
    }
    t.equal(after.length, before.length + 1, "one new line");
    t.equal(new Set(serialsOf(after)).size, after.length, "serials unique");
    t.same(fs.readdirSync(path.join(caDir, "newcerts")).sort(), serialsOf(after).map((s) => `${s}.pem`).sort(), "one newcerts file per line");
    t.ok(crlNumber() > crlBefore, `crlnumber increased (${crlBefore} -> ${crlNumber()})`);
    const r = checkDb(inst);
    t.equal(r.code, 0, `check-db clean after the ${backend} backend: ${r.stdout}`);
  });
}

t.test("check-db reports damage precisely and exits non-zero", async (t) => {
  const index = path.join(caDir, "index.txt");
  const lines = indexLines();
  const first = lines[0]!;
  const dupSerial = first.split("\t")[3]!;
  const missing = serialsOf(lines)[1]!;
  fs.rmSync(path.join(caDir, "newcerts", `${missing}.pem`));
  fs.copyFileSync(path.join(caDir, "newcerts", `${dupSerial}.pem`), path.join(caDir, "newcerts", "ABCDEF01.pem"));
  fs.appendFileSync(index, `${first}\nthis is not an index line\n`);
  const r = checkDb(inst);
  t.equal(r.code, 1, "non-zero exit");
  const out = r.stdout;
  const n = lines.length;
  t.match(out, `${index}:${n + 1}: duplicate serial ${dupSerial}, already on line 1`);
  t.match(out, `${index}:${n + 2}: 1 tab-separated field, expected 6`);
  t.match(out, new RegExp(`${index.replace(/[.]/g, "\\.")}:2: serial ${missing}: certificate file .*/newcerts/${missing}\\.pem is missing`));
  t.match(out, `newcerts/ABCDEF01.pem: no line for serial ABCDEF01 in ${index}`);
  t.match(out, /^4 problems found; \d+ lines in /m, "exactly the four problems");
});
