// Slot events for the PKCS#11 presence source: C_WaitForSlotEvent blocks, and pkcs11js calls
// are synchronous, so the wait runs in a native thread of the monitor (native/slot-wait: a
// pthread, named etca-slot-wait, one per wait). It calls the module the monitor's pkcs11js
// instance loaded (the same copy: dlopen RTLD_NOLOAD, then C_GetFunctionList) and never
// initialises or finalises it, so the monitor initialises the module with CKF_OS_LOCKING_OK, and
// a C_Finalize (a rescan) ends a blocked wait with CKR_CRYPTOKI_NOT_INITIALIZED, as PKCS#11
// requires; the monitor then waits again. A thread rather than a child process: it needs no
// process of its own (the monitor stays one process under its user) and it dies with the
// monitor. A native thread rather than a worker_thread: a worker is a whole V8 isolate with an
// event loop of its own, ~10 MiB of the monitor's RSS for a thread that only waits. The cost of
// any thread: a module that crashes in its wait takes the monitor with it (tpm2-pkcs11 1.9's
// C_WaitForSlotEvent is `assert(0)` before it answers CKR_FUNCTION_NOT_SUPPORTED; Debian builds
// it without assertions, checked here).
import { fileURLToPath } from "node:url";
import { ckrNameOf } from "../common/pkcs11/ckr.js";

const CLOSE_WAIT_MS = 2_000;
const CKR_OK = 0;
const CKR_NO_EVENT = 0x8;
/** dist/services/monitor/slot-events.js -> dist/native/slot_wait.node (npm run build copies it there) */
const ADDON = fileURLToPath(new URL("../../native/slot_wait.node", import.meta.url));

export type WaitResult = { kind: "event"; slotId: number } | { kind: "error"; ckr: string };

/** One blocking wait at a time: arm() starts one; exactly one callback follows (unless closed). */
export interface SlotEvents {
  arm(onResult: (r: WaitResult) => void): void;
  /** Called before the module is finalised; resolves when nothing waits in the module any more. */
  close(): Promise<void>;
}

/** native/slot-wait (native/slot-wait/slot_wait.c): its whole interface. */
interface SlotWaitAddon {
  /** One blocking C_WaitForSlotEvent in a thread of its own on the loaded module `modulePath`; throws with `code`. */
  waitForSlotEvent(modulePath: string, onResult: (rv: number, slotId: number) => void): void;
}

let addon: SlotWaitAddon | Error | undefined;

function loadAddon(): SlotWaitAddon {
  if (addon === undefined) {
    try {
      const m = { exports: {} as SlotWaitAddon };
      process.dlopen(m, ADDON);
      addon = m.exports;
    } catch (err) {
      const text = err instanceof Error ? err.message.split("\n")[0] : String(err);
      addon = new Error(`cannot load the slot-event helper ${ADDON} (npm run build makes it; on an installed system, rerun deploy/install): ${text}`);
    }
  }
  if (addon instanceof Error) throw addon;
  return addon;
}

function resultOf(rv: number, slotId: number): WaitResult {
  if (rv === CKR_OK) return { kind: "event", slotId };
  if (rv === CKR_NO_EVENT) return { kind: "error", ckr: "CKR_NO_EVENT (from a blocking wait)" };
  return { kind: "error", ckr: ckrNameOf(rv) };
}

export class SlotEventThread implements SlotEvents {
  /** The armed wait's callback, in a box of its own: a wait closed meanwhile finds it replaced. */
  private pending: { onResult: (r: WaitResult) => void } | undefined;
  /** Settles when the last thread started has left the module. */
  private inModule: Promise<void> | undefined;
  private threads = 0;

  constructor(private readonly modulePath: string) {}

  /** Whether a thread has been started (by an arm()). */
  get started(): boolean {
    return this.threads > 0;
  }

  arm(onResult: (r: WaitResult) => void): void {
    if (this.pending) throw new Error("slot events: a wait is already armed");
    const armed = { onResult };
    this.pending = armed;
    const settle = (r: WaitResult): void => {
      if (this.pending !== armed) return; // closed meanwhile
      this.pending = undefined;
      onResult(r);
    };
    try {
      let left = (): void => undefined;
      const inModule = new Promise<void>((resolve) => (left = resolve));
      loadAddon().waitForSlotEvent(this.modulePath, (rv, slotId) => {
        left();
        settle(resultOf(rv, slotId));
      });
      this.inModule = inModule;
      this.threads++;
    } catch (err) {
      process.nextTick(settle, { kind: "error", ckr: `the slot-event thread cannot start: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  /**
   * Resolves once the thread's wait has returned: a C_Finalize by the caller (right after) wakes
   * it. The thread is never cancelled or killed inside the module (a thread torn down there can
   * crash the process); resolves after CLOSE_WAIT_MS if the module does not let it go.
   */
  close(): Promise<void> {
    this.pending = undefined;
    const inModule = this.inModule;
    this.inModule = undefined;
    if (!inModule) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, CLOSE_WAIT_MS);
      timer.unref();
      void inModule.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
