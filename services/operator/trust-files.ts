// `etoken-ca trust-files`: what relying parties install for this CA, IGTF-style:
// <hash>.0, <hash>.signing_policy (Globus EACL), <hash>.namespaces (EUGridPMA format 1.0),
// <hash>.crl_url, <hash>.info, and links under the old (MD5) subject hash.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { TAG, oid, seq, set, tlv } from "../common/x509/der.js";
import { replaceSymlink, syncDirectory, writeFileAtomic } from "../common/durable-file.js";
import { ConfigError } from "../common/errors.js";
import { pemEncode } from "../common/x509/pem.js";
import type { CaCertificate } from "../common/x509/certificate.js";
import { compileDnFormat, parseName } from "../common/x509/dn.js";

/** IGTF .info fields the operator must supply; `@NAME@` placeholders are written for the missing. */
export const INFO_FIELDS_TO_FILL = ["alias", "url", "email", "status"] as const;
export type InfoFields = Partial<Record<(typeof INFO_FIELDS_TO_FILL)[number], string>>;

export interface TrustFiles {
  hash: string;
  oldHash: string;
  /** file name -> content */
  files: Map<string, string>;
  /** link name -> target (same directory) */
  links: Map<string, string>;
  /** .info fields left as placeholders */
  unfilled: string[];
}

const isSpace = (b: number): boolean => b === 0x20 || (b >= 0x09 && b <= 0x0d);

function decodeString(tag: number, v: Buffer): string | undefined {
  switch (tag) {
    case TAG.UTF8_STRING: return v.toString("utf8");
    case TAG.PRINTABLE_STRING: case TAG.IA5_STRING: case TAG.T61_STRING: case 0x1a: return v.toString("latin1");
    case TAG.BMP_STRING: { const s = Buffer.from(v); s.swap16(); return s.toString("utf16le"); }
    case TAG.UNIVERSAL_STRING: {
      let out = "";
      for (let i = 0; i + 3 < v.length; i += 4) out += String.fromCodePoint(v.readUInt32BE(i));
      return out;
    }
    default: return undefined;
  }
}

/** X509_NAME_canon's value: UTF-8, outer spaces removed, inner runs of spaces as one, ASCII lower case. */
function canonValue(tag: number, v: Buffer): Buffer {
  const s = decodeString(tag, v);
  if (s === undefined) return tlv(tag, v);
  const u = Buffer.from(s, "utf8");
  let start = 0;
  let end = u.length;
  while (start < end && isSpace(u[start]!)) start++;
  while (end > start && isSpace(u[end - 1]!)) end--;
  const out: number[] = [];
  for (let i = start; i < end; i++) {
    const b = u[i]!;
    if (isSpace(b)) {
      if (!isSpace(u[i - 1]!)) out.push(0x20);
    } else out.push(b >= 0x41 && b <= 0x5a ? b + 0x20 : b);
  }
  return tlv(TAG.UTF8_STRING, Buffer.from(out));
}

function derSetOf(items: Buffer[]): Buffer {
  const sorted = [...items].sort((a, b) => {
    const n = Math.max(a.length, b.length);
    return Buffer.compare(Buffer.concat([a, Buffer.alloc(n - a.length)]), Buffer.concat([b, Buffer.alloc(n - b.length)]));
  });
  return set(...sorted);
}

/** `openssl x509 -subject_hash`: SHA-1 of the canonical Name (its RDNs without the SEQUENCE header). */
export function subjectHash(nameDer: Buffer): string {
  const fail = (m: string): Error => new ConfigError("bad_ca_cert", `CA certificate subject: ${m}`);
  const canon = Buffer.concat(parseName(nameDer, fail).map((rdn) => derSetOf(rdn.map((a) => seq(oid(a.oid), canonValue(a.tag, a.value))))));
  return hashHex(crypto.createHash("sha1").update(canon).digest());
}

/** `openssl x509 -subject_hash_old`: MD5 of the Name DER. */
export function subjectHashOld(nameDer: Buffer): string {
  return hashHex(crypto.createHash("md5").update(nameDer).digest());
}

function hashHex(digest: Buffer): string {
  return digest.readUInt32LE(0).toString(16).padStart(8, "0");
}

/** `openssl x509 -fingerprint -sha1` without its label. */
export function sha1Fingerprint(der: Buffer): string {
  return crypto.createHash("sha1").update(der).digest("hex").toUpperCase().match(/../g)!.join(":");
}

