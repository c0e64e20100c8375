// index.txt as `openssl ca` writes it: the files of its directory, the fields of a line,
// serials and times in its notation, and a strict scanner that reports each bad line with its
// number and what was expected. No state and no I/O: cadb.ts and check-db.ts read the files.
import { SERIAL as SERIAL_GRAMMAR } from "../../../proto/contract.js";
import { DatabaseError } from "../errors.js";
import { INDEX_ONLY_REASONS, REVOCATION_REASONS } from "../reasons.js";

export type IndexStatus = "V" | "R" | "E";

export interface IndexEntry {
  status: IndexStatus;
  /** upper-case hex, even length, as openssl prints it */
  serialHex: string;
  notAfter: Date;
  revokedAt?: Date;
  /** reason as written in index.txt (e.g. "keyCompromise"); absent when none was given */
  reason?: string;
  /** RFC 5280 reason code of `reason` */
  reasonCode?: number;
  subject: string;
  /** 1-based line number in index.txt */
  line: number;
}

export interface RevokedEntry {
  serialHex: string;
  revokedAt: Date;
  reasonCode: number | undefined;
  notAfter: Date;
}

export const INDEX = "index.txt";
export const INDEX_ATTR = "index.txt.attr";
export const SERIAL = "serial";
export const CRLNUMBER = "crlnumber";
export const NEWCERTS = "newcerts";

const FIELDS_TEXT = "status, expiry, revocation date, serial, file name, subject";
const TIME_RE = /^(?:[0-9]{12}|[0-9]{14})Z$/;

/** Reason names openssl writes in index.txt -> RFC 5280 codes (openssl's extras included). */
const REASON_CODES: Readonly<Record<string, number>> = {
  ...REVOCATION_REASONS,
  ...INDEX_ONLY_REASONS,
  holdInstruction: 6, // "holdInstruction,<OID>": certificateHold with an instruction
  keyTime: 1, // "keyTime,<time>": keyCompromise with an invalidity date
  CAkeyTime: 2, // "CAkeyTime,<time>": CACompromise with an invalidity date
};

// ---------------------------------------------------------------------------------------------
// serials and times

/** Upper-case even-length hex without leading zero bytes (openssl's BN_bn2hex), "00" for 0. */
export function serialToHex(serial: Buffer): string {
  let i = 0;
  while (i < serial.length - 1 && serial[i] === 0) i++;
  const hex = serial.subarray(i).toString("hex").toUpperCase();
  return hex === "" ? "00" : hex;
}

