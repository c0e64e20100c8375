// The signer (user SIGNER_USER): the logged-in token session, the CA database and the CRLs.
// It re-validates everything the kernel forwards: the kernel moves bytes, it does not vouch.
// Signing itself is done by the backend SIGNER_BACKEND chooses (backend.ts): the native
// pkcs11js path or `openssl ca` through the PKCS#11 engine; the checks here are the same.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Frame } from "../../proto/wire.js";
import { dnTemplateOf } from "../common/config.js";
import { describeError, errorCode, RequestError, TokenError } from "../common/errors.js";
import { singleFlight } from "../common/single-flight.js";
import type { RevocationReason } from "../common/reasons.js";
import { runService, unhandled, type ServiceContext } from "../common/service.js";
import type { SigningBackend } from "./backend.js";
import { CaDatabase } from "./cadb.js";
import { DeliveryJournal } from "./delivery-journal.js";
import { buildSubject, splitUsername, type DnTemplate } from "../common/x509/dn.js";
import { clampLifetime } from "./profile.js";
import { loadCaCertificate } from "../common/x509/certificate.js";
import { CrlPublisher } from "./crl-publisher.js";
import { NativeBackend } from "./native-backend.js";
import { logFrameTaken } from "./frame-log.js";
import { provenPublicKey } from "./possession.js";
import { AuditLog } from "./audit-log.js";
import { REVOKED_BY, type ChainHead } from "../common/audit/trail.js";
import type { RevocationOrigin } from "../../proto/contract.js";
import { oneLine } from "../common/spool-protocol.js";

interface SignerState {
  backend: SigningBackend;
  dn: DnTemplate;
  journal: DeliveryJournal;
  /** CA_CERT's key as a canonical SubjectPublicKeyInfo: never certified for a request */
  caSpki: Buffer;
  /** the audit trail (AUDIT_LOG) */
  audit: AuditLog;
}

let state: SignerState | undefined;
/** ConfirmDelivery batches: received from the kernel, and written to the journal through `through`. */
const confirmations = { pending: [] as string[], received: 0, through: 0 };

function s(): SignerState {
  if (!state) throw new Error("signer not initialised");
  return state;
}

await runService("signer", {
  async start(ctx) {
    const c = ctx.config;
    const ca = loadCaCertificate(fs.readFileSync(c.CA_CERT), c.CA_CERT);
    const db = CaDatabase.open(c.CA_DIR, { create: true });
    const bctx = { config: c, log: ctx.log, ca, db, crls: new CrlPublisher(c.CRL_DIR, ca) };
    // loaded only when chosen: it brings execa, ~14 MiB that the native signer does not need
    const backend: SigningBackend = c.SIGNER_BACKEND === "openssl" ? new (await import("./openssl-backend.js")).OpensslBackend(bctx) : new NativeBackend(bctx);
    const journal = DeliveryJournal.open(db);
    const audit = openAudit(c, db);
    state = { backend, dn: dnTemplateOf(c), journal, caSpki: ca.publicKey.export({ type: "spki", format: "der" }), audit };
    const recovered = audit.recoverFromIndex(db);
    if (recovered) ctx.log.warning("audit trail: lines recovered from index.txt (the signer had stopped before writing them)", { recovered });
    audit.append("signer-start", { backend: backend.name, ca: ca.subjectSlash, certificates: db.size, revoked: db.revokedCount, recovered }, { sync: true });
    const unconfirmed = journal.toSettle(new Set()).length;
    ctx.log.info("signer ready", { certificates: db.size, revoked: db.revokedCount, ca: ca.subjectSlash, backend: backend.name, unconfirmedDeliveries: unconfirmed });
  },

  accepts: ["login", "logout", "issueRequest", "revoke", "makeCrl", "getSignerStatus", "confirmDelivery", "settleUndelivered", "tokenAudit"],
  dispatch(frame, ctx) {
    logFrameTaken(ctx.log, frame);
    switch (frame.type) {
      case "login":
        return login(frame, ctx);
      case "logout":
        logout(ctx, frame.message.reason);
        ctx.channel.reply(frame, "ack", {});
        return;
      case "issueRequest":
        return issue(frame, ctx);
      case "revoke":
        return revoke(frame, ctx);
      case "makeCrl":
        return makeCrl(frame, ctx);
      case "getSignerStatus":
        return status(frame, ctx);
      case "confirmDelivery":
        return confirmDelivery(frame, ctx);
      case "settleUndelivered":
        return settleUndelivered(frame, ctx);
      case "tokenAudit":
        return tokenAudit(frame, ctx);
      default:
        unhandled(frame);
    }
  },

  stop(ctx) {
    logout(ctx, "stopping");
    // confirmations that came with the Shutdown and wait for their turn: written now
    if (confirmations.pending.length > 0) {
      try {
        state?.journal.confirm(confirmations.pending.splice(0));
      } catch (err) {
        ctx.log.error("cannot record delivered certificates at stop", { error: describeError(err) });
      }
    }
    state?.backend.close();
    state?.journal.close();
    state?.audit.close();
  },
});

