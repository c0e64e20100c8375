// Which token KEY designates, for the signer (which logs in to it) and the monitor (which
// watches it): one rule, so that both always mean the same token. The candidates are the slots
// holding an initialised token, in the module's order (SoftHSM's spare empty slot is not one).
import type { KeyRef } from "../config-schema.js";

export interface SlotCandidate {
  /** position among the initialised tokens: what KEY=SLOT:ID counts (0 = the first) */
  readonly slot: number;
  /** PKCS#11's CK_SLOT_ID: what a pkcs11: URI's slot-id names */
  readonly slotId: number;
  readonly label: string;
  readonly serial: string;
}

/** CK_SLOT_ID from a pkcs11js slot handle (a little-endian CK_ULONG). */
export function slotIdOf(handle: Buffer): number {
  return handle.length >= 8 ? Number(handle.readBigUInt64LE(0)) : handle.readUInt32LE(0);
}

/** Whether KEY designates this token: every attribute it gives must hold; none given = any. */
export function keyMatches(key: KeyRef, t: SlotCandidate): boolean {
  return (
    (key.slot === undefined || t.slot === key.slot) &&
    (key.slotId === undefined || t.slotId === key.slotId) &&
    (key.tokenLabel === undefined || t.label === key.tokenLabel) &&
    (key.tokenSerial === undefined || t.serial === key.tokenSerial)
  );
}

/** KEY in words, for messages: "slot index 0, key id 01". */
export function describeKeyRef(key: KeyRef): string {
  const parts: string[] = [];
  if (key.slot !== undefined) parts.push(`slot index ${key.slot}`);
  if (key.slotId !== undefined) parts.push(`slot-id ${key.slotId}`);
  if (key.tokenLabel !== undefined) parts.push(`token label "${key.tokenLabel}"`);
  if (key.tokenSerial !== undefined) parts.push(`token serial ${key.tokenSerial}`);
  if (key.id !== undefined) parts.push(`key id ${key.id}`);
  if (key.label !== undefined) parts.push(`key label "${key.label}"`);
  return parts.length ? parts.join(", ") : "the first token";
}

/** How a message that no token matches KEY begins (the monitor's detail; the kernel shows it). */
export const NO_MATCHING_TOKEN = "no token matches KEY";

/** Which token KEY looked for and which tokens are there, in one line. */
export function describeNoMatch(key: KeyRef, seen: readonly SlotCandidate[]): string {
  const found = seen.length
    ? seen.slice(0, 4).map((t) => `label "${t.label}" serial ${t.serial} (slot index ${t.slot})`).join("; ") + (seen.length > 4 ? `; and ${seen.length - 4} more` : "")
    : "no initialised token";
  return `${NO_MATCHING_TOKEN} (${describeKeyRef(key)}); found: ${found}`;
}
