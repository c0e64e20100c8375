// Subject names: the MyProxy username, the operator's DN_FORMAT, and the subject DER.
//
// The username is DATA, and where DN_FORMAT's %s stands says which shape it has:
// - inside a value (`/DC=org/CN=%s`): one value, inserted into that RDN; it can never add,
//   remove or reorder an RDN. Characters that separate RDNs in the slash form that grid
//   tools use for names (grid-mapfiles, signing_policy, `openssl -subj`) are refused rather
//   than escaped: `/`, `+` and `\`. Older OpenSSL versions print `/` and `+` inside values
//   unescaped (X509_NAME_oneline), so a user called `evil/CN=admin` would look like two RDNs
//   to every tool that reads those strings. Everything else printable (`,` `=` `"` `'` `<`
//   `>` `;` `#` and non-ASCII letters) is kept as data; OpenSSL escapes it where its output
//   format needs escaping.
// - between RDNs (`/DC=org%s`, `%s`): the seed's DN-suffix convention. The username is a
//   slash-form RDN sequence read by the same parser as DN_FORMAT, limited to the attribute
//   types of USERNAME_RDN_TYPES, and inserted where %s stands: the fixed RDNs before it stay
//   the prefix, so a signing_policy namespace on them holds whatever the username says.
//   (`\/` inside a value is accepted as the front-ends send it; those old tools show it as
//   a `/`, which can only fake RDNs the username could have brought itself, of the allowed
//   types, or ones that look like them.)
//
// The `slash` form returned for index.txt is OpenSSL's X509_NAME_oneline form (what
// `openssl ca` writes): short names, `\/` and `\+` inside values, `\xHH` for every byte
// outside printable ASCII (UTF-8 is shown byte by byte).

import { ConfigError, RequestError } from "../errors.js";
import {
  DerSequence, TAG, children, decodeOid, isIa5, isPrintable, oid, parseDer, seq, set, tlv, type ErrorFactory,
} from "./der.js";
import { MAX_USERNAME_BYTES } from "../spool-protocol.js";

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
 *  private use, unassigned, line/paragraph separators. Built on first use: its \p{...}
 *  classes cost ~0.3 ms of a fresh process's CPU even when it never runs. */
let forbiddenChars: RegExp | undefined;
const FORBIDDEN_CHARS = (): RegExp => (forbiddenChars ??= new RegExp("[\\p{Cc}\\p{Cf}\\p{Cs}\\p{Co}\\p{Cn}\\p{Zl}\\p{Zp}\\uFFFD]", "u"));
/** Spaces other than U+0020 (look like a space, compare differently). */
const ODD_SPACES = /(?! )\p{Zs}/u;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
/** None of the above: checked first, because running the \p{...} classes costs ~1 ms of CPU in a fresh process (etoken-ca-client). */
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

