// A second PKCS#11 implementation: the signer's Token and the monitor's presence source on
// Debian's tpm2-pkcs11 over a software TPM (test/fixtures/tpm2-token.ts), with the CA key made
// in the TPM. Select, log in, find the key, sign (verified with OpenSSL against the CA
// certificate), "remove" the token (swtpm stops) and put it back.
import t from "tap";
import { randomBytes, verify, X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseKeySpec } from "../../services/common/config.js";
import { TokenError } from "../../services/common/errors.js";
import { createLogger } from "../../services/common/log.js";
import { loadModule, Pkcs11Source } from "../../services/monitor/pkcs11-source.js";
import { Token } from "../../services/signer/token.js";
import { openssl } from "../fixtures/pki.js";
import { thrown } from "../fixtures/thrown.js";
import { createTpmToken } from "../fixtures/tpm2-token.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-tpm-"));
fs.chmodSync(base, 0o711);
const tpm = await createTpmToken({ dir: path.join(base, "tpm"), label: "etca tpm" });
t.teardown(async () => {
  await tpm.destroy();
  fs.rmSync(base, { recursive: true, force: true });
});
const key = parseKeySpec(`pkcs11:token=etca%20tpm;id=${tpm.caKeyId.replace(/(..)/g, "%$1")}`, (expected) => {
  throw new Error(`bad KEY: expected ${expected}`);
});
const caKey = new X509Certificate(fs.readFileSync(tpm.caCertPath)).publicKey;

t.test("the CA certificate is self-signed by the key in the TPM", async (t) => {
  const r = openssl(["verify", "-check_ss_sig", "-CAfile", tpm.caCertPath, tpm.caCertPath]);
  t.equal(r.code, 0, r.stdout + r.stderr);
});

t.test("the signer's Token: select, login, find the key, sign; a stopped TPM is a lost device", async (t) => {
  const tok = Token.open(tpm.modulePath, { env: tpm.env });
  t.teardown(() => tok.close());
  const info = tok.select(key);
  t.equal(info.label, "etca tpm");
  t.equal(info.serial, tpm.serial);
  tok.login(Buffer.from(tpm.userPin), tpm.serial);
  tok.findKey(key);
  t.equal(tok.keyIdHex, tpm.caKeyId, "the key made in the TPM");
  const data = randomBytes(64);
  t.ok(verify("sha256", data, caKey, tok.sign(data)), "the signature verifies with the CA certificate");

  await tpm.remove();
  const e = thrown(TokenError, () => tok.sign(data));
  t.equal(e.deviceLost, true, `the signer sees a lost token: ${e.message}`);
  await tpm.reinsert();
});

t.test("the monitor's PKCS#11 source: present, absent while swtpm is stopped, present again", async (t) => {
  const log = createLogger("test");
  const source = new Pkcs11Source(loadModule(tpm.modulePath), key, 3_600_000, log);
  t.teardown(() => source.stop());
  t.match(source.rescan(), { present: true, serial: tpm.serial, label: "etca tpm" });
  await tpm.remove();
  t.equal(source.rescan().present, false, "absent with the TPM stopped");
  await tpm.reinsert();
  t.equal(source.rescan().present, true, "present again");
});
