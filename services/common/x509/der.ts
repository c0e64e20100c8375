// A small DER encoder and a strict DER reader: just what X.509 certificates, CSRs and CRLs
// need, written for speed (no schema objects, no intermediate trees).
//
// Encoding: every function returns the complete TLV as a Buffer; `tlv()` concatenates its
// parts with one allocation. Constant parts (OIDs, algorithm identifiers, fixed extensions)
// are meant to be computed once by the caller and reused.
//
// Reading: `parseDer()` reads exactly one TLV spanning the whole input and refuses BER
// leniencies (indefinite lengths, non-minimal lengths, high tag numbers, lengths beyond the
// buffer, trailing bytes) and inputs beyond the size/depth limits. Every failure goes
// through the caller's error factory, so client input fails with a RequestError and a
// configuration file with a ConfigError.

/** Builds the error thrown on malformed input; the message says what is wrong. */
export type ErrorFactory = (message: string) => Error;

// ---------------------------------------------------------------------------------------
// Tags

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Identifier octet of a context-specific tag [n] (n < 31). */
export function contextTag(n: number, constructed: boolean): number {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new RangeError(`context tag [${n}] out of range`);
  return 0x80 | (constructed ? 0x20 : 0) | n;
}

// ---------------------------------------------------------------------------------------
// Encoder

function lengthSize(len: number): number {
  if (len < 0x80) return 1;
  if (len < 0x100) return 2;
  if (len < 0x10000) return 3;
  if (len < 0x1000000) return 4;
  return 5;
}

/** Writes identifier + length at `offset`; returns the offset after the header. */
export function writeHeader(out: Buffer, offset: number, tag: number, len: number): number {
  out[offset++] = tag;
  if (len < 0x80) {
    out[offset++] = len;
  } else if (len < 0x100) {
    out[offset++] = 0x81;
    out[offset++] = len;
  } else if (len < 0x10000) {
    out[offset++] = 0x82;
    out[offset++] = len >>> 8;
    out[offset++] = len & 0xff;
  } else if (len < 0x1000000) {
    out[offset++] = 0x83;
    out[offset++] = len >>> 16;
    out[offset++] = (len >>> 8) & 0xff;
    out[offset++] = len & 0xff;
  } else {
    out[offset++] = 0x84;
    out.writeUInt32BE(len, offset);
    offset += 4;
  }
  return offset;
}

/** Size of the header (identifier + length octets) for a content of `len` bytes. */
export function headerSize(len: number): number {
  return 1 + lengthSize(len);
}

/** The header alone (identifier + length), for callers that stream the content. */
export function header(tag: number, len: number): Buffer {
  const out = Buffer.allocUnsafe(headerSize(len));
  writeHeader(out, 0, tag, len);
  return out;
}

/** A TLV whose content is the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Buffer[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(headerSize(len) + len);
  let o = writeHeader(out, 0, tag, len);
  for (const p of parts) {
    p.copy(out, o);
    o += p.length;
  }
  return out;
}

export function seq(...parts: Buffer[]): Buffer {
  return tlv(TAG.SEQUENCE, ...parts);
}

/** SET OF: DER requires the elements in ascending order of their encodings. */
export function set(...parts: Buffer[]): Buffer {
  const sorted = parts.length > 1 ? [...parts].sort(Buffer.compare) : parts;
  return tlv(TAG.SET, ...sorted);
}

/** INTEGER from unsigned big-endian bytes (leading zeros stripped, 0x00 added if needed). */
function unsignedIntegerContent(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const b = bytes.subarray(i);
  if (b.length === 0) return Buffer.from([0]);
  if (b[0]! & 0x80) return Buffer.concat([Buffer.from([0]), b]);
  return b;
}

/**
 * INTEGER. A Buffer is read as an unsigned (positive) big-endian magnitude; numbers and
 * bigints may be negative (two's complement, minimal).
 */
export function integer(v: Buffer | number | bigint): Buffer {
  if (Buffer.isBuffer(v)) return tlv(TAG.INTEGER, unsignedIntegerContent(v));
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new RangeError(`integer ${v} is not a safe integer`);
    if (v >= 0 && v < 0x80) return Buffer.from([TAG.INTEGER, 1, v]);
    v = BigInt(v);
  }
  return tlv(TAG.INTEGER, bigintContent(v));
}

