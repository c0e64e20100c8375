// The grammar of the wire contract in etoken_ca.proto: the named value rules every process
// applies (the client, the spool, the kernel, the signer, revoke-cert import them; none restates
// a limit), and one validator per message type, run by the channel on every frame it receives
// (services/common/channel.ts). A frame that breaks its validator is handled exactly as a frame
// that does not decode: a protocol violation, the sender is killed.
//
// Light on purpose: etoken-ca-client loads this on every MyProxy logon, so it imports only
// types from the generated code (erased at compile time) and the reason names.
import type { Message, MessageType } from "./wire.js";
import { isRevocationReason, reasonProblem } from "../services/common/reasons.js";

// ---- value rules ------------------------------------------------------------------------------

/** A certificate serial as index.txt writes it: upper-case hex, whole bytes, 1 to 32 of them. */
export const SERIAL = /^(?:[0-9A-F]{2}){1,32}$/;
export function serialProblem(serial: string): string | undefined {
  return SERIAL.test(serial) ? undefined : `serial ${JSON.stringify(serial.slice(0, 70))} is not upper-case hex of 1 to 32 whole bytes (index.txt form, e.g. 0A1B)`;
}

/** A request id: the spool file's basename, req.<random>. */
export const REQUEST_ID = /^req\.[A-Za-z0-9]{8,32}$/;
/** A revoke queue entry's name in REVOKE_DIR: rev.<ms since epoch>.<random>. */
export const REVOKE_ENTRY_NAME = /^rev\.[0-9]{13}\.[A-Za-z0-9]{8,32}$/;

/**
 * Longest username (bytes, UTF-8), MyProxy's email=/info: suffixes included: the one limit that
 * the client, the spool, the kernel and the signer apply. A DN-suffix username with a few
 * 64-character RDNs, some addresses and an info: suffix fits.
 */
export const MAX_USERNAME_BYTES = 1024;
/** The username rules that do not depend on DN_FORMAT; returns an error text or undefined. */
export function usernameProblem(username: string): string | undefined {
  if (username === "" || username === "NULL") return "empty username";
  if (Buffer.byteLength(username, "utf8") > MAX_USERNAME_BYTES) return `username longer than ${MAX_USERNAME_BYTES} bytes`;
  if (/[\x00-\x1f\x7f]/.test(username)) return "control character in the username";
  if (username.includes("\uFFFD")) return "username is not valid UTF-8";
  return undefined;
}

/** Largest certificate request (DER or PEM) anyone reads. */
export const MAX_CSR_BYTES = 64 * 1024;
/** Largest SubjectPublicKeyInfo the kernel moves (RSA 16384 fits). */
export const MAX_PUBLIC_KEY_BYTES = 8192;
/** Lifetimes above this (10 years, in seconds) are absurd, not a request to clamp. */
export const MAX_LIFETIME_SECONDS = 10 * 366 * 24 * 3600;
/** The longest PIN the console reads and a Login carries. */
export const MAX_PIN_BYTES = 128;
/** Token serial numbers and labels (PKCS#11: 16 and 32 characters; slack for USB descriptors). */
export const MAX_TOKEN_TEXT = 64;
/** Every PinFlag bit (etoken_ca.proto enum PinFlag). */
export const PIN_FLAG_BITS = 1 | 2 | 4 | 8;
/** TokenPresence values (etoken_ca.proto enum TokenPresence). */
export const TOKEN_PRESENCE_VALUES: readonly number[] = [0, 1, 2];
/** The longest reason a service gives the kernel for its exit (Failure before exit 78). */
export const MAX_REASON = 400;
/** More serials than this in one ConfirmDelivery or SettleUndelivered is not a kernel talking. */
export const MAX_SERIALS_PER_MESSAGE = 100_000;
/** Who revoked, for the audit trail (RevokeEntry.origin). */
export const REVOCATION_ORIGINS = ["revoke-queue", "presence-fence", "undelivered"] as const;
export type RevocationOrigin = (typeof REVOCATION_ORIGINS)[number];
/** What the kernel tells the signer about the token for the audit trail (TokenAudit.event). */
export const TOKEN_AUDIT_EVENTS = ["inserted", "removed", "refused", "replaced"] as const;
/** The longest detail of a TokenAudit (the monitor's words). */
export const MAX_TOKEN_AUDIT_DETAIL = 300;
/** Largest number of revoke queue entries applied per pass (the rest comes with the next pass). */
export const MAX_QUEUE_ENTRIES = 1000;
/** ServiceWarning: the message is shown on the console as one line. */
export const MAX_SERVICE_WARNING = 400;
/** The ServiceWarning codes there are. The kernel shows each once per run: a table, so that a service cannot make up new ones to flood the console. */
export const SERVICE_WARNING_CODES: readonly string[] = ["spool.no_watch"];

