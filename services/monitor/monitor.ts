// Combines the token sources into one presence with an epoch, and answers the presence fence.
// Present = the PKCS#11 source sees the token AND (USB unavailable OR the USB device attached).
// Every change of presence, serial, label, PIN flags, slot or USB availability is a new epoch;
// the first report after start is epoch 1.
import type { Payload } from "../../proto/wire.js";
import { TokenPresence } from "../../proto/wire.js";
import type { Logger } from "../common/log.js";
import type { SourceName, SourceState, TokenSource } from "./source.js";

export type TokenEventPayload = Payload<"tokenEvent">;
export type PresencePayload = Payload<"presence">;

interface Combined {
  present: boolean;
  serial: string;
  label: string;
  pinFlags: number;
  slot: number;
  usbAvailable: boolean;
  detail: string;
}

export class TokenMonitor {
  private epoch = 0;
  private last: Combined | undefined;
  private started = false;

  constructor(
    private readonly pkcs11: TokenSource,
    private readonly usb: TokenSource | undefined,
    private readonly emit: (ev: TokenEventPayload) => void,
    private readonly log: Logger,
  ) {}

  /** Starts both sources, then reports the initial state (epoch 1). */
  start(): void {
    this.usb?.start((s) => this.changed(s));
    this.pkcs11.start((s) => this.changed(s));
    this.started = true;
    this.changed(this.pkcs11.current());
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  /** The presence fence: a fresh check that starts now; a change is reported before the answer. */
  async presenceCheck(): Promise<PresencePayload> {
    const checks: Promise<SourceState>[] = [];
    if (this.usb?.check) checks.push(this.usb.check());
    if (this.pkcs11.check) checks.push(this.pkcs11.check());
    const states = await Promise.all(checks);
    for (const s of states) this.changed(s);
    const c = this.last!;
    return { present: c.present, epoch: this.epoch, serial: c.serial, label: c.label };
  }

  stop(): void {
    this.pkcs11.stop();
    this.usb?.stop();
  }

  private combine(): Combined {
    const p = this.pkcs11.current();
    const u = this.usb?.current();
    const usbAvailable = u?.available ?? false;
    const usbOk = !usbAvailable || u!.present;
    const present = p.present && usbOk;
    let detail = p.detail;
    if (p.present && !usbOk) detail = u!.detail;
    else if (u) detail = `${p.detail}; ${u.detail}`;
    return present
      ? { present, serial: p.serial, label: p.label, pinFlags: p.pinFlags, slot: p.slot, usbAvailable, detail }
      : { present, serial: "", label: "", pinFlags: 0, slot: 0, usbAvailable, detail };
  }

  private changed(from: SourceState): void {
    if (!this.started) return;
    const c = this.combine();
    const l = this.last;
    if (
      l &&
      l.present === c.present &&
      l.serial === c.serial &&
      l.label === c.label &&
      l.pinFlags === c.pinFlags &&
      l.slot === c.slot &&
      l.usbAvailable === c.usbAvailable
    ) {
      l.detail = c.detail;
      return;
    }
    this.last = c;
    this.epoch++;
    const source: SourceName = from.source;
    this.log.info(c.present ? "token present" : "token absent", {
      epoch: this.epoch,
      source,
      serial: c.serial,
      label: c.label,
      pinFlags: c.pinFlags,
      usbAvailable: c.usbAvailable,
      detail: c.detail,
    });
    this.emit({
      epoch: this.epoch,
      presence: c.present ? TokenPresence.TOKEN_PRESENT : TokenPresence.TOKEN_ABSENT,
      source,
      serial: c.serial,
      label: c.label,
      pinFlags: c.pinFlags,
      slot: c.slot,
      detail: c.detail,
      usbAvailable: c.usbAvailable,
    });
  }
}
