// The signer (user SIGNER_USER): the logged-in token session, the CA database and the CRLs.
// It re-validates everything the kernel forwards: the kernel moves bytes, it does not vouch.
import * as fs from "node:fs";
import type { Frame } from "../../proto/wire.js";
import { PinFlag } from "../../proto/wire.js";
import { describeError, errorCode, EtokenError, RequestError, TokenError } from "../common/errors.js";
import { isRevocationReason } from "../common/reasons.js";
import { fatal, runService, type ServiceContext } from "../common/service.js";
import { checkRsaPublicKey } from "../spool/csr.js";
import { CaDatabase } from "./cadb.js";
import { buildSubject, compileDnFormat, splitUsername } from "./dn.js";
import { CertificateTemplate, clampLifetime } from "./profile.js";
import { assembleCertificate, loadCaCertificate, publicKeyMatches, type CaCertificate } from "./certificate.js";
import { CrlPublisher } from "./crl-publisher.js";
import { mapPkcs11Error } from "./pkcs11-errors.js";
import { Token } from "./token.js";

interface SignerState {
  ca: CaCertificate;
  db: CaDatabase;
  template: CertificateTemplate;
  dn: ReturnType<typeof compileDnFormat>;
  crls: CrlPublisher;
  token: Token | undefined;
  loggedIn: { serial: string; label: string } | undefined;
}

let state: SignerState | undefined;

function s(): SignerState {
  if (!state) throw new Error("signer not initialised");
  return state;
}

await runService("signer", {
  start(ctx) {
    const c = ctx.config;
    const ca = loadCaCertificate(fs.readFileSync(c.CA_CERT), c.CA_CERT);
    const db = CaDatabase.open(c.CA_DIR, { create: true });
    state = {
      ca,
      db,
      template: new CertificateTemplate({ caCert: ca, policies: [...c.CA_OIDS], crlUrls: [...c.CRL_URLS] }),
      dn: compileDnFormat(c.DN_FORMAT),
      crls: new CrlPublisher(c.CRL_DIR, ca),
      token: undefined,
      loggedIn: undefined,
    };
    ctx.log.info("signer ready", { certificates: db.size, revoked: db.revokedCount, ca: ca.subjectSlash });
  },

  dispatch(frame, ctx) {
    switch (frame.type) {
      case "login":
        return login(frame as Frame<"login">, ctx);
      case "logout":
        logout(ctx, (frame as Frame<"logout">).message.reason);
        ctx.channel.reply(frame, "ack", {});
        return;
      case "issueRequest":
        return issue(frame as Frame<"issueRequest">, ctx);
      case "revoke":
        return revoke(frame as Frame<"revoke">, ctx);
      case "makeCrl":
        return makeCrl(frame as Frame<"makeCrl">, ctx);
      case "getSignerStatus":
        return status(frame as Frame<"getSignerStatus">, ctx);
      default:
        fatal(ctx.log, `invalid message from kernel: ${frame.type}: fatal`);
    }
  },

  stop(ctx) {
    logout(ctx, "stopping");
    try {
      state?.token?.close();
    } catch {
      // the token may be gone
    }
  },
});

function openToken(ctx: ServiceContext): Token {
  const st = s();
  if (!st.token) st.token = Token.open(ctx.config.PKCS11_MODULE);
  return st.token;
}

function dropToken(): void {
  const st = s();
  try {
    st.token?.close();
  } catch {
    // gone already
  }
  st.token = undefined;
  st.loggedIn = undefined;
}

function login(frame: Frame<"login">, ctx: ServiceContext): void {
  const pin = frame.message.pin as Buffer;
  const expectedSerial = frame.message.expectedSerial;
  const st = s();
  let flags = 0;
  try {
    if (st.loggedIn) logout(ctx, "new login");
    // A fresh module session: after a removal the old one is useless.
    dropToken();
    const token = openToken(ctx);
    const info = token.select(ctx.config.KEY);
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
    token.findKey(ctx.config.KEY);
    if (!publicKeyMatches(st.ca, (data) => token.sign(data))) {
      token.logout();
      throw new TokenError("wrong_key", `the key on token ${info.serial} does not match CA_CERT (${ctx.config.CA_CERT}); refusing to sign with it`);
    }
    st.loggedIn = { serial: info.serial, label: info.label };
    ctx.log.notice("logged in to the token; key matches the CA certificate", { serial: info.serial, label: info.label });
    ctx.channel.reply(frame, "loginResult", { ok: true, code: "", message: "", tokenSerial: info.serial, tokenLabel: info.label, pinFlags: info.pinFlags });
  } catch (err) {
    pin.fill(0);
    const e = err instanceof TokenError ? err : err instanceof EtokenError ? err : mapPkcs11Error(err, "login");
    try {
      flags = st.token?.tokenInfo().pinFlags ?? flags;
    } catch {
      // token gone
    }
    ctx.log.warning("login failed", { code: e.code, message: e.message });
    ctx.channel.reply(frame, "loginResult", { ok: false, code: e.code, message: e.message, tokenSerial: "", tokenLabel: "", pinFlags: flags });
  }
}

function logout(ctx: ServiceContext, reason: string | null | undefined): void {
  const st = state;
  if (!st?.loggedIn) return;
  try {
    st.token?.logout();
  } catch (err) {
    ctx.log.info("logout on a gone token", { error: describeError(err) });
  }
  st.loggedIn = undefined;
  ctx.log.notice("logged out of the token", { reason: String(reason ?? "").slice(0, 200) });
}

