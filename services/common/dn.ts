// Subject names: the MyProxy username, the operator's DN_FORMAT, and the subject DER.
//
// The username is DATA. It is inserted into the value of the one RDN whose value holds %s
// and can never add, remove or reorder an RDN. Characters that separate RDNs in the
// slash form that grid tools use for names (grid-mapfiles, signing_policy, `openssl -subj`)
// are refused rather than escaped: `/`, `+` and `\`. Older OpenSSL versions print `/` and
// `+` inside values unescaped (X509_NAME_oneline), so a user called `evil/CN=admin` would
// look like two RDNs to every tool that reads those strings. Everything else printable
// (`,` `=` `"` `'` `<` `>` `;` `#` and non-ASCII letters) is kept as data; OpenSSL escapes it
// where its output format needs escaping.
//
// The `slash` form returned for index.txt is OpenSSL's X509_NAME_oneline form (what
// `openssl ca` writes): short names, `\/` and `\+` inside values, `\xHH` for every byte
// outside printable ASCII (UTF-8 is shown byte by byte).

import { ConfigError, RequestError } from "./errors.js";
import {
  DerSequence, TAG, children, decodeOid, isIa5, isPrintable, oid, parseDer, seq, set, tlv, type ErrorFactory,
} from "./der.js";

type Encoding = "directory" | "printable" | "ia5" | "country";

interface AttrType {
  /** OpenSSL short name (as X509_NAME_oneline prints it) */
  readonly short: string;
  readonly long: string;
  readonly oid: string;
  /** RFC 5280 Appendix A upper bound, in characters */
  readonly max: number;
  readonly encoding: Encoding;
}

const ATTRS: readonly AttrType[] = [
  { short: "C", long: "countryName", oid: "2.5.4.6", max: 2, encoding: "country" },
  { short: "ST", long: "stateOrProvinceName", oid: "2.5.4.8", max: 128, encoding: "directory" },
  { short: "L", long: "localityName", oid: "2.5.4.7", max: 128, encoding: "directory" },
  { short: "street", long: "streetAddress", oid: "2.5.4.9", max: 128, encoding: "directory" },
  { short: "postalCode", long: "postalCode", oid: "2.5.4.17", max: 16, encoding: "directory" },
  { short: "O", long: "organizationName", oid: "2.5.4.10", max: 64, encoding: "directory" },
  { short: "OU", long: "organizationalUnitName", oid: "2.5.4.11", max: 64, encoding: "directory" },
  { short: "CN", long: "commonName", oid: "2.5.4.3", max: 64, encoding: "directory" },
  { short: "title", long: "title", oid: "2.5.4.12", max: 64, encoding: "directory" },
  { short: "name", long: "name", oid: "2.5.4.41", max: 32768, encoding: "directory" },
  { short: "GN", long: "givenName", oid: "2.5.4.42", max: 32768, encoding: "directory" },
  { short: "SN", long: "surname", oid: "2.5.4.4", max: 32768, encoding: "directory" },
  { short: "initials", long: "initials", oid: "2.5.4.43", max: 32768, encoding: "directory" },
  { short: "generationQualifier", long: "generationQualifier", oid: "2.5.4.44", max: 32768, encoding: "directory" },
  { short: "pseudonym", long: "pseudonym", oid: "2.5.4.65", max: 128, encoding: "directory" },
  { short: "serialNumber", long: "serialNumber", oid: "2.5.4.5", max: 64, encoding: "printable" },
  { short: "dnQualifier", long: "dnQualifier", oid: "2.5.4.46", max: 64, encoding: "printable" },
  // RFC 4519: DC is one DNS label, UID has no ASN.1 bound (256 keeps names sane)
  { short: "DC", long: "domainComponent", oid: "0.9.2342.19200300.100.1.25", max: 63, encoding: "ia5" },
  { short: "UID", long: "userId", oid: "0.9.2342.19200300.100.1.1", max: 256, encoding: "directory" },
  { short: "emailAddress", long: "emailAddress", oid: "1.2.840.113549.1.9.1", max: 255, encoding: "ia5" },
];

