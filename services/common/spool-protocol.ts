// The spool hand-off as data: file names, formats and limits shared by etoken-ca-client (which
// writes requests), the spool service (which reads them and writes results) and revoke-cert
// (which queues revocations). Keep this module free of heavy imports: the client loads it on
// every MyProxy logon.
//
// SPOOL_DIR (SPOOL_USER : CLIENT_USER's group, 2770):
//   req.<random>                  request, written by the client (O_EXCL, 0644, end marker; not fsynced: worthless after a crash)
//   request -> req.<random>       the lock: a fixed-name symlink, made by the client, removed by the spool.
//                                 Clients queue for it with flock(2) on SPOOL_DIR itself (spool-waiter.ts):
//                                 the queue's head alone tries the link, so a release wakes one client;
//                                 the spool neither sees nor takes that flock
//   req.<random>.result           result: PEM certificate, or "error=<code>\n<message>\n"; published by
//                                 the spool with link(2) (atomic, never overwrites), or claimed empty
//                                 by a client that gives up (see below)
//   req.<random>.result.tmp<rnd>  result being written by the spool, only on a file system without
//                                 O_TMPFILE (else it is written unnamed and linked in: no such name)
//   req.<random>.abandoned        the client gave up: the CA must not sign (or deliver) this request
//   aside.<random>                a directory found where the `request` lock belongs, renamed away by
//                                 the spool (which never empties what the client can write)
//
// Who wins the delivery race: the name `req.<random>.result` is created exactly once. The spool
// publishes with link(tmp, result); a client that gives up first creates `.abandoned`, then creates
// the result name itself with O_EXCL. If the client's create fails (EEXIST), the spool was first and
// the client uses the result; if the spool's link fails, the client was first and the spool reports
// the certificate as undelivered (the kernel revokes it). No certificate is ever handed out and
// unrevoked-but-lost, and none is revoked after being handed out.
//
// A client that refuses what it found at the result name (an error, or a certificate that is not
// for its key and username: anyone who can write the spool can plant or replace a result) leaves
// `.abandoned` and the result name taken, as a client that gives up does. If the spool publishes
// later, its link fails as above. If the spool had published already, it is still watching that
// request (REFUSAL_WATCH_MS): a marker that appears while the result name no longer holds the file
// the spool published means its certificate was not delivered, and the spool reports it so (the
// kernel revokes it). A marker next to the spool's own file is a client that gave up (signal)
// just as the result arrived: it uses that result and removes its marker. After a refused error
// result the spool removes marker and result.
//
// REVOKE_DIR (root 0700): rev.<ms>.<random> queue entries, root-owned 0600, written by
// revoke-cert (tmp + fsync + rename), read and, once applied, deleted by the kernel (root) itself.
// No service can reach it; it must not lie inside SPOOL_DIR or any tree CLIENT_USER can write.
import { buildSubject, parseName, splitUsername, type DnTemplate, type SplitUsername } from "./x509/dn.js";
import { children, contextTag, parseDer, TAG } from "./x509/der.js";
import { RequestError } from "./errors.js";
import { pemDecode } from "./x509/pem.js";
import { isRevocationReason, reasonProblem, type RevocationReason } from "./reasons.js";
import { MAX_LIFETIME_SECONDS, REQUEST_ID, REVOKE_ENTRY_NAME, SERIAL, serialProblem, usernameProblem } from "../../proto/contract.js";

// the value rules are the wire contract's (proto/contract.ts): the same for every process
export { DEADLINE_SLACK_MS, DELIVERY_GRACE_MS, MAX_LIFETIME_SECONDS, MAX_REASON, MAX_USERNAME_BYTES, REFUSAL_WATCH_MS, usernameProblem } from "../../proto/contract.js";

export const SPOOL_FORMAT_VERSION = 1;

