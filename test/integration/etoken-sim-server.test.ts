// The whole CA on the eToken-like test module (native/etoken-sim) instead of bare SoftHSM2: a
// token that signs in 250 ms, one signature at a time, and that leaves its reader the way a USB
// token does (slot still listed, CKR_TOKEN_NOT_PRESENT, the signer's session answering
// CKR_DEVICE_REMOVED). One installation: an issuance, a revocation with its CRL, a removal and a
// re-insertion, and a quick pull-and-put-back the monitor may never see (the signer's session
// is dead all the same). The full suites run on the module with ETCA_TEST_PKCS11=etoken-sim.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { countPrompts, createInstallation, pinAgain, promptShown, readStatus, typePin, waitForLine, waitForState } from "../fixtures/server.js";
import { certField, openssl, verifyCert } from "../fixtures/pki.js";
import { readyServer } from "../fixtures/ready-server.js";
import { simOf } from "../fixtures/etoken-sim.js";

const inst = createInstallation({ prefix: "etca-esim", token: { pkcs11: "etoken-sim" }, extraConfig: { TOKEN_POLL_INTERVAL: "300ms" } });
const sim = simOf(inst.token);
sim.set({ signMs: 250 });
const { request: issue, revokeIntoCrl } = await readyServer(t, inst);

const latestCrl = () => path.join(inst.config.CRL_DIR, "crl.pem");

t.test("issuance and a CRL signed by the slow token verify with OpenSSL", async (t) => {
  const r = await issue("alice");
  t.equal(r.code, 0, r.stderr);
  t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok, "openssl verify accepts the certificate");
  const revoked = await revokeIntoCrl(certField(r.stdout, "serial"));
  t.equal(revoked.code, 0, revoked.stderr);
  const check = openssl(["verify", "-crl_check", "-CAfile", inst.token.caCertPath, "-CRLfile", latestCrl(), r.file]);
  t.match(check.stdout + check.stderr, /certificate revoked/, "the CRL verifies and lists the certificate");
});

t.test("removal as a reader reports it suspends; re-insertion asks for the PIN, then issues", async (t) => {
  sim.remove();
  const st = await waitForState(inst, "SUSPENDED", 10_000);
  t.equal(st.token.present, false, "status shows the token absent");
  const refused = await issue("during");
  t.equal(refused.code, 1);
  t.match(refused.stderr, /CA token not available/);
  sim.insert();
  await pinAgain(inst);
  const r = await issue("after");
  t.equal(r.code, 0, r.stderr);
  t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok, "signed on the new insertion's session");
});

t.test("pulled and put back between two looks: the dead session fails the request cleanly, the PIN is asked again", async (t) => {
  const lines = fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8");
  sim.remove();
  sim.insert(); // the monitor's polls see the same token all along; the signer's session is dead
  const r = await issue("blink");
  t.equal(r.code, 1, "the request fails");
  t.match(r.stderr, /^etoken-ca-client: CA token not available/, `a clear error: ${r.stderr.trim()}`);
  t.notMatch(r.stdout, /BEGIN CERTIFICATE/);
  t.equal(fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8"), lines, "nothing signed");
  await pinAgain(inst); // a new insertion is a new login, as on hardware
  const again = await issue("blink-after");
  t.equal(again.code, 0, again.stderr);
  t.ok(verifyCert(inst.token.caCertPath, again.stdout).ok);
});

t.test("the token's PIN counter: the console warns, says FINAL TRY, and stops asking once the PIN is locked", async (t) => {
  sim.set({ pinMaxTries: 3 });
  sim.remove();
  await waitForState(inst, "SUSPENDED", 10_000);
  sim.insert();
  await waitForState(inst, "NEED_PIN", 20_000);
  let n = await promptShown(inst, 20_000);
  await typePin(inst, "wrong-pin-1", n++);
  await typePin(inst, "wrong-pin-2", n++);
  await typePin(inst, "wrong-pin-3", n);
  const locked = await waitForLine("the locked message", inst.consoleText, /the user PIN is LOCKED/, 20_000);
  t.match(locked, /the user PIN is LOCKED; unlock it with the SO PIN, then re-insert the token$/);
  const text = inst.consoleText();
  t.match(text, /WARNING: a wrong PIN was entered before/, "after one wrong PIN");
  t.match(text, /WARNING: FINAL TRY: one more wrong PIN locks the token/, "with one try left");
  t.equal(sim.pinFailures(), 3, "three wrong PINs reached the token");
  t.same(readStatus(inst)!.token.pinFlags.includes("locked"), true, "status shows the PIN locked");
  t.equal(countPrompts(inst), n, "no prompt after the lock");

  sim.resetPinCounter(); // what the SO's unlock does; then the token is re-inserted, as the console says
  sim.set({ pinMaxTries: 0 });
  sim.remove();
  await waitForState(inst, "SUSPENDED", 10_000);
  sim.insert();
  await pinAgain(inst);
  const r = await issue("after-unlock");
  t.equal(r.code, 0, r.stderr);
});
