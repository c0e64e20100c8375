// The signer's PKCS#11 token: one module, one slot, one RO session, one private key.
// Everything is synchronous (pkcs11js): a C_Sign blocks the event loop for ~1 ms on SoftHSM.
//
// The PIN: pkcs11js 2.1.7 takes it only as a JS string (which cannot be wiped) and copies it
// into native memory it frees without wiping. login() goes through pin-login.ts instead: C_Login
// of the same loaded module, on pkcs11js' session, reading the caller's Buffer in place. The
// caller zeroes its Buffer; no other copy of the PIN is made in this process.
//
// Slots: which token KEY means is decided by common/pkcs11/token-match.ts, as in the monitor.
// KeyRef.slot is an index into the list of slots holding an *initialised* token (SoftHSM
// always shows one extra empty "free" slot, which is skipped); KeyRef.slotId is PKCS#11's
// CK_SLOT_ID. TokenInfo.slot is that index, TokenInfo.slotId the CK_SLOT_ID.
import pkcs11js from "pkcs11js";
import type { KeyRef } from "../common/config-schema.js";
import { TokenError } from "../common/errors.js";
import { describeKeyRef, keyMatches, slotIdOf } from "../common/pkcs11/token-match.js";
import { CKR, ckrName, mapPkcs11Error } from "../common/pkcs11/ckr.js";
import { CKF_LOGIN_REQUIRED, CKF_TOKEN_INITIALIZED, pinFlagsOf } from "../common/pkcs11/flags.js";
import { loadPinLogin, loginWithBuffer } from "./pin-login.js";

export interface TokenInfo {
  /** index in the list of slots with an initialised token (what KEY=SLOT:ID counts) */
  slot: number;
  /** the PKCS#11 slot ID */
  slotId: number;
  label: string;
  serial: string;
  manufacturer: string;
  model: string;
  /** bits: 1 COUNT_LOW, 2 FINAL_TRY, 4 LOCKED, 8 TO_BE_CHANGED (proto PinFlag) */
  pinFlags: number;
  loginRequired: boolean;
}

const CKU_USER = 1;

/** Words for the PIN flags, for the console and messages. */
export function describePinFlags(bits: number): string {
  const words: string[] = [];
  if (bits & 4) words.push("PIN locked");
  if (bits & 2) words.push("final PIN try");
  if (bits & 1) words.push("a wrong PIN was entered");
  if (bits & 8) words.push("PIN must be changed");
  return words.length ? words.join(", ") : "none";
}

function trimPadded(s: string): string {
  return s.replace(/[\s\0]+$/, "");
}

export class Token {
  private readonly p: pkcs11js.PKCS11;
  private readonly modulePath: string;
  private initialised = false;
  private slotHandle: Buffer | undefined;
  private selected: TokenInfo | undefined;
  private session: Buffer | undefined;
  private loggedIn = false;
  private key: Buffer | undefined;
  private keyId: string | undefined;
  private closed = false;

  private constructor(p: pkcs11js.PKCS11, modulePath: string) {
    this.p = p;
    this.modulePath = modulePath;
  }

  /**
   * Loads the module and calls C_Initialize. `env` (e.g. SOFTHSM2_CONF) is put into
   * process.env first: modules read their configuration at C_Initialize.
   */
  static open(modulePath: string, opts: { env?: Record<string, string> } = {}): Token {
    for (const [k, v] of Object.entries(opts.env ?? {})) process.env[k] = v;
    loadPinLogin();
    const p = new pkcs11js.PKCS11();
    try {
      p.load(modulePath);
    } catch (err) {
      const text = err instanceof Error ? err.message.split("\n")[0] : String(err);
      throw new TokenError("module_load", `cannot load PKCS11_MODULE ${modulePath}: ${text}`);
    }
    const t = new Token(p, modulePath);
    try {
      p.C_Initialize();
      t.initialised = true;
    } catch (err) {
      if (ckrName(err) === "CKR_CRYPTOKI_ALREADY_INITIALIZED") {
        // Another PKCS11 object in this process initialised the same library: share it, and
        // leave C_Finalize to its owner.
        t.initialised = false;
      } else {
        try {
          p.close();
        } catch {
          /* nothing to do */
        }
        throw mapPkcs11Error(err, `initialising PKCS11_MODULE ${modulePath} (C_Initialize)`);
      }
    }
    return t;
  }

