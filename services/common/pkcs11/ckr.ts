// PKCS#11 return values -> TokenError with a message an operator can act on.
// pkcs11js throws Pkcs11Error (message = "CKR_NAME", .code = the CK_RV number, .method = the
// C_ function) for Cryptoki errors, and NativeError / TypeError for everything else.
import { TokenError } from "../errors.js";

interface MappedCkr {
  /** TokenError code suffix: the error's code is "token.<code>" */
  code: string;
  text: string;
  deviceLost: boolean;
}

/** CK_RV numbers for the values we name (PKCS#11 v2.40 pkcs11t.h). */
export const CKR: Readonly<Record<string, number>> = {
  CKR_OK: 0x0,
  CKR_HOST_MEMORY: 0x2,
  CKR_GENERAL_ERROR: 0x5,
  CKR_FUNCTION_FAILED: 0x6,
  CKR_ARGUMENTS_BAD: 0x7,
  CKR_NO_EVENT: 0x8,
  CKR_DEVICE_ERROR: 0x30,
  CKR_DEVICE_MEMORY: 0x31,
  CKR_DEVICE_REMOVED: 0x32,
  CKR_DATA_LEN_RANGE: 0x21,
  CKR_FUNCTION_NOT_SUPPORTED: 0x54,
  CKR_KEY_HANDLE_INVALID: 0x60,
  CKR_KEY_FUNCTION_NOT_PERMITTED: 0x68,
  CKR_MECHANISM_INVALID: 0x70,
  CKR_OBJECT_HANDLE_INVALID: 0x82,
  CKR_OPERATION_ACTIVE: 0x90,
  CKR_OPERATION_NOT_INITIALIZED: 0x91,
  CKR_PIN_INCORRECT: 0xa0,
  CKR_PIN_INVALID: 0xa1,
  CKR_PIN_LEN_RANGE: 0xa2,
  CKR_PIN_EXPIRED: 0xa3,
  CKR_PIN_LOCKED: 0xa4,
  CKR_SESSION_CLOSED: 0xb0,
  CKR_SESSION_COUNT: 0xb1,
  CKR_SESSION_HANDLE_INVALID: 0xb3,
  CKR_SLOT_ID_INVALID: 0x3,
  CKR_TOKEN_NOT_PRESENT: 0xe0,
  CKR_TOKEN_NOT_RECOGNIZED: 0xe1,
  CKR_USER_ALREADY_LOGGED_IN: 0x100,
  CKR_USER_NOT_LOGGED_IN: 0x101,
  CKR_USER_PIN_NOT_INITIALIZED: 0x102,
  CKR_USER_TYPE_INVALID: 0x103,
  CKR_USER_ANOTHER_ALREADY_LOGGED_IN: 0x104,
  CKR_CRYPTOKI_NOT_INITIALIZED: 0x190,
  CKR_CRYPTOKI_ALREADY_INITIALIZED: 0x191,
};

