// The signer's writer of the audit trail (AUDIT_LOG; format and chain: common/audit/trail.ts).
//
// Appends only (O_APPEND), one write(2) per line. Durability: a line that a CRL is about to
// commit to is fdatasynced first (checkpoint()), and so are revocations, CRLs and token events;
// an issuance line is synced within DEFERRED_FLUSH_MS, on the signer's one deferred-flush timer
// (its index.txt line is synced before the certificate leaves; a crash in between is repaired at
// the next start from index.txt, see recoverFromIndex; check-db cross-checks the whole trail).
// A crash mid-append leaves an incomplete last line: at the next open it is cut off and
// recorded in a `torn-line` line (its bytes kept there), so the chain stays whole.
// A signer restart, and `openssl ca` rewriting index.txt, continue the chain: the head is the
// last line of the file(s).
import * as fs from "node:fs";
import * as path from "node:path";
import { syncDirectory } from "../common/durable-file.js";
import { deferredFlush } from "./deferred-flush.js";
import { DatabaseError } from "../common/errors.js";
import { formatLine, GENESIS, lineHash, parseLine, readTrailBackwards, rotatedName, trailFiles, type AuditEvent, type ChainHead } from "../common/audit/trail.js";
import type { IndexEntry } from "../common/ca-dir/index-format.js";

/** What the recovery at start reads of the CA database (CaDatabase). */
export interface IndexView {
  get(serialHex: string): IndexEntry | undefined;
  linesFrom(first: number): { serialHex: string }[];
  revokedEntries(): readonly { serialHex: string; revokedAt: Date }[];
}

const TAIL_CHUNK = 64 * 1024;

function auditError(file: string, err: unknown, what: string): DatabaseError {
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  return new DatabaseError("audit_log", `${what}: ${code}`, { file });
}

/** The last LF-terminated line of `fd` (without its LF), and where the complete part ends. */
function tailOf(fd: number, size: number): { last: Buffer | undefined; completeEnd: number } {
  let buf = Buffer.alloc(0);
  let start = size;
  for (;;) {
    const lastLf = buf.lastIndexOf(10);
    if (lastLf !== -1) {
      const prevLf = lastLf === 0 ? -1 : buf.lastIndexOf(10, lastLf - 1);
      if (prevLf !== -1 || start === 0) return { last: buf.subarray(prevLf + 1, lastLf), completeEnd: start + lastLf + 1 };
    } else if (start === 0) {
      return { last: undefined, completeEnd: 0 };
    }
    const from = Math.max(0, start - TAIL_CHUNK);
    const chunk = Buffer.allocUnsafe(start - from);
    let got = 0;
    while (got < chunk.length) {
      const n = fs.readSync(fd, chunk, got, chunk.length - got, from + got);
      if (n === 0) throw new Error("EIO: the audit trail shrank while it was read");
      got += n;
    }
    buf = Buffer.concat([chunk, buf]);
    start = from;
  }
}

function firstLineOf(fd: number, size: number): Buffer | undefined {
  const chunk = Buffer.allocUnsafe(Math.min(size, TAIL_CHUNK));
  const n = fs.readSync(fd, chunk, 0, chunk.length, 0);
  const i = chunk.subarray(0, n).indexOf(10);
  return i === -1 ? undefined : chunk.subarray(0, i);
}

export class AuditLog {
  private fd: number | undefined;
  private size = 0;
  /** seq of the current file's first line (rotation names the file after it) */
  private firstSeq = 1;
  private headNow: ChainHead = { seq: 0, hash: GENESIS };
  /** the deferred-flush turn (the same function each time: scheduled once per timer) */
  private readonly syncDue = (): void => {
    try {
      this.sync();
    } catch {
      // the next append reopens and reports
    }
  };
  /** the trail had no line before this open */
  isNew = false;

  private constructor(
    readonly file: string,
    private readonly rotateBytes: number,
  ) {}

