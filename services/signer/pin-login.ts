// C_Login with the PIN in a Buffer (native/pin-login, built with the project): pkcs11js only
// takes the PIN as a JS string, which can never be wiped. The addon calls C_Login of the module
// pkcs11js loaded, on pkcs11js' session, reading the caller's Buffer in place; the caller zeroes
// it afterwards. Loaded when the token module is (Token.open), so a missing build is reported
// at start-up, not when the PIN is typed.
import { createRequire } from "node:module";
import { TokenError } from "../common/errors.js";

/** dist/services/signer/pin-login.js -> dist/native/pin_login.node (npm run build copies it there) */
const ADDON = "../../native/pin_login.node";

interface PinLoginAddon {
  /** returns the CK_RV; throws only for misuse (argument types, module not loaded) */
  login(modulePath: string, session: Buffer, userType: number, pin: Buffer): number;
}

let addon: PinLoginAddon | undefined;

export function loadPinLogin(): void {
  if (addon) return;
  try {
    addon = createRequire(import.meta.url)(ADDON) as PinLoginAddon;
  } catch (err) {
    const text = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new TokenError("pin_login_missing", `cannot load the PIN login helper ${new URL(ADDON, import.meta.url).pathname} (npm run build makes it): ${text}`);
  }
}

/**
 * C_Login(session, userType, pin) through the module at `modulePath`, which pkcs11js must have
 * loaded in this process. A CK_RV other than CKR_OK is thrown as { code: CK_RV }, which
 * common/pkcs11/ckr.ts maps like pkcs11js' own errors.
 */
export function loginWithBuffer(modulePath: string, session: Buffer, userType: number, pin: Buffer): void {
  loadPinLogin();
  const rv = addon!.login(modulePath, session, userType, pin);
  if (rv !== 0) throw Object.assign(new Error("C_Login failed"), { code: rv });
}