// ---- timing the processes agree on ------------------------------------------------------------

/** After its deadline the client still waits this long for a certificate signed in time. */
export const DELIVERY_GRACE_MS = 5_000;
/**
 * A deadline further than CLIENT_TIMEOUT + this into the future is refused (clock skew slack):
 * by the spool in a request file, by the kernel in an issueRequest (whose timers follow it).
 */
export const DEADLINE_SLACK_MS = 60_000;
/**
 * How long after a `delivered` the kernel still accepts an `undelivered` for the same request
 * (services/kernel/handouts.ts): a client that refuses the result it found makes the spool
 * report it so.
 */
export const UNDELIVERED_ACCEPTED_MS = 60_000;
/**
 * How long after publishing a result the spool watches for the client's refusal: short enough
 * that its report reaches the kernel while the kernel still accepts it.
 */
export const REFUSAL_WATCH_MS = UNDELIVERED_ACCEPTED_MS - 10_000;

// ---- one validator per message type ----------------------------------------------------------

type Problem = string | undefined;
export type Validators = { readonly [T in MessageType]: (m: Message<T>) => Problem };

/** 64-bit fields travel as plain numbers below 2^53 (milliseconds, epochs, counters). */
function u64(name: string, v: number): Problem {
  return Number.isSafeInteger(v) && v >= 0 ? undefined : `${name} ${String(v)} is not a whole number below 2^53`;
}
const text = (name: string, v: string, max: number): Problem => (v.length > max ? `${name} longer than ${max} characters` : undefined);
const first = (...problems: Problem[]): Problem => problems.find((p) => p !== undefined);
const requestId = (v: string): Problem => (REQUEST_ID.test(v) ? undefined : `request id ${JSON.stringify(v.slice(0, 40))} is not req.<8 to 32 letters or digits>`);
const serials = (what: string, list: readonly string[]): Problem =>
  list.length > MAX_SERIALS_PER_MESSAGE ? `${list.length} ${what} serials, more than ${MAX_SERIALS_PER_MESSAGE}` : first(...list.map((s) => serialProblem(s)));
const reason = (v: string): Problem => (isRevocationReason(v) ? undefined : reasonProblem(v));
const crlInfo = (c: Message<"crlInfo">): Problem => first(u64("CRL number", c.number), u64("thisUpdate", c.thisUpdate), u64("nextUpdate", c.nextUpdate));
const tokenText = (serial: string, label: string): Problem => first(text("token serial", serial, MAX_TOKEN_TEXT), text("token label", label, MAX_TOKEN_TEXT));
/** A C_Sign duration (ms): 0 from a kernel's own answer to the spool, at most a day from a signer. */
const signMs = (v: number): Problem => (Number.isFinite(v) && v >= 0 && v <= 86_400_000 ? undefined : `sign time ${String(v)} ms is not between 0 and a day`);
const pinFlags = (v: number): Problem => ((v & ~PIN_FLAG_BITS) === 0 ? undefined : `PIN flags ${v} hold unknown bits`);