/** YYMMDDHHMMSSZ (UTCTime) for 1950-2049, YYYYMMDDHHMMSSZ (GeneralizedTime) otherwise, as in certificates. */
export function formatTime(d: Date): string {
  const y = d.getUTCFullYear();
  const p2 = (n: number) => String(n).padStart(2, "0");
  const rest = `${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}${p2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y <= 2049) return `${p2(y % 100)}${rest}`;
  return `${String(y).padStart(4, "0")}${rest}`;
}

/** Parses an index.txt time; undefined when it is not one. */
export function parseTime(s: string): Date | undefined {
  if (!TIME_RE.test(s)) return undefined;
  let y: number;
  let r: string;
  if (s.length === 13) {
    const yy = Number(s.slice(0, 2));
    y = yy >= 50 ? 1900 + yy : 2000 + yy;
    r = s.slice(2);
  } else {
    y = Number(s.slice(0, 4));
    r = s.slice(4);
  }
  const mo = Number(r.slice(0, 2));
  const da = Number(r.slice(2, 4));
  const h = Number(r.slice(4, 6));
  const mi = Number(r.slice(6, 8));
  const se = Number(r.slice(8, 10));
  if (mo < 1 || mo > 12 || da < 1 || da > 31 || h > 23 || mi > 59 || se > 59) return undefined;
  const d = new Date(Date.UTC(y, mo - 1, da, h, mi, se));
  if (d.getUTCDate() !== da) return undefined; // 31 February
  if (y < 100) d.setUTCFullYear(y); // Date.UTC maps 0-99 to 1900-1999
  return d;
}

// ---------------------------------------------------------------------------------------------
// reading lines

export interface ParseProblem {
  line: number;
  message: string;
}

/** One well-formed line, as scanIndex() saw it (byte offsets into the scanned Buffer). */
export interface ScannedLine {
  /** 1-based line number */
  line: number;
  status: IndexStatus;
  exp: string;
  rev: string;
  serial: string;
  subject: string;
  start: number;
  /** offset after the line's LF */
  end: number;
}

/** Lines are decoded this many bytes at a time (latin1: one character per byte, offsets stay byte offsets). */
const SCAN_CHUNK = 1 << 22;

/**
 * Reads index.txt bytes line by line. Strict: each problem is reported with its line number and
 * what was expected. `onProblem` receives them all (check-db); without it the first one is
 * thrown. `visit` gets each well-formed line and returns the line number that already holds
 * its serial, if one does (a duplicate is a problem too).
 */
export function scanIndex(bytes: Buffer, file: string, visit: (l: ScannedLine) => number | undefined, onProblem?: (p: ParseProblem) => void, firstLine = 1): void {
  const fail = (line: number, message: string): void => {
    if (onProblem) onProblem({ line, message });
    else throw new DatabaseError("corrupt_index", message, { file, line });
  };
  const utf8 = (latin1: string): string => (/[\x80-\xff]/.test(latin1) ? Buffer.from(latin1, "latin1").toString("utf8") : latin1);
  const n = bytes.length;
  let lineNo = firstLine - 1;
  let base = 0;
  while (base < n) {
    let limit = n;
    if (base + SCAN_CHUNK < n) {
      const lf = bytes.lastIndexOf(10, base + SCAN_CHUNK - 1);
      if (lf >= base) limit = lf + 1;
      else {
        const next = bytes.indexOf(10, base + SCAN_CHUNK);
        limit = next === -1 ? n : next + 1;
      }
    }
    const text = bytes.toString("latin1", base, limit);
    let start = 0;
    while (start < text.length) {
      lineNo++;
      let end = text.indexOf("\n", start);
      const complete = end !== -1;
      if (!complete) end = text.length;
      const line = text.slice(start, end);
      const lineStart = base + start;
      start = end + 1;
      if (!complete) {
        fail(lineNo, `last line has no newline at its end (interrupted write?): expected lines ending in LF; found ${JSON.stringify(utf8(line.slice(0, 80)))}`);
        if (onProblem) continue;
      }
      if (line.endsWith("\r")) {
        fail(lineNo, "line ends with CR LF (DOS line ending): expected LF only");
        continue;
      }
      if (line.length === 0) {
        fail(lineNo, `empty line: expected ${FIELDS_TEXT} separated by tabs`);
        continue;
      }
      const f = line.split("\t");
      if (f.length !== 6) {
        fail(lineNo, `${f.length} tab-separated field${f.length === 1 ? "" : "s"}, expected 6 (${FIELDS_TEXT})`);
        continue;
      }
      const [status, exp, rev, serial, fileName, subject] = f as [string, string, string, string, string, string];
      if (status !== "V" && status !== "R" && status !== "E") {
        fail(lineNo, `unknown status ${JSON.stringify(utf8(status))}: expected V (valid), R (revoked) or E (expired)`);
        continue;
      }
      if (!parseTime(exp)) {
        fail(lineNo, `bad expiry date ${JSON.stringify(utf8(exp))}: expected YYMMDDHHMMSSZ (or YYYYMMDDHHMMSSZ)`);
        continue;
      }
      if (status === "R") {
        const parts = rev.split(",");
        if (!parseTime(parts[0]!)) {
          fail(lineNo, `bad revocation date ${JSON.stringify(utf8(rev))}: expected YYMMDDHHMMSSZ[,reason] on an R line`);
          continue;
        }
        if (parts.length > 1 && !(parts[1]! in REASON_CODES)) {
          fail(lineNo, `unknown revocation reason ${JSON.stringify(utf8(parts[1]!))}: expected one of ${Object.keys(REASON_CODES).join(", ")}`);
          continue;
        }
        if (parts.length > 3 || (parts.length === 3 && parts[1] !== "holdInstruction" && parts[1] !== "keyTime" && parts[1] !== "CAkeyTime")) {
          fail(lineNo, `bad revocation field ${JSON.stringify(utf8(rev))}: expected YYMMDDHHMMSSZ[,reason]`);
          continue;
        }
      } else if (rev !== "") {
        fail(lineNo, `revocation field ${JSON.stringify(utf8(rev))} on a ${status} line: expected it empty`);
        continue;
      }
      if (!SERIAL_GRAMMAR.test(serial)) {
        fail(lineNo, `bad serial ${JSON.stringify(utf8(serial))}: expected upper-case hex with an even number of digits (1 to 32 bytes)`);
        continue;
      }
      if (fileName === "") {
        fail(lineNo, `empty file name field: expected "unknown" or a file name`);
        continue;
      }
      if (subject === "" || !subject.startsWith("/")) {
        fail(lineNo, `bad subject ${JSON.stringify(utf8(subject.slice(0, 80)))}: expected a /-form DN`);
        continue;
      }
      const prev = visit({ line: lineNo, status, exp, rev, serial, subject: utf8(subject), start: lineStart, end: lineStart + line.length + 1 });
      if (prev !== undefined) fail(lineNo, `duplicate serial ${serial}, already on line ${prev}`);
    }
    base = limit;
  }
}

/** The fields of one line of index.txt (without its LF), already validated. */
export function lineToEntry(text: string, line: number): IndexEntry {
  const f = text.split("\t");
  const e: IndexEntry = { status: f[0] as IndexStatus, serialHex: f[3]!, notAfter: parseTime(f[1]!)!, subject: f[5]!, line };
  if (e.status === "R") {
    const parts = f[2]!.split(",");
    e.revokedAt = parseTime(parts[0]!)!;
    if (parts.length > 1) {
      e.reason = parts[1]!;
      e.reasonCode = REASON_CODES[parts[1]!];
    }
  }
  return e;
}

export function revokedEntryOf(e: IndexEntry): RevokedEntry {
  return { serialHex: e.serialHex, revokedAt: e.revokedAt!, reasonCode: e.reasonCode, notAfter: e.notAfter };
}

/** Whether the line at [start, end) of `bytes` has `serial` as its fourth field. */
export function serialFieldIs(bytes: Buffer, start: number, end: number, serial: string): boolean {
  let p = start;
  for (let tabs = 0; tabs < 3; tabs++) {
    p = bytes.indexOf(9, p);
    if (p === -1 || p >= end) return false;
    p++;
  }
  if (p + serial.length >= end || bytes[p + serial.length] !== 9) return false;
  for (let k = 0; k < serial.length; k++) if (bytes[p + k] !== serial.charCodeAt(k)) return false;
  return true;
}