/** The fixed-name symlink that is the lock. */
export const REQUEST_LINK = "request";
/** A request file name: a plain basename, nothing else (the request id). */
export const REQUEST_NAME = REQUEST_ID;
export const RESULT_SUFFIX = ".result";
export const RESULT_TMP_INFIX = ".result.tmp";
export const ABANDONED_SUFFIX = ".abandoned";
/** Any file the spool protocol puts in SPOOL_DIR (for the sweeper). */
export const SPOOL_FILE = new RegExp(`^${REQUEST_ID.source.slice(1, -1)}(\\.result|\\.result\\.tmp[A-Za-z0-9]{1,32}|\\.abandoned)?$`);
/** Where the spool moves a directory that blocks the lock (never emptied: the client owns its content). */
export const ASIDE_PREFIX = "aside.";
export const ASIDE_NAME = /^aside\.[A-Za-z0-9]{16}$/;
/** Length of the random part the client uses. */
export const REQUEST_RANDOM_CHARS = 16;

export const SPOOL_DIR_MODE = 0o2770;
export const REQUEST_FILE_MODE = 0o644;
export const RESULT_FILE_MODE = 0o640;
export const REVOKE_DIR_MODE = 0o700;
export const REVOKE_FILE_MODE = 0o600;

/** Largest MyProxy input the client accepts on stdin. */
export const MAX_STDIN_BYTES = 64 * 1024;
/** Largest request file the spool reads. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Largest result file the client reads. */
export const MAX_RESULT_BYTES = 64 * 1024;
/** Largest revoke queue entry. */
export const MAX_REVOKE_BYTES = 4 * 1024;

/** Revoke queue entry name: rev.<ms since epoch>.<random>. */
export const REVOKE_NAME = REVOKE_ENTRY_NAME;
/** Refused queue entries are renamed with this prefix (reported once, kept for the operator). */
export const REVOKE_REJECTED_PREFIX = "bad.";

export const END_MARKER = "end";

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** Random [A-Za-z0-9]{n} from the given random bytes source (no modulo bias: 62 * 4 = 248). */
export function randomName(n: number, randomBytes: (size: number) => Uint8Array): string {
  let out = "";
  while (out.length < n) {
    for (const b of randomBytes(n * 2)) {
      if (b < 248 && out.length < n) out += ALNUM[b % 62];
    }
  }
  return out;
}

export const resultName = (requestId: string): string => requestId + RESULT_SUFFIX;
export const abandonedName = (requestId: string): string => requestId + ABANDONED_SUFFIX;

// ---------------------------------------------------------------------------------------------
// MyProxy's stdin (reference/myproxy.md)

export interface IssueFields {
  username: string;
  /** seconds, 0 = not given */
  proxyLifetime: number;
  /** seconds, 0 = unset */
  maxCertLifetime: number;
}

export interface MyproxyInput extends IssueFields {
  /** The PEM CSR text, BEGIN to END line, normalised to \n line ends. */
  csrPem: string;
}

const MYPROXY_KEY = /^[a-z_]{1,64}$/;

/** A malformed input; `message` is one line for stderr or a result file. */
export class FormatError extends RequestError {}

function lifetime(name: string, value: string, fail: (m: string) => never): number {
  if (value === "NULL" || value === "") return 0;
  if (!/^(0|[1-9][0-9]{0,9})$/.test(value)) fail(`${name}=${JSON.stringify(value.slice(0, 40))}: expected a whole number of seconds`);
  const n = Number(value);
  if (n > MAX_LIFETIME_SECONDS) fail(`${name}=${value}: more than ${MAX_LIFETIME_SECONDS} seconds is not a plausible lifetime`);
  return n;
}

const PASSPHRASE_PREFIX = Buffer.from("passphrase=");

/**
 * Overwrites the value of the passphrase line with '*' bytes, in `input` itself, before anything
 * is decoded: the passphrase never becomes a JavaScript string, which could not be wiped. Only
 * the key=value lines before the first empty line are looked at.
 */
