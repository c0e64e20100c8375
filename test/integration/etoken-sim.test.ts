// The eToken-like test module (native/etoken-sim) through pkcs11js, on a real SoftHSM2 token:
// each behaviour it adds is switched on through the fixture's control file and seen through
// real PKCS#11 calls, by this process and by a second one (test/fixtures/etoken-sim-child.ts).
// Durations are only ever checked as lower bounds (a sleep of N ms takes at least N ms).
import t from "tap";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { X509Certificate, verify } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import pkcs11js from "pkcs11js";
import { slotIdOf } from "../../services/common/pkcs11/token-match.js";
import { ETOKEN_SIM_LIBRARY, simOf } from "../fixtures/etoken-sim.js";
import { createSoftToken, SOFTHSM_MODULE } from "../fixtures/softhsm.js";

const CHILD = fileURLToPath(new URL("../fixtures/etoken-sim-child.js", import.meta.url));
const CKF_TOKEN_PRESENT = 0x1;
const CKF_USER_PIN_COUNT_LOW = 0x00010000;
const CKF_USER_PIN_FINAL_TRY = 0x00020000;
const CKF_USER_PIN_LOCKED = 0x00040000;
const PIN_BITS = CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-etoken-sim-"));
fs.chmodSync(base, 0o711);
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));

const st = createSoftToken({ dir: path.join(base, "token"), label: "etca etoken-sim", pkcs11: "etoken-sim" });
const sim = simOf(st);
const caKey = new X509Certificate(fs.readFileSync(st.caCertPath)).publicKey;
for (const [k, v] of Object.entries(st.env)) process.env[k] = v;

const p = new pkcs11js.PKCS11();
p.load(st.modulePath);
p.C_Initialize();
t.teardown(() => p.C_Finalize());
const slot = p.C_GetSlotList(true).find((s) => (p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0)!;

/** Back to a plain token in the reader after each test. */
t.afterEach(() => {
  sim.set({ present: true, signMs: 0, initMs: 0, finalizeMs: 0, pinMaxTries: 0, signFault: undefined, serial: undefined });
  sim.resetPinCounter();
  p.C_CloseAllSessions(slot);
});

function ckr(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    const m = /CKR_[A-Z_]+/.exec((err as Error).message);
    if (m) return m[0];
    throw err;
  }
  return "CKR_OK";
}

function loggedInSession(): { session: Buffer; key: Buffer } {
  const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  p.C_Login(session, pkcs11js.CKU_USER, st.userPin);
  return { session, key: findKey(session)! };
}

function findKey(session: Buffer): Buffer | undefined {
  p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }]);
  const [key] = p.C_FindObjects(session, 1);
  p.C_FindObjectsFinal(session);
  return key;
}

function sign(session: Buffer, key: Buffer, data: Buffer): Buffer {
  p.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, key);
  return p.C_Sign(session, data, Buffer.alloc(1024));
}

/** A child on the module; resolves each line it prints through `lines`. */
function child(mode: "wait" | "sign"): { proc: ChildProcess; line: (prefix: string) => Promise<string>; exited: Promise<number | null> } {
  const proc = spawn("env", ["-u", "NODE_OPTIONS", process.execPath, CHILD, mode, st.modulePath, st.userPin], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...st.env },
  });
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill("SIGKILL");
  });
  let out = "";
  const waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  const check = (): void => {
    for (const w of [...waiters]) {
      const l = out.split("\n").find((x) => x.startsWith(w.prefix));
      if (l !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  };
  proc.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    check();
  });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  return {
    proc,
    exited,
    line: (prefix) =>
      new Promise((resolve, reject) => {
        waiters.push({ prefix, resolve });
        check();
        void exited.then((code) => reject(new Error(`child ${mode} exited (${code}) before printing "${prefix}"; output: ${out}`)));
      }),
  };
}

/** Whether another process holds the token's one-signature-at-a-time lock now. */
function chipBusy(): boolean {
  return spawnSync("flock", ["-n", path.dirname(sim.controlPath), "true"]).status !== 0;
}