// Neither file format has an escape for its quotes, a Globus pattern has no literal * or ?,
// and X509_NAME_oneline's \/, \+ and \xHH escapes would not compare reliably across tools.
const INEXPRESSIBLE = /['"*?\\]|[^\x20-\x7e]/;

function checkExpressible(what: string, s: string): void {
  const m = INEXPRESSIBLE.exec(s);
  if (!m) return;
  const c = m[0];
  const shown = /[\x20-\x7e]/.test(c) ? JSON.stringify(c) : `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
  throw new ConfigError(
    "trust_files_inexpressible",
    `${what} ${JSON.stringify(s)} contains ${shown}, which a signing_policy or namespaces file cannot express ` +
      `(no quotes, '*', '?', backslash escapes (from '/', '+' or non-ASCII in a value) or non-ASCII characters)`,
  );
}

/**
 * The fixed start of every subject DN_FORMAT can produce, in slash form: the RDNs before %s,
 * plus, when %s sits inside a value, that attribute and the text before %s; when %s stands
 * where RDNs go, the username starts a new RDN, hence the trailing '/'.
 */
export function namespacePrefix(dnFormat: string): string {
  const t = compileDnFormat(dnFormat);
  const holeAttr = t.attr as { short: string } | undefined;
  const prefix = holeAttr ? `${t.slashBefore}/${holeAttr.short}=${t.prefix}` : `${t.slashBefore}/`;
  checkExpressible("DN_FORMAT's fixed part", prefix);
  return prefix;
}

const REGEX_SPECIAL = /[.[\](){}+^$|]/g;

export function signingPolicy(caSubject: string, prefix: string): string {
  return [
    `# Globus signing policy for ${caSubject}`,
    `# written by etoken-ca trust-files from CA_CERT and DN_FORMAT`,
    `access_id_CA      X509         '${caSubject}'`,
    `pos_rights        globus        CA:sign`,
    `cond_subjects     globus       '"${prefix}*"'`,
    "",
  ].join("\n");
}

export function namespaces(caSubject: string, prefix: string, hash: string, alias: string): string {
  return [
    "##############################################################################",
    "#NAMESPACES-VERSION: 1.0",
    "#",
    `# @(#)${hash}.namespaces`,
    `# CA alias    : ${alias}`,
    `#    subord_of: `,
    `#    subjectDN: ${caSubject}`,
    `#    hash     : ${hash}`,
    "#",
    `TO Issuer "${caSubject}" \\`,
    `  PERMIT Subject "${prefix.replace(REGEX_SPECIAL, "\\$&")}.*"`,
    "",
  ].join("\n");
}

export function info(caSubject: string, fingerprint: string, crlUrls: readonly string[], fields: InfoFields): { text: string; unfilled: string[] } {
  const unfilled: string[] = [];
  const value = (name: string, v: string | undefined): string => {
    if (v !== undefined && v !== "") return v;
    unfilled.push(name);
    return `@${name.toUpperCase()}@`;
  };
  const lines = [
    "# IGTF-style CA information, written by etoken-ca trust-files.",
    "# Replace every @NAME@ placeholder (alias: a short name without spaces; status: e.g.",
    "# accredited:iota, accredited:mics, unaccredited or experimental) before publishing.",
    `alias = ${value("alias", fields.alias)}`,
    `url = ${value("url", fields.url)}`,
    `crl_url = ${value("crl_url", crlUrls[0])}`,
    `email = ${value("email", fields.email)}`,
    `status = ${value("status", fields.status)}`,
    `sha1fp.0 = ${fingerprint}`,
    `subjectdn = "${caSubject}"`,
    "",
  ];
  return { text: lines.join("\n"), unfilled };
}

export function buildTrustFiles(ca: CaCertificate, dnFormat: string, crlUrls: readonly string[], fields: InfoFields): TrustFiles {
  checkExpressible("the CA certificate's subject", ca.subjectSlash);
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && /[\x00-\x1f\x7f]/.test(v)) throw new ConfigError("bad_usage", `--${k} contains a control character`);
  const prefix = namespacePrefix(dnFormat);
  const hash = subjectHash(ca.subjectDer);
  const oldHash = subjectHashOld(ca.subjectDer);
  const inf = info(ca.subjectSlash, sha1Fingerprint(ca.der), crlUrls, fields);
  const files = new Map<string, string>([
    [`${hash}.0`, pemEncode(ca.der, "CERTIFICATE")],
    [`${hash}.signing_policy`, signingPolicy(ca.subjectSlash, prefix)],
    [`${hash}.namespaces`, namespaces(ca.subjectSlash, prefix, hash, fields.alias ?? "@ALIAS@")],
    [`${hash}.info`, inf.text],
  ]);
  if (crlUrls.length > 0) files.set(`${hash}.crl_url`, crlUrls.join("\n") + "\n");
  const links = new Map<string, string>();
  if (oldHash !== hash) for (const ext of ["0", "signing_policy", "namespaces"]) links.set(`${oldHash}.${ext}`, `${hash}.${ext}`);
  return { hash, oldHash, files, links, unfilled: inf.unfilled };
}

/** Writes the files (0644, each replaced atomically) and the old-hash links into dir. */
export function writeTrustFiles(dir: string, t: TrustFiles): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const [name, text] of t.files) writeFileAtomic(path.join(dir, name), text, { mode: 0o644, syncDirectory: false });
  for (const [name, target] of t.links) replaceSymlink(path.join(dir, name), target, { syncDirectory: false });
  syncDirectory(dir);
}
