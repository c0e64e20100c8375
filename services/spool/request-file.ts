// A request file from the client, read and checked: safe-open (owner = CLIENT_USER, regular,
// one link, size limit), then a strict parse from an allow-list of header keys, the deadline,
// then the CSR (pemDecode + parseCsr; its self-signature is the signer's check). Everything wrong is a RequestError whose message goes back
// to the client.
import { RequestError } from "../common/errors.js";
import { safeReadFile, SafeOpenError } from "../common/safe-open.js";
import type { DnTemplate } from "../common/x509/dn.js";
import {
  checkUsername,
  DEADLINE_SLACK_MS,
  decodeCsrPem,
  END_MARKER,
  MAX_LIFETIME_SECONDS,
  MAX_REQUEST_BYTES,
  REQUEST_KEYS,
  SPOOL_FORMAT_VERSION,
  usernameProblem,
  type RequestFile,
} from "../common/spool-protocol.js";
import { parseCsr } from "../common/x509/csr.js";

export interface RequestPolicy {
  /** Unix time in ms. */
  readonly now: number;
  /** CLIENT_TIMEOUT in ms: a deadline further away than this (plus slack) is refused. */
  readonly clientTimeoutMs: number;
  readonly minKeyBits: number;
  /** DN_FORMAT: a username the signer would refuse is refused here, as the client does. */
  readonly dn: DnTemplate;
}

export interface ValidRequest {
  readonly requestId: string;
  readonly username: string;
  readonly proxyLifetime: number;
  readonly maxCertLifetime: number;
  readonly deadline: number;
  /** SubjectPublicKeyInfo DER from the checked CSR (its self-signature is the signer's check). */
  readonly publicKey: Buffer;
  /** The checked CSR (DER), forwarded for SIGNER_BACKEND=openssl (`openssl ca` needs a request). */
  readonly csr: Buffer;
  readonly keyBits: number;
  /** Owner of the request file (the submitter's identity comes from the file, not its content). */
  readonly clientUid: number;
}

const bad = (code: string, message: string): never => {
  throw new RequestError(code, message);
};

function number(key: string, value: string, max: number): number {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(value)) bad("bad_header", `${key}=${JSON.stringify(value.slice(0, 24))}: expected a whole non-negative number`);
  const n = Number(value);
  if (n > max) bad("bad_header", `${key}=${value}: larger than ${max}`);
  return n;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }); // a BOM stays and is refused
const ALLOWED_KEYS: ReadonlySet<string> = new Set(REQUEST_KEYS);

/** Strict parse of a request file's bytes (no I/O, no clock). */
export function parseRequestFile(data: Buffer): RequestFile {
  if (data.includes(0)) bad("bad_format", "NUL byte in the request file");
  let text: string;
  try {
    text = UTF8.decode(data);
  } catch {
    return bad("bad_format", "the request file is not valid UTF-8");
  }
  if (text.includes("\r")) bad("bad_format", "carriage return in the request file");
  if (!text.endsWith(`\n${END_MARKER}\n`)) bad("incomplete", "the request file has no end marker (incomplete or truncated)");
  const sep = text.indexOf("\n\n");
  if (sep < 0) bad("bad_format", "no empty line after the header of the request file");
  const header = text.slice(0, sep).split("\n");
  const values = new Map<string, string>();
  for (const [i, line] of header.entries()) {
    const eq = line.indexOf("=");
    const key = eq > 0 ? line.slice(0, eq) : "";
    if (!ALLOWED_KEYS.has(key)) bad("bad_header", `header line ${i + 1}: ${eq > 0 ? `unknown key ${JSON.stringify(key.slice(0, 30))}` : "expected key=value"}`);
    if (values.has(key)) bad("bad_header", `header line ${i + 1}: ${key} given twice`);
    values.set(key, line.slice(eq + 1));
  }
  for (const key of REQUEST_KEYS) if (!values.has(key)) bad("bad_header", `header has no ${key}`);
  if (values.get("version") !== String(SPOOL_FORMAT_VERSION)) bad("bad_version", `unsupported request format version ${JSON.stringify(values.get("version")!.slice(0, 10))}`);
  const username = values.get("username")!;
  const problem = usernameProblem(username);
  if (problem) bad("bad_username", problem);
  const proxyLifetime = number("proxy_lifetime", values.get("proxy_lifetime")!, MAX_LIFETIME_SECONDS);
  const maxCertLifetime = number("max_cert_lifetime", values.get("max_cert_lifetime")!, MAX_LIFETIME_SECONDS);
  const deadline = number("deadline", values.get("deadline")!, Number.MAX_SAFE_INTEGER);
  const csrPem = text.slice(sep + 2, text.length - (END_MARKER.length + 1));
  if (csrPem === "") bad("bad_csr", "the request file holds no certificate request");
  return { username, proxyLifetime, maxCertLifetime, deadline, csrPem };
}