/** Notify (kernel -> notifier): what a hook's environment and a mail may carry. */
export const NOTIFY_EVENT = /^[a-z][a-z0-9-]{0,40}$/;
export const NOTIFY_DETAIL_KEY = /^[a-z][a-z0-9_]{0,31}$/;
/** Keys that would collide with ETOKEN_EVENT / ETOKEN_MESSAGE. */
export const NOTIFY_RESERVED_KEYS: readonly string[] = ["event", "message"];
export const MAX_NOTIFY_MESSAGE = 1000;
export const MAX_NOTIFY_DETAILS = 32;
export const MAX_NOTIFY_DETAIL_VALUE = 4096;
const noNul = (name: string, v: string): Problem => (v.includes("\0") ? `NUL byte in ${name}` : undefined);
const notify = (m: Message<"notify">): Problem => {
  if (!NOTIFY_EVENT.test(m.event)) return `event name ${JSON.stringify(m.event.slice(0, 60))} does not match ${NOTIFY_EVENT.source}`;
  const details = Object.entries(m.details ?? {});
  return first(
    text("message", m.message, MAX_NOTIFY_MESSAGE),
    noNul("the message", m.message),
    details.length > MAX_NOTIFY_DETAILS ? `${details.length} details, more than ${MAX_NOTIFY_DETAILS}` : undefined,
    ...details.map(([key, value]) =>
      !NOTIFY_DETAIL_KEY.test(key) || NOTIFY_RESERVED_KEYS.includes(key)
        ? `detail key ${JSON.stringify(key.slice(0, 40))} does not match ${NOTIFY_DETAIL_KEY.source} or is reserved`
        : first(text(`detail ${key}`, value, MAX_NOTIFY_DETAIL_VALUE), noNul(`detail ${key}`, value)),
    ),
  );
};

