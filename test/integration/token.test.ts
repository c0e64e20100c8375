// The signer's Token against a real SoftHSM2 token made by the fixture.
import t from "tap";
import { X509Certificate, randomBytes, verify } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseKeySpec } from "../../services/common/config.js";
import type { KeyRef } from "../../services/common/config-schema.js";
import { TokenError } from "../../services/common/errors.js";
import { Token } from "../../services/signer/token.js";
import { mapPkcs11Error } from "../../services/common/pkcs11/ckr.js";
import { addKey, createSoftToken, reinsertToken, removeToken, replaceToken, slotIdOfToken, type SoftToken } from "../fixtures/softhsm.js";
import { maybeSimOf } from "../fixtures/etoken-sim.js";
import { thrown } from "../fixtures/thrown.js";

function key(spec: string): KeyRef {
  return parseKeySpec(spec, (expected) => {
    throw new Error(`bad KEY ${spec}: expected ${expected}`);
  });
}

const tokenError = (fn: () => unknown): TokenError => thrown(TokenError, fn);

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-token-"));
fs.chmodSync(base, 0o711);
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));

function freshToken(name: string): SoftToken {
  return createSoftToken({ dir: path.join(base, name), label: `etca ${name}` });
}

function open(st: SoftToken): Token {
  return Token.open(st.modulePath, { env: st.env });
}

function caPublicKey(st: SoftToken) {
  return new X509Certificate(fs.readFileSync(st.caCertPath)).publicKey;
}

t.test("select by 0:, by 0:<id> and by pkcs11: URI; sign verifies with the CA certificate", async (t) => {
  const st = freshToken("select");
  const tok = open(st);
  t.teardown(() => tok.close());

  const slots = tok.slots();
  t.equal(slots.length, 1, "SoftHSM's spare uninitialised slot is not listed");
  t.match(slots[0]!.serial, /^[0-9a-f]{16}$/, "serial as SoftHSM reports it");
  t.equal(slots[0]!.serial, st.serial, "the fixture and C_GetTokenInfo agree on the serial");
  t.equal(slots[0]!.manufacturer, "SoftHSM project");
  t.equal(slots[0]!.loginRequired, true);
  t.equal(slots[0]!.pinFlags, 0);

  t.equal(tok.select(key("0:")).serial, st.serial, "KEY=0:");
  tok.login(Buffer.from(st.userPin), st.serial);
  tok.findKey(key("0:"));
  t.equal(tok.keyIdHex, st.caKeyId, "KEY=0: found the only private key, whose CKA_ID is the CA's SKI");
  const data = randomBytes(100);
  const sig = tok.sign(data);
  t.ok(verify("sha256", data, caPublicKey(st), sig), "KEY=0: signature verifies with CA_CERT's public key");
  t.notOk(verify("sha256", randomBytes(100), caPublicKey(st), sig), "and not for other data");
  tok.logout();

  t.equal(tok.select(key(`0:${st.caKeyId}`)).serial, st.serial, "KEY=0:<id>");
  tok.login(Buffer.from(st.userPin));
  tok.findKey(key(`0:${st.caKeyId}`));
  t.ok(verify("sha256", data, caPublicKey(st), tok.sign(data)), "KEY=0:<id> signs with the CA key");
  tok.logout();

  const idPct = st.caKeyId.replace(/(..)/g, "%$1");
  const uri = `pkcs11:token=${encodeURIComponent(st.label)};serial=${st.serial};id=${idPct};type=private`;
  t.equal(tok.select(key(uri)).serial, st.serial, "pkcs11: URI with token, serial and id");
  tok.login(Buffer.from(st.userPin), st.serial);
  tok.findKey(key(uri));
  t.ok(verify("sha256", data, caPublicKey(st), tok.sign(data)), "pkcs11: URI signs with the CA key");
  t.equal(tok.tokenInfo().serial, st.serial, "fresh tokenInfo");
  tok.logout();

  const slotId = slotIdOfToken(st);
  t.equal(tok.select(key(`pkcs11:slot-id=${slotId};id=${idPct}`)).serial, st.serial, `pkcs11: URI with slot-id=${slotId} (PKCS#11's slot ID, as softhsm2-util shows it)`);
  const noSlotId = tokenError(() => tok.select(key(`pkcs11:slot-id=${slotId + 1}`)));
  t.equal(noSlotId.code, "token.no_token");
  t.match(noSlotId.message, new RegExp(`no token matches KEY \\(slot-id ${slotId + 1}\\); present: slot index 0 \\(slot-id ${slotId}\\)`));

  const noMatch = tokenError(() => tok.select(key("pkcs11:serial=0000000000000000")));
  t.equal(noMatch.code, "token.no_token");
  t.match(noMatch.message, /no token matches KEY \(token serial 0000000000000000\); present: slot index 0 \(slot-id \d+\): label "etca select", serial [0-9a-f]{16}/);
  const noSlot = tokenError(() => tok.select(key("3:")));
  t.equal(noSlot.code, "token.no_token");
  t.match(noSlot.message, /slot index 3/);

  const noKey = (() => {
    tok.select(key("0:"));
    tok.login(Buffer.from(st.userPin));
    return tokenError(() => tok.findKey(key("0:abcdef")));
  })();
  t.equal(noKey.code, "token.no_key");
  t.match(noKey.message, /no private key matching KEY \(slot index 0, key id abcdef\) on token [0-9a-f]{16}/);

  tok.close();
  tok.close();
  t.pass("close() twice does not throw");
});