function blankPassphrase(input: Buffer): void {
  for (let start = 0; start < input.length; ) {
    let lf = input.indexOf(10, start);
    if (lf === -1) lf = input.length;
    const end = lf > start && input[lf - 1] === 13 ? lf - 1 : lf;
    if (end === start) return; // the empty line: the CSR follows
    if (end - start >= PASSPHRASE_PREFIX.length && input.compare(PASSPHRASE_PREFIX, 0, PASSPHRASE_PREFIX.length, start, start + PASSPHRASE_PREFIX.length) === 0) {
      input.fill(0x2a, start + PASSPHRASE_PREFIX.length, end);
    }
    start = lf + 1;
  }
}

/**
 * Parses what MyProxy writes on the callout's stdin. Keeps username, proxy_lifetime and
 * max_cert_lifetime; every other key is dropped right here and never copied anywhere. The
 * passphrase's bytes in `input` are overwritten first (blankPassphrase).
 */
export function parseMyproxyInput(input: Buffer): MyproxyInput {
  const fail = (m: string): never => {
    throw new FormatError("bad_input", m);
  };
  if (input.length === 0) fail("empty input on stdin (expected MyProxy's key=value lines, an empty line and a PEM CSR)");
  if (input.length > MAX_STDIN_BYTES) fail(`input on stdin larger than ${MAX_STDIN_BYTES} bytes`);
  if (input.includes(0)) fail("NUL byte in the input on stdin");
  blankPassphrase(input);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(input);
  } catch {
    return fail("input on stdin is not valid UTF-8");
  }
  text = text.replace(/\r\n/g, "\n");
  if (text.includes("\r")) fail("stray carriage return in the input on stdin");
  const sep = text.indexOf("\n\n");
  if (sep < 0) fail("no empty line between the key=value lines and the CSR");
  const header = text.slice(0, sep).split("\n");
  const seen = new Set<string>();
  let username: string | undefined;
  let proxyLifetime = 0;
  let maxCertLifetime = 0;
  for (const [i, line] of header.entries()) {
    const eq = line.indexOf("=");
    const key = eq > 0 ? line.slice(0, eq) : "";
    // the value is never quoted: it may be a secret (this message reaches MyProxy's log)
    if (!MYPROXY_KEY.test(key)) fail(`line ${i + 1}: expected key=value with a lower-case key, found ${eq > 0 ? `key ${JSON.stringify(line.slice(0, Math.min(eq, 20)))}` : "no '='"}`);
    if (seen.has(key)) fail(`line ${i + 1}: ${key} given twice`);
    seen.add(key);
    const value = line.slice(eq + 1);
    switch (key) {
      case "username":
        username = value;
        break;
      case "proxy_lifetime":
        proxyLifetime = lifetime(key, value, fail);
        break;
      case "max_cert_lifetime":
        maxCertLifetime = lifetime(key, value, fail);
        break;
      default:
        // passphrase, retrievers, renewers, credname, ... : not needed by the CA, dropped.
        break;
    }
  }
  if (username === undefined) fail("no username line in the input");
  const problem = usernameProblem(username!);
  if (problem) fail(problem);
  const csrPem = text.slice(sep + 2).replace(/^\n+/, "").replace(/\n*$/, "\n");
  decodeCsrPem(csrPem);
  return { username: username!, proxyLifetime, maxCertLifetime, csrPem };
}

// ---------------------------------------------------------------------------------------------
// One set of rules for what a request may hold, applied by the client (refusing at once) and by
// the spool (which trusts nothing the client wrote): the same functions, the same messages.

const ONE_PEM_BLOCK = /^-----BEGIN ([A-Z0-9 ]{1,40})-----\n[A-Za-z0-9+/=\n]+-----END \1-----\n$/;