  private assertOpen(): void {
    if (this.closed) throw new TokenError("closed", "the PKCS#11 module was closed");
  }

  private listSlots(): { handle: Buffer; info: TokenInfo }[] {
    this.assertOpen();
    let handles: Buffer[];
    try {
      handles = this.p.C_GetSlotList(true);
    } catch (err) {
      throw mapPkcs11Error(err, "listing the token slots (C_GetSlotList)");
    }
    const out: { handle: Buffer; info: TokenInfo }[] = [];
    for (const handle of handles) {
      let ti: pkcs11js.TokenInfo;
      try {
        ti = this.p.C_GetTokenInfo(handle);
      } catch {
        continue; // a token that disappeared between the two calls is not there
      }
      if ((ti.flags & CKF_TOKEN_INITIALIZED) === 0) continue;
      out.push({ handle, info: this.infoOf(out.length, handle, ti) });
    }
    return out;
  }

  private infoOf(index: number, handle: Buffer, ti: pkcs11js.TokenInfo): TokenInfo {
    return {
      slot: index,
      slotId: slotIdOf(handle),
      label: trimPadded(ti.label),
      serial: trimPadded(ti.serialNumber),
      manufacturer: trimPadded(ti.manufacturerID),
      model: trimPadded(ti.model),
      pinFlags: pinFlagsOf(ti.flags),
      loginRequired: (ti.flags & CKF_LOGIN_REQUIRED) !== 0,
    };
  }

  /** Slots that hold an initialised token, in the module's order. */
  slots(): TokenInfo[] {
    return this.listSlots().map((s) => s.info);
  }

  /** Picks the token KEY designates; clear error listing what is there when nothing matches. */
  select(key: KeyRef): TokenInfo {
    const all = this.listSlots();
    const seen = all.length
      ? all.map((s) => `slot index ${s.info.slot} (slot-id ${s.info.slotId}): label "${s.info.label}", serial ${s.info.serial}`).join("; ")
      : "no initialised token in any slot";
    const cands = all.filter((s) => keyMatches(key, s.info));
    if (cands.length === 0) {
      throw new TokenError("no_token", `no token matches KEY (${describeKeyRef(key)}); present: ${seen}`, { deviceLost: all.length === 0 });
    }
    if (cands.length > 1 && key.slot === undefined && key.slotId === undefined) {
      throw new TokenError("ambiguous_token", `more than one token matches KEY (${describeKeyRef(key)}): ${seen}; add serial= or a slot index`);
    }
    const chosen = cands[0]!;
    if (this.session !== undefined) this.logout();
    this.slotHandle = chosen.handle;
    this.selected = chosen.info;
    return chosen.info;
  }

  /**
   * Logs in as the user. When expectedSerial is given, the token's serial is read first and a
   * PIN is never sent to a token whose serial differs. The caller zeroes `pin` afterwards.
   */
  login(pin: Buffer, expectedSerial?: string): void {
    this.assertOpen();
    if (!this.slotHandle || !this.selected) throw new TokenError("not_selected", "no token selected (select() before login())");
    const info = this.tokenInfo();
    if (expectedSerial !== undefined && info.serial !== expectedSerial) {
      throw new TokenError(
        "wrong_token",
        `the token in slot index ${info.slot} has serial ${info.serial}, expected ${expectedSerial}: PIN not sent`,
        { deviceLost: true },
      );
    }
    if (info.pinFlags & 4) {
      throw new TokenError("pin_locked", `the user PIN of token ${info.serial} is locked: unlock it with the SO PIN (PIN not sent)`, { ckr: "CKR_PIN_LOCKED" });
    }
    if (this.session === undefined) {
      try {
        this.session = this.p.C_OpenSession(this.slotHandle, pkcs11js.CKF_SERIAL_SESSION);
      } catch (err) {
        throw mapPkcs11Error(err, `opening a session on token ${info.serial} (C_OpenSession)`);
      }
    }
    if (this.loggedIn) return;
    try {
      loginWithBuffer(this.modulePath, this.session, CKU_USER, pin);
      this.loggedIn = true;
    } catch (err) {
      if (ckrName(err) === "CKR_USER_ALREADY_LOGGED_IN") {
        this.loggedIn = true;
        return;
      }
      throw mapPkcs11Error(err, `logging in to token ${info.serial} (C_Login)`);
    }
  }

