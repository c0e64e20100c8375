// `etoken-ca check-db`: index.txt against newcerts/ and the audit trail, one precise line per problem. Read-only.
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { nameToSlash } from "../x509/dn.js";
import { normalizeSerial } from "../spool-protocol.js";
import { certificateSubjectDer } from "../x509/certificate.js";
import { CRLNUMBER, INDEX, NEWCERTS, SERIAL, parseTime, scanIndex, type ScannedLine } from "./index-format.js";
import { countLineEnds } from "./index-reader.js";
import { crossCheck, trailFacts } from "../audit/cross-check.js";
import { readTrail, trailFiles } from "../audit/trail.js";

export interface CheckCounts {
  lines: number;
  valid: number;
  revoked: number;
  expired: number;
  certificateFiles: number;
}

export interface CheckReport {
  problems: string[];
  counts: CheckCounts;
  /** lines of the audit trail cross-checked; undefined when there is no trail */
  auditLines?: number;
}

/**
 * The subject in the X509_NAME_oneline form that the signer (and openssl ca) write in index.txt,
 * from the certificate's DER with the signer's own code: node's text form escapes commas and
 * shows UTF-8 as characters, where index.txt has `,` and `\xHH`.
 */
function slashSubject(cert: X509Certificate): string {
  const fail = (m: string): Error => new Error(m);
  return nameToSlash(certificateSubjectDer(cert.raw, fail), fail);
}

/** Serial as openssl prints it (node gives upper-case hex, possibly odd length or with a leading 00). */
function certSerial(cert: X509Certificate): string {
  return normalizeSerial(cert.serialNumber) ?? cert.serialNumber;
}

/** index.txt against newcerts/ and, given `auditLog`, against the audit trail. */
export function checkDatabase(dir: string, auditLog?: string): CheckReport {
  const problems: string[] = [];
  const counts: CheckCounts = { lines: 0, valid: 0, revoked: 0, expired: 0, certificateFiles: 0 };
  const base = path.resolve(dir);
  const indexFile = path.join(base, INDEX);
  const newcerts = path.join(base, NEWCERTS);

  let bytes: Buffer | undefined;
  try {
    bytes = fs.readFileSync(indexFile);
  } catch (err) {
    problems.push(`${indexFile}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const rows: ScannedLine[] = [];
  if (bytes !== undefined) {
    const lineOf = new Map<string, number>();
    scanIndex(
      bytes,
      indexFile,
      (l) => {
        const prev = lineOf.get(l.serial);
        if (prev !== undefined) return prev;
        lineOf.set(l.serial, l.line);
        rows.push(l);
        return undefined;
      },
      (p) => problems.push(`${indexFile}:${p.line}: ${p.message}`),
    );
    counts.lines = countLineEnds(bytes) + (bytes.length > 0 && bytes[bytes.length - 1] !== 10 ? 1 : 0);
  }
  for (const r of rows) {
    if (r.status === "V") counts.valid++;
    else if (r.status === "R") counts.revoked++;
    else counts.expired++;
  }

  for (const [name, re, what] of [
    [SERIAL, /^[0-9A-F]+\n?$/i, "one line of hex digits (the next serial)"],
    [CRLNUMBER, /^[0-9A-F]+\n?$/i, "one line of hex digits (the next CRL number)"],
  ] as const) {
    const f = path.join(base, name);
    try {
      const s = fs.readFileSync(f, "utf8");
      if (!re.test(s)) problems.push(`${f}:1: expected ${what}, found ${JSON.stringify(s.slice(0, 40))}`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" || name === SERIAL) problems.push(`${f}: ${code === "ENOENT" ? "missing" : `cannot read: ${code}`}: expected ${what}`);
    }
  }

  let files: string[] = [];
  try {
    files = fs.readdirSync(newcerts);
  } catch (err) {
    problems.push(`${newcerts}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "missing directory" : `cannot read: ${(err as NodeJS.ErrnoException).code}`}: expected <SERIAL>.pem for each index.txt line`);
  }
  const fileSet = new Set<string>();
  for (const f of files) {
    const m = /^([0-9A-F]+)\.pem$/.exec(f);
    if (!m) {
      problems.push(`${path.join(newcerts, f)}: unexpected file name: expected <SERIAL>.pem with an upper-case hex serial`);
      continue;
    }
    fileSet.add(m[1]!);
  }
  counts.certificateFiles = fileSet.size;

  // Every line: its certificate file exists, parses, and agrees on serial, subject and expiry.
  const indexed = new Set<string>();
  for (const r of rows) {
    indexed.add(r.serial);
    const f = path.join(newcerts, `${r.serial}.pem`);
    if (!fileSet.has(r.serial)) {
      if (files.length > 0 || fs.existsSync(newcerts)) problems.push(`${indexFile}:${r.line}: serial ${r.serial}: certificate file ${f} is missing`);
      continue;
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(fs.readFileSync(f));
    } catch (err) {
      problems.push(`${f}: not a readable certificate (${(err as Error).message.split("\n")[0]}); index.txt line ${r.line}`);
      continue;
    }
    const cs = certSerial(cert);
    if (cs !== r.serial) problems.push(`${f}: certificate serial ${cs} differs from the file name and index.txt line ${r.line} (${r.serial})`);
    let subj: string;
    try {
      subj = slashSubject(cert);
    } catch (err) {
      subj = `(unreadable: ${(err as Error).message})`;
    }
    if (subj !== r.subject) problems.push(`${f}: certificate subject ${subj} differs from index.txt line ${r.line} (${r.subject})`);
    const exp = parseTime(r.exp);
    const notAfter = new Date(cert.validTo);
    if (exp && Math.abs(exp.getTime() - notAfter.getTime()) >= 1000) {
      problems.push(`${f}: certificate notAfter ${notAfter.toISOString()} differs from index.txt line ${r.line} (${exp.toISOString()})`);
    }
  }
  for (const s of fileSet) {
    if (!indexed.has(s)) problems.push(`${path.join(newcerts, `${s}.pem`)}: no line for serial ${s} in ${indexFile}`);
  }
  let auditLines: number | undefined;
  if (auditLog !== undefined && trailFiles(auditLog).length > 0) {
    const lines = [...readTrail(auditLog)];
    auditLines = lines.length;
    const indexRows = rows.map((r) => ({ line: r.line, serial: r.serial, status: r.status, subject: r.subject }));
    for (const d of crossCheck(indexRows, trailFacts(lines), indexFile, auditLog)) problems.push(d.message);
  }
  return { problems, counts, auditLines };
}
