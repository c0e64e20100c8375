// Strict PEM (RFC 7468 "strict" form) for the few labels we use: CERTIFICATE,
// CERTIFICATE REQUEST, X509 CRL. Text outside the block is ignored (openssl's -text output
// puts a dump before it), but exactly one BEGIN/END pair must be present, with the expected
// label, and nothing but base64 between them.

import { RequestError } from "../errors.js";

/** Builds the error for a refused input; defaults to RequestError (client input). */
export type PemErrorFactory = (message: string) => Error;

const defaultFail: PemErrorFactory = (m) => new RequestError("bad_pem", m);

const LABEL = /^[\x21-\x2c\x2e-\x7e](?:[- ]?[\x21-\x2c\x2e-\x7e])*$/;
const BASE64_LINE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The DER bytes of the one `label` block in `text`. Refuses: no block, more than one block
 * (of any label), BEGIN without END, a different label, headers or other junk inside the
 * block, characters outside the base64 alphabet, bad padding, and non-canonical base64.
 */
export function pemDecode(text: string, label: string, fail: PemErrorFactory = defaultFail): Buffer {
  if (!LABEL.test(label)) throw new RangeError(`bad PEM label ${JSON.stringify(label)}`);
  const lines = text.split(/\r?\n/);
  const begins: number[] = [];
  const ends: number[] = [];
  lines.forEach((l, i) => {
    if (l.startsWith("-----BEGIN")) begins.push(i);
    else if (l.startsWith("-----END")) ends.push(i);
  });
  const what = `PEM ${label}`;
  if (begins.length === 0) throw fail(`no "-----BEGIN ${label}-----" line found`);
  if (begins.length > 1 || ends.length > 1) throw fail(`expected exactly one ${what} block, found ${Math.max(begins.length, ends.length)} BEGIN/END blocks`);
  const b = begins[0]!;
  const beginLine = lines[b]!.trimEnd();
  if (beginLine !== `-----BEGIN ${label}-----`) {
    const m = /^-----BEGIN (.*)-----$/.exec(beginLine);
    throw fail(m ? `found a PEM ${JSON.stringify(m[1])} block, expected ${label}` : `malformed BEGIN line: ${JSON.stringify(beginLine.slice(0, 80))}`);
  }
  if (ends.length === 0) throw fail(`"-----END ${label}-----" line missing`);
  const e = ends[0]!;
  if (e < b) throw fail(`END line before the BEGIN line`);
  if (lines[e]!.trimEnd() !== `-----END ${label}-----`) throw fail(`the block must end with "-----END ${label}-----"`);
  const body: string[] = [];
  for (let i = b + 1; i < e; i++) {
    const l = lines[i]!.replace(/[ \t]+$/, "");
    if (l === "") continue;
    if (l.includes(":")) throw fail(`${what}: PEM headers (line ${i + 1}) are not accepted`);
    if (!BASE64_LINE.test(l)) throw fail(`${what}: line ${i + 1} has characters outside the base64 alphabet`);
    body.push(l);
  }
  const b64 = body.join("");
  if (b64.length === 0) throw fail(`${what}: empty block`);
  if (b64.length % 4 !== 0) throw fail(`${what}: base64 length is not a multiple of 4`);
  const pad = b64.indexOf("=");
  if (pad !== -1 && pad < b64.length - 2) throw fail(`${what}: "=" padding in the middle of the data`);
  const der = Buffer.from(b64, "base64");
  if (der.toString("base64") !== b64) throw fail(`${what}: non-canonical base64`);
  return der;
}

/** PEM with 64-character lines and a final newline. */
export function pemEncode(der: Buffer, label: string): string {
  if (!LABEL.test(label)) throw new RangeError(`bad PEM label ${JSON.stringify(label)}`);
  const b64 = der.toString("base64");
  let out = `-----BEGIN ${label}-----\n`;
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + "\n";
  return out + `-----END ${label}-----\n`;
}
