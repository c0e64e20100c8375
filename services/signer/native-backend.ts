// The native signing backend (SIGNER_BACKEND=pkcs11): one pkcs11js session logged in for as
// long as the kernel holds the PIN; certificates and CRLs are encoded here (profile.ts,
// crl.ts) and only the signature comes from the token. Moved out of main.ts unchanged.
import type { ServiceConfig } from "../common/service-table.js";
import { EtokenError, TokenError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { PinFlag } from "../../proto/wire.js";
import type { IssueInput, IssueOutput, LoginOutcome, SigningBackend } from "./backend.js";
import type { CaDatabase } from "./cadb.js";
import { assembleCertificate, publicKeyMatches, type CaCertificate } from "../common/x509/certificate.js";
import type { CrlPublisher, PublishedCrl } from "./crl-publisher.js";
import type { ChainHead } from "../common/audit/trail.js";
import { mapPkcs11Error } from "../common/pkcs11/ckr.js";
import { CertificateTemplate } from "./profile.js";
import { Token } from "./token.js";

export interface BackendContext {
  config: ServiceConfig<"signer">;
  log: Logger;
  ca: CaCertificate;
  db: CaDatabase;
  crls: CrlPublisher;
}

export class NativeBackend implements SigningBackend {
  readonly name = "pkcs11" as const;
  private token: Token | undefined;
  private session: { serial: string; label: string } | undefined;
  private readonly template: CertificateTemplate;

  constructor(private readonly c: BackendContext) {
    this.template = new CertificateTemplate({ caCert: c.ca, policies: [...c.config.CA_OIDS], crlUrls: [...c.config.CRL_URLS] });
  }

  get loggedIn(): { serial: string; label: string } | undefined {
    return this.session;
  }

  /** The CKA_ID of the CA key found at login (hex), for backends that name the key elsewhere. */
  get keyIdHex(): string | undefined {
    return this.session ? this.token?.keyIdHex : undefined;
  }

  private openToken(): Token {
    if (!this.token) this.token = Token.open(this.c.config.PKCS11_MODULE);
    return this.token;
  }

  /** Forgets the module session entirely (after a removal the old one is useless). */
  dropToken(): void {
    try {
      this.token?.close();
    } catch {
      // gone already
    }
    this.token = undefined;
    this.session = undefined;
  }

  login(pin: Buffer, expectedSerial: string): Promise<LoginOutcome> {
    let flags = 0;
    try {
      if (this.session) this.logout();
      // A fresh module session: after a removal the old one is useless.
      this.dropToken();
      const token = this.openToken();
      const info = token.select(this.c.config.KEY);
      flags = info.pinFlags;
      if (!expectedSerial || info.serial !== expectedSerial) {
        throw new TokenError("serial_mismatch", `the token in the slot has serial ${info.serial}, the PIN was typed for ${expectedSerial || "(none)"}; PIN not sent`);
      }
      if (info.pinFlags & PinFlag.PIN_LOCKED) throw new TokenError("pin_locked", "the token's user PIN is locked; PIN not sent");
      try {
        token.login(pin, expectedSerial);
      } finally {
        pin.fill(0);
      }
      token.findKey(this.c.config.KEY);
      if (!publicKeyMatches(this.c.ca, (data) => token.sign(data))) {
        token.logout();
        throw new TokenError("wrong_key", `the key on token ${info.serial} does not match CA_CERT (${this.c.config.CA_CERT}); refusing to sign with it`);
      }
      this.session = { serial: info.serial, label: info.label };
      return Promise.resolve({ ok: true, token: { serial: info.serial, label: info.label, pinFlags: info.pinFlags } });
    } catch (err) {
      pin.fill(0);
      const e = err instanceof TokenError ? err : err instanceof EtokenError ? err : mapPkcs11Error(err, "login");
      try {
        flags = this.token?.tokenInfo().pinFlags ?? flags;
      } catch {
        // token gone
      }
      return Promise.resolve({ ok: false, error: e, pinFlags: flags });
    }
  }

  logout(): void {
    if (!this.session) return;
    try {
      this.token?.logout();
    } catch (err) {
      this.c.log.info("logout on a gone token", { error: err instanceof Error ? err.message : String(err) });
    }
    this.session = undefined;
  }

  /** A token error while signing; a lost device also drops the module session. */
  private tokenFailure(err: unknown, during: string): TokenError {
    const e = err instanceof TokenError ? err : mapPkcs11Error(err, during);
    if (e.deviceLost) this.dropToken();
    return e;
  }

  /**
   * Is the token we logged in to still there? A TokenError with deviceLost when it is gone or
   * replaced (the module session is dropped then), undefined when it answers as before.
   */
  probe(): TokenError | undefined {
    const expected = this.session?.serial;
    if (!this.token || expected === undefined) return undefined;
    try {
      const info = this.token.tokenInfo();
      if (info.serial === expected) return undefined;
      const e = new TokenError("device_removed", `the token ${expected} is no longer in its slot (now: ${info.serial || "no token"})`, { deviceLost: true });
      this.dropToken();
      return e;
    } catch (err) {
      const e = err instanceof TokenError ? err : mapPkcs11Error(err, "looking at the token (C_GetTokenInfo)");
      this.dropToken();
      return e.deviceLost ? e : new TokenError("device_removed", `the token ${expected} no longer answers: ${e.message}`, { ckr: e.ckr, deviceLost: true });
    }
  }

  private readyToken(): Token {
    if (!this.session || !this.token) throw new TokenError("not_logged_in", "not logged in");
    return this.token;
  }

  /** Signs with the session's key (the challenge at login, tests). */
  sign(data: Buffer): Buffer {
    return this.readyToken().sign(data);
  }

  issue(input: IssueInput): Promise<IssueOutput> {
    const token = this.readyToken();
    const now = Date.now();
    const notBefore = new Date(Math.floor(now / 1000) * 1000); // the template backdates for clock skew
    const notAfter = new Date(Math.floor(now / 1000) * 1000 + input.lifetimeSeconds * 1000);
    const serial = this.c.db.newSerial();
    const tbs = this.template.tbs({ serial, subjectDer: input.subject.der, publicKey: input.publicKey, emails: [...input.emails], notBefore, notAfter });
    let signature: Buffer;
    const debug = this.c.log.enabled("debug");
    if (debug) this.c.log.debug("C_Sign started: certificate");
    const started = performance.now();
    try {
      signature = token.sign(tbs);
    } catch (err) {
      return Promise.reject(this.tokenFailure(err, "signing"));
    }
    const signMs = performance.now() - started;
    if (debug) this.c.log.debug("C_Sign ended: certificate", { signMs });
    input.onSigned?.();
    const certificate = assembleCertificate(tbs, signature);
    // Answered only once the index line is on disk; concurrent requests share one flush.
    return this.c.db
      .recordGroupCommit({ serial, notAfter, subject: input.subject.slash, certificate })
      .then(() => ({ serialHex: serial.toString("hex").toUpperCase(), certificateDer: certificate, notAfter, subjectSlash: input.subject.slash, signMs }));
  }

  makeCrl(lifetimeMs: number, checkpoint: () => ChainHead, onSigned?: () => void): Promise<PublishedCrl> {
    try {
      const token = this.readyToken();
      const debug = this.c.log.enabled("debug");
      const info = this.c.crls.publish(this.c.db, lifetimeMs, (tbs) => {
        if (debug) this.c.log.debug("C_Sign started: CRL");
        const started = performance.now();
        let signature: Buffer;
        try {
          signature = token.sign(tbs);
        } catch (err) {
          throw this.tokenFailure(err, "signing the CRL");
        } finally {
          if (debug) this.c.log.debug("C_Sign ended: CRL", { signMs: performance.now() - started });
        }
        onSigned?.();
        return signature;
      }, checkpoint());
      return Promise.resolve(info);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  latestCrl(): PublishedCrl | undefined {
    return this.c.crls.latest();
  }

  exclusive<T>(fn: (db: CaDatabase) => T): Promise<T> {
    // Everything the native backend does is synchronous: nothing can interleave.
    try {
      return Promise.resolve(fn(this.c.db));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  database(): CaDatabase {
    return this.c.db;
  }

  close(): void {
    this.logout();
    this.dropToken();
  }
}