  /** Opens (creates) the trail and finds its head; an incomplete last line is recorded and cut off. */
  static open(file: string, opts: { rotateBytes: number }): AuditLog {
    const log = new AuditLog(file, opts.rotateBytes);
    log.openFile();
    return log;
  }

  head(): ChainHead {
    return { ...this.headNow };
  }

  private openFile(): void {
    const file = this.file;
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      throw auditError(file, err, "cannot open the audit trail (AUDIT_LOG)");
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new DatabaseError("audit_log", "AUDIT_LOG is not a regular file", { file });
      if (typeof process.getuid === "function" && st.uid !== process.getuid()) throw new DatabaseError("audit_log", `AUDIT_LOG is owned by uid ${st.uid}, not by the signer (uid ${process.getuid()})`, { file });
      const { last, completeEnd } = tailOf(fd, st.size);
      let torn: Buffer | undefined;
      if (completeEnd < st.size) {
        torn = Buffer.allocUnsafe(st.size - completeEnd);
        fs.readSync(fd, torn, 0, torn.length, completeEnd);
        fs.ftruncateSync(fd, completeEnd);
        fs.fdatasyncSync(fd);
      }
      this.fd = fd;
      this.size = completeEnd;
      const lastLine = last ?? this.lastLineOfRotated();
      if (lastLine) {
        const r = parseLine(lastLine.toString("utf8"));
        if (typeof r === "string") {
          throw new DatabaseError("audit_log", `the last line of the audit trail is not an audit record (${r}): the trail was damaged; run etoken-ca audit verify, and move the file aside to start a new trail`, { file });
        }
        this.headNow = { seq: r.seq, hash: lineHash(lastLine) };
      } else {
        this.isNew = true;
      }
      const first = this.size > 0 ? firstLineOf(fd, this.size) : undefined;
      const firstRecord = first ? parseLine(first.toString("utf8")) : undefined;
      this.firstSeq = firstRecord && typeof firstRecord !== "string" ? firstRecord.seq : this.headNow.seq + 1;
      if (torn) {
        this.append("torn-line", { bytes: torn.length, sha256: lineHash(torn), fragment: torn.toString("utf8"), note: "an incomplete last line (a crash mid-append) was cut off; its bytes are here" }, { sync: true });
      }
    } catch (err) {
      if (this.fd === undefined) fs.closeSync(fd);
      else this.closeFd();
      throw err instanceof DatabaseError ? err : auditError(file, err, "cannot read the audit trail (AUDIT_LOG)");
    }
  }

  private lastLineOfRotated(): Buffer | undefined {
    const rotated = trailFiles(this.file).filter((f) => f !== this.file);
    const lastFile = rotated[rotated.length - 1];
    if (!lastFile) return undefined;
    const fd = fs.openSync(lastFile, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      return tailOf(fd, fs.fstatSync(fd).size).last;
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Appends one line and returns its seq. `sync`: fdatasync before returning (otherwise within
   * DEFERRED_FLUSH_MS). Throws DatabaseError when the line could not be written.
   */
  append(event: AuditEvent, fields: Record<string, unknown>, opts: { sync?: boolean } = {}): number {
    if (this.fd === undefined) this.openFile(); // a failed write closed it: reopening cuts off what it left
    const text = formatLine(this.headNow, event, fields, new Date());
    const line = Buffer.from(`${text}\n`);
    if (this.size > 0 && this.size + line.length > this.rotateBytes) this.rotate();
    try {
      let done = 0;
      while (done < line.length) done += fs.writeSync(this.fd!, line, done, line.length - done);
    } catch (err) {
      this.closeFd();
      throw auditError(this.file, err, `cannot append to the audit trail (${event})`);
    }
    this.size += line.length;
    this.headNow = { seq: this.headNow.seq + 1, hash: lineHash(line.subarray(0, line.length - 1)) };
    if (opts.sync) this.sync();
    else this.scheduleSync();
    return this.headNow.seq;
  }

  /** The head, synced to disk: what the next CRL may commit to. */
  checkpoint(): ChainHead {
    this.sync();
    return this.head();
  }

  sync(): void {
    deferredFlush.cancel(this.syncDue);
    if (this.fd === undefined) return;
    try {
      fs.fdatasyncSync(this.fd);
    } catch (err) {
      this.closeFd();
      throw auditError(this.file, err, "cannot sync the audit trail");
    }
  }

  private scheduleSync(): void {
    deferredFlush.schedule(this.syncDue);
  }

  /** The current file becomes AUDIT_LOG.<first seq>; the new file's first line chains to its last. */
  private rotate(): void {
    this.sync();
    const target = rotatedName(this.file, this.firstSeq);
    try {
      fs.linkSync(this.file, target); // never over an existing file
      fs.unlinkSync(this.file);
      this.closeFd();
      syncDirectory(path.dirname(this.file));
    } catch (err) {
      throw auditError(this.file, err, `cannot rotate the audit trail to ${target}`);
    }
    this.firstSeq = this.headNow.seq + 1;
    const fd = fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    this.fd = fd;
    this.size = 0;
  }

  private closeFd(): void {
    if (this.fd !== undefined) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // closed
      }
    }
    this.fd = undefined;
  }

  close(): void {
    try {
      this.sync();
    } catch {
      // reported by the last append
    }
    this.closeFd();
  }

  /**
   * At start: the certificates and revocations index.txt has and the trail lacks (the signer
   * stopped between the index line and its audit line) get their lines now, marked recovered.
   * Reads the trail backwards only as far as it must: to its last `issued` line (the index lines
   * after that one's are the missing ones: both are appended in the same order) and past the
   * newest revocation date in index.txt. Returns how many lines were written.
   */
  recoverFromIndex(db: IndexView): number {
    const revoked = db.revokedEntries();
    const newestRevocation = revoked.reduce((m, e) => Math.max(m, e.revokedAt.getTime()), Number.NEGATIVE_INFINITY);
    const revokedSeen = new Set<string>();
    let lastIssued: IndexEntry | undefined;
    let horizon = Number.POSITIVE_INFINITY;
    let begin: { indexLines: number; time: number } | undefined;
    for (const r of readTrailBackwards(this.file)) {
      if (typeof r === "string") return 0; // a damaged trail: audit verify and check-db report it
      horizon = Date.parse(r.time);
      if (r.event === "revoked" && typeof r.serial === "string") revokedSeen.add(r.serial);
      if (r.event === "issued" && !lastIssued && typeof r.serial === "string") lastIssued = db.get(r.serial);
      if (r.event === "trail-begin") begin = { indexLines: Number(r.indexLines) || 0, time: horizon };
      if (begin || (lastIssued && (revoked.length === 0 || horizon < newestRevocation - 1000))) break;
    }
    if (!lastIssued && !begin) return 0;
    let n = 0;
    const note = (line: number) => `index.txt line ${line} had no audit line (the signer stopped before writing it)`;
    const first = Math.max(lastIssued ? lastIssued.line : 0, begin?.indexLines ?? 0);
    for (const l of db.linesFrom(first)) {
      const e = db.get(l.serialHex);
      if (!e) continue;
      this.append("issued", { serial: e.serialHex, subject: e.subject, notAfter: e.notAfter.toISOString(), recovered: note(e.line) });
      n++;
    }
    for (const r of revoked) {
      // index.txt's dates are whole seconds: a revocation of the horizon's second may be after it
      if (r.revokedAt.getTime() + 1000 <= horizon || revokedSeen.has(r.serialHex)) continue;
      const e = db.get(r.serialHex);
      if (!e) continue;
      this.append("revoked", { serial: e.serialHex, reason: e.reason ?? "unspecified", revokedAt: r.revokedAt.toISOString(), by: "unknown", recovered: note(e.line) });
      n++;
    }
    if (n) this.sync();
    return n;
  }

}
