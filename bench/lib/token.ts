// The signer's Token class, used directly (no kernel) for raw C_Sign figures.
import { Token } from "../../services/signer/token.js";
import { type SoftToken } from "../../test/fixtures/softhsm.js";

/** The signer's Token class on a SoftHSM token: first slot, first key, logged in. */
export function loggedInToken(st: SoftToken): Token {
  const KEY = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
  const tok = Token.open(st.modulePath, { env: st.env });
  tok.select(KEY);
  tok.login(Buffer.from(st.userPin), st.serial);
  tok.findKey(KEY);
  return tok;
}