/** Opens AUDIT_LOG (its directory is made by the kernel; made here when the signer runs alone). */
function openAudit(c: ServiceContext<"signer">["config"], db: CaDatabase): AuditLog {
  try {
    fs.mkdirSync(path.dirname(c.AUDIT_LOG), { recursive: true, mode: 0o700 });
  } catch {
    // AuditLog.open names the problem
  }
  const audit = AuditLog.open(c.AUDIT_LOG, { rotateBytes: c.AUDIT_ROTATE_SIZE > 0 ? c.AUDIT_ROTATE_SIZE : Number.POSITIVE_INFINITY });
  if (audit.isNew) {
    const note = db.size ? `index.txt's first ${db.size} lines predate the trail` : "the trail begins with the CA database";
    audit.append("trail-begin", { indexLines: db.size, note }, { sync: true });
  }
  return audit;
}

/**
 * An audit line the request's outcome depends on: when it cannot be written the error is logged
 * and thrown on (the caller fails the request; the certificate is withheld and, never confirmed
 * delivered, revoked at the signer's next start).
 */
function audited(ctx: ServiceContext<"signer">, write: () => void): void {
  try {
    write();
  } catch (err) {
    ctx.log.error("cannot write the audit trail", { error: describeError(err) });
    throw err;
  }
}

async function login(frame: Frame<"login">, ctx: ServiceContext<"signer">): Promise<void> {
  const pin = frame.message.pin as Buffer;
  const expectedSerial = frame.message.expectedSerial;
  const st = s();
  let outcome;
  try {
    if (st.backend.loggedIn) logout(ctx, "new login");
    outcome = await st.backend.login(pin, expectedSerial);
  } finally {
    pin.fill(0);
  }
  if (outcome.ok) {
    const t = outcome.token;
    ctx.log.notice("logged in to the token; key matches the CA certificate", { serial: t.serial, label: t.label, backend: st.backend.name });
    auditQuietly(ctx, "login", {
      tokenSerial: t.serial,
      tokenLabel: t.label,
      backend: st.backend.name,
      keyMatch: "the token key signed a random challenge; the signature verified with CA_CERT's public key",
      caKeySha256: createHash("sha256").update(st.caSpki).digest("hex"),
    });
    ctx.channel.reply(frame, "loginResult", { ok: true, code: "", message: "", tokenSerial: t.serial, tokenLabel: t.label, pinFlags: t.pinFlags });
  } else {
    const e = outcome.error;
    ctx.log.warning("login failed", { code: e.code, message: e.message });
    auditQuietly(ctx, "login-failed", { expectedSerial, code: e.code, message: e.message });
    ctx.channel.reply(frame, "loginResult", { ok: false, code: e.code, message: e.message, tokenSerial: "", tokenLabel: "", pinFlags: outcome.pinFlags });
  }
}

