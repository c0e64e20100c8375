// The one interface both token sources (PKCS#11 presence, USB hot-plug) implement, and the
// state they report. The monitor combines them; neither source knows about the other.

export type SourceName = "pkcs11" | "usb";

export interface SourceState {
  readonly source: SourceName;
  /** false: this source cannot observe anything here (no USB on the machine, module failed). */
  readonly available: boolean;
  /** The source sees the token (PKCS#11: the configured token; USB: the configured device). */
  readonly present: boolean;
  readonly serial: string;
  readonly label: string;
  /** PinFlag bits (proto): 1 COUNT_LOW, 2 FINAL_TRY, 4 LOCKED, 8 TO_BE_CHANGED. */
  readonly pinFlags: number;
  /** Index of the token among the slots with an initialised token (what KEY's SLOT means). */
  readonly slot: number;
  /** One line for logs and the kernel: why the source sees what it sees. */
  readonly detail: string;
}

export interface TokenSource {
  readonly name: SourceName;
  /** Reports the initial state synchronously-or-soon, then every change. */
  start(onChange: (s: SourceState) => void): void;
  /** A fresh look that starts now (the presence fence). Sources without one return their last state. */
  check?(): Promise<SourceState>;
  /** The last state reported. */
  current(): SourceState;
  stop(): void;
}

export function sameState(a: SourceState, b: SourceState): boolean {
  return (
    a.available === b.available &&
    a.present === b.present &&
    a.serial === b.serial &&
    a.label === b.label &&
    a.pinFlags === b.pinFlags &&
    a.slot === b.slot
  );
}
