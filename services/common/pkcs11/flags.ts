// CK_TOKEN_INFO / CK_SLOT_INFO flag bits (PKCS#11 v2.40 pkcs11t.h) the signer and the monitor
// read, and the proto's PinFlag bits they become.
import { PinFlag } from "../../../proto/wire.js";

export const CKF_TOKEN_PRESENT = 0x00000001; // slot flag
export const CKF_LOGIN_REQUIRED = 0x00000004;
export const CKF_TOKEN_INITIALIZED = 0x00000400;

/** CKF_USER_PIN_* token flags -> proto PinFlag bits. */
const PIN_FLAG_BITS: readonly (readonly [number, number])[] = [
  [0x00010000, PinFlag.PIN_COUNT_LOW], // CKF_USER_PIN_COUNT_LOW
  [0x00020000, PinFlag.PIN_FINAL_TRY], // CKF_USER_PIN_FINAL_TRY
  [0x00040000, PinFlag.PIN_LOCKED], // CKF_USER_PIN_LOCKED
  [0x00080000, PinFlag.PIN_TO_BE_CHANGED], // CKF_USER_PIN_TO_BE_CHANGED
];

/** A token's CKF_* flags as the proto's PinFlag bits. */
export function pinFlagsOf(ckFlags: number): number {
  let bits = 0;
  for (const [ck, bit] of PIN_FLAG_BITS) if ((ckFlags & ck) !== 0) bits |= bit;
  return bits;
}