function describeChar(s: string): string {
  const cp = s.codePointAt(0)!;
  return `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** Why `s` cannot be used as text in a name, or undefined when it can. */
function badText(s: string): string | undefined {
  if (PRINTABLE_ASCII.test(s)) return undefined;
  if (LONE_SURROGATE.test(s)) return "is not valid Unicode";
  const m = FORBIDDEN_CHARS().exec(s) ?? ODD_SPACES.exec(s);
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

/** An unescaped `/` followed by `TYPE=`: where an RDN of a DN-suffix username starts. */
const RDN_START = /^[A-Za-z][A-Za-z0-9]*=/;

/** Index of the last RDN start in `raw` (0 when there is none): suffixes only follow it. */
function lastRdnStart(raw: string): number {
  let last = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === "\\") i++;
    else if (raw[i] === "/" && RDN_START.test(raw.slice(i + 1, i + 66))) last = i;
  }
  return last;
}

/**
 * Splits MyProxy's username into the name and its suffixes (DESIGN §5):
 * `John Doe email=jdoe@example.org email=x@y.org info:key=value,k2=v2`, or, with a DN-suffix
 * name, `/O=Example/CN=John Doe email=jdoe@example.org`. The suffixes follow the name,
 * separated by single spaces; the first word starting with `email=` or `info:` after the
 * name's last RDN start (`/TYPE=`) ends the name. So ` email=` text in an RDN that another
 * RDN follows stays data (`/O=A email=b/CN=c` is two RDNs), and a suffix may contain `/`
 * (`info:url=http://host/path`). Refusals are RequestErrors.
 */
export function splitUsername(raw: string): SplitUsername {
  if (typeof raw !== "string" || raw.length === 0) throw reqError("bad_username", "username is empty");
  const bytes = Buffer.byteLength(raw, "utf8");
  if (bytes > MAX_USERNAME_BYTES) throw reqError("bad_username", `username of ${bytes} bytes is longer than ${MAX_USERNAME_BYTES}`);
  const m = CONTROL.exec(raw);
  if (m) throw reqError("bad_username", `username contains the control character ${describeChar(m[0])}`);
  if (LONE_SURROGATE.test(raw)) throw reqError("bad_username", "username is not valid Unicode");

  const tail = lastRdnStart(raw);
  const words = raw.slice(tail).split(" ");
  const first = words.findIndex((w) => w.startsWith("email=") || w.startsWith("info:"));
  const name = raw.slice(0, tail) + (first < 0 ? words : words.slice(0, first)).join(" ");
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
// Slash-form RDN sequences: DN_FORMAT and DN-suffix usernames

/** One RDN as written: attribute name, unescaped value, where %s sits in it (-1: nowhere). */
interface WrittenRdn {
  type: string;
  value: string;
  hole: number;
}

interface SlashText {
  rdns: WrittenRdn[];
  /** index of the RDN that %s stands before when it stands between RDNs (-1: it does not) */
  between: number;
  holes: number;
}

/**
 * The one parser of slash-form names (`/DC=org/O=A\/S/CN=x`): `\/` `\\` `\+` are the only
 * escapes, an unescaped `+` (a multi-valued RDN) is refused, every RDN is `TYPE=value`. With
 * `template` (DN_FORMAT), `%s` marks the username. It stands between RDNs when it comes first
 * or right after a value's last character (not a space), and `/` or the end follows it
 * (`%s`, `/DC=org%s`, `/DC=org%s/CN=robot`); anywhere else in a value it is inside that value
 * (`/CN=%s`, `/CN=user %s`, `/CN=x %s y`).
 */
function parseSlashText(text: string, template: boolean, bad: (m: string) => never): SlashText {
  if (!text.startsWith("/") && !(template && text.startsWith("%s"))) {
    bad(template ? "must start with '/' or %s, e.g. /DC=org/DC=example/CN=%s" : "must be a slash-form RDN sequence starting with '/', e.g. /O=Example/CN=Jane Doe");
  }
  const rdns: WrittenRdn[] = [];
  let cur = "";
  let type: string | undefined;
  let hole = -1;
  let between = -1;
  let holes = 0;
  let open = false; // an RDN is being read
  const finish = (): void => {
    if (type === undefined) bad(cur === "" ? "empty RDN (two '/' in a row or a trailing '/')" : `RDN ${JSON.stringify(cur)} has no '='`);
    rdns.push({ type: type!, value: cur, hole });
    cur = "";
    type = undefined;
    hole = -1;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "/") {
      if (open) finish();
      open = true;
    } else if (template && c === "%") {
      if (text[i + 1] !== "s") bad("'%' must be followed by 's' (the username)");
      holes++;
      i++;
      const next = text[i + 1];
      if (!open) {
        between = rdns.length;
      } else if (type === undefined) {
        bad("%s must be inside a value or right after one (/DC=org%s), not in an attribute name");
      } else if (cur !== "" && !cur.endsWith(" ") && hole < 0 && (next === undefined || next === "/")) {
        finish();
        open = false;
        between = rdns.length;
      } else {
        hole = cur.length;
      }
    } else if (!open) {
      bad("%s that stands for RDNs must be followed by '/' or end DN_FORMAT");
    } else if (c === "\\") {
      const e = text[i + 1];
      if (e === undefined) bad("ends with a lone backslash");
      if (e !== "/" && e !== "\\" && e !== "+") bad(`a backslash escapes only / \\ and + (found \\${e})`);
      cur += e;
      i++;
    } else if (c === "=" && type === undefined) {
      type = cur;
      cur = "";
    } else if (c === "+") {
      bad("multi-valued RDNs ('+') are not supported; write \\+ for a literal plus sign");
    } else {
      cur += c;
    }
  }
  if (open) finish();
  return { rdns, between, holes };
}

function attributeType(name: string, bad: (m: string) => never): AttrType {
  const a = BY_NAME.get(name.toLowerCase());
  if (!a) bad(`unknown attribute type ${JSON.stringify(name)} (known: ${ATTRS.map((x) => x.short).join(", ")})`);
  return a!;
}

/** The attribute types a DN-suffix username may bring when USERNAME_RDN_TYPES is not set. */
export const DEFAULT_USERNAME_RDN_TYPES: readonly string[] = ["DC", "O", "OU", "CN"];

/** USERNAME_RDN_TYPES: attribute names (short or long) to OpenSSL short names. */
export function parseUsernameRdnTypes(names: readonly string[], bad: (m: string) => never): string[] {
  if (names.length === 0) bad("at least one attribute type (e.g. DC,O,OU,CN)");
  return [...new Set(names.map((n) => attributeType(n, bad).short))];
}

// ---------------------------------------------------------------------------------------
// DN_FORMAT

/**
 * Where DN_FORMAT's %s puts the username: `value` = into the value of one RDN (the username
 * is one value); `rdns` = between RDNs (the username is a slash-form RDN sequence, the seed's
 * DN-suffix convention).
 */
export type UsernameMode = "value" | "rdns";

export interface DnTemplate {
  readonly format: string;
  readonly mode: UsernameMode;
  /** DER of the RDNs before / after the username (no SEQUENCE header) */
  readonly before: Buffer;
  readonly after: Buffer;
  readonly slashBefore: string;
  readonly slashAfter: string;
  /** value mode: the attribute whose value holds %s and the fixed text around %s in it */
  readonly attr: AttrType | undefined;
  readonly prefix: string;
  readonly suffix: string;
  /** rdns mode: the attribute types (short names) a username may bring */
  readonly usernameTypes: readonly string[];
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
 * Compiles DN_FORMAT once: `/DC=org/DC=example/O=Ex/CN=%s` (value mode) or `/DC=org/DC=example%s`
 * (rdns mode, see parseSlashText for where %s may stand). Attribute names are OpenSSL's short or
 * long names (case does not matter). `fail` gets the rule that is broken; by default it throws
 * a ConfigError naming DN_FORMAT and its value.
 */
export function compileDnFormat(
  format: string,
  usernameTypes: readonly string[] = DEFAULT_USERNAME_RDN_TYPES,
  fail?: (rule: string) => never,
): DnTemplate {
  const bad =
    fail ??
    ((m: string): never => {
      throw new ConfigError("bad_dn_format", `DN_FORMAT=${JSON.stringify(format)}: ${m}`, { key: "DN_FORMAT" });
    });
  const why = badText(format);
  if (why) bad(`${why}`);
  const parsed = parseSlashText(format, true, bad);
  if (parsed.holes !== 1) bad(`must contain exactly one %s (found ${parsed.holes})`);
  const mode: UsernameMode = parsed.between >= 0 ? "rdns" : "value";

  let before = Buffer.alloc(0);
  let after = Buffer.alloc(0);
  let slashBefore = "";
  let slashAfter = "";
  let holeAttr: AttrType | undefined;
  let prefix = "";
  let suffix = "";
  let seenHole = false;
  parsed.rdns.forEach((p, index) => {
    const a = attributeType(p.type, bad);
    if (index === parsed.between) seenHole = true;
    if (p.hole >= 0) {
      holeAttr = a;
      seenHole = true;
      prefix = p.value.slice(0, p.hole);
      suffix = p.value.slice(p.hole);
      // check the fixed text alone fits the type (the username is checked per request)
      if (prefix + suffix !== "") encodeValue(a, prefix + suffix, bad);
      return;
    }
    const v = encodeValue(a, p.value, bad);
    if (!seenHole) {
      before = Buffer.concat([before, rdn(a, v)]);
      slashBefore += slashOf(a, v);
    } else {
      after = Buffer.concat([after, rdn(a, v)]);
      slashAfter += slashOf(a, v);
    }
  });
  return { format, mode, before, after, slashBefore, slashAfter, attr: holeAttr, prefix, suffix, usernameTypes: parseUsernameRdnTypes(usernameTypes, bad) };
}

/** Characters a username may not bring into a DN in value mode (see the top of this file). */
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
  const middle = template.mode === "rdns" ? usernameRdns(template, name, bad) : usernameValue(template, name, bad);
  return { der: seq(template.before, middle.der, template.after), slash: template.slashBefore + middle.slash + template.slashAfter };
}

function usernameValue(template: DnTemplate, name: string, bad: (m: string) => never): { der: Buffer; slash: string } {
  const sep = NAME_SEPARATORS.exec(name);
  if (sep) bad(`username contains ${JSON.stringify(sep[0])}, which is not allowed in a certificate name (DN_FORMAT puts the username into one value)`);
  if (name !== name.trim()) bad("username has leading or trailing spaces");
  const a = template.attr!;
  const v = encodeValue(a, template.prefix + name + template.suffix, (m) => bad(`username does not fit the certificate name: ${m}`));
  return { der: rdn(a, v), slash: slashOf(a, v) };
}

function usernameRdns(template: DnTemplate, name: string, bad: (m: string) => never): { der: Buffer; slash: string } {
  const fail = (m: string): never => bad(`username ${JSON.stringify(name.slice(0, 80))} ${m}`);
  const { rdns } = parseSlashText(name, false, fail);
  const der: Buffer[] = [];
  let slash = "";
  for (const r of rdns) {
    const a = attributeType(r.type, fail);
    if (!template.usernameTypes.includes(a.short)) {
      fail(`brings the attribute type ${a.short}, which USERNAME_RDN_TYPES (${template.usernameTypes.join(",")}) does not allow`);
    }
    if (r.value !== r.value.trim()) fail(`has leading or trailing spaces in its ${a.short} value`);
    const v = encodeValue(a, r.value, fail);
    der.push(rdn(a, v));
    slash += slashOf(a, v);
  }
  return { der: Buffer.concat(der), slash };
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