function bigintContent(v: bigint): Buffer {
  if (v >= 0n) {
    let hex = v.toString(16);
    if (hex.length % 2) hex = "0" + hex;
    return unsignedIntegerContent(Buffer.from(hex, "hex"));
  }
  // two's complement: smallest byte count whose range holds v
  let n = 1;
  while (v < -(1n << BigInt(8 * n - 1))) n++;
  const u = (1n << BigInt(8 * n)) + v;
  return Buffer.from(u.toString(16).padStart(2 * n, "0"), "hex");
}

/** ENUMERATED (small non-negative values only: CRL reason codes). */
export function enumerated(v: number): Buffer {
  if (!Number.isInteger(v) || v < 0 || v > 127) throw new RangeError(`enumerated ${v} out of range`);
  return Buffer.from([TAG.ENUMERATED, 1, v]);
}

const OID_CACHE = new Map<string, Buffer>();
const OID_SYNTAX = /^(0|1|2)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;

/** OBJECT IDENTIFIER from dotted form; encodings are cached (treat the result as read-only). */
export function oid(dotted: string): Buffer {
  const cached = OID_CACHE.get(dotted);
  if (cached) return cached;
  if (!OID_SYNTAX.test(dotted)) throw new RangeError(`not a dotted OID: ${JSON.stringify(dotted)}`);
  const arcs = dotted.split(".").map((a) => BigInt(a));
  const [a0, a1] = [arcs[0]!, arcs[1]!];
  if (a0 < 2n && a1 > 39n) throw new RangeError(`not a valid OID: ${dotted} (second arc above 39)`);
  const bytes: number[] = [];
  const pushArc = (arc: bigint): void => {
    const tmp: number[] = [Number(arc & 0x7fn)];
    arc >>= 7n;
    while (arc > 0n) {
      tmp.push(Number(arc & 0x7fn) | 0x80);
      arc >>= 7n;
    }
    for (let i = tmp.length - 1; i >= 0; i--) bytes.push(tmp[i]!);
  };
  pushArc(a0 * 40n + a1);
  for (let i = 2; i < arcs.length; i++) pushArc(arcs[i]!);
  const out = tlv(TAG.OID, Buffer.from(bytes));
  if (OID_CACHE.size < 10_000) OID_CACHE.set(dotted, out);
  return out;
}

const TRUE = Buffer.from([TAG.BOOLEAN, 1, 0xff]);
const FALSE = Buffer.from([TAG.BOOLEAN, 1, 0x00]);
const NULL_DER = Buffer.from([TAG.NULL, 0]);

export function boolean(v: boolean): Buffer {
  return v ? TRUE : FALSE;
}

export function nul(): Buffer {
  return NULL_DER;
}

/** BIT STRING with `unusedBits` (0-7) unused bits in the last octet (which must be zero). */
export function bitString(content: Buffer, unusedBits = 0): Buffer {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7) throw new RangeError("unusedBits must be 0-7");
  if (unusedBits > 0 && content.length === 0) throw new RangeError("an empty BIT STRING has no unused bits");
  return tlv(TAG.BIT_STRING, Buffer.from([unusedBits]), content);
}

export function octetString(content: Buffer): Buffer {
  return tlv(TAG.OCTET_STRING, content);
}

function writeDigits2(out: Buffer, o: number, v: number): void {
  out[o] = 0x30 + ((v / 10) | 0);
  out[o + 1] = 0x30 + (v % 10);
}

/** Writes the RFC 5280 Time for `d` (seconds precision, Z) at `offset`; returns the new offset. */
export function writeTime(out: Buffer, offset: number, d: Date): number {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) throw new RangeError("invalid date");
  const y = d.getUTCFullYear();
  if (y < 1950 || y > 9999) throw new RangeError(`year ${y} cannot be encoded as an RFC 5280 Time`);
  let o = offset;
  if (y < 2050) {
    out[o++] = TAG.UTC_TIME;
    out[o++] = 13;
    writeDigits2(out, o, y % 100);
    o += 2;
  } else {
    out[o++] = TAG.GENERALIZED_TIME;
    out[o++] = 15;
    writeDigits2(out, o, (y / 100) | 0);
    writeDigits2(out, o + 2, y % 100);
    o += 4;
  }
  writeDigits2(out, o, d.getUTCMonth() + 1);
  writeDigits2(out, o + 2, d.getUTCDate());
  writeDigits2(out, o + 4, d.getUTCHours());
  writeDigits2(out, o + 6, d.getUTCMinutes());
  writeDigits2(out, o + 8, d.getUTCSeconds());
  out[o + 10] = 0x5a; // Z
  return o + 11;
}

