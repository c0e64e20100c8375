// X.509 v2 CRLs (RFC 5280 §5), written straight into one growing buffer: a CRL with
// 100,000 entries costs tens of milliseconds, not the seconds `openssl ca -gencrl` needs.
//
// CertificateList ::= SEQUENCE { tbsCertList, sha256WithRSAEncryption, signature }
// TBSCertList: version v2, signature, issuer, thisUpdate, nextUpdate,
//   revokedCertificates (omitted when empty), crlExtensions [0] { authorityKeyIdentifier,
//   cRLNumber, the audit checkpoint (common/audit/checkpoint.ts) }. An entry carries a reasonCode extension only when a reason other than
//   unspecified (0) is given; an entry without extensions omits crlEntryExtensions.
// The PEM form is pemEncode(der, "X509 CRL") (OpenSSL rejects "BEGIN CRL").

import {
  TAG, bitString, contextTag, enumerated, explicit, headerSize, integer, octetString, oid, seq, timeSize, tlv,
  writeHeader, writeTime,
} from "../common/x509/der.js";
import { DatabaseError } from "../common/errors.js";
import { SHA256_WITH_RSA_ALG_ID } from "../common/x509/certificate.js";

export interface CrlEntry {
  /** serial number in hex (index.txt form; case and leading zeros do not matter) */
  serialHex: string;
  revokedAt: Date;
  /** RFC 5280 CRLReason; undefined or 0 (unspecified) adds no extension */
  reasonCode: number | undefined;
}

export interface TbsCrlInput {
  issuerDer: Buffer;
  authorityKeyId: Buffer;
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: Iterable<CrlEntry>;
  /** further non-critical crlExtensions, each a whole Extension (the audit checkpoint) */
  extensions?: readonly Buffer[];
}

const V2 = integer(1);
const OID_REASON = oid("2.5.29.21");
/** crlEntryExtensions for each reason code: SEQUENCE { SEQUENCE { reasonCode, OCTET STRING { ENUMERATED } } } */
const REASON_EXTS: (Buffer | undefined)[] = [];
for (const code of [1, 2, 3, 4, 5, 6, 8, 9, 10]) REASON_EXTS[code] = seq(seq(OID_REASON, octetString(enumerated(code))));