  /**
   * Finds the CA private key: by id and/or label, or the only private key when KEY names
   * neither (more than one is an error that lists them).
   */
  findKey(key: KeyRef): void {
    if (!this.session || !this.loggedIn) throw new TokenError("not_logged_in", "log in to the token before looking for the key");
    const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }];
    if (key.id !== undefined) template.push({ type: pkcs11js.CKA_ID, value: Buffer.from(key.id, "hex") });
    if (key.label !== undefined) template.push({ type: pkcs11js.CKA_LABEL, value: key.label });
    let found: Buffer[];
    try {
      this.p.C_FindObjectsInit(this.session, template);
      try {
        found = this.p.C_FindObjects(this.session, 100);
      } finally {
        this.p.C_FindObjectsFinal(this.session);
      }
    } catch (err) {
      throw mapPkcs11Error(err, "looking for the CA key (C_FindObjects)");
    }
    const serial = this.selected?.serial ?? "?";
    if (found.length === 0) {
      throw new TokenError("no_key", `no private key matching KEY (${describeKeyRef(key)}) on token ${serial}`);
    }
    if (found.length > 1) {
      const list = found.map((h) => this.describeObject(h)).join("; ");
      throw new TokenError(
        "ambiguous_key",
        `${found.length} private keys on token ${serial} match KEY (${describeKeyRef(key)}): ${list}; set KEY=SLOT:ID with one of these ids`,
      );
    }
    this.key = found[0]!;
    this.keyId = this.attrs(found[0]!).id;
  }

  /**
   * The public key objects matching KEY's id/label on the selected token, read in a session of
   * their own without a login (check-config: no PIN). RSA moduli, big-endian.
   */
  publicKeys(key: KeyRef): { id: string; label: string; modulus: Buffer }[] {
    this.assertOpen();
    if (!this.slotHandle) throw new TokenError("not_selected", "no token selected (select() first)");
    const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }];
    if (key.id !== undefined) template.push({ type: pkcs11js.CKA_ID, value: Buffer.from(key.id, "hex") });
    if (key.label !== undefined) template.push({ type: pkcs11js.CKA_LABEL, value: key.label });
    let session: Buffer;
    try {
      session = this.p.C_OpenSession(this.slotHandle, pkcs11js.CKF_SERIAL_SESSION);
    } catch (err) {
      throw mapPkcs11Error(err, "opening a session without login (C_OpenSession)");
    }
    try {
      this.p.C_FindObjectsInit(session, template);
      let found: Buffer[];
      try {
        found = this.p.C_FindObjects(session, 100);
      } finally {
        this.p.C_FindObjectsFinal(session);
      }
      return found.map((h) => {
        const a = this.p.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_ID }, { type: pkcs11js.CKA_LABEL }, { type: pkcs11js.CKA_MODULUS }]);
        const buf = (i: number): Buffer => (Buffer.isBuffer(a[i]?.value) ? (a[i]!.value as Buffer) : Buffer.alloc(0));
        return { id: buf(0).toString("hex"), label: buf(1).toString("utf8"), modulus: buf(2) };
      });
    } catch (err) {
      throw mapPkcs11Error(err, "looking for the CA's public key (C_FindObjects)");
    } finally {
      try {
        this.p.C_CloseSession(session);
      } catch {
        /* token gone */
      }
    }
  }

  private attrs(h: Buffer): { id: string; label: string } {
    const a = this.p.C_GetAttributeValue(this.session!, h, [{ type: pkcs11js.CKA_ID }, { type: pkcs11js.CKA_LABEL }]);
    const id = Buffer.isBuffer(a[0]?.value) ? (a[0]!.value as Buffer).toString("hex") : "";
    const label = Buffer.isBuffer(a[1]?.value) ? (a[1]!.value as Buffer).toString("utf8") : "";
    return { id, label };
  }

  private describeObject(h: Buffer): string {
    try {
      const { id, label } = this.attrs(h);
      return `id ${id || "(none)"} label "${label}"`;
    } catch {
      return "(unreadable object)";
    }
  }

  /** CKA_ID (hex) of the key findKey() chose. */
  get keyIdHex(): string | undefined {
    return this.keyId;
  }

  get isLoggedIn(): boolean {
    return this.loggedIn;
  }

  /** CKM_SHA256_RSA_PKCS over data. A failure caused by a missing token is deviceLost. */
  sign(data: Buffer): Buffer {
    if (!this.session || !this.loggedIn || !this.key) throw new TokenError("not_ready", "the token is not ready to sign (login and findKey first)");
    try {
      this.p.C_SignInit(this.session, { mechanism: pkcs11js.CKM_SHA256_RSA_PKCS }, this.key);
      return this.p.C_Sign(this.session, data, Buffer.alloc(1024));
    } catch (err) {
      throw this.refine(mapPkcs11Error(err, "signing with the CA key (C_Sign)"));
    }
  }

  /**
   * A usage-looking error (invalid key handle, general error) may really be a token that went
   * away: look at the token once more and say so.
   */
  private refine(e: TokenError): TokenError {
    if (e.deviceLost) return e;
    const expected = this.selected?.serial;
    try {
      const ti = this.p.C_GetTokenInfo(this.slotHandle!);
      const serial = trimPadded(ti.serialNumber);
      if ((ti.flags & CKF_TOKEN_INITIALIZED) !== 0 && serial === expected) return e;
      return new TokenError("device_removed", `${e.message}; the token ${expected} is no longer in its slot (now: ${serial || "no token"})`, { ckr: e.ckr, deviceLost: true });
    } catch (probe) {
      const why = ckrName(probe) ?? "unreadable";
      return new TokenError("device_removed", `${e.message}; the token ${expected} no longer answers (C_GetTokenInfo: ${why})`, { ckr: e.ckr, deviceLost: true });
    }
  }

  /** Fresh C_GetTokenInfo of the selected slot. */
  tokenInfo(): TokenInfo {
    this.assertOpen();
    if (!this.slotHandle || !this.selected) throw new TokenError("not_selected", "no token selected");
    try {
      const ti = this.p.C_GetTokenInfo(this.slotHandle);
      return this.infoOf(this.selected.slot, this.slotHandle, ti);
    } catch (err) {
      throw mapPkcs11Error(err, `reading the token information of slot index ${this.selected.slot} (C_GetTokenInfo)`);
    }
  }

  /** Logs out and closes the session; never throws (the token may be gone). */
  logout(): void {
    const s = this.session;
    this.session = undefined;
    this.key = undefined;
    this.keyId = undefined;
    const wasLoggedIn = this.loggedIn;
    this.loggedIn = false;
    if (s === undefined || this.closed) return;
    if (wasLoggedIn) {
      try {
        this.p.C_Logout(s);
      } catch {
        /* token gone or session already invalid */
      }
    }
    try {
      this.p.C_CloseSession(s);
    } catch {
      /* idem */
    }
  }

  /** Logs out, C_Finalize (when this object initialised the module), unloads. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.logout();
    this.closed = true;
    this.slotHandle = undefined;
    this.selected = undefined;
    if (this.initialised) {
      try {
        this.p.C_Finalize();
      } catch {
        /* already finalized or module in trouble */
      }
      this.initialised = false;
    }
    try {
      this.p.close();
    } catch {
      /* already unloaded */
    }
  }

  get module(): string {
    return this.modulePath;
  }
}

export { CKR };