export const VALIDATORS: Validators = {
  hello: (m) => text("service name", m.service, 32),
  ping: (m) => u64("nonce", m.nonce),
  pong: (m) => u64("nonce", m.nonce),
  shutdown: () => undefined,
  ack: () => undefined,
  failure: (m) => text("failure code", m.code, 64),
  issueRequest: (m) =>
    first(
      requestId(m.requestId),
      usernameProblem(m.username),
      m.proxyLifetime > MAX_LIFETIME_SECONDS || m.maxCertLifetime > MAX_LIFETIME_SECONDS ? `absurd lifetime (more than ${MAX_LIFETIME_SECONDS} s)` : undefined,
      m.publicKey.length === 0 || m.publicKey.length > MAX_PUBLIC_KEY_BYTES ? `invalid public key size ${m.publicKey.length} (1 to ${MAX_PUBLIC_KEY_BYTES} bytes)` : undefined,
      m.csr.length > MAX_CSR_BYTES ? `invalid CSR size ${m.csr.length} (at most ${MAX_CSR_BYTES} bytes)` : undefined,
      u64("deadline", m.deadline) ?? (m.deadline === 0 ? "invalid deadline 0" : undefined),
      u64("fence epoch", m.fenceEpoch),
    ),
  issued: (m) =>
    first(
      requestId(m.requestId),
      serialProblem(m.serial),
      m.certificate.length === 0 ? "empty certificate" : undefined,
      u64("notAfter", m.notAfter),
      signMs(m.signMs),
      u64("confirmedThrough", m.confirmedThrough),
    ),
  presenceCheck: (m) => u64("epoch", m.epoch),
  presence: (m) => first(u64("epoch", m.epoch), tokenText(m.serial, m.label)),
  undelivered: (m) => first(requestId(m.requestId), serialProblem(m.serial)),
  requestRejected: () => undefined, // names what the spool refused: any text, logged cut short
  signed: (m) => (m.crl ? (m.requestId === "" ? undefined : "a CRL's Signed names a request id") : requestId(m.requestId)),
  withdrawn: (m) => requestId(m.requestId),
  delivered: (m) => requestId(m.requestId),
  confirmDelivery: (m) => first(serials("confirmDelivery", m.serials), u64("batch", m.batch) ?? (m.batch === 0 ? "batch 0 (batches count from 1)" : undefined)),
  settleUndelivered: (m) => serials("settleUndelivered", m.inFlight),
  undeliveredRevoked: (m) => first(serials("undeliveredRevoked", m.serials), reason(m.reason)),
  login: (m) => first(m.pin.length > MAX_PIN_BYTES ? `PIN longer than ${MAX_PIN_BYTES} bytes` : undefined, text("expected token serial", m.expectedSerial, MAX_TOKEN_TEXT)),
  loginResult: (m) => first(tokenText(m.tokenSerial, m.tokenLabel), pinFlags(m.pinFlags)),
  logout: () => undefined,
  signerFault: () => undefined,
  tokenEvent: (m) =>
    first(
      u64("epoch", m.epoch) ?? (m.epoch === 0 ? "epoch 0 (epochs count from 1)" : undefined),
      TOKEN_PRESENCE_VALUES.includes(m.presence) ? undefined : `unknown presence ${m.presence}`,
      tokenText(m.serial, m.label),
      pinFlags(m.pinFlags),
    ),
  revoke: (m) =>
    m.entries.length > MAX_QUEUE_ENTRIES
      ? `${m.entries.length} revocations, more than ${MAX_QUEUE_ENTRIES}`
      : first(
          ...m.entries.map(({ queueFile = "", serial = "", reason: why = "", queuedAt = 0, origin = "" }) =>
            first(
              queueFile === "" || REVOKE_ENTRY_NAME.test(queueFile ?? "") ? undefined : `queue file ${JSON.stringify(String(queueFile).slice(0, 60))} is not rev.<ms>.<random>`,
              serialProblem(serial ?? ""),
              reason(why ?? ""),
              u64("queuedAt", queuedAt ?? 0),
              (REVOCATION_ORIGINS as readonly string[]).includes(origin ?? "") ? undefined : `origin ${JSON.stringify(String(origin).slice(0, 40))} is not one of ${REVOCATION_ORIGINS.join(", ")}`,
            ),
          ),
        ),
  tokenAudit: (m) =>
    first(
      (TOKEN_AUDIT_EVENTS as readonly string[]).includes(m.event) ? undefined : `token event ${JSON.stringify(m.event.slice(0, 40))} is not one of ${TOKEN_AUDIT_EVENTS.join(", ")}`,
      tokenText(m.serial, m.label),
      text("detail", m.detail, MAX_TOKEN_AUDIT_DETAIL),
    ),
  revokeResults: (m) => (m.results.length > MAX_QUEUE_ENTRIES ? `${m.results.length} results, more than ${MAX_QUEUE_ENTRIES}` : undefined),
  makeCrl: () => undefined,
  crlInfo,
  getSignerStatus: () => undefined,
  signerStatus: (m) => first(m.latestCrl ? crlInfo(m.latestCrl as Message<"crlInfo">) : undefined, tokenText(m.tokenSerial, m.tokenLabel)),
  // the kernel fits what it sends into this (kernel.ts notify): only a kernel bug breaks it
  notify,
  hookFailed: () => undefined,
  serviceWarning: (m) => first(SERVICE_WARNING_CODES.includes(m.code) ? undefined : `warning code ${JSON.stringify(m.code.slice(0, 40))} is not one of ${SERVICE_WARNING_CODES.join(", ")}`, text("message", m.message, MAX_SERVICE_WARNING)),
};

/** Why a decoded message breaks the contract, or undefined. */
export function contractProblem<T extends MessageType>(type: T, message: Message<T>): Problem {
  const problem = (VALIDATORS[type] as (m: Message<T>) => Problem)(message);
  return problem === undefined ? undefined : `${type} failed validation: ${problem}`;
}