/** A token error during signing: tell the kernel when the device is gone. */
function tokenFailure(ctx: ServiceContext, err: unknown, during: string): EtokenError {
  const e = err instanceof TokenError ? err : mapPkcs11Error(err, during);
  if (e.deviceLost) {
    ctx.channel.send("signerFault", { code: e.code, message: e.message, deviceLost: true });
    dropToken();
  }
  return e;
}

function issue(frame: Frame<"issueRequest">, ctx: ServiceContext): void {
  const st = s();
  const m = frame.message;
  const fail = (code: string, message: string): void => ctx.channel.fail(frame, code, message);
  if (!st.loggedIn || !st.token) return fail("token.not_logged_in", "CA token not available: not logged in");
  if (Date.now() > m.deadline) return fail("request.expired", "request expired before it could be signed");
  try {
    checkRsaPublicKey(m.publicKey as Buffer, ctx.config.MIN_KEY_BITS);
    const user = splitUsername(m.username);
    const subject = buildSubject(st.dn, user.name);
    const lifetime = clampLifetime(m.proxyLifetime, m.maxCertLifetime, ctx.config.MAX_LIFETIME);
    const now = Date.now();
    const notBefore = new Date(Math.floor(now / 1000) * 1000); // the template backdates for clock skew
    const notAfter = new Date(Math.floor(now / 1000) * 1000 + lifetime * 1000);
    const serial = st.db.newSerial();
    const tbs = st.template.tbs({ serial, subjectDer: subject.der, publicKey: m.publicKey as Buffer, emails: user.emails, notBefore, notAfter });
    let signature: Buffer;
    try {
      signature = st.token.sign(tbs);
    } catch (err) {
      const e = tokenFailure(ctx, err, "signing");
      return fail(e.code, `CA token not available: ${e.message}`);
    }
    const certificate = assembleCertificate(tbs, signature);
    st.db.record({ serial, notAfter, subject: subject.slash, certificate });
    const serialHex = serial.toString("hex").toUpperCase();
    ctx.log.info("issued", { serial: serialHex, subject: subject.slash, lifetime, info: user.info, emails: user.emails.join(" ") });
    ctx.channel.reply(frame, "issued", { requestId: m.requestId, serial: serialHex, certificate, notAfter: notAfter.getTime(), subject: subject.slash });
  } catch (err) {
    if (err instanceof RequestError) return fail(err.code, err.message);
    ctx.log.error("issuing failed", { error: describeError(err) });
    return fail(errorCode(err), `the CA could not sign the request: ${describeError(err)}`);
  }
}

function revoke(frame: Frame<"revoke">, ctx: ServiceContext): void {
  const st = s();
  const list: { serialHex: string; reason: Parameters<CaDatabase["revoke"]>[0][number]["reason"]; revokedAt: Date; queueFile: string }[] = [];
  const results: { queueFile: string; serial: string; applied: boolean; message: string }[] = [];
  for (const e of frame.message.entries) {
    const serial = String(e.serial ?? "").toUpperCase();
    const reason = String(e.reason ?? "unspecified");
    const queueFile = String(e.queueFile ?? "");
    if (!/^[0-9A-F]{2,64}$/.test(serial) || !isRevocationReason(reason)) {
      results.push({ queueFile, serial, applied: false, message: `invalid revocation entry (serial ${JSON.stringify(serial.slice(0, 70))}, reason ${JSON.stringify(reason.slice(0, 40))})` });
      continue;
    }
    const at = Number(e.queuedAt ?? 0);
    list.push({ serialHex: serial, reason, revokedAt: new Date(at > 0 && at <= Date.now() ? at : Date.now()), queueFile });
  }
  const outcome = list.length ? st.db.revoke(list) : [];
  outcome.forEach((o, i) => {
    const entry = list[i]!;
    const applied = o.result === "revoked" || o.result === "already-revoked";
    if (o.result === "revoked") ctx.log.notice("revoked", { serial: o.serialHex, reason: entry.reason });
    results.push({
      queueFile: entry.queueFile,
      serial: o.serialHex,
      applied,
      message: o.result === "unknown" ? `serial ${o.serialHex} is not in the CA database` : o.result,
    });
  });
  ctx.channel.reply(frame, "revokeResults", { results });
}

function makeCrl(frame: Frame<"makeCrl">, ctx: ServiceContext): void {
  const st = s();
  if (!st.loggedIn || !st.token) return ctx.channel.fail(frame, "token.not_logged_in", "no CRL without the PIN: not logged in");
  const token = st.token;
  try {
    const info = st.crls.publish(st.db, ctx.config.CRL_LIFETIME, (tbs) => {
      try {
        return token.sign(tbs);
      } catch (err) {
        throw tokenFailure(ctx, err, "signing the CRL");
      }
    });
    ctx.log.notice("CRL published", { number: info.number, entries: info.entries, path: info.path });
    ctx.channel.reply(frame, "crlInfo", info);
  } catch (err) {
    ctx.log.error("CRL generation failed", { error: describeError(err) });
    ctx.channel.fail(frame, errorCode(err), describeError(err));
  }
}

function status(frame: Frame<"getSignerStatus">, ctx: ServiceContext): void {
  const st = s();
  const latest = st.crls.latest();
  ctx.channel.reply(frame, "signerStatus", {
    certificates: st.db.size,
    revoked: st.db.revokedCount,
    latestCrl: latest ?? { number: 0, thisUpdate: 0, nextUpdate: 0, entries: 0, path: "" },
    loggedIn: st.loggedIn !== undefined,
    tokenSerial: st.loggedIn?.serial ?? "",
    tokenLabel: st.loggedIn?.label ?? "",
  });
}
