// The monitor's slot-event thread (see slot-events.ts): one blocking C_WaitForSlotEvent per
// "wait" from the monitor, answered with the event's slot or the call's CKR_* code. pkcs11js
// gives this thread the module the monitor already loaded and initialised (one copy per
// process): it never initialises or finalises it itself.
import { parentPort, workerData } from "node:worker_threads";
import pkcs11js from "pkcs11js";
import { ckrName } from "../common/pkcs11/ckr.js";
import { slotIdOf } from "../common/pkcs11/token-match.js";
import type { WaitResult } from "./slot-events.js";

const port = parentPort!;
const module = new pkcs11js.PKCS11();
let loaded = "";
try {
  module.load(String((workerData as { modulePath: string }).modulePath));
} catch (err) {
  loaded = (err as Error).message;
}

function waitOnce(): WaitResult {
  if (loaded) return { kind: "error", ckr: `cannot load the module: ${loaded}` };
  try {
    const slot = module.C_WaitForSlotEvent(0); // blocking: flags without CKF_DONT_BLOCK
    if (!slot) return { kind: "error", ckr: "CKR_NO_EVENT (from a blocking wait)" };
    return { kind: "event", slotId: slotIdOf(slot) };
  } catch (err) {
    return { kind: "error", ckr: ckrName(err) ?? (err instanceof Error ? err.message : String(err)) };
  }
}

port.on("message", (m: unknown) => {
  if (m === "wait") port.postMessage(waitOnce());
  else if (m === "exit") port.close(); // nothing left to do: the thread ends
});