function logout(ctx: ServiceContext<"signer">, reason: string | null | undefined): void {
  const st = state;
  if (!st?.backend.loggedIn) return;
  st.backend.logout();
  ctx.log.notice("logged out of the token", { reason: String(reason ?? "").slice(0, 200) });
  auditQuietly(ctx, "logout", { reason: oneLine(String(reason ?? ""), 200) });
}

/** A token error during signing: tell the kernel when the device is gone. */
function reportTokenFailure(ctx: ServiceContext<"signer">, e: TokenError): void {
  if (e.deviceLost) ctx.channel.send("signerFault", { code: e.code, message: e.message, deviceLost: true });
}

async function issue(frame: Frame<"issueRequest">, ctx: ServiceContext<"signer">): Promise<void> {
  const st = s();
  const m = frame.message;
  const fail = (code: string, message: string): void => ctx.channel.fail(frame, code, message);
  if (!st.backend.loggedIn) return fail("token.not_logged_in", "CA token not available: not logged in");
  if (Date.now() > m.deadline) return fail("request.expired", "request expired before it could be signed");
  try {
    const publicKey = provenPublicKey(m.csr, m.publicKey, st.caSpki, ctx.config.MIN_KEY_BITS);
    const user = splitUsername(m.username);
    const subject = buildSubject(st.dn, user.name);
    const lifetime = clampLifetime(m.proxyLifetime, m.maxCertLifetime, ctx.config.MAX_LIFETIME);
    let out;
    try {
      out = await st.backend.issue({
        subject,
        publicKey,
        csr: Buffer.from(m.csr.buffer, m.csr.byteOffset, m.csr.length), // a view: only the openssl backend reads it
        emails: user.emails,
        lifetimeSeconds: lifetime,
        // the fence and the kernel's watchdog start on Signed: it must not wait behind the token's
        // next job, which may run (synchronously) before this turn's held frames are written
        onSigned: () => {
          ctx.channel.send("signed", { requestId: m.requestId });
          ctx.channel.flush();
        },
      });
    } catch (err) {
      if (err instanceof TokenError) {
        reportTokenFailure(ctx, err);
        return fail(err.code, `CA token not available: ${err.message}`);
      }
      throw err;
    }
    audited(ctx, () =>
      st.audit.append("issued", {
        serial: out.serialHex,
        subject: out.subjectSlash,
        emails: user.emails,
        info: user.info,
        lifetime,
        notAfter: out.notAfter.toISOString(),
        username: m.username,
        clientUid: m.clientUid,
        requestId: m.requestId,
        requestedAt: new Date(Number(m.deadline) - ctx.config.CLIENT_TIMEOUT).toISOString(),
        keySha256: createHash("sha256").update(publicKey).digest("hex"),
      }),
    );
    ctx.channel.reply(frame, "issued", {
      requestId: m.requestId,
      serial: out.serialHex,
      certificate: out.certificateDer,
      notAfter: out.notAfter.getTime(),
      subject: out.subjectSlash,
      signMs: out.signMs,
      confirmedThrough: confirmations.through,
    });
    ctx.log.info("issued", { serial: out.serialHex, subject: out.subjectSlash, lifetime, info: user.info, emails: user.emails.join(" ") });
  } catch (err) {
    if (err instanceof RequestError) return fail(err.code, err.message);
    ctx.log.error("issuing failed", { error: describeError(err) });
    return fail(errorCode(err), `the CA could not sign the request: ${describeError(err)}`);
  }
}