/** Deadline checks against the clock and CLIENT_TIMEOUT. */
export function checkDeadline(deadline: number, policy: Pick<RequestPolicy, "now" | "clientTimeoutMs">): void {
  if (deadline <= policy.now) bad("expired", `the request's deadline passed ${policy.now - deadline} ms ago`);
  if (deadline > policy.now + policy.clientTimeoutMs + DEADLINE_SLACK_MS) {
    bad("bad_deadline", `the request's deadline is ${deadline - policy.now} ms away, more than CLIENT_TIMEOUT allows`);
  }
}

/**
 * Parses and checks the CSR part (strict DER, key type and size, signature algorithm); returns
 * its public key. The self-signature is the signer's check (proof of possession, which it makes
 * in any case): verifying it here too cost ~0.25 ms per certificate and refused nothing the
 * signer does not refuse with the same code and message.
 */
export function checkCsr(csrPem: string, minKeyBits: number): { publicKey: Buffer; keyBits: number; csr: Buffer } {
  const der = decodeCsrPem(csrPem);
  const { publicKey, keyBits } = parseCsr(der, { minKeyBits, verifySignature: false });
  return { publicKey, keyBits, csr: der };
}

const SAFE_OPEN_ANSWER: Record<SafeOpenError["reason"], [string, string]> = {
  missing: ["missing", "the request file does not exist"],
  symlink: ["not_regular", "the request file is a symbolic link"],
  not_regular: ["not_regular", "the request file is not a regular file"],
  wrong_owner: ["wrong_owner", "the request file is not owned by the client user"],
  hard_link: ["hard_link", "the request file has more than one link"],
  too_large: ["too_large", `the request file is larger than ${MAX_REQUEST_BYTES} bytes`],
  replaced: ["replaced", "the request file was replaced while it was being read"],
  unreadable: ["unreadable", "the request file cannot be read"],
};

/**
 * Maps a safe-open failure to what the client is told; the full detail (path, uid, sizes) stays
 * in context.detail for the log, and context.security marks it as a security event.
 */
export function safeOpenToRequestError(err: SafeOpenError): RequestError {
  const [code, message] = SAFE_OPEN_ANSWER[err.reason];
  // A missing file is what an abandoning client leaves behind; everything else is hostile or broken.
  return new RequestError(code, message, { detail: err.message, security: err.reason === "missing" ? undefined : "yes" });
}

/** Reads SPOOL_DIR/requestId with every check; throws RequestError (client-safe message). */
export async function readRequest(dir: string, requestId: string, clientUid: number, policy: RequestPolicy): Promise<ValidRequest> {
  let file;
  try {
    file = await safeReadFile(dir, requestId, { owner: clientUid, maxBytes: MAX_REQUEST_BYTES, what: "request file" });
  } catch (err) {
    if (err instanceof SafeOpenError) throw safeOpenToRequestError(err);
    throw err;
  }
  const parsed = parseRequestFile(file.data);
  checkUsername(parsed.username, policy.dn);
  checkDeadline(parsed.deadline, policy);
  const { publicKey, keyBits, csr } = checkCsr(parsed.csrPem, policy.minKeyBits);
  return {
    requestId,
    username: parsed.username,
    proxyLifetime: parsed.proxyLifetime,
    maxCertLifetime: parsed.maxCertLifetime,
    deadline: parsed.deadline,
    publicKey,
    csr,
    keyBits,
    clientUid: file.uid,
  };
}