/** The CSR's PEM text: exactly one CERTIFICATE REQUEST block, strict base64, nothing around. Returns the DER. */
export function decodeCsrPem(csrPem: string): Buffer {
  if (csrPem === "") throw new FormatError("bad_csr", "no certificate request after the header");
  if (!ONE_PEM_BLOCK.test(csrPem)) throw new FormatError("bad_csr", "expected exactly one PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----) and nothing else after the header");
  return pemDecode(csrPem, "CERTIFICATE REQUEST", (m) => new FormatError("bad_pem", `the certificate request is not valid PEM: ${m}`));
}

export interface CheckedUsername extends SplitUsername {
  /** The subject Name DER the signer will put into the certificate. */
  readonly subject: Buffer;
}

/** The username as the signer will take it (suffixes, DN_FORMAT); throws RequestError otherwise. */
export function checkUsername(username: string, dn: DnTemplate): CheckedUsername {
  const problem = usernameProblem(username);
  if (problem) throw new FormatError("bad_username", problem);
  const split = splitUsername(username);
  return { ...split, subject: buildSubject(dn, split.name).der };
}

/** SubjectPublicKeyInfo DER of a CSR (no signature check: the signer verifies it, the client wrote it). */
export function csrPublicKey(csrDer: Buffer): Buffer {
  const fail = (m: string): Error => new FormatError("bad_csr", `the certificate request is malformed: ${m}`);
  const info = children(children(parseDer(csrDer, fail), fail)[0]!, fail);
  if (info.length < 3) throw fail("no public key");
  return Buffer.from(info[2]!.raw);
}

const text = (tag: number, v: Buffer): string =>
  tag === TAG.BMP_STRING && v.length % 2 === 0 ? Buffer.from(v).swap16().toString("utf16le") : v.toString("utf8");

/** Same attributes with the same values, whatever string type each value was encoded with. */
function sameName(a: Buffer, b: Buffer, fail: (m: string) => Error): boolean {
  const flat = (der: Buffer): string =>
    JSON.stringify(parseName(der, fail).map((rdn) => rdn.map((at) => [at.oid, text(at.tag, at.value)])));
  return flat(a) === flat(b);
}

/**
 * Why a certificate handed back for our request is not ours (another key or another subject), or
 * undefined when it certifies `publicKey` for `subject`. A result file can be planted by anyone
 * who can write the spool; the client must not print another logon's certificate.
 */