/** Encoded size of the Time for `d`. */
export function timeSize(d: Date): number {
  return d.getUTCFullYear() < 2050 ? 15 : 17;
}

/** RFC 5280 Time: UTCTime through 2049, GeneralizedTime from 2050; always Z, whole seconds. */
export function time(d: Date): Buffer {
  const out = Buffer.allocUnsafe(timeSize(d));
  writeTime(out, 0, d);
  return out;
}

export function utcTime(d: Date): Buffer {
  const y = d.getUTCFullYear();
  if (y < 1950 || y > 2049) throw new RangeError(`year ${y} cannot be a UTCTime`);
  return time(d);
}

export function generalizedTime(d: Date): Buffer {
  const y = d.getUTCFullYear();
  if (y < 2050) {
    // RFC 5280 wants UTCTime before 2050; this is for callers that need the other form anyway.
    const s = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
    const txt = s.slice(0, 4) + s.slice(5, 7) + s.slice(8, 10) + s.slice(11, 13) + s.slice(14, 16) + s.slice(17, 19) + "Z";
    return tlv(TAG.GENERALIZED_TIME, Buffer.from(txt, "latin1"));
  }
  return time(d);
}

/** Characters of the ASN.1 PrintableString type. */
export const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

export function isPrintable(s: string): boolean {
  return PRINTABLE.test(s);
}

export function isIa5(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
}

export function printableString(s: string): Buffer {
  if (!PRINTABLE.test(s)) throw new RangeError(`not a PrintableString: ${JSON.stringify(s)}`);
  return tlv(TAG.PRINTABLE_STRING, Buffer.from(s, "latin1"));
}

export function utf8String(s: string): Buffer {
  return tlv(TAG.UTF8_STRING, Buffer.from(s, "utf8"));
}

export function ia5String(s: string): Buffer {
  if (!isIa5(s)) throw new RangeError(`not an IA5String: ${JSON.stringify(s)}`);
  return tlv(TAG.IA5_STRING, Buffer.from(s, "latin1"));
}

/** [n] EXPLICIT: a constructed context tag wrapping complete TLVs. */
export function explicit(n: number, ...inner: Buffer[]): Buffer {
  return tlv(contextTag(n, true), ...inner);
}

/**
 * [n] IMPLICIT: replaces the tag of `content`'s type. Pass the raw content octets and say
 * whether the underlying type is constructed (SEQUENCE/SET) or primitive.
 */
export function implicit(n: number, content: Buffer, constructed: boolean): Buffer {
  return tlv(contextTag(n, constructed), content);
}

// ---------------------------------------------------------------------------------------
// Reader

export interface ReadLimits {
  /** Refuse inputs larger than this many bytes (default 1 MiB). */
  maxSize?: number;
  /** Refuse nesting deeper than this (default 32). */
  maxDepth?: number;
}

const DEFAULT_MAX_SIZE = 1 << 20;
const DEFAULT_MAX_DEPTH = 32;

/** One TLV inside a buffer (no copies: `value` and `raw` are views). */
export class Tlv {
  constructor(
    readonly buf: Buffer,
    /** offset of the identifier octet */
    readonly start: number,
    /** offset of the first content octet */
    readonly valueStart: number,
    /** offset after the last content octet */
    readonly end: number,
    readonly tag: number,
    readonly depth: number,
    readonly maxDepth: number,
  ) {}
  get length(): number {
    return this.end - this.valueStart;
  }
  get constructed(): boolean {
    return (this.tag & 0x20) !== 0;
  }
  /** The content octets. */
  get value(): Buffer {
    return this.buf.subarray(this.valueStart, this.end);
  }
  /** The whole encoding (identifier, length and content). */
  get raw(): Buffer {
    return this.buf.subarray(this.start, this.end);
  }
}

/**
 * Reads one TLV at `offset` that must end at or before `limit` (default: the buffer's end).
 * Refuses high tag numbers, indefinite and non-minimal lengths and lengths beyond `limit`.
 */