/** Whether the lock is seen held while `proc` runs (it signs slowly): looks every 10 ms, 200 times at most. */
async function chipBusyDuring(proc: ChildProcess): Promise<boolean> {
  for (let i = 0; i < 200 && proc.exitCode === null; i++) {
    if (chipBusy()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

t.test("pass-through: the module is not SoftHSM's, yet signs with the token's key", async (t) => {
  t.not(st.modulePath, SOFTHSM_MODULE);
  t.equal(st.modulePath, ETOKEN_SIM_LIBRARY);
  t.equal(p.C_GetTokenInfo(slot).serialNumber.trim(), st.serial, "SoftHSM's serial shows through");
  const { session, key } = loggedInSession();
  const data = Buffer.from("pass-through");
  t.ok(verify("sha256", data, caKey, sign(session, key, data)), "the signature verifies with the CA certificate");
});

t.test("removal as a reader reports it, and re-insertion with fresh sessions and another serial", async (t) => {
  const { session, key } = loggedInSession();
  sim.remove();
  t.ok(p.C_GetSlotList(false).some((s) => s.equals(slot)), "the slot stays listed");
  t.notOk(p.C_GetSlotList(true).some((s) => s.equals(slot)), "C_GetSlotList(tokenPresent) leaves it out");
  t.equal(p.C_GetSlotInfo(slot).flags & CKF_TOKEN_PRESENT, 0, "C_GetSlotInfo: CKF_TOKEN_PRESENT clear");
  t.equal(ckr(() => p.C_GetTokenInfo(slot)), "CKR_TOKEN_NOT_PRESENT", "C_GetTokenInfo");
  t.equal(ckr(() => p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION)), "CKR_TOKEN_NOT_PRESENT", "C_OpenSession");
  t.equal(ckr(() => sign(session, key, Buffer.from("x"))), "CKR_DEVICE_REMOVED", "an open session first answers CKR_DEVICE_REMOVED");
  t.equal(ckr(() => sign(session, key, Buffer.from("x"))), "CKR_SESSION_HANDLE_INVALID", "then CKR_SESSION_HANDLE_INVALID");

  sim.insert({ serial: "SIMSERIAL0000002" });
  t.not(p.C_GetSlotInfo(slot).flags & CKF_TOKEN_PRESENT, 0, "CKF_TOKEN_PRESENT set again");
  t.equal(p.C_GetTokenInfo(slot).serialNumber.trim(), "SIMSERIAL0000002", "the token inserted shows another serial");
  t.equal(ckr(() => p.C_GetSessionInfo(session)), "CKR_SESSION_HANDLE_INVALID", "the old session stays dead");
  const fresh = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  t.equal(findKey(fresh), undefined, "a fresh session is not logged in: the private key is hidden");
  t.equal(ckr(() => p.C_Login(fresh, pkcs11js.CKU_USER, st.userPin)), "CKR_OK", "a new login is needed and works");
  const data = Buffer.from("after re-insertion");
  t.ok(verify("sha256", data, caKey, sign(fresh, findKey(fresh)!, data)), "and signs");
});

t.test("a removal and re-insertion between two calls still kills the old sessions", async (t) => {
  const { session } = loggedInSession();
  sim.remove();
  sim.insert();
  t.equal(ckr(() => p.C_GetSessionInfo(session)), "CKR_DEVICE_REMOVED");
  t.equal(ckr(() => p.C_GetSessionInfo(session)), "CKR_SESSION_HANDLE_INVALID");
});

t.test("C_WaitForSlotEvent: CKF_DONT_BLOCK reports each change once, a blocking wait returns on removal", async (t) => {
  while (p.C_WaitForSlotEvent(pkcs11js.CKF_DONT_BLOCK) !== null) {
    // events of earlier tests
  }
  t.equal(p.C_WaitForSlotEvent(pkcs11js.CKF_DONT_BLOCK), null, "no event: CKR_NO_EVENT");
  sim.remove();
  const ev = p.C_WaitForSlotEvent(pkcs11js.CKF_DONT_BLOCK);
  t.ok(ev && slotIdOf(ev) === slotIdOf(slot), "the removal is an event on the token's slot");
  t.equal(p.C_WaitForSlotEvent(pkcs11js.CKF_DONT_BLOCK), null, "reported once");
  sim.insert();
  const ev2 = p.C_WaitForSlotEvent(pkcs11js.CKF_DONT_BLOCK);
  t.ok(ev2 && slotIdOf(ev2) === slotIdOf(slot), "the insertion is an event on the token's slot");

  const waiter = child("wait");
  await waiter.line("waiting");
  t.equal(waiter.proc.exitCode, null, "the blocking wait has not returned before the removal");
  sim.remove();
  t.equal(await waiter.line("event "), `event ${slotIdOf(slot)}`, "the blocked C_WaitForSlotEvent returns the slot on removal");
  t.equal(await waiter.exited, 0);
});

t.test("PIN counter as hardware keeps it: COUNT_LOW, FINAL_TRY, LOCKED, and a locked PIN refuses the right PIN", async (t) => {
  sim.set({ pinMaxTries: 3 });
  const flags = (): number => p.C_GetTokenInfo(slot).flags & PIN_BITS;
  t.equal(flags(), 0, "no flag before a wrong PIN");
  const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, "wrong-1")), "CKR_PIN_INCORRECT");
  t.equal(flags(), CKF_USER_PIN_COUNT_LOW, "one wrong PIN: COUNT_LOW");
  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, st.userPin)), "CKR_OK", "the right PIN before the lock works");
  p.C_Logout(session);
  t.equal(flags(), 0, "and resets the counter");
  t.equal(sim.pinFailures(), 0);

  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, "wrong-1")), "CKR_PIN_INCORRECT");
  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, "wrong-2")), "CKR_PIN_INCORRECT");
  t.equal(flags(), CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY, "one try left: FINAL_TRY");
  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, "wrong-3")), "CKR_PIN_INCORRECT");
  t.equal(flags(), CKF_USER_PIN_LOCKED, "no try left: LOCKED");
  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, st.userPin)), "CKR_PIN_LOCKED", "locked: the right PIN fails too");
  t.equal(sim.pinFailures(), 3, "the module counted three failures");

  sim.resetPinCounter();
  t.equal(flags(), 0, "unlocked (counter reset): no flag");
  t.equal(ckr(() => p.C_Login(session, pkcs11js.CKU_USER, st.userPin)), "CKR_OK");
});