const KNOWN: Readonly<Record<string, MappedCkr>> = {
  CKR_PIN_INCORRECT: { code: "pin_incorrect", text: "wrong PIN (the token counts failed attempts; it is not retried automatically)", deviceLost: false },
  CKR_PIN_INVALID: { code: "pin_invalid", text: "the PIN contains characters the token does not accept", deviceLost: false },
  CKR_PIN_LEN_RANGE: { code: "pin_len_range", text: "the PIN is too short or too long for this token", deviceLost: false },
  CKR_PIN_EXPIRED: { code: "pin_expired", text: "the user PIN has expired: change it with the token's tools", deviceLost: false },
  CKR_PIN_LOCKED: { code: "pin_locked", text: "the user PIN is locked (too many wrong PINs): unlock it with the SO PIN", deviceLost: false },
  CKR_USER_PIN_NOT_INITIALIZED: { code: "pin_not_initialized", text: "the token has no user PIN set", deviceLost: false },
  CKR_TOKEN_NOT_PRESENT: { code: "not_present", text: "no token in the slot (removed?)", deviceLost: true },
  CKR_TOKEN_NOT_RECOGNIZED: { code: "not_recognized", text: "the token in the slot is not recognized by the PKCS#11 module", deviceLost: true },
  CKR_DEVICE_REMOVED: { code: "device_removed", text: "the token was removed", deviceLost: true },
  CKR_DEVICE_ERROR: { code: "device_error", text: "the token reported a device error", deviceLost: true },
  CKR_DEVICE_MEMORY: { code: "device_memory", text: "the token ran out of memory", deviceLost: true },
  CKR_SLOT_ID_INVALID: { code: "slot_invalid", text: "the slot no longer exists (reader unplugged?)", deviceLost: true },
  CKR_SESSION_HANDLE_INVALID: { code: "session_invalid", text: "the token session is gone (token removed or module reset)", deviceLost: true },
  CKR_SESSION_CLOSED: { code: "session_closed", text: "the token session was closed (token removed or module reset)", deviceLost: true },
  CKR_USER_NOT_LOGGED_IN: { code: "not_logged_in", text: "not logged in to the token (a PIN is needed)", deviceLost: false },
  CKR_USER_ALREADY_LOGGED_IN: { code: "already_logged_in", text: "already logged in to the token", deviceLost: false },
  CKR_USER_ANOTHER_ALREADY_LOGGED_IN: { code: "another_logged_in", text: "another user is logged in to the token", deviceLost: false },
  CKR_KEY_HANDLE_INVALID: { code: "key_invalid", text: "the CA key is no longer available on the token (token removed or replaced?)", deviceLost: false },
  CKR_OBJECT_HANDLE_INVALID: { code: "key_invalid", text: "the CA key object is no longer available on the token (token removed or replaced?)", deviceLost: false },
  CKR_KEY_FUNCTION_NOT_PERMITTED: { code: "key_not_permitted", text: "the token key is not allowed to sign (CKA_SIGN is false)", deviceLost: false },
  CKR_MECHANISM_INVALID: { code: "mechanism_invalid", text: "the token does not support SHA256-RSA-PKCS signatures", deviceLost: false },
  CKR_FUNCTION_NOT_SUPPORTED: { code: "not_supported", text: "the PKCS#11 module does not support this function", deviceLost: false },
  CKR_DATA_LEN_RANGE: { code: "data_len_range", text: "the data to sign has a length the token refuses", deviceLost: false },
  CKR_GENERAL_ERROR: { code: "general_error", text: "the PKCS#11 module reported a general error (token removed or unreadable?)", deviceLost: true },
  CKR_FUNCTION_FAILED: { code: "function_failed", text: "the token could not complete the operation", deviceLost: true },
  CKR_HOST_MEMORY: { code: "host_memory", text: "the PKCS#11 module ran out of memory", deviceLost: false },
  CKR_CRYPTOKI_NOT_INITIALIZED: { code: "not_initialized", text: "the PKCS#11 module is not initialised", deviceLost: false },
  CKR_SESSION_COUNT: { code: "session_count", text: "the token has no free session", deviceLost: false },
};

const BY_NUMBER = new Map<number, string>(Object.entries(CKR).map(([k, v]) => [v, k]));

/** The CKR_* name of a CK_RV number (CKR_0x... for one not named here). */
export function ckrNameOf(rv: number): string {
  return BY_NUMBER.get(rv) ?? `CKR_0x${rv.toString(16).padStart(8, "0")}`;
}

/** The CKR_* name in a thrown value (pkcs11js puts it in the message), if any. */
export function ckrName(err: unknown): string | undefined {
  if (err instanceof TokenError) return err.ckr;
  if (err && typeof err === "object") {
    const msg = err instanceof Error ? err.message : "";
    const m = /\bCKR_[A-Z0-9_]+\b/.exec(msg);
    if (m) return m[0];
    const code = (err as { code?: unknown }).code;
    if (typeof code === "number") return ckrNameOf(code);
  }
  return undefined;
}

/**
 * Maps anything a pkcs11js call threw to a TokenError. `during` says what we were doing, in
 * words ("C_Login", "signing"), and starts the message. deviceLost is true when the token is
 * gone or broken (removal, device error, general error) rather than used wrongly.
 */
export function mapPkcs11Error(err: unknown, during: string): TokenError {
  if (err instanceof TokenError) return err;
  const ckr = ckrName(err);
  if (ckr !== undefined) {
    const known = KNOWN[ckr];
    if (known) return new TokenError(known.code, `${during}: ${known.text} (${ckr})`, { ckr, deviceLost: known.deviceLost });
    return new TokenError("pkcs11", `${during}: the token returned ${ckr}`, { ckr, deviceLost: false });
  }
  const text = err instanceof Error ? err.message.split("\n")[0]! : String(err);
  return new TokenError("native", `${during}: ${text}`, { deviceLost: false });
}