/** Grows by doubling; `reserve(n)` before writing up to n bytes at `pos`. */
class Out {
  buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

function badSerial(hex: string, why: string): DatabaseError {
  return new DatabaseError("bad_serial", `revoked serial ${JSON.stringify(hex.slice(0, 64))} ${why}`);
}

/** Writes INTEGER(serial from hex) at out.pos (space reserved by the caller: 2 + 21). */
function writeSerial(out: Out, hex: string): void {
  let i = 0;
  const n = hex.length;
  while (i < n && hex.charCodeAt(i) === 0x30) i++; // leading zero digits
  const digits = n - i;
  if (digits === 0) throw badSerial(hex, n === 0 ? "is empty" : "is zero");
  if (digits > 40) throw badSerial(hex, "is longer than 20 octets");
  const buf = out.buf;
  let o = out.pos + 2;
  // first byte: one digit when the count is odd
  let first: number;
  if (digits & 1) {
    first = hexValue(hex.charCodeAt(i));
    i++;
  } else {
    const h = hexValue(hex.charCodeAt(i));
    const l = hexValue(hex.charCodeAt(i + 1));
    if (h < 0 || l < 0) throw badSerial(hex, "is not hexadecimal");
    first = (h << 4) | l;
    i += 2;
  }
  if (first < 0) throw badSerial(hex, "is not hexadecimal");
  if (first & 0x80) buf[o++] = 0;
  buf[o++] = first;
  for (; i < n; i += 2) {
    const h = hexValue(hex.charCodeAt(i));
    const l = hexValue(hex.charCodeAt(i + 1));
    if (h < 0 || l < 0) throw badSerial(hex, "is not hexadecimal");
    buf[o++] = (h << 4) | l;
  }
  const len = o - out.pos - 2;
  if (len > 20) throw badSerial(hex, "is longer than 20 octets");
  buf[out.pos] = TAG.INTEGER;
  buf[out.pos + 1] = len;
  out.pos = o;
}

/** The DER TBSCertList. Bad entries (from the database) are DatabaseErrors. */
export function buildTbsCrl(input: TbsCrlInput): Buffer {
  if (input.crlNumber < 0n) throw new RangeError("CRL number must not be negative");
  const crlNumber = integer(input.crlNumber);
  if (crlNumber.length - 2 > 20) throw new RangeError("CRL number is longer than 20 octets");
  if (!(input.nextUpdate.getTime() > input.thisUpdate.getTime())) throw new RangeError("nextUpdate must be after thisUpdate");

  // revokedCertificates: each entry written with a 2-byte placeholder header, fixed below
  const out = new Out(64 * 1024);
  let count = 0;
  // revocations come in batches with equal dates: reuse the last encoded time
  let lastMs = Number.NaN;
  const lastTime = Buffer.alloc(17);
  let lastTimeLen = 0;
  for (const e of input.entries) {
    count++;
    const reason = e.reasonCode;
    let ext: Buffer | undefined;
    if (reason !== undefined && reason !== 0) {
      ext = REASON_EXTS[reason];
      if (!ext) throw new DatabaseError("bad_reason", `revoked serial ${e.serialHex}: reason code ${reason} is not a valid CRLReason`);
    }
    const t = e.revokedAt;
    const ms = t instanceof Date ? Math.floor(t.getTime() / 1000) : Number.NaN;
    if (!Number.isFinite(ms)) throw new DatabaseError("bad_date", `revoked serial ${e.serialHex}: invalid revocation date`);
    out.reserve(4 + 23 + 17 + (ext ? ext.length : 0));
    const start = out.pos;
    out.pos += 2; // SEQUENCE header (content is always < 128 bytes)
    writeSerial(out, e.serialHex);
    if (ms !== lastMs) {
      lastTimeLen = writeTime(lastTime, 0, t);
      lastMs = ms;
    }
    lastTime.copy(out.buf, out.pos, 0, lastTimeLen);
    out.pos += lastTimeLen;
    if (ext) {
      ext.copy(out.buf, out.pos);
      out.pos += ext.length;
    }
    out.buf[start] = TAG.SEQUENCE;
    out.buf[start + 1] = out.pos - start - 2;
  }

  const algIssuer = Buffer.concat([SHA256_WITH_RSA_ALG_ID, input.issuerDer]);
  const times = Buffer.allocUnsafe(timeSize(input.thisUpdate) + timeSize(input.nextUpdate));
  writeTime(times, writeTime(times, 0, input.thisUpdate), input.nextUpdate);
  const exts = explicit(
    0,
    seq(
      seq(oid("2.5.29.35"), octetString(seq(tlv(contextTag(0, false), input.authorityKeyId)))),
      seq(oid("2.5.29.20"), octetString(crlNumber)),
      ...(input.extensions ?? []),
    ),
  );
  const revokedLen = out.pos;
  const revokedHeader = count > 0 ? headerSize(revokedLen) : 0;
  const contentLen = V2.length + algIssuer.length + times.length + revokedHeader + revokedLen + exts.length;
  const tbs = Buffer.allocUnsafe(headerSize(contentLen) + contentLen);
  let o = writeHeader(tbs, 0, TAG.SEQUENCE, contentLen);
  o += V2.copy(tbs, o);
  o += algIssuer.copy(tbs, o);
  o += times.copy(tbs, o);
  if (count > 0) {
    o = writeHeader(tbs, o, TAG.SEQUENCE, revokedLen);
    o += out.buf.copy(tbs, o, 0, revokedLen);
  }
  o += exts.copy(tbs, o);
  return tbs;
}

/** CertificateList ::= SEQUENCE { tbsCertList, sha256WithRSAEncryption, signature }. */
export function assembleCrl(tbs: Buffer, signature: Buffer): Buffer {
  return tlv(TAG.SEQUENCE, tbs, SHA256_WITH_RSA_ALG_ID, bitString(signature));
}
