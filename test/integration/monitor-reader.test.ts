// The monitor's PKCS#11 presence source on a token in a reader (the eToken-like test module):
// a module that says the token is not there (CKR_TOKEN_NOT_PRESENT, CKF_TOKEN_PRESENT clear) is
// believed at once, without the C_Finalize + C_Initialize a rescan costs (SoftHSM needs one to
// see tokens come and go; a USB token's module can take a second for it). Counted through the
// source's rescan counter, not timed.
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { KeyRef } from "../../services/common/config-schema.js";
import { createLogger } from "../../services/common/log.js";
import { loadModule, Pkcs11Source } from "../../services/monitor/pkcs11-source.js";
import { simOf } from "../fixtures/etoken-sim.js";
import { createSoftToken } from "../fixtures/softhsm.js";

const KEY0: KeyRef = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-monitor-reader-"));
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
const token = createSoftToken({ dir: path.join(base, "token"), label: "reader test", pkcs11: "etoken-sim" });
for (const [k, v] of Object.entries(token.env)) process.env[k] = v;
const sim = simOf(token);
const source = new Pkcs11Source(loadModule(token.modulePath), KEY0, 3_600_000, createLogger("test"));
t.teardown(() => source.stop());

t.test("removal, absence and insertion as a reader reports them", async (t) => {
  t.match(await source.check(), { present: true, serial: token.serial }, "present to begin with");
  const before = source.rescans;

  sim.remove();
  const gone = await source.check();
  t.equal(gone.present, false, "the fence sees the removal");
  t.match(gone.detail, /not present/i, `and says why: ${gone.detail}`);
  t.equal(source.rescans, before, "from CKR_TOKEN_NOT_PRESENT: no C_Finalize + C_Initialize");

  for (let i = 0; i < 3; i++) t.equal(source.poll().present, false, `poll ${i + 1} while the reader is empty: absent`);
  t.equal(source.rescans, before, "the slot's CKF_TOKEN_PRESENT is read instead of rescanning");

  sim.insert();
  t.match(source.poll(), { present: true, serial: token.serial }, "the token is back at the next poll");
});
