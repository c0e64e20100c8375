// The audit trail's line format and its hash chain, shared by the signer (which writes it) and
// the operator commands (which verify it).
//
// One JSON object per line, LF-terminated, keys in this order:
//   {"seq":N,"time":"<ISO 8601>","prev":"<64 hex>","event":"<name>", ...event fields}
// seq counts from 1 over the whole trail (across rotated files); prev is the SHA-256 of the
// previous line's bytes without its LF (64 zeros for line 1). The head of the chain is
// (seq, SHA-256) of the last line; every CRL carries it (checkpoint.ts).
//
// Files: AUDIT_LOG is the current file; rotation renames it to AUDIT_LOG.<seq of its first line,
// 12 digits> and starts a new one whose first line chains to the last line of the old one.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { RevocationOrigin } from "../../../proto/contract.js";

export const GENESIS = "0".repeat(64);

export interface ChainHead {
  /** seq of the last line (0: empty trail) */
  seq: number;
  /** SHA-256 (hex) of the last line, GENESIS for an empty trail */
  hash: string;
}

export interface AuditRecord {
  seq: number;
  time: string;
  prev: string;
  event: string;
  [field: string]: unknown;
}

/** The events the signer writes, and what each one records (README, etoken-ca(8)). */
export const AUDIT_EVENTS = [
  "trail-begin", "signer-start", "issued", "revoked", "crl", "login", "login-failed", "logout", "token", "torn-line",
] as const;
export type AuditEvent = (typeof AUDIT_EVENTS)[number];

/** Who revoked (RevokeEntry.origin, proto/contract.ts), as the trail's `by` says it. */
export const REVOKED_BY: Readonly<Record<RevocationOrigin, string>> = {
  "revoke-queue": "revoke-cert (revoke queue entry)",
  "presence-fence": "the presence fence (signed while the token was being removed)",
  undelivered: "the kernel (signed, not delivered to its client)",
};

export function lineHash(line: string | Buffer): string {
  return createHash("sha256").update(line).digest("hex");
}

/** The text of one line (without LF). `fields` may not override the chain keys. */
export function formatLine(head: ChainHead, event: AuditEvent, fields: Record<string, unknown>, now: Date): string {
  const record: Record<string, unknown> = { seq: head.seq + 1, time: now.toISOString(), prev: head.hash, event };
  for (const [k, v] of Object.entries(fields)) if (!(k in record) && v !== undefined) record[k] = v;
  return JSON.stringify(record);
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Parses one line; a string saying what is wrong when it is not an audit record. */
export function parseLine(text: string): AuditRecord | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return "not JSON";
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not a JSON object";
  const r = v as Record<string, unknown>;
  if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 1) return "no valid seq";
  if (typeof r.time !== "string" || Number.isNaN(Date.parse(r.time))) return "no valid time";
  if (typeof r.prev !== "string" || !HEX64.test(r.prev)) return "no valid prev (64 hex digits)";
  if (typeof r.event !== "string" || !(AUDIT_EVENTS as readonly string[]).includes(r.event)) return `unknown event ${JSON.stringify(String(r.event).slice(0, 40))}`;
  return r as AuditRecord;
}

/** Rotated files of `logPath`, oldest first, then the current file (if it exists). */
export function trailFiles(logPath: string): string[] {
  const dir = path.dirname(logPath);
  const base = path.basename(logPath);
  const rotated = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.([0-9]{12})$`);
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const files = names.filter((n) => rotated.test(n)).sort().map((n) => path.join(dir, n));
  if (names.includes(base)) files.push(logPath);
  return files;
}

/** The name a full current file is rotated to: AUDIT_LOG.<seq of its first line>. */
export function rotatedName(logPath: string, firstSeq: number): string {
  return `${logPath}.${String(firstSeq).padStart(12, "0")}`;
}

export interface TrailLine {
  file: string;
  /** 1-based line number in its file */
  lineNo: number;
  text: string;
  /** SHA-256 (hex) of the line's bytes without its LF */
  hash: string;
  /** the parsed record, or what is wrong with the line */
  record: AuditRecord | string;
}

/**
 * Every complete line of the trail, in order, across its files. A last line without its LF (a
 * crash mid-append) is reported through `onTorn` and not returned: nothing was chained to it.
 */
export function* readTrail(logPath: string, onTorn?: (file: string, lineNo: number, bytes: number) => void): Generator<TrailLine> {
  for (const file of trailFiles(logPath)) {
    const data = fs.readFileSync(file);
    let start = 0;
    let lineNo = 0;
    while (start < data.length) {
      const nl = data.indexOf(10, start);
      lineNo++;
      if (nl === -1) {
        onTorn?.(file, lineNo, data.length - start);
        break;
      }
      const text = data.toString("utf8", start, nl);
      yield { file, lineNo, text, hash: lineHash(data.subarray(start, nl)), record: parseLine(text) };
      start = nl + 1;
    }
  }
}

/** The trail's complete lines from the last backwards (the newest file first), parsed. */
export function* readTrailBackwards(logPath: string): Generator<AuditRecord | string> {
  for (const file of trailFiles(logPath).reverse()) {
    const data = fs.readFileSync(file);
    let end = data.lastIndexOf(10); // anything after the last LF is an incomplete line
    while (end > 0) {
      const start = data.lastIndexOf(10, end - 1) + 1;
      yield parseLine(data.toString("utf8", start, end));
      end = start - 1;
    }
  }
}
