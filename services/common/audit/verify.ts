// `etoken-ca audit verify`: the hash chain of the trail, and every CRL's checkpoint against it.
// A changed line breaks the chain at the next line; a removed line breaks seq or prev; a
// rewritten tail (every prev recomputed) or a truncated trail no longer matches the head that a
// CRL signed by the token committed to; a CRL made without the CA key fails its signature.
import * as fs from "node:fs";
import * as path from "node:path";
import type { KeyObject } from "node:crypto";
import { readCrl, type ReadCrl } from "./checkpoint.js";
import { GENESIS, readTrail, trailFiles, type ChainHead } from "./trail.js";

export interface VerifyInput {
  logPath: string;
  /** directories whose crl-NNNNNN.der files are checked (CRL_DIR, and copies from elsewhere) */
  crlDirs: string[];
  /** further CRL files (DER or PEM) */
  crlFiles?: string[];
  caKey: KeyObject;
  /** start at this seq, trusting its prev (rotated files archived away) */
  from?: number;
}

export interface CheckedCrl {
  file: string;
  number: bigint | undefined;
  checkpoint: ChainHead;
}

export interface VerifyReport {
  files: number;
  /** seq of the first and last line checked (0, 0: none) */
  first: number;
  last: number;
  /** the chain is intact from `first` to `last` */
  chainIntact: boolean;
  /** CRLs whose signature verified and whose checkpoint matched the trail, by seq */
  checkpoints: CheckedCrl[];
  /** CRLs without a checkpoint (made before the trail) */
  withoutCheckpoint: number;
  /** what is wrong, the first broken line of the chain first */
  problems: string[];
  notes: string[];
}

function crlFilesIn(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  return names.filter((n) => /^crl-[0-9]+\.der$/.test(n)).sort().map((n) => path.join(dir, n));
}

function derOf(file: string): Buffer {
  const data = fs.readFileSync(file);
  const text = data.toString("latin1");
  const m = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/.exec(text);
  return m ? Buffer.from(m[1]!.replace(/\s+/g, ""), "base64") : data;
}

const short = (h: string): string => `${h.slice(0, 16)}...`;

