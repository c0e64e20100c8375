// A notify frame is hostile until validated: the kernel forwards details that can come from
// request files (user names, paths). Structural violations reject the whole notification;
// control characters are replaced so that nothing reaches a hook's environment, a mail header
// or a log line as anything but one line of text.
import type { Message } from "../../proto/wire.js";

export const EVENT_PATTERN = /^[a-z][a-z0-9-]{0,40}$/;
export const DETAIL_KEY_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
export const MAX_MESSAGE = 1000;
export const MAX_DETAILS = 32;
export const MAX_DETAIL_VALUE = 4096;
/** Keys that would collide with ETOKEN_EVENT / ETOKEN_MESSAGE. */
const RESERVED_KEYS = new Set(["event", "message"]);
// C0, DEL, C1, and the Unicode line/paragraph separators
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

export interface NotifyEvent {
  readonly event: string;
  readonly message: string;
  /** Sorted by key; keys match DETAIL_KEY_PATTERN. */
  readonly details: readonly (readonly [string, string])[];
}

export class InvalidNotify extends Error {}

export function oneLine(s: string): string {
  return s.replace(CONTROL, " ");
}

export function validateNotify(m: Message<"notify">): NotifyEvent {
  const event = typeof m.event === "string" ? m.event : "";
  if (!EVENT_PATTERN.test(event)) throw new InvalidNotify(`event name ${JSON.stringify(event.slice(0, 60))} does not match ${EVENT_PATTERN.source}`);
  const message = typeof m.message === "string" ? m.message : "";
  if (message.length > MAX_MESSAGE) throw new InvalidNotify(`${event}: message of ${message.length} characters exceeds ${MAX_MESSAGE}`);
  if (message.includes("\0")) throw new InvalidNotify(`${event}: NUL byte in the message`);
  const raw = m.details && typeof m.details === "object" ? Object.entries(m.details) : [];
  if (raw.length > MAX_DETAILS) throw new InvalidNotify(`${event}: ${raw.length} details exceed ${MAX_DETAILS}`);
  const details: [string, string][] = [];
  for (const [key, value] of raw) {
    if (!DETAIL_KEY_PATTERN.test(key) || RESERVED_KEYS.has(key)) {
      throw new InvalidNotify(`${event}: detail key ${JSON.stringify(key.slice(0, 40))} does not match ${DETAIL_KEY_PATTERN.source} or is reserved`);
    }
    if (typeof value !== "string") throw new InvalidNotify(`${event}: detail ${key} is not a string`);
    if (value.length > MAX_DETAIL_VALUE) throw new InvalidNotify(`${event}: detail ${key} of ${value.length} characters exceeds ${MAX_DETAIL_VALUE}`);
    if (value.includes("\0")) throw new InvalidNotify(`${event}: NUL byte in detail ${key}`);
    details.push([key, oneLine(value)]);
  }
  details.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { event, message: oneLine(message), details };
}

/** The CRL path a crl-updated event carries: absolute, normalised, printable. */
export function crlPathOf(ev: NotifyEvent): string | undefined {
  const p = ev.details.find(([k]) => k === "path")?.[1];
  if (!p || !p.startsWith("/") || p.includes("/../") || p.endsWith("/..") || p !== oneLine(p)) return undefined;
  return p;
}
