// PKCS#11 presence: the monitor's own pkcs11js instance (never the signer's session), looked at
// afresh on every poll. Measured on SoftHSM 2.6 (bench/detection.ts):
// - C_GetTokenInfo on an initialised module re-reads the token and fails (CKR_GENERAL_ERROR)
//   once the token directory is gone: ~0.09 ms. That is the presence fence's fast path.
// - A new or re-inserted token only shows up after C_Finalize + C_Initialize: ~0.2 ms, ~0.4 ms
//   with C_GetSlotList + C_GetTokenInfo. Polls and the fence use the fast path while the token
//   is present and rescan when it fails, shows another serial, or the token is absent; a poll
//   also rescans every RESCAN_EVERY rounds (hardware modules can be slow to C_Initialize).
// A reader's module (a USB token's) says so when the token is out: C_GetTokenInfo answers
// CKR_TOKEN_NOT_PRESENT (or CKR_DEVICE_REMOVED) and the slot stays listed without
// CKF_TOKEN_PRESENT. That answer is believed at once (no confirming second look), and while the
// slot stays empty the polls read its flags instead of rescanning: with the eToken-like test
// module at 300 ms per C_Initialize and C_Finalize a removal cost 1.2 s of rescans, each empty
// poll 0.6 s. SoftHSM never answers that way, so it keeps the rescans it needs.
// All pkcs11js calls are synchronous: each poll is one short burst on the event loop.
// Slot events (slot-events.ts): where the module has a blocking C_WaitForSlotEvent, each event
// triggers the same look a poll makes (the state's detail then says "slot event"), and the
// polls slow down to a safety net (SAFETY_POLL_FACTOR). Where it has none (SoftHSM2 answers
// CKR_FUNCTION_NOT_SUPPORTED to a blocking wait, tpm2-pkcs11 to any) or the call fails, the
// monitor says so once and polls every TOKEN_POLL_INTERVAL as before. Which it is is asked on
// the monitor's own thread first (probeSlotEvents): the slot-event thread (a native one,
// native/slot-wait) starts only for a module that may have events.
import pkcs11js from "pkcs11js";
import type { KeyRef } from "../common/config-schema.js";
import { TokenError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { ckrName } from "../common/pkcs11/ckr.js";
import { CKF_TOKEN_INITIALIZED, CKF_TOKEN_PRESENT, pinFlagsOf } from "../common/pkcs11/flags.js";
import { describeKeyRef, describeNoMatch, keyMatches, slotIdOf } from "../common/pkcs11/token-match.js";
import type { SlotEvents, WaitResult } from "./slot-events.js";
import type { SourceState, TokenSource } from "./source.js";

/** C_GetTokenInfo answers that mean the reader is empty, not that the module is in trouble. */
const TOKEN_NOT_THERE = new Set(["CKR_TOKEN_NOT_PRESENT", "CKR_DEVICE_REMOVED"]);
/** Pause before the second look that confirms a removal. */
const CONFIRM_MS = 25;
/** A poll does a full rescan this often even while the token is present. */
export const RESCAN_EVERY = 15;
/** Room left in each interval for the look itself and for telling the kernel. */
const LOOK_ALLOWANCE_MS = 15;
/** While slot events work, polls come this many times less often (a module whose events stop). */
export const SAFETY_POLL_FACTOR = 10;
const CKF_OS_LOCKING_OK = 0x00000002;
/** C_Initialize answers meaning "not from several threads" (PKCS#11 2.40, 5.4). */
const CANNOT_LOCK = new Set(["CKR_CANT_LOCK", "CKR_NEED_TO_CREATE_THREADS", "CKR_ARGUMENTS_BAD"]);
/** A wait answered with this is woken by a C_Finalize (a rescan): wait again once initialised. */
const WAIT_INTERRUPTED = "CKR_CRYPTOKI_NOT_INITIALIZED";
const CKF_DONT_BLOCK = 0x00000001;
/**
 * Modules (C_GetInfo's manufacturerID) whose blocking C_WaitForSlotEvent answers
 * CKR_FUNCTION_NOT_SUPPORTED while a CKF_DONT_BLOCK one answers CKR_NO_EVENT, so the probe
 * cannot tell (measured: SoftHSM 2.6). A module answering CKR_FUNCTION_NOT_SUPPORTED to both
 * (tpm2-pkcs11) needs no entry.
 */
const NO_BLOCKING_WAIT = new Set(["SoftHSM"]);

/**
 * TOKEN_POLL_INTERVAL bounds how long a removal can go unnoticed, the confirming second look
 * included: the looks come that much sooner (measured: polling every 300 ms, a removal just
 * after a look was noticed 325 ms later). Never more often than twice per interval.
 */
export function pollPeriodMs(intervalMs: number): number {
  return Math.max(intervalMs - CONFIRM_MS - LOOK_ALLOWANCE_MS, intervalMs / 2);
}

/** The minimal slice of pkcs11js the source uses (lets the bench and tests count calls). */
export interface Pkcs11Module {
  C_Initialize(options?: { flags: number }): void;
  C_Finalize(): void;
  C_GetSlotList(tokenPresent?: boolean): Buffer[];
  C_GetSlotInfo(slot: Buffer): { flags: number };
  C_GetTokenInfo(slot: Buffer): { label: string; serialNumber: string; flags: number };
  C_GetInfo(): { manufacturerID: string };
  C_WaitForSlotEvent(flags: number): Buffer | null;
}

export function loadModule(path: string): Pkcs11Module & { close(): void } {
  const p = new pkcs11js.PKCS11();
  try {
    p.load(path);
  } catch (err) {
    throw new TokenError("module_load", `cannot load PKCS11_MODULE ${path}: ${(err as Error).message}`);
  }
  return p;
}

function trim(s: string): string {
  return s.replace(/[\s\0]+$/, "");
}

/**
 * Whether an initialised module may have slot events, asked without blocking: an event already
 * pending (the caller looks at once), none, or the answer that rules them out.
 */
export function probeSlotEvents(module: Pkcs11Module): WaitResult | { kind: "none" } {
  let slot: Buffer | null;
  try {
    slot = module.C_WaitForSlotEvent(CKF_DONT_BLOCK);
  } catch (err) {
    return { kind: "error", ckr: ckrOf(err) };
  }
  if (slot) return { kind: "event", slotId: slotIdOf(slot) };
  const maker = trim(module.C_GetInfo().manufacturerID);
  if (NO_BLOCKING_WAIT.has(maker)) return { kind: "error", ckr: `CKR_FUNCTION_NOT_SUPPORTED (${maker}'s blocking wait)` };
  return { kind: "none" };
}

/** The CKR_* name of a failed call, or what it said. */
function ckrOf(err: unknown): string {
  return ckrName(err) ?? (err instanceof Error ? err.message : String(err));
}

export class Pkcs11Source implements TokenSource {
  readonly name = "pkcs11" as const;
  private initialised = false;
  private handle: Buffer | undefined;
  /** The slot a reader's module said is empty (see the header); polls look at its flags. */
  private emptySlot: Buffer | undefined;
  private state: SourceState;
  private onChange: ((s: SourceState) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastProblem = "";
  /** Full rescans (C_Finalize + C_Initialize) so far: the bench reports it. */
  rescans = 0;
  /** Polls and slot events so far (tests and the bench tell the two paths apart by them). */
  polls = 0;
  events = 0;
  /** Why slot events are not used; undefined while they are (or may be). */
  private eventsOff: string | undefined;
  private waiting = false;
  /** Whether probeSlotEvents has answered (once: a module's support does not change). */
  private probed = false;
  private running = false;
  private closing: Promise<void> = Promise.resolve();

  constructor(
    private readonly module: Pkcs11Module,
    private readonly key: KeyRef,
    private readonly pollMs: number,
    private readonly log: Logger,
    private readonly slotEvents?: SlotEvents,
  ) {
    this.state = this.absent("not looked yet");
    if (!slotEvents) this.eventsOff = "no slot-event thread";
  }

  start(onChange: (s: SourceState) => void): void {
    this.onChange = onChange;
    this.running = true;
    this.publish(this.rescan());
    this.armEvents();
    this.schedulePoll();
  }

  /** After stop(): resolves once the slot-event thread has left the module (exit or unload only then). */
  stopped(): Promise<void> {
    return this.closing;
  }

  /** Whether slot events are in use (a wait is armed or an event is being looked at). */
  get eventDriven(): boolean {
    return this.running && this.eventsOff === undefined;
  }

  private schedulePoll(): void {
    const period = pollPeriodMs(this.pollMs) * (this.eventDriven ? SAFETY_POLL_FACTOR : 1);
    this.timer = setTimeout(() => {
      this.publish(this.poll());
      this.armEvents();
      this.schedulePoll();
    }, period);
  }

  /** Callers schedule the next poll after this (its rate depends on whether events are on). */
  private armEvents(): void {
    if (!this.slotEvents || !this.eventDriven || this.waiting || !this.initialised) return;
    if (!this.probed) {
      this.probed = true;
      const p = probeSlotEvents(this.module);
      if (p.kind === "error") {
        this.eventsFailed(p.ckr);
        return;
      }
      if (p.kind === "event") this.lookAfterEvent(p.slotId);
    }
    this.waiting = true;
    this.slotEvents.arm((r) => this.waited(r));
  }

  private waited(r: WaitResult): void {
    this.waiting = false;
    if (!this.running) return;
    if (r.kind === "event") this.lookAfterEvent(r.slotId);
    else if (r.ckr !== WAIT_INTERRUPTED) {
      this.eventsFailed(r.ckr);
      clearTimeout(this.timer);
      this.schedulePoll(); // at the full rate from now on
      return;
    }
    this.armEvents();
  }

  private lookAfterEvent(slotId: number): void {
    this.events++;
    const s = this.confirmAbsence(this.fastCheck());
    this.log.debug("slot event", { slotId, present: s.present });
    this.publish({ ...s, detail: `${s.detail} (slot event)` });
  }

  private eventsFailed(ckr: string): void {
    this.eventsOff = ckr;
    const how = { detail: `C_WaitForSlotEvent: ${ckr}`, pollMs: this.pollMs };
    if (ckr.startsWith("CKR_FUNCTION_NOT_SUPPORTED")) this.log.notice("the PKCS#11 module has no slot events; polling", how);
    else this.log.warning("slot events failed; polling", how);
  }

  current(): SourceState {
    return this.state;
  }

  /**
   * One poll: the fast path while the token is present (it notices removal and replacement),
   * a full rescan while it is absent (only C_Initialize shows a new token) and every
   * RESCAN_EVERY polls regardless (slot indexes can shift when other tokens come and go).
   */
  poll(): SourceState {
    this.polls++;
    return this.confirmAbsence(this.polls % RESCAN_EVERY === 0 ? this.rescan() : this.fastCheck());
  }

  /** The fence: C_GetTokenInfo on the known slot; a full rescan only if that fails or differs. */
  check(): Promise<SourceState> {
    return Promise.resolve(this.publish(this.confirmAbsence(this.fastCheck())));
  }

  /**
   * SoftHSM (and possibly other modules) can miss a present token for an instant while another
   * process's C_Login rewrites the token's files. A token that was present is declared gone only
   * if a second, fresh look a moment later agrees: a removal costs CONFIRM_MS more to notice, a
   * glitch no longer costs the operator a PIN entry.
   */
  private confirmAbsence(s: SourceState): SourceState {
    if (s.present || !this.state.present || this.emptySlot !== undefined) return s;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, CONFIRM_MS);
    const again = this.rescan();
    if (again.present) this.log.info("token missed once, present on a second look: not a removal", { detail: s.detail });
    return again;
  }

  fastCheck(): SourceState {
    if (!this.initialised) return this.rescan();
    if (!this.handle || !this.state.present) return this.slotStillEmpty() ?? this.rescan();
    let info: { label: string; serialNumber: string; flags: number };
    try {
      info = this.module.C_GetTokenInfo(this.handle);
    } catch (err) {
      const ckr = ckrOf(err);
      if (!TOKEN_NOT_THERE.has(ckr)) return this.rescan();
      this.emptySlot = this.handle;
      this.handle = undefined;
      return this.absent(`token not present (C_GetTokenInfo: ${ckr})`);
    }
    const serial = trim(info.serialNumber);
    if (serial !== this.state.serial || (info.flags & CKF_TOKEN_INITIALIZED) === 0) return this.rescan();
    return { ...this.state, label: trim(info.label), pinFlags: pinFlagsOf(info.flags), detail: "token present" };
  }

  /** While a reader's slot reports no token: absent without a rescan; undefined = rescan. */
  private slotStillEmpty(): SourceState | undefined {
    if (!this.emptySlot) return undefined;
    try {
      if ((this.module.C_GetSlotInfo(this.emptySlot).flags & CKF_TOKEN_PRESENT) !== 0) return undefined;
    } catch {
      return undefined;
    }
    return this.absent("token not present (the slot reports no token)");
  }

  /** A fresh look: C_Finalize + C_Initialize, then the slot list and the token KEY designates. */
  rescan(): SourceState {
    this.rescans++;
    this.handle = undefined;
    try {
      if (this.initialised) {
        this.initialised = false;
        this.module.C_Finalize();
      }
      try {
        this.initialise();
      } catch (err) {
        // someone else in this process initialised the module (a second source, a test)
        if (ckrOf(err) !== "CKR_CRYPTOKI_ALREADY_INITIALIZED") throw err;
        this.module.C_Finalize();
        this.initialise();
      }
      this.initialised = true;
    } catch (err) {
      return this.problem(`the PKCS#11 module failed to initialise: ${ckrOf(err)}`);
    }
    let slots: Buffer[];
    try {
      slots = this.module.C_GetSlotList(true);
    } catch (err) {
      return this.problem(`C_GetSlotList failed: ${ckrOf(err)}`);
    }
    const tokens: { handle: Buffer; slot: number; slotId: number; label: string; serial: string; flags: number }[] = [];
    for (const handle of slots) {
      try {
        const info = this.module.C_GetTokenInfo(handle);
        if ((info.flags & CKF_TOKEN_INITIALIZED) === 0) continue; // SoftHSM's spare free slot
        tokens.push({ handle, slot: tokens.length, slotId: slotIdOf(handle), label: trim(info.label), serial: trim(info.serialNumber), flags: info.flags });
      } catch {
        // a slot whose token went away between the two calls: not a token
      }
    }
    this.lastProblem = "";
    // the first match: when KEY matches several tokens the signer refuses to log in anyway
    const t = tokens.find((c) => keyMatches(this.key, c));
    if (!t) return this.absent(tokens.length ? describeNoMatch(this.key, tokens) : `no token (looking for ${describeKeyRef(this.key)})`);
    this.handle = t.handle;
    this.emptySlot = undefined;
    return { source: "pkcs11", available: true, present: true, serial: t.serial, label: t.label, pinFlags: pinFlagsOf(t.flags), slot: t.slot, detail: "token present" };
  }

  /**
   * C_Initialize; while slot events may be used, with CKF_OS_LOCKING_OK (the wait runs in
   * another thread). A module that cannot lock gets no slot events.
   */
  private initialise(): void {
    if (this.eventsOff !== undefined) {
      this.module.C_Initialize();
      return;
    }
    try {
      this.module.C_Initialize({ flags: CKF_OS_LOCKING_OK });
    } catch (err) {
      const ckr = ckrOf(err);
      if (!CANNOT_LOCK.has(ckr)) throw err;
      this.eventsOff = `C_Initialize with CKF_OS_LOCKING_OK: ${ckr}`;
      this.log.warning("slot events failed; polling", { detail: this.eventsOff, pollMs: this.pollMs });
      this.module.C_Initialize();
    }
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.closing = this.slotEvents?.close() ?? Promise.resolve();
    if (this.initialised) {
      this.initialised = false;
      try {
        this.module.C_Finalize();
      } catch {
        // going away anyway
      }
    }
  }

  private absent(detail: string): SourceState {
    return { source: "pkcs11", available: true, present: false, serial: "", label: "", pinFlags: 0, slot: 0, detail };
  }

  /** A module-level failure: reported as absent, logged once per distinct problem. */
  private problem(detail: string): SourceState {
    if (detail !== this.lastProblem) {
      this.lastProblem = detail;
      this.log.warning("PKCS#11 module problem; the token counts as absent", { detail });
    }
    return this.absent(detail);
  }

  private publish(s: SourceState): SourceState {
    this.state = s;
    this.onChange?.(s);
    return s;
  }
}
