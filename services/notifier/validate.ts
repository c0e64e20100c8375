// A notify frame's grammar (event name, detail keys, sizes, no NUL) is the contract's
// (proto/contract.ts), checked by the channel on receipt. Here it becomes what hooks and mail
// use: control characters replaced, so that nothing reaches a hook's environment, a mail header
// or a log line as anything but one line of text, and details sorted by key.
import type { Message } from "../../proto/wire.js";

// C0, DEL, C1, and the Unicode line/paragraph separators
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

export interface NotifyEvent {
  readonly event: string;
  readonly message: string;
  /** Sorted by key; keys match the contract's NOTIFY_DETAIL_KEY. */
  readonly details: readonly (readonly [string, string])[];
}

export function oneLine(s: string): string {
  return s.replace(CONTROL, " ");
}

/** A notification the channel found valid, as hooks and mail get it. */
export function normalizeNotify(m: Message<"notify">): NotifyEvent {
  const details: [string, string][] = Object.entries(m.details ?? {}).map(([key, value]) => [key, oneLine(value)]);
  details.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { event: m.event, message: oneLine(m.message), details };
}

/** The CRL path a crl-updated event carries: absolute, normalised, printable. */
export function crlPathOf(ev: NotifyEvent): string | undefined {
  const p = ev.details.find(([k]) => k === "path")?.[1];
  if (!p || !p.startsWith("/") || p.includes("/../") || p.endsWith("/..") || p !== oneLine(p)) return undefined;
  return p;
}