t.test("faults on the Nth C_Sign: CKR_DEVICE_ERROR, CKR_GENERAL_ERROR; the next signature works", async (t) => {
  const { session, key } = loggedInSession();
  const data = Buffer.from("faults");
  for (const [kind, rv] of [["device_error", "CKR_DEVICE_ERROR"], ["general_error", "CKR_GENERAL_ERROR"]] as const) {
    sim.set({ signFault: `2 ${kind}` });
    t.ok(verify("sha256", data, caKey, sign(session, key, data)), `${kind}: the first C_Sign works`);
    t.equal(ckr(() => sign(session, key, data)), rv, `${kind}: the second answers ${rv}`);
    t.ok(verify("sha256", data, caKey, sign(session, key, data)), `${kind}: the third works (the failed operation was ended)`);
  }
});

t.test("sign latency: each C_Sign takes at least sign_ms, holding the token's one-at-a-time lock", async (t) => {
  const { session, key } = loggedInSession();
  sim.set({ signMs: 150 });
  const data = Buffer.from("latency");
  const start = process.hrtime.bigint();
  for (let i = 0; i < 3; i++) sign(session, key, data);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t.ok(ms >= 450, `three signatures took ${ms.toFixed(0)} ms, at least 3 x 150`);

  t.notOk(chipBusy(), "no signature in progress: the lock is free");
  sim.set({ signMs: 3000 });
  const signer = child("sign");
  await signer.line("signing");
  const busy = await chipBusyDuring(signer.proc);
  t.ok(busy, "while another process signs, the lock is held (a second signer waits for it)");
  const signed = await signer.line("signed ");
  t.ok(verify("sha256", Buffer.from("etoken-sim child"), caKey, Buffer.from(signed.slice(7), "hex")), "the slow signature verifies");
  await signer.exited;
  t.notOk(chipBusy(), "after it, the lock is free again");
});

t.test("slow C_Initialize and C_Finalize", async (t) => {
  sim.set({ initMs: 300, finalizeMs: 300 });
  const q = new pkcs11js.PKCS11();
  q.load(st.modulePath);
  // a second PKCS11 object shares the library: finalize ours first, as a restarting service would
  p.C_Finalize();
  try {
    let start = process.hrtime.bigint();
    q.C_Initialize();
    t.ok(Number(process.hrtime.bigint() - start) / 1e6 >= 300, "C_Initialize took at least init_ms");
    start = process.hrtime.bigint();
    q.C_Finalize();
    t.ok(Number(process.hrtime.bigint() - start) / 1e6 >= 300, "C_Finalize took at least finalize_ms");
  } finally {
    sim.set({ initMs: 0, finalizeMs: 0 });
    p.C_Initialize();
  }
});

t.test("a C_Sign that hangs, then completes although the token was pulled meanwhile", async (t) => {
  sim.set({ signFault: "1 hang 2" });
  const signer = child("sign");
  await signer.line("signing");
  const busy = await chipBusyDuring(signer.proc);
  t.ok(busy, "the child is inside C_Sign");
  sim.remove();
  t.equal(ckr(() => p.C_GetTokenInfo(slot)), "CKR_TOKEN_NOT_PRESENT", "the token is out while the signature hangs");
  const signed = await signer.line("signed ");
  t.ok(verify("sha256", Buffer.from("etoken-sim child"), caKey, Buffer.from(signed.slice(7), "hex")), "the hung C_Sign still delivers a valid signature: what a presence fence must catch");
});