export function verifyTrail(input: VerifyInput): VerifyReport {
  const report: VerifyReport = { files: trailFiles(input.logPath).length, first: 0, last: 0, chainIntact: true, checkpoints: [], withoutCheckpoint: 0, problems: [], notes: [] };
  const from = input.from ?? 1;

  // The CRLs first: which seq each one commits to.
  const bySeq = new Map<number, { file: string; crl: ReadCrl }[]>();
  const crlProblems: string[] = [];
  for (const file of [...input.crlDirs.flatMap(crlFilesIn), ...(input.crlFiles ?? [])]) {
    let crl: ReadCrl;
    try {
      crl = readCrl(derOf(file), input.caKey, (m) => new Error(m));
    } catch (err) {
      crlProblems.push(`${file}: not a CRL etoken-ca can read (${(err as Error).message})`);
      continue;
    }
    const name = `${file} (CRL #${crl.number ?? "?"})`;
    if (!crl.signatureValid) {
      crlProblems.push(`${name}: its signature does not verify with CA_CERT: a forged checkpoint (or another CA's CRL)`);
      continue;
    }
    if (!crl.checkpoint) {
      report.withoutCheckpoint++;
      continue;
    }
    if (crl.checkpoint.seq < from) continue;
    const list = bySeq.get(crl.checkpoint.seq) ?? [];
    list.push({ file: name, crl });
    bySeq.set(crl.checkpoint.seq, list);
  }
  const checkCheckpoints = (seq: number, hash: string, where: string): void => {
    for (const c of bySeq.get(seq) ?? []) {
      if (c.crl.checkpoint!.hash === hash) report.checkpoints.push({ file: c.file, number: c.crl.number, checkpoint: c.crl.checkpoint! });
      else crlProblems.push(`${c.file}: commits to line ${seq} with SHA-256 ${short(c.crl.checkpoint!.hash)}, but ${where} has ${short(hash)}: the trail was rewritten up to there`);
    }
    bySeq.delete(seq);
  };
  if (from === 1) checkCheckpoints(0, GENESIS, "the empty trail");

  let prev: ChainHead | undefined = from === 1 ? { seq: 0, hash: GENESIS } : undefined;
  let torn: string | undefined;
  const breakAt = (msg: string): void => {
    if (report.chainIntact) report.problems.push(msg);
    report.chainIntact = false;
  };
  for (const l of readTrail(input.logPath, (file, lineNo, bytes) => {
    torn = `${file}:${lineNo}: an incomplete last line (${bytes} bytes, no newline), left by a crash mid-append: not part of the chain; the signer records and removes it at its next start`;
  })) {
    if (torn) {
      // a torn line that is not the trail's last: cut out of the middle of the trail
      breakAt(torn.replace(/: an incomplete last line .*/, ": an incomplete line in the middle of the trail: the trail was cut or edited here"));
      torn = undefined;
    }
    const where = `${l.file}:${l.lineNo}`;
    const r = l.record;
    if (typeof r === "string") {
      if (prev === undefined) continue; // before --from
      breakAt(`${where}: not an audit record (${r}): the line was edited or inserted here`);
      prev = undefined;
      continue;
    }
    if (r.seq < from) continue;
    if (report.first === 0) report.first = r.seq;
    report.last = r.seq;
    checkCheckpoints(r.seq, l.hash, `line ${r.seq} (${where})`);
    if (prev === undefined) {
      if (!report.chainIntact) continue; // after a break: only the checkpoints are looked at
      prev = { seq: r.seq, hash: l.hash }; // --from: this line's prev is trusted
      continue;
    }
    if (r.seq !== prev.seq + 1) {
      breakAt(
        r.seq > prev.seq + 1
          ? `${where}: seq ${r.seq} follows seq ${prev.seq}: line${r.seq - prev.seq > 2 ? `s ${prev.seq + 1}..${r.seq - 1} were` : ` ${prev.seq + 1} was`} removed`
          : `${where}: seq ${r.seq} follows seq ${prev.seq}: lines were duplicated or reordered here`,
      );
    } else if (r.prev !== prev.hash) {
      breakAt(`${where}: line ${r.seq}'s prev ${short(r.prev)} is not the SHA-256 of line ${prev.seq} (${short(prev.hash)}): line ${prev.seq} was changed, or a line between them was removed`);
    }
    prev = { seq: r.seq, hash: l.hash };
  }
  if (torn) report.notes.push(torn);
  if (report.first === 0 && from > 1) report.problems.push(`no line with seq ${from} or later in the trail`);
  if (report.first > from && from > 1) breakAt(`the trail has no line ${from}: it starts at ${report.first}`);

  // Checkpoints beyond the end of the trail: it was truncated.
  for (const [seq, list] of [...bySeq].sort((a, b) => a[0] - b[0])) {
    for (const c of list) {
      crlProblems.push(
        report.last < seq
          ? `${c.file}: commits to line ${seq}, but the trail ends at line ${report.last}: line${seq - report.last > 1 ? `s ${report.last + 1}..${seq} were` : ` ${seq} was`} removed (the trail was truncated)`
          : `${c.file}: commits to line ${seq}, which is not in the trail`,
      );
    }
  }
  report.problems.push(...crlProblems);
  const latest = report.checkpoints.reduce((m, c) => Math.max(m, c.checkpoint.seq), 0);
  if (report.last > latest && report.chainIntact) {
    report.notes.push(`line${report.last - latest > 1 ? `s ${latest + 1}..${report.last} are` : ` ${report.last} is`} not yet committed by a CRL (the next CRL commits ${report.last - latest > 1 ? "them" : "it"})`);
  }
  return report;
}

/** The report as the operator reads it; the first line says OK or BROKEN. */
export function formatReport(logPath: string, r: VerifyReport): string[] {
  const out: string[] = [];
  out.push(r.problems.length === 0 ? "OK" : `BROKEN: ${r.problems.length} problem${r.problems.length === 1 ? "" : "s"}`);
  out.push(...r.problems);
  const span = r.first === 0 ? "no lines" : `lines ${r.first}..${r.last}`;
  out.push(`trail:       ${logPath}: ${span} in ${r.files} file${r.files === 1 ? "" : "s"}, chain ${r.chainIntact ? "intact" : "BROKEN"}`);
  const latest = [...r.checkpoints].sort((a, b) => b.checkpoint.seq - a.checkpoint.seq || Number((b.number ?? 0n) - (a.number ?? 0n)))[0];
  out.push(
    `checkpoints: ${r.checkpoints.length} CRL${r.checkpoints.length === 1 ? "" : "s"} signed by the CA key match the trail` +
      (latest ? ` (latest: CRL #${latest.number ?? "?"} commits line ${latest.checkpoint.seq})` : "") +
      (r.withoutCheckpoint ? `; ${r.withoutCheckpoint} older CRL${r.withoutCheckpoint === 1 ? "" : "s"} carry no checkpoint` : ""),
  );
  for (const n of r.notes) out.push(`note: ${n}`);
  return out;
}
