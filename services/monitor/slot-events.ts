// Slot events for the PKCS#11 presence source: C_WaitForSlotEvent blocks, and pkcs11js calls
// are synchronous, so the wait runs in a worker thread of the monitor (slot-event-worker.ts).
// Measured here: pkcs11js loads in a worker_thread, and the worker shares the module instance
// the monitor initialised (dlopen gives one copy per process: its own C_Initialize answers
// CKR_CRYPTOKI_ALREADY_INITIALIZED), so the monitor initialises the module with
// CKF_OS_LOCKING_OK, and a C_Finalize (a rescan) ends a blocked wait with
// CKR_CRYPTOKI_NOT_INITIALIZED, as PKCS#11 requires; the monitor then waits again. A thread
// rather than a child process: it needs no process of its own (the monitor stays one process
// under its user) and it dies with the monitor. The cost: a module that crashes in its wait
// takes the monitor with it (tpm2-pkcs11 1.9's C_WaitForSlotEvent is `assert(0)` before it
// answers CKR_FUNCTION_NOT_SUPPORTED; Debian builds it without assertions, checked here).
import { Worker } from "node:worker_threads";

const CLOSE_WAIT_MS = 2_000;

export type WaitResult = { kind: "event"; slotId: number } | { kind: "error"; ckr: string };

/** One blocking wait at a time: arm() starts one; exactly one callback follows (unless closed). */
export interface SlotEvents {
  arm(onResult: (r: WaitResult) => void): void;
  /** Called before the module is finalised; resolves when nothing waits in the module any more. */
  close(): Promise<void>;
}

function isWaitResult(m: unknown): m is WaitResult {
  if (typeof m !== "object" || m === null) return false;
  const r = m as Record<string, unknown>;
  return (r.kind === "event" && typeof r.slotId === "number") || (r.kind === "error" && typeof r.ckr === "string");
}

export class SlotEventThread implements SlotEvents {
  private worker: Worker | undefined;
  private pending: ((r: WaitResult) => void) | undefined;

  constructor(private readonly modulePath: string) {}

  /** Whether a thread runs (started by the first arm()). */
  get started(): boolean {
    return this.worker !== undefined;
  }

  arm(onResult: (r: WaitResult) => void): void {
    if (this.pending) throw new Error("slot events: a wait is already armed");
    this.pending = onResult;
    this.thread().postMessage("wait");
  }

  /**
   * Ends the thread once its wait returns: a C_Finalize by the caller (right after) wakes it.
   * Never terminate() a thread inside the module: measured here, a thread torn down while
   * blocked in C_WaitForSlotEvent, or still inside the module when the process exits, can crash
   * the process (SIGSEGV). Resolves when the thread is gone, or after CLOSE_WAIT_MS.
   */
  close(): Promise<void> {
    this.pending = undefined;
    const w = this.worker;
    this.worker = undefined;
    if (!w) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, CLOSE_WAIT_MS);
      timer.unref();
      w.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      w.postMessage("exit");
    });
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL("./slot-event-worker.js", import.meta.url), {
      workerData: { modulePath: this.modulePath },
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
    });
    w.unref();
    const settle = (r: WaitResult): void => {
      const cb = this.pending;
      this.pending = undefined;
      cb?.(r);
    };
    w.on("message", (m: unknown) => settle(isWaitResult(m) ? m : { kind: "error", ckr: "a malformed answer from the slot-event thread" }));
    w.on("error", (err) => settle({ kind: "error", ckr: `the slot-event thread failed: ${err.message}` }));
    w.on("exit", () => {
      if (this.worker === w) this.worker = undefined;
      settle({ kind: "error", ckr: "the slot-event thread exited" });
    });
    this.worker = w;
    return w;
  }
}