t.test("wrong PIN: TokenError pin_incorrect, COUNT_LOW flag; wrong serial: PIN never sent", async (t) => {
  const st = freshToken("pin");
  const tok = open(st);
  t.teardown(() => tok.close());
  tok.select(key("0:"));

  const other = tokenError(() => tok.login(Buffer.from("0000"), "ffffffffffffffff"));
  t.equal(other.code, "token.wrong_token");
  t.match(other.message, /has serial [0-9a-f]{16}, expected ffffffffffffffff: PIN not sent/);
  t.equal(tok.tokenInfo().pinFlags & 1, 0, "no failed login was counted: the PIN was not sent");

  const wrong = tokenError(() => tok.login(Buffer.from("0000"), st.serial));
  t.equal(wrong.code, "token.pin_incorrect");
  t.equal(wrong.ckr, "CKR_PIN_INCORRECT");
  t.equal(wrong.deviceLost, false);
  t.match(wrong.message, /^logging in to token [0-9a-f]{16} \(C_Login\): wrong PIN/);
  t.notMatch(wrong.message, /0000|\n/, "no PIN and no stack in the message");
  t.equal(tok.tokenInfo().pinFlags & 1, 1, "SoftHSM sets CKF_USER_PIN_COUNT_LOW -> PinFlag 1");
  t.equal(tok.isLoggedIn, false);

  tok.login(Buffer.from(st.userPin), st.serial);
  t.equal(tok.isLoggedIn, true);
  t.equal(tok.tokenInfo().pinFlags & 1, 0, "a good login clears COUNT_LOW on SoftHSM");
});

t.test("removing the token: sign fails with deviceLost; logout/close do not throw", async (t) => {
  const st = freshToken("remove");
  const tok = open(st);
  t.teardown(() => tok.close());
  tok.select(key("0:"));
  tok.login(Buffer.from(st.userPin), st.serial);
  tok.findKey(key("0:"));
  const data = randomBytes(32);
  t.ok(verify("sha256", data, caPublicKey(st), tok.sign(data)));

  removeToken(st);
  const lost = tokenError(() => tok.sign(data));
  t.equal(lost.deviceLost, true, "deviceLost");
  t.equal(lost.code, "token.device_removed");
  if (maybeSimOf(st)) {
    // a reader's removal (the eToken-like module): the session answers CKR_DEVICE_REMOVED
    t.equal(lost.ckr, "CKR_DEVICE_REMOVED");
    t.match(lost.message, /\(C_Sign\): the token was removed/);
  } else {
    // SoftHSM 2.6: C_SignInit -> CKR_OBJECT_HANDLE_INVALID (the key file is gone), then
    // C_GetTokenInfo -> CKR_GENERAL_ERROR; sign() turns that into device_removed.
    t.equal(lost.ckr, "CKR_OBJECT_HANDLE_INVALID");
    t.match(lost.message, /no longer answers \(C_GetTokenInfo: CKR_GENERAL_ERROR\)/);
  }
  const info = tokenError(() => tok.tokenInfo());
  t.equal(info.deviceLost, true, "tokenInfo() on a removed token is deviceLost too");

  tok.logout();
  tok.logout();
  t.pass("logout on a removed token does not throw");
  reinsertToken(st);
  tok.close();

  // A fresh module sees the re-inserted token and signs again.
  const again = open(st);
  t.teardown(() => again.close());
  again.select(key(`0:${st.caKeyId}`));
  again.login(Buffer.from(st.userPin), st.serial);
  again.findKey(key(`0:${st.caKeyId}`));
  t.ok(verify("sha256", data, caPublicKey(st), again.sign(data)), "signs after re-insertion");
  again.close();

  const other = replaceToken(st);
  t.not(other.serial, st.serial, "the replacement has another serial");
  const third = open(other);
  t.teardown(() => third.close());
  third.select(key("0:"));
  const refused = tokenError(() => third.login(Buffer.from(st.userPin), st.serial));
  t.equal(refused.code, "token.wrong_token", "a replaced token is refused before the PIN is sent");
  third.close();
});