export function certificateMismatch(certPem: string, publicKey: Buffer, subject: Buffer): string | undefined {
  const fail = (m: string): Error => new FormatError("bad_result", `the certificate is malformed: ${m}`);
  try {
    const der = pemDecode(certPem, "CERTIFICATE", fail);
    const tbs = children(children(parseDer(der, fail), fail)[0]!, fail);
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, after [0] version
    const fields = tbs[0]?.tag === contextTag(0, true) ? tbs.slice(1) : tbs;
    if (fields.length < 6) return "it is not an X.509 certificate";
    if (!fields[5]!.raw.equals(publicKey)) return "it certifies another public key than the one in our request";
    if (!sameName(fields[4]!.raw, subject, fail)) return "it is issued to another subject than our username";
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Request file (client -> spool)

export interface RequestFile extends IssueFields {
  deadline: number;
  csrPem: string;
}

export const REQUEST_KEYS = ["version", "username", "proxy_lifetime", "max_cert_lifetime", "deadline"] as const;

export function formatRequestFile(r: RequestFile): string {
  return (
    `version=${SPOOL_FORMAT_VERSION}\n` +
    `username=${r.username}\n` +
    `proxy_lifetime=${r.proxyLifetime}\n` +
    `max_cert_lifetime=${r.maxCertLifetime}\n` +
    `deadline=${r.deadline}\n` +
    `\n` +
    r.csrPem +
    `${END_MARKER}\n`
  );
}

// ---------------------------------------------------------------------------------------------
// Result file (spool -> client)

export type ResultFile = { ok: true; certificatePem: string } | { ok: false; code: string; message: string };

/** One safe line: no control characters, bounded length. */
export function oneLine(s: string, max = 300): string {
  const flat = s.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
  return flat.length > max ? flat.slice(0, max - 3) + "..." : flat;
}

export function formatErrorResult(code: string, message: string): string {
  const c = /^[A-Za-z0-9_.-]{1,64}$/.test(code) ? code : "error";
  return `error=${c}\n${oneLine(message) || "request failed"}\n`;
}

const PEM_CERT = /^-----BEGIN CERTIFICATE-----\n([A-Za-z0-9+/=]{1,76}\n)+-----END CERTIFICATE-----\n$/;

export function parseResultFile(text: string): ResultFile {
  if (text.startsWith("error=")) {
    const nl = text.indexOf("\n");
    const code = text.slice(6, nl < 0 ? undefined : nl);
    const message = nl < 0 ? "" : text.slice(nl + 1).split("\n")[0]!;
    return { ok: false, code: oneLine(code, 64) || "error", message: oneLine(message) || "the CA refused the request" };
  }
  if (PEM_CERT.test(text)) return { ok: true, certificatePem: text };
  return { ok: false, code: "bad_result", message: "the spool wrote a result that is neither a certificate nor an error" };
}

// ---------------------------------------------------------------------------------------------
// Revoke queue entries (revoke-cert -> kernel)

export interface RevokeQueueEntry {
  serial: string;
  reason: RevocationReason;
  queuedAt: number;
}

/** Normalises a serial as an operator may type it (0x prefix, colons, lower case) to index.txt form (SERIAL). */
export function normalizeSerial(input: string): string | undefined {
  let s = input.trim().replace(/:/g, "").toUpperCase();
  if (s.startsWith("0X")) s = s.slice(2);
  if (!/^[0-9A-F]+$/.test(s)) return undefined;
  s = s.replace(/^0+(?=.)/, "");
  if (s.length % 2 === 1) s = "0" + s;
  return SERIAL.test(s) ? s : undefined;
}

export function formatRevokeEntry(e: RevokeQueueEntry): string {
  return `version=${SPOOL_FORMAT_VERSION}\nserial=${e.serial}\nreason=${e.reason}\nqueued_at=${e.queuedAt}\n${END_MARKER}\n`;
}

/** Strict parse of a queue entry; throws FormatError naming what is wrong. */
export function parseRevokeEntry(text: string): RevokeQueueEntry {
  const fail = (m: string): never => {
    throw new FormatError("bad_revoke_entry", m);
  };
  if (text.includes("\0")) fail("NUL byte");
  if (text.includes("\r")) fail("carriage return");
  if (!text.endsWith(`\n${END_MARKER}\n`)) fail("no end marker (incomplete file)");
  const lines = text.slice(0, -(END_MARKER.length + 2)).split("\n");
  const values = new Map<string, string>();
  for (const [i, line] of lines.entries()) {
    const eq = line.indexOf("=");
    const key = eq > 0 ? line.slice(0, eq) : "";
    switch (key) {
      case "version":
      case "serial":
      case "reason":
      case "queued_at":
        break;
      default:
        fail(`line ${i + 1}: unknown or malformed line ${JSON.stringify(line.slice(0, 30))}`);
    }
    if (values.has(key)) fail(`line ${i + 1}: ${key} given twice`);
    values.set(key, line.slice(eq + 1));
  }
  if (values.get("version") !== String(SPOOL_FORMAT_VERSION)) fail(`version must be ${SPOOL_FORMAT_VERSION}`);
  const serial = values.get("serial") ?? "";
  const bad = serialProblem(serial);
  if (bad) fail(bad);
  const reason = values.get("reason") ?? "";
  if (!isRevocationReason(reason)) fail(reasonProblem(reason));
  const q = values.get("queued_at") ?? "";
  if (!/^[1-9][0-9]{12}$/.test(q)) fail(`queued_at ${JSON.stringify(q.slice(0, 20))} is not a time in ms since the epoch`);
  return { serial, reason: reason as RevocationReason, queuedAt: Number(q) };
}