const BY_NAME = new Map<string, AttrType>();
for (const a of ATTRS) {
  BY_NAME.set(a.short.toLowerCase(), a);
  BY_NAME.set(a.long.toLowerCase(), a);
}
BY_NAME.set("uid", ATTRS.find((a) => a.short === "UID")!);

/** Short names for printing names we did not build (the CA's own subject). */
const SHORT_BY_OID = new Map<string, string>([
  ...ATTRS.map((a) => [a.oid, a.short] as [string, string]),
  ["2.5.4.13", "description"],
  ["2.5.4.15", "businessCategory"],
  ["2.5.4.97", "organizationIdentifier"],
  ["1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC"],
  ["1.3.6.1.4.1.311.60.2.1.2", "jurisdictionST"],
  ["1.3.6.1.4.1.311.60.2.1.1", "jurisdictionL"],
]);

// ---------------------------------------------------------------------------------------
// Character checks

/** C0/C1 controls, DEL, format characters (bidi overrides, zero-width), surrogates,
 *  private use, unassigned, line/paragraph separators. */
const FORBIDDEN_CHARS = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\uFFFD]/u;
/** Spaces other than U+0020 (look like a space, compare differently). */
const ODD_SPACES = /(?! )\p{Zs}/u;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

function describeChar(s: string): string {
  const cp = s.codePointAt(0)!;
  return `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** Why `s` cannot be used as text in a name, or undefined when it can. */
function badText(s: string): string | undefined {
  if (LONE_SURROGATE.test(s)) return "is not valid Unicode";
  const m = FORBIDDEN_CHARS.exec(s) ?? ODD_SPACES.exec(s);
  if (m) return `contains the control or invisible character ${describeChar(m[0])}`;
  return undefined;
}

function charLength(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// ---------------------------------------------------------------------------------------
// Username suffixes

export interface SplitUsername {
  name: string;
  emails: string[];
  info: string | undefined;
}

export const USERNAME_MAX_BYTES = 256;
export const MAX_EMAILS = 8;
export const INFO_MAX_CHARS = 200;

// Deliberately narrower than RFC 5322: letters, digits and . _ % + - in the local part;
// a DNS name of LDH labels with an alphabetic (or punycode) top-level label.
const EMAIL_LOCAL = /^[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*$/;
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const TLD = /^(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$/;
const INFO = /^[A-Za-z0-9_.-]+=[\x21-\x2b\x2d-\x7e]*(?:,[A-Za-z0-9_.-]+=[\x21-\x2b\x2d-\x7e]*)*$/;

function reqError(code: string, message: string): RequestError {
  return new RequestError(code, message);
}

/** Checks one e-mail address for a subjectAltName rfc822Name; returns it unchanged. */
export function checkEmail(addr: string): string {
  const bad = (why: string): never => {
    throw reqError("bad_email", `e-mail address ${JSON.stringify(addr.slice(0, 80))} ${why}`);
  };
  if (addr.length > 254) bad("is longer than 254 characters");
  const at = addr.indexOf("@");
  if (at < 0 || addr.indexOf("@", at + 1) >= 0) bad("must contain exactly one @");
  const local = addr.slice(0, at);
  const domain = addr.slice(at + 1);
  if (local.length === 0 || local.length > 64) bad("has an empty or over-long local part");
  if (!EMAIL_LOCAL.test(local)) bad("has characters other than letters, digits and . _ % + - before the @");
  const labels = domain.split(".");
  if (domain.length > 253 || labels.length < 2) bad("needs a domain name with at least two labels");
  for (const l of labels) if (!DNS_LABEL.test(l)) bad(`has an invalid domain label ${JSON.stringify(l)}`);
  if (!TLD.test(labels[labels.length - 1]!)) bad("has an invalid top-level domain");
  return addr;
}

/**
 * Splits MyProxy's username into the name and its suffixes (DESIGN §5):
 * `John Doe email=jdoe@example.org email=x@y.org info:key=value,k2=v2`.
 * The suffixes follow the name, separated by single spaces; the first word starting with
 * `email=` or `info:` ends the name. Refusals are RequestErrors.
 */
export function splitUsername(raw: string): SplitUsername {
  if (typeof raw !== "string" || raw.length === 0) throw reqError("bad_username", "username is empty");
  const bytes = Buffer.byteLength(raw, "utf8");
  if (bytes > USERNAME_MAX_BYTES) throw reqError("bad_username", `username of ${bytes} bytes is longer than ${USERNAME_MAX_BYTES}`);
  const m = CONTROL.exec(raw);
  if (m) throw reqError("bad_username", `username contains the control character ${describeChar(m[0])}`);
  if (LONE_SURROGATE.test(raw)) throw reqError("bad_username", "username is not valid Unicode");

  const words = raw.split(" ");
  const first = words.findIndex((w) => w.startsWith("email=") || w.startsWith("info:"));
  const nameWords = first < 0 ? words : words.slice(0, first);
  const name = nameWords.join(" ");
  if (name.length === 0) throw reqError("bad_username", "username has no name before its email=/info: suffixes");
  if (name !== name.trim()) throw reqError("bad_username", "username has leading or trailing spaces");

  const emails: string[] = [];
  let info: string | undefined;
  if (first >= 0) {
    for (const w of words.slice(first)) {
      if (w === "") throw reqError("bad_username", "username suffixes must be separated by single spaces");
      if (w.startsWith("email=")) {
        const addr = checkEmail(w.slice("email=".length));
        if (emails.some((e) => e.toLowerCase() === addr.toLowerCase())) throw reqError("bad_email", `e-mail address ${addr} is given twice`);
        emails.push(addr);
        if (emails.length > MAX_EMAILS) throw reqError("bad_email", `more than ${MAX_EMAILS} email= suffixes`);
      } else if (w.startsWith("info:")) {
        if (info !== undefined) throw reqError("bad_info", "more than one info: suffix");
        const v = w.slice("info:".length);
        if (v.length === 0) throw reqError("bad_info", "info: suffix is empty");
        if (v.length > INFO_MAX_CHARS) throw reqError("bad_info", `info: suffix is longer than ${INFO_MAX_CHARS} characters`);
        if (!INFO.test(v)) throw reqError("bad_info", "info: suffix must be key=value pairs separated by commas (printable ASCII, no spaces)");
        info = v;
      } else {
        throw reqError("bad_username", `unexpected ${JSON.stringify(w.slice(0, 40))} after the email=/info: suffixes (the name comes first)`);
      }
    }
  }
  return { name, emails, info };
}

// ---------------------------------------------------------------------------------------
// DN_FORMAT

export interface DnTemplate {
  readonly format: string;
  /** DER of the RDNs before / after the one holding %s (no SEQUENCE header) */
  readonly before: Buffer;
  readonly after: Buffer;
  readonly slashBefore: string;
  readonly slashAfter: string;
  readonly attr: AttrType;
  /** fixed text around %s inside that RDN's value */
  readonly prefix: string;
  readonly suffix: string;
}

/** Encodes an attribute value with the string type the profile uses for it. */
function encodeValue(a: AttrType, value: string, bad: (m: string) => never): Buffer {
  const n = charLength(value);
  if (n === 0) bad(`${a.short} value is empty`);
  if (a.encoding === "country" && !/^[A-Z]{2}$/.test(value)) bad(`C must be a two-letter ISO 3166 country code in capitals, not ${JSON.stringify(value)}`);
  if (n > a.max) bad(`${a.short} value of ${n} characters is longer than the limit of ${a.max}`);
  switch (a.encoding) {
    case "country":
      return tlv(TAG.PRINTABLE_STRING, Buffer.from(value, "latin1"));
    case "ia5":
      if (!isIa5(value)) bad(`${a.short} value ${JSON.stringify(value)} must be ASCII (IA5String)`);
      return tlv(TAG.IA5_STRING, Buffer.from(value, "latin1"));
    case "printable":
      if (!isPrintable(value)) bad(`${a.short} value ${JSON.stringify(value)} must use PrintableString characters only`);
      return tlv(TAG.PRINTABLE_STRING, Buffer.from(value, "latin1"));
    case "directory":
      return isPrintable(value) ? tlv(TAG.PRINTABLE_STRING, Buffer.from(value, "latin1")) : tlv(TAG.UTF8_STRING, Buffer.from(value, "utf8"));
  }
}

function rdn(a: AttrType, valueDer: Buffer): Buffer {
  return set(seq(oid(a.oid), valueDer));
}

/** X509_NAME_oneline escaping of a value's bytes. */
function onelineValue(bytes: Buffer): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === 0x2f || b === 0x2b) out += "\\" + String.fromCharCode(b);
    else if (b < 0x20 || b > 0x7e) out += "\\x" + b.toString(16).toUpperCase().padStart(2, "0");
    else out += String.fromCharCode(b);
  }
  return out;
}

function slashOf(a: AttrType, valueDer: Buffer): string {
  // the value's content octets: skip the 2-byte (or longer) header
  const lenByte = valueDer[1]!;
  const hdr = lenByte < 0x80 ? 2 : 2 + (lenByte & 0x7f);
  return `/${a.short}=${onelineValue(valueDer.subarray(hdr))}`;
}

/**
 * Parses DN_FORMAT once: `/DC=org/DC=example/O=Ex/CN=%s`. A backslash makes the next
 * character literal (`\/`, `\\`, `\+`, as in `openssl -subj`); an unescaped `+` (a
 * multi-valued RDN) is refused. Attribute names are OpenSSL's short or long names (case
 * does not matter). Exactly one %s, inside a value.
 */
export function compileDnFormat(format: string, where: { file?: string; line?: number } = {}): DnTemplate {
  const bad = (m: string): never => {
    throw new ConfigError("bad_dn_format", `DN_FORMAT ${JSON.stringify(format)}: ${m}`, { ...where, key: "DN_FORMAT" });
  };
  if (!format.startsWith("/")) bad("must start with '/', e.g. /DC=org/DC=example/CN=%s");
  const why = badText(format);
  if (why) bad(`${why}`);

  // split on unescaped '/', unescape, remember where %s sits (in unescaped text)
  interface Part { type: string; value: string; hole: number }
  const parts: Part[] = [];
  let cur = "";
  let type: string | undefined;
  let hole = -1;
  let holes = 0;
  const finish = (): void => {
    if (type === undefined) bad(cur === "" ? "empty RDN (two '/' in a row or a trailing '/')" : `RDN ${JSON.stringify(cur)} has no '='`);
    parts.push({ type: type!, value: cur, hole });
    cur = "";
    type = undefined;
    hole = -1;
  };
  for (let i = 1; i < format.length; i++) {
    const c = format[i]!;
    if (c === "\\") {
      if (i + 1 >= format.length) bad("ends with a lone backslash");
      cur += format[++i];
    } else if (c === "/") {
      finish();
    } else if (c === "=" && type === undefined) {
      type = cur;
      cur = "";
    } else if (c === "+") {
      bad("multi-valued RDNs ('+') are not supported; write \\+ for a literal plus sign");
    } else if (c === "%") {
      if (format[i + 1] !== "s") bad("'%' must be followed by 's' (the username)");
      if (type === undefined) bad("%s must be inside a value, not an attribute name");
      hole = cur.length;
      holes++;
      i++;
    } else {
      cur += c;
    }
  }
  finish();
  if (holes !== 1) bad(`must contain exactly one %s (found ${holes})`);

  let before = Buffer.alloc(0);
  let after = Buffer.alloc(0);
  let slashBefore = "";
  let slashAfter = "";
  let holeAttr: AttrType | undefined;
  let prefix = "";
  let suffix = "";
  for (const p of parts) {
    const a = BY_NAME.get(p.type.toLowerCase());
    if (!a) bad(`unknown attribute type ${JSON.stringify(p.type)} (known: ${ATTRS.map((x) => x.short).join(", ")})`);
    if (p.hole >= 0) {
      holeAttr = a;
      prefix = p.value.slice(0, p.hole);
      suffix = p.value.slice(p.hole);
      // check the fixed text alone fits the type (the username is checked per request)
      if (prefix + suffix !== "") encodeValue(a!, prefix + suffix, bad);
      continue;
    }
    const v = encodeValue(a!, p.value, bad);
    if (holeAttr === undefined) {
      before = Buffer.concat([before, rdn(a!, v)]);
      slashBefore += slashOf(a!, v);
    } else {
      after = Buffer.concat([after, rdn(a!, v)]);
      slashAfter += slashOf(a!, v);
    }
  }
  return { format, before, after, slashBefore, slashAfter, attr: holeAttr!, prefix, suffix };
}

/** Characters a username may not bring into a DN (see the top of this file). */
const NAME_SEPARATORS = /[/+\\]/;

/**
 * The subject for `name` (the username without suffixes): DER of the Name and the
 * X509_NAME_oneline slash form. Refusals are RequestErrors.
 */
export function buildSubject(template: DnTemplate, name: string): { der: Buffer; slash: string } {
  const bad = (m: string): never => {
    throw new RequestError("bad_subject", m);
  };
  if (name.length === 0) bad("username is empty");
  const why = badText(name);
  if (why) bad(`username ${why}`);
  const sep = NAME_SEPARATORS.exec(name);
  if (sep) bad(`username contains ${JSON.stringify(sep[0])}, which is not allowed in a certificate name`);
  if (name !== name.trim()) bad("username has leading or trailing spaces");
  const value = template.prefix + name + template.suffix;
  const a = template.attr;
  const v = encodeValue(a, value, (m) => bad(`username does not fit the certificate name: ${m}`));
  const mid = rdn(a, v);
  return { der: seq(template.before, mid, template.after), slash: template.slashBefore + slashOf(a, v) + template.slashAfter };
}

// ---------------------------------------------------------------------------------------
// Reading names

/** An attribute of a parsed Name: type OID, ASN.1 string tag, value bytes. */
export interface NameAttribute {
  oid: string;
  short: string | undefined;
  tag: number;
  value: Buffer;
}

/** The RDNs of a Name DER (each RDN a list of attributes), strictly parsed. */
export function parseName(der: Buffer, fail: ErrorFactory): NameAttribute[][] {
  const top = parseDer(der, fail, { maxSize: 64 * 1024, maxDepth: 8 });
  if (top.tag !== TAG.SEQUENCE) throw fail("Name is not a SEQUENCE");
  return children(top, fail).map((r) => {
    if (r.tag !== TAG.SET) throw fail("RDN is not a SET");
    const attrs = children(r, fail);
    if (attrs.length === 0) throw fail("empty RDN");
    return attrs.map((at) => {
      const s = new DerSequence(at, fail, "AttributeTypeAndValue");
      const o = decodeOid(s.next(TAG.OID, "type"), "attribute type", fail);
      const v = s.next(undefined, "value");
      s.end();
      return { oid: o, short: SHORT_BY_OID.get(o), tag: v.tag, value: v.value };
    });
  });
}

/** X509_NAME_oneline form of a Name DER (what `openssl ca` writes in index.txt). */
export function nameToSlash(der: Buffer, fail: ErrorFactory): string {
  let out = "";
  for (const r of parseName(der, fail)) for (const a of r) out += `/${a.short ?? a.oid}=${onelineValue(a.value)}`;
  return out;
}