t.test("two private keys and KEY=0: -> clear error listing the ids", async (t) => {
  const st = freshToken("twokeys");
  addKey(st, "beef01", "second key");
  const tok = open(st);
  t.teardown(() => tok.close());
  tok.select(key("0:"));
  tok.login(Buffer.from(st.userPin));
  const e = tokenError(() => tok.findKey(key("0:")));
  t.equal(e.code, "token.ambiguous_key");
  t.match(e.message, /2 private keys on token [0-9a-f]{16} match KEY \(slot index 0\)/);
  t.match(e.message, new RegExp(`id ${st.caKeyId} label "etoken-ca CA key"`));
  t.match(e.message, /id beef01 label "second key"/);
  t.match(e.message, /set KEY=SLOT:ID/);

  tok.findKey(key("0:beef01"));
  const data = randomBytes(20);
  t.notOk(verify("sha256", data, caPublicKey(st), tok.sign(data)), "the second key is not the CA key");
  tok.findKey(key(`0:${st.caKeyId}`));
  t.ok(verify("sha256", data, caPublicKey(st), tok.sign(data)), "KEY=0:<ca id> picks the CA key");
});

t.test("mapPkcs11Error", async (t) => {
  const mk = (name: string, code: number) => Object.assign(new Error(name), { code });
  const removed = mapPkcs11Error(mk("CKR_DEVICE_REMOVED", 0x32), "signing");
  t.equal(removed.code, "token.device_removed");
  t.equal(removed.deviceLost, true);
  t.equal(removed.message, "signing: the token was removed (CKR_DEVICE_REMOVED)");
  t.equal(mapPkcs11Error(mk("CKR_PIN_LOCKED", 0xa4), "x").code, "token.pin_locked");
  t.equal(mapPkcs11Error(mk("CKR_PIN_LEN_RANGE", 0xa2), "x").deviceLost, false);
  t.equal(mapPkcs11Error(mk("CKR_SESSION_HANDLE_INVALID", 0xb3), "x").deviceLost, true);
  t.equal(mapPkcs11Error(mk("CKR_USER_NOT_LOGGED_IN", 0x101), "x").code, "token.not_logged_in");
  t.equal(mapPkcs11Error({ code: 0x30 }, "x").ckr, "CKR_DEVICE_ERROR", "number-only errors are named");
  t.equal(mapPkcs11Error(mk("CKR_VENDOR_THING", 0x80000001), "x").code, "token.pkcs11");
  t.equal(mapPkcs11Error(new TypeError("Argument 2 has wrong type"), "x").code, "token.native");

  // And a real one from the module: SoftHSM answers a too-short PIN with CKR_PIN_INCORRECT.
  const st = freshToken("maperr");
  const tok = open(st);
  t.teardown(() => tok.close());
  tok.select(key("0:"));
  const short = tokenError(() => tok.login(Buffer.from("12")));
  t.equal(short.ckr, "CKR_PIN_INCORRECT");
  t.equal(short.code, "token.pin_incorrect");
});
