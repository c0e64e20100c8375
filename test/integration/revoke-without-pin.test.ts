// revoke-cert says what will happen: without a PIN it does not claim a new CRL; the revocation
// is recorded at once and `etoken-ca status` counts it as waiting for a CRL; so does a certificate
// the signer revokes at its start as never delivered.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { DELIVERY_JOURNAL } from "../../services/signer/delivery-journal.js";
import { BIN, createInstallation, readStatus, runCommand, startServer, waitFor, waitForState } from "../fixtures/server.js";

const inst = createInstallation({ prefix: "etca-revnopin" });
t.teardown(() => inst.cleanup());

t.test("a revocation while no PIN has been typed", async (t) => {
  const setup = startServer(inst);
  await waitForState(inst, "NEED_PIN", 60_000);
  await setup.stop();
  // a certificate in the database, handed to its client (its line and its delivery confirmation:
  // an unconfirmed one would be revoked as undelivered when the signer starts)
  fs.appendFileSync(path.join(inst.config.CA_DIR, "index.txt"), "V\t301231235959Z\t\t0B\tunknown\t/CN=someone\n");
  fs.appendFileSync(path.join(inst.config.CA_DIR, DELIVERY_JOURNAL), "D 0B\n");
  const server = startServer(inst);
  t.teardown(() => server.stop());
  await waitForState(inst, "NEED_PIN", 60_000);
  const r = runCommand(process.execPath, [BIN.revoke, "--config", inst.configPath, "--serial", "0B"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /to record the revocation; no CRL can be signed without the PIN: it goes into the next CRL, made when the PIN is typed/);
  t.notMatch(r.stdout, /publish a new CRL/);
  await waitFor("the revocation recorded", () => ((readStatus(inst)?.revokedSinceCrl ?? 0) > 0 ? true : undefined), 30_000);
  t.match(fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8"), /^R\t301231235959Z\t\d{12}Z(,[^\t]*)?\t0B\t/m, "recorded in index.txt without a PIN");
  const st = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.match(st.stdout, /^revocations:\s+0 queued, 1 recorded and waiting for a CRL \(made when the PIN is typed\)$/m);
});

t.test("certificates the signer revokes as never delivered count as waiting for a CRL", async (t) => {
  // signed, in the database, and never confirmed delivered: the signer revokes it when it starts
  fs.appendFileSync(path.join(inst.config.CA_DIR, "index.txt"), "V\t301231235959Z\t\t0C\tunknown\t/CN=someone-else\n");
  const server = startServer(inst);
  t.teardown(() => server.stop());
  await waitForState(inst, "NEED_PIN", 60_000);
  await waitFor("0C revoked as undelivered", () => (/^R\t301231235959Z\t\d{12}Z(,[^\t]*)?\t0C\t/m.test(fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8")) ? true : undefined), 30_000);
  await waitFor("the status file counts it", () => ((readStatus(inst)?.revokedSinceCrl ?? 0) > 0 ? true : undefined), 5_000).catch(() => undefined);
  t.equal(readStatus(inst)?.counters.undelivered, 1, "counted as undelivered");
  t.equal(readStatus(inst)?.revokedSinceCrl, 1, "waiting for a CRL: the one revocation no CRL carries yet");
  const st = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.match(st.stdout, /^revocations:\s+0 queued, 1 recorded and waiting for a CRL \(made when the PIN is typed\)$/m);
});