async function revoke(frame: Frame<"revoke">, ctx: ServiceContext<"signer">): Promise<void> {
  const st = s();
  const list: { serialHex: string; reason: Parameters<CaDatabase["revoke"]>[0][number]["reason"]; revokedAt: Date; queueFile: string; by: string }[] = [];
  const results: { queueFile: string; serial: string; applied: boolean; message: string }[] = [];
  // serials, reasons and queue names were checked against the contract on receipt (proto/contract.ts)
  for (const e of frame.message.entries) {
    const serial = String(e.serial);
    const reason = e.reason as RevocationReason;
    const queueFile = String(e.queueFile ?? "");
    const origin = e.origin as RevocationOrigin;
    const at = Number(e.queuedAt ?? 0);
    const by = `${REVOKED_BY[origin]}${queueFile ? `: ${queueFile}` : ""}`;
    list.push({ serialHex: serial, reason, revokedAt: new Date(at > 0 && at <= Date.now() ? at : Date.now()), queueFile, by });
  }
  const outcome = list.length ? await st.backend.exclusive((db) => db.revoke(list)) : [];
  outcome.forEach((o, i) => {
    const entry = list[i]!;
    const applied = o.result === "revoked" || o.result === "already-revoked";
    if (o.result === "revoked") {
      ctx.log.notice("revoked", { serial: o.serialHex, reason: entry.reason });
      auditQuietly(ctx, "revoked", { serial: o.serialHex, reason: entry.reason, revokedAt: entry.revokedAt.toISOString(), by: entry.by }, false);
    }
    results.push({
      queueFile: entry.queueFile,
      serial: o.serialHex,
      applied,
      message: o.result === "unknown" ? `serial ${o.serialHex} is not in the CA database` : o.result,
    });
  });
  if (outcome.length) auditQuietly(ctx, undefined, {});
  ctx.channel.reply(frame, "revokeResults", { results });
}

async function makeCrl(frame: Frame<"makeCrl">, ctx: ServiceContext<"signer">): Promise<void> {
  const st = s();
  if (!st.backend.loggedIn) return ctx.channel.fail(frame, "token.not_logged_in", "no CRL without the PIN: not logged in");
  try {
    let head: ChainHead | undefined;
    // reported at once, as a certificate's Signed: this handler's answer comes after an await, and
    // a certificate read in the same chunk would be signed (synchronously) before it, which the
    // kernel's watchdog would count as the CRL's time
    const onSigned = (): void => {
      ctx.channel.send("signed", { requestId: "", crl: true });
      ctx.channel.flush();
    };
    const info = await st.backend.makeCrl(ctx.config.CRL_LIFETIME, () => (head = st.audit.checkpoint()), onSigned);
    ctx.log.notice("CRL published", { number: info.number, entries: info.entries, path: info.path });
    auditQuietly(ctx, "crl", {
      number: info.number,
      entries: info.entries,
      thisUpdate: new Date(info.thisUpdate).toISOString(),
      nextUpdate: new Date(info.nextUpdate).toISOString(),
      file: path.basename(info.path),
      checkpoint: head,
      reason: oneLine(String(frame.message.reason ?? ""), 200),
    });
    ctx.channel.reply(frame, "crlInfo", info);
  } catch (err) {
    if (err instanceof TokenError) reportTokenFailure(ctx, err);
    ctx.log.error("CRL generation failed", { error: describeError(err) });
    ctx.channel.fail(frame, errorCode(err), describeError(err));
  }
}

function status(frame: Frame<"getSignerStatus">, ctx: ServiceContext<"signer">): void {
  const st = s();
  const latest = st.backend.latestCrl();
  const db = st.backend.database();
  const loggedIn = st.backend.loggedIn;
  ctx.channel.reply(frame, "signerStatus", {
    certificates: db.size,
    revoked: db.revokedCount,
    latestCrl: latest ?? { number: 0, thisUpdate: 0, nextUpdate: 0, entries: 0, path: "" },
    loggedIn: loggedIn !== undefined,
    tokenSerial: loggedIn?.serial ?? "",
    tokenLabel: loggedIn?.label ?? "",
  });
}

