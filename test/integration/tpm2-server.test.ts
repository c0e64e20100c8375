// The whole CA with its key in a second, independent PKCS#11 implementation: Debian's
// tpm2-pkcs11 on a software TPM (test/fixtures/tpm2-token.ts). One installation: an issuance
// verified by OpenSSL, a revocation and its CRL (verified by OpenSSL), a restarted signer that
// signs again, and the token "removed" (swtpm stopped): the CA suspends and signs nothing until
// the TPM is back and the PIN typed again.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { createInstallationWith, makeBaseDir, pinAgain, readStatus, waitFor, waitForState } from "../fixtures/server.js";
import { certField, openssl, verifyCert } from "../fixtures/pki.js";
import { readyServer } from "../fixtures/ready-server.js";
import { createTpmToken } from "../fixtures/tpm2-token.js";
import { ensureTestUsers } from "../fixtures/users.js";

const users = ensureTestUsers();
const tpmDir = makeBaseDir("etca-tpm-token");
const tpm = await createTpmToken({
  dir: path.join(tpmDir, "tpm"),
  label: "etca tpm server",
  ownerUid: users.SIGNER_USER.uid,
  ownerGid: users.SIGNER_USER.gid,
  readerGid: users.MONITOR_USER.gid,
  resourceManager: true,
});
const inst = createInstallationWith(tpm, { prefix: "etca-tpm" });
const { request: issue, revokeIntoCrl } = await readyServer(t, inst, {
  cleanup: async () => {
    await tpm.destroy();
    fs.rmSync(tpmDir, { recursive: true, force: true });
  },
});

const indexText = (): string => fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8");
const latestCrl = (): string => path.join(inst.config.CRL_DIR, "crl.pem");

t.test("issuance, revocation and a CRL signed in the TPM verify with OpenSSL", async (t) => {
  const r = await issue("alice");
  t.equal(r.code, 0, r.stderr);
  t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok, "openssl verify accepts the certificate");
  const revoked = await revokeIntoCrl(certField(r.stdout, "serial"));
  t.equal(revoked.code, 0, revoked.stderr);
  const crl = openssl(["crl", "-in", latestCrl(), "-CAfile", inst.token.caCertPath, "-noout", "-verify"]);
  t.match(crl.stdout + crl.stderr, /verify OK/, "openssl crl -verify: the TPM's signature on the CRL");
  const check = openssl(["verify", "-crl_check", "-CAfile", inst.token.caCertPath, "-CRLfile", latestCrl(), r.file]);
  t.match(check.stdout + check.stderr, /certificate revoked/, "the CRL lists the certificate");
});

t.test("a restarted signer logs in to the TPM again and signs", async (t) => {
  const before = readStatus(inst)!.services.find((s) => s.name === "signer")!;
  process.kill(before.pid!, "SIGKILL");
  await waitFor("the signer back", () => {
    const s = readStatus(inst)?.services.find((x) => x.name === "signer");
    return s && s.up && s.pid !== before.pid ? s : undefined;
  }, 30_000);
  await waitForState(inst, "READY", 30_000);
  const r = await issue("after-restart");
  t.equal(r.code, 0, r.stderr);
  t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok, "signed by the new signer's session");
});

t.test("the TPM stops: the CA suspends and signs nothing; back with the PIN when it returns", async (t) => {
  const lines = indexText();
  await tpm.remove();
  const st = await waitForState(inst, "SUSPENDED", 20_000);
  t.equal(st.token.present, false, "status shows the token absent");
  const refused = await issue("during");
  t.equal(refused.code, 1, "the request is refused");
  t.match(refused.stderr, /CA token not available/, `a clear error: ${refused.stderr.trim()}`);
  t.notMatch(refused.stdout, /BEGIN CERTIFICATE/);
  t.equal(indexText(), lines, "nothing signed");

  await tpm.reinsert();
  await pinAgain(inst);
  const r = await issue("after-return");
  t.equal(r.code, 0, r.stderr);
  t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok);
});