export function readTlv(buf: Buffer, offset: number, fail: ErrorFactory, limit = buf.length, depth = 0, maxDepth = DEFAULT_MAX_DEPTH): Tlv {
  if (depth > maxDepth) throw fail(`nesting deeper than ${maxDepth} levels`);
  if (offset + 2 > limit) throw fail(`truncated at byte ${offset}`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw fail(`high-number tag at byte ${offset} is not used here`);
  let len = buf[offset + 1]!;
  let o = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw fail(`indefinite length at byte ${offset} (BER, not DER)`);
    if (n > 4) throw fail(`length of ${n} octets at byte ${offset} is too large`);
    if (o + n > limit) throw fail(`truncated length at byte ${offset}`);
    if (buf[o] === 0) throw fail(`non-minimal length at byte ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[o + i]!;
    if (len < 0x80) throw fail(`non-minimal length at byte ${offset}`);
    o += n;
  }
  if (len > limit - o) throw fail(`length ${len} at byte ${offset} runs past the end of its container`);
  return new Tlv(buf, offset, o, o + len, tag, depth, maxDepth);
}

/** Reads the single TLV that must make up all of `buf` (no trailing bytes). */
export function parseDer(buf: Buffer, fail: ErrorFactory, limits: ReadLimits = {}): Tlv {
  const maxSize = limits.maxSize ?? DEFAULT_MAX_SIZE;
  if (buf.length === 0) throw fail("empty input");
  if (buf.length > maxSize) throw fail(`${buf.length} bytes is more than the limit of ${maxSize}`);
  const t = readTlv(buf, 0, fail, buf.length, 0, limits.maxDepth ?? DEFAULT_MAX_DEPTH);
  if (t.end !== buf.length) throw fail(`${buf.length - t.end} trailing bytes after the DER structure`);
  return t;
}

/** The children of a constructed TLV, in order. */
export function children(t: Tlv, fail: ErrorFactory): Tlv[] {
  if (!t.constructed) throw fail(`expected a constructed value at byte ${t.start}`);
  const out: Tlv[] = [];
  let o = t.valueStart;
  while (o < t.end) {
    const c = readTlv(t.buf, o, fail, t.end, t.depth + 1, t.maxDepth);
    out.push(c);
    o = c.end;
  }
  return out;
}

/** Validates the TLV structure of `t` and everything nested in its constructed parts. */
export function walk(t: Tlv, fail: ErrorFactory): void {
  if (!t.constructed) return;
  for (const c of children(t, fail)) walk(c, fail);
}

/** Reads the elements of a SEQUENCE (or any constructed value) one after the other. */
export class DerSequence {
  private offset: number;
  constructor(
    readonly parent: Tlv,
    private readonly fail: ErrorFactory,
    private readonly what: string,
  ) {
    if (!parent.constructed) throw fail(`${what}: expected a constructed value`);
    this.offset = parent.valueStart;
  }
  get done(): boolean {
    return this.offset >= this.parent.end;
  }
  private peekTag(): number | undefined {
    return this.done ? undefined : this.parent.buf[this.offset];
  }
  /** The next element; it must exist and (if given) have tag `tag`. */
  next(tag: number | undefined, name: string): Tlv {
    if (this.done) throw this.fail(`${this.what}: ${name} is missing`);
    const t = readTlv(this.parent.buf, this.offset, this.fail, this.parent.end, this.parent.depth + 1, this.parent.maxDepth);
    if (tag !== undefined && t.tag !== tag) {
      throw this.fail(`${this.what}: ${name} has tag 0x${t.tag.toString(16).padStart(2, "0")}, expected 0x${tag.toString(16).padStart(2, "0")}`);
    }
    this.offset = t.end;
    return t;
  }
  /** The next element if it has tag `tag`, else undefined (nothing consumed). */
  optional(tag: number, name: string): Tlv | undefined {
    return this.peekTag() === tag ? this.next(tag, name) : undefined;
  }
  /** Refuses anything left. */
  end(): void {
    if (!this.done) throw this.fail(`${this.what}: unexpected data after the last element`);
  }
}

export function expectTag(t: Tlv, tag: number, what: string, fail: ErrorFactory): Tlv {
  if (t.tag !== tag) throw fail(`${what}: tag 0x${t.tag.toString(16).padStart(2, "0")}, expected 0x${tag.toString(16).padStart(2, "0")}`);
  return t;
}

/** A non-negative INTEGER as its magnitude (no leading zero octets; 0 is one zero octet). */
export function decodeUnsigned(t: Tlv, what: string, fail: ErrorFactory): Buffer {
  expectTag(t, TAG.INTEGER, what, fail);
  const v = t.value;
  if (v.length === 0) throw fail(`${what}: empty INTEGER`);
  if (v.length > 1 && ((v[0] === 0 && !(v[1]! & 0x80)) || (v[0] === 0xff && v[1]! & 0x80))) throw fail(`${what}: non-minimal INTEGER`);
  if (v[0]! & 0x80) throw fail(`${what}: negative INTEGER`);
  return v.length > 1 && v[0] === 0 ? v.subarray(1) : v;
}

/** A small non-negative INTEGER as a number. */
export function decodeSmallInt(t: Tlv, what: string, fail: ErrorFactory): number {
  const m = decodeUnsigned(t, what, fail);
  if (m.length > 6) throw fail(`${what}: INTEGER too large`);
  return m.readUIntBE(0, m.length);
}

/**
 * Longest OBJECT IDENTIFIER content read (in bytes): every OID X.509 uses is far shorter; an
 * unbounded one costs quadratic time to decode and ends up in messages.
 */
export const MAX_OID_BYTES = 64;
/** Longest arc (in bytes): 19 bytes hold the 128-bit UUID arcs of 2.25.* OIDs. */
export const MAX_OID_ARC_BYTES = 19;

export function decodeOid(t: Tlv, what: string, fail: ErrorFactory): string {
  expectTag(t, TAG.OID, what, fail);
  const v = t.value;
  if (v.length === 0) throw fail(`${what}: empty OBJECT IDENTIFIER`);
  if (v.length > MAX_OID_BYTES) throw fail(`${what}: OBJECT IDENTIFIER of ${v.length} bytes is longer than the limit of ${MAX_OID_BYTES}`);
  const arcs: string[] = [];
  let acc = 0n;
  let arcBytes = 0;
  for (let i = 0; i < v.length; i++) {
    const b = v[i]!;
    if (arcBytes === 0 && b === 0x80) throw fail(`${what}: non-minimal OBJECT IDENTIFIER`);
    if (++arcBytes > MAX_OID_ARC_BYTES) throw fail(`${what}: OBJECT IDENTIFIER arc longer than ${MAX_OID_ARC_BYTES} bytes`);
    acc = (acc << 7n) | BigInt(b & 0x7f);
    if (!(b & 0x80)) {
      if (arcs.length === 0) {
        const first = acc < 80n ? acc / 40n : 2n;
        arcs.push(first.toString(), (acc - first * 40n).toString());
      } else arcs.push(acc.toString());
      acc = 0n;
      arcBytes = 0;
    }
  }
  if (arcBytes > 0) throw fail(`${what}: truncated OBJECT IDENTIFIER`);
  return arcs.join(".");
}

/** BIT STRING content with no unused bits (keys and signatures). */
export function decodeOctetAlignedBitString(t: Tlv, what: string, fail: ErrorFactory): Buffer {
  expectTag(t, TAG.BIT_STRING, what, fail);
  const v = t.value;
  if (v.length === 0) throw fail(`${what}: empty BIT STRING`);
  if (v[0] !== 0) throw fail(`${what}: BIT STRING with unused bits`);
  return v.subarray(1);
}

export function decodeBoolean(t: Tlv, what: string, fail: ErrorFactory): boolean {
  expectTag(t, TAG.BOOLEAN, what, fail);
  if (t.length !== 1 || (t.buf[t.valueStart] !== 0 && t.buf[t.valueStart] !== 0xff)) throw fail(`${what}: BOOLEAN is not DER`);
  return t.buf[t.valueStart] === 0xff;
}

/** A value from the input for a message: quoted, and cut short. */
function quoted(s: string, max = 40): string {
  return JSON.stringify(s.length > max ? `${s.slice(0, max)}...` : s);
}

/** UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 requires. */
export function decodeTime(t: Tlv, what: string, fail: ErrorFactory): Date {
  const s = t.value.toString("latin1");
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === TAG.UTC_TIME) {
    m = /^([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z$/.exec(s);
    if (!m) throw fail(`${what}: UTCTime ${quoted(s)} is not YYMMDDHHMMSSZ`);
    const yy = Number(m[1]);
    year = yy < 50 ? 2000 + yy : 1900 + yy;
  } else if (t.tag === TAG.GENERALIZED_TIME) {
    m = /^([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z$/.exec(s);
    if (!m) throw fail(`${what}: GeneralizedTime ${quoted(s)} is not YYYYMMDDHHMMSSZ`);
    year = Number(m[1]);
  } else throw fail(`${what}: expected UTCTime or GeneralizedTime`);
  const [mo, d, h, mi, se] = [2, 3, 4, 5, 6].map((i) => Number(m![i]));
  const ms = Date.UTC(year, mo! - 1, d, h, mi, se);
  const back = new Date(ms);
  if (back.getUTCMonth() !== mo! - 1 || back.getUTCDate() !== d || h! > 23 || mi! > 59 || se! > 59) throw fail(`${what}: ${quoted(s)} is not a valid time`);
  return back;
}