/**
 * The kernel confirms that these certificates reached their clients. No answer (that was a
 * wake-up of the kernel per batch): the next Issued says how far the journal has them
 * (confirmedThrough). A batch that cannot be written stays pending and goes with the next one;
 * the kernel keeps its deliveries until then and sends them again to a restarted signer.
 */
function confirmDelivery(frame: Frame<"confirmDelivery">, ctx: ServiceContext<"signer">): void {
  confirmations.pending.push(...frame.message.serials); // the contract checked them
  confirmations.received = Math.max(confirmations.received, frame.message.batch);
  // after the frames read with it: an IssueRequest that came in the same write is signed first,
  // and the journal is written while its index line syncs
  recordConfirmations ??= singleFlight(
    () => writeConfirmations(),
    (err) => ctx.log.error("cannot record delivered certificates; tried again with the next confirmation", { error: describeError(err) }),
  );
  setImmediate(recordConfirmations);
}

let recordConfirmations: (() => void) | undefined;

/** Appends the pending confirmations to the journal; confirmedThrough moves only past what is written. */
async function writeConfirmations(): Promise<void> {
  const c = confirmations;
  const serials = c.pending.splice(0);
  const through = c.received;
  try {
    if (serials.length > 0) await s().backend.exclusive(() => s().journal.confirm(serials));
  } catch (err) {
    c.pending.unshift(...serials);
    throw err;
  }
  c.through = Math.max(c.through, through);
}

/**
 * On every signer start: the certificates signed before it and never confirmed delivered are
 * revoked, except those the kernel still has in flight (it settles them itself).
 */
async function settleUndelivered(frame: Frame<"settleUndelivered">, ctx: ServiceContext<"signer">): Promise<void> {
  const st = s();
  const inFlight = new Set(frame.message.inFlight); // the contract checked them
  const reason = ctx.config.UNDELIVERED_REVOKE_REASON as RevocationReason; // the configuration checked it
  try {
    const revoked = await st.backend.exclusive((db) => {
      const list = st.journal.toSettle(inFlight);
      const now = new Date();
      const out = list.length ? db.revoke(list.map((serialHex) => ({ serialHex, reason, revokedAt: now }))) : [];
      st.journal.settled();
      return out.filter((o) => o.result === "revoked").map((o) => o.serialHex);
    });
    for (const serial of revoked) {
      ctx.log.notice("revoked: signed but never confirmed delivered", { serial, reason });
      auditQuietly(ctx, "revoked", { serial, reason, by: "the signer at its start (signed, never confirmed delivered)" }, false);
    }
    auditQuietly(ctx, undefined, {});
    ctx.channel.reply(frame, "undeliveredRevoked", { serials: revoked, reason });
  } catch (err) {
    ctx.log.error("cannot revoke the certificates never confirmed delivered", { error: describeError(err) });
    ctx.channel.fail(frame, errorCode(err), describeError(err));
  }
}

/** The token as the kernel saw it (TokenAudit, checked by the contract), for the audit trail. */
function tokenAudit(frame: Frame<"tokenAudit">, ctx: ServiceContext<"signer">): void {
  const m = frame.message;
  auditQuietly(ctx, "token", { token: m.event, tokenSerial: m.serial, tokenLabel: m.label, detail: oneLine(m.detail, 300) });
}

/**
 * An audit line nothing waits for: a failure is logged (the next append retries the file; a
 * line lost here is recovered from index.txt at the next start). No event: sync what was written.
 */
function auditQuietly(ctx: ServiceContext<"signer">, event: Parameters<AuditLog["append"]>[0] | undefined, fields: Record<string, unknown>, sync = true): void {
  try {
    if (event === undefined) s().audit.sync();
    else s().audit.append(event, fields, { sync });
  } catch (err) {
    ctx.log.error("cannot write the audit trail", { event, error: describeError(err) });
  }
}
