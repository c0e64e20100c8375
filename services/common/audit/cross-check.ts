// The audit trail against index.txt: every certificate the index records since the trail began
// has its `issued` line, every revocation its `revoked` line, and the other way round. check-db
// reports each disagreement; the signer, at start, writes the lines a crash kept it from writing
// (marked "recovered") so that the two agree again.
import { readTrail, type TrailLine } from "./trail.js";

/** One index.txt line as the cross-check needs it. */
export interface IndexRow {
  line: number;
  serial: string;
  status: string;
  subject: string;
  /** the revocation date of an R line */
  revokedAt?: Date;
  reason?: string;
  notAfter?: Date;
}

export interface TrailFacts {
  /** index.txt lines 1..adoptedLines predate the trail (trail-begin) */
  adoptedLines: number;
  issued: Map<string, { seq: number; subject: string }>;
  revoked: Map<string, number>;
}

export function trailFacts(lines: Iterable<TrailLine>): TrailFacts {
  const facts: TrailFacts = { adoptedLines: 0, issued: new Map(), revoked: new Map() };
  for (const l of lines) {
    const r = l.record;
    if (typeof r === "string") continue;
    if (r.event === "trail-begin" && typeof r.indexLines === "number") facts.adoptedLines = r.indexLines;
    else if (r.event === "issued" && typeof r.serial === "string") facts.issued.set(r.serial, { seq: r.seq, subject: String(r.subject ?? "") });
    else if (r.event === "revoked" && typeof r.serial === "string") facts.revoked.set(r.serial, r.seq);
  }
  return facts;
}

export function readTrailFacts(logPath: string): TrailFacts {
  return trailFacts(readTrail(logPath));
}

export type Disagreement =
  | { kind: "issue-missing"; row: IndexRow; message: string }
  | { kind: "revocation-missing"; row: IndexRow; message: string }
  | { kind: "not-in-index" | "revoked-not-in-index" | "subject-differs"; serial: string; seq: number; message: string };

/**
 * `indexOnly`: only what index.txt has and the trail lacks (the signer's recovery at start: it
 * keeps no row, so a database of a million lines costs one pass and no memory).
 */
export function crossCheck(rows: Iterable<IndexRow>, facts: TrailFacts, indexFile: string, logPath: string, opts: { indexOnly?: boolean } = {}): Disagreement[] {
  const out: Disagreement[] = [];
  const indexed = new Map<string, Pick<IndexRow, "line" | "status">>();
  for (const row of rows) {
    if (!opts.indexOnly) indexed.set(row.serial, { line: row.line, status: row.status });
    const adopted = row.line <= facts.adoptedLines;
    const issued = facts.issued.get(row.serial);
    if (!issued && !adopted) out.push({ kind: "issue-missing", row, message: `${indexFile}:${row.line}: serial ${row.serial} has no issued line in the audit trail ${logPath}` });
    if (issued && issued.subject !== row.subject) {
      out.push({ kind: "subject-differs", serial: row.serial, seq: issued.seq, message: `${logPath}: line ${issued.seq}: serial ${row.serial} was issued to ${issued.subject}, index.txt line ${row.line} says ${row.subject}` });
    }
    if (row.status === "R" && !adopted && !facts.revoked.has(row.serial)) {
      out.push({ kind: "revocation-missing", row, message: `${indexFile}:${row.line}: serial ${row.serial} is revoked but the audit trail ${logPath} has no revoked line for it` });
    }
  }
  if (opts.indexOnly) return out;
  for (const [serial, { seq }] of facts.issued) {
    if (!indexed.has(serial)) out.push({ kind: "not-in-index", serial, seq, message: `${logPath}: line ${seq}: serial ${serial} was issued, but ${indexFile} has no line for it` });
  }
  for (const [serial, seq] of facts.revoked) {
    const row = indexed.get(serial);
    if (!row || row.status !== "R") out.push({ kind: "revoked-not-in-index", serial, seq, message: `${logPath}: line ${seq}: serial ${serial} was revoked, but ${indexFile} ${row ? `line ${row.line} has status ${row.status}` : "has no line for it"}` });
  }
  return out;
}
