// index.txt as the signer keeps it: read once into a packed memory index (index-lines.ts: where
// each line starts, its status, a hash table of serials), then served through one descriptor:
// lines appended (O_APPEND) and made durable by fdatasync, shared by every line appended before
// it runs (group commit); lines read back with pread; a revocation rewrites the file atomically.
// The memory index and the descriptor always describe the same file: a new descriptor comes
// with a new read (load) or with the lines another writer appended (extend, follow.ts).
import { createHash, type Hash } from "node:crypto";
import * as fs from "node:fs";
import { writeFileAtomic } from "../../common/durable-file.js";
import { DatabaseError } from "../../common/errors.js";
import { lineToEntry, revokedEntryOf, scanIndex, serialFieldIs, type IndexEntry, type RevokedEntry } from "../../common/ca-dir/index-format.js";
import { IndexLines } from "../index-lines.js";
import { ioError, readLinePieces } from "../../common/ca-dir/index-reader.js";

/** The line at [start, start + length) of the file, without its LF (pread). */
function readLine(fd: number, start: number, length: number): string {
  const buf = Buffer.allocUnsafe(length);
  const got = fs.readSync(fd, buf, 0, length, start);
  return buf.toString("utf8", 0, Math.max(0, got - 1));
}

export class IndexFile {
  /** where each line of index.txt starts, its status, its serial's hash (index-lines.ts) */
  private lines = new IndexLines();
  /** the parsed R lines, by line index (CRLs read nothing else) */
  private revokedLines = new Map<number, RevokedEntry>();
  private revokedList: RevokedEntry[] | undefined;
  /** index.txt, opened once per load: O_RDWR|O_APPEND (appends, and preads of lines), O_RDONLY when read-only */
  private fd: number | undefined;
  private inode = 0;
  /** after a failed write or re-read, index.txt may differ from the memory index: read it again */
  private isStale = false;
  /** sha256 of the bytes the memory index covers (lines.end of them): recognises a rewrite that only added lines at the end (what `openssl ca` does) */
  private covered: Hash = createHash("sha256");
  /** group commit: lines appended, waiting for the next fdatasync of index.txt */
  private waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private commitScheduled = false;

  constructor(
    readonly file: string,
    readonly readOnly: boolean,
  ) {}

  /** true while a descriptor serves the memory index (false after a failed read) */
  get isOpen(): boolean {
    return this.fd !== undefined;
  }
  get ino(): number {
    return this.inode;
  }
  get stale(): boolean {
    return this.isStale;
  }
  /** bytes of index.txt the memory index covers */
  get end(): number {
    return this.lines.end;
  }
  get size(): number {
    return this.lines.length;
  }
  get revokedCount(): number {
    return this.revokedLines.size;
  }
  /** sha256 of the bytes the memory index covers */
  coveredDigest(): Buffer {
    return this.covered.copy().digest();
  }

  private openFlags(): number {
    return this.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_APPEND;
  }

  /** A new descriptor of index.txt, as this index uses it (O_RDWR|O_APPEND or O_RDONLY). */
  openFile(): number {
    return fs.openSync(this.file, this.openFlags());
  }

  /** (Re)reads index.txt through a new descriptor; lines waiting for a commit on the old one are synced first. */
  load(): void {
    this.close();
    let fd: number;
    try {
      fd = this.openFile();
    } catch (err) {
      throw ioError(this.file, err, "cannot open index.txt");
    }
    const lines = new IndexLines();
    const revokedLines = new Map<number, RevokedEntry>();
    const covered = createHash("sha256");
    try {
      let st: fs.Stats;
      try {
        st = fs.fstatSync(fd);
      } catch (err) {
        throw ioError(this.file, err, "cannot read index.txt");
      }
      readLinePieces(
        fd,
        st.size,
        (piece, offset) => {
          this.indexBytes(fd, lines, revokedLines, piece, offset);
          covered.update(piece);
        },
        (err) => ioError(this.file, err, "cannot read index.txt"),
      );
      this.inode = st.ino;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    this.fd = fd;
    this.lines = lines;
    this.revokedLines = revokedLines;
    this.revokedList = undefined;
    this.isStale = false;
    this.covered = covered;
  }

  /** Syncs the lines waiting for a commit and closes the descriptor. */
  close(): void {
    if (this.fd !== undefined && !this.readOnly && this.waiting.length > 0) {
      try {
        this.commitSync();
      } catch {
        // the waiters were rejected
      }
    }
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  /**
   * Indexes the lines in `part`, which starts at byte `partStart` of index.txt (read through
   * `fd`), after the lines already in `lines`. A duplicate serial or a bad line throws.
   */
  private indexBytes(fd: number, lines: IndexLines, revokedLines: Map<number, RevokedEntry>, part: Buffer, partStart: number): void {
    scanIndex(
      part,
      this.file,
      (l) => {
        const prev = lines.find(l.serial, (i) => {
          const start = lines.start(i);
          if (start >= partStart) return serialFieldIs(part, start - partStart, start - partStart + lines.byteLength(i), l.serial);
          return readLine(fd, start, lines.byteLength(i)).split("\t")[3] === l.serial;
        });
        if (prev !== -1) return prev + 1;
        const i = lines.push(l.serial, l.status, l.end - l.start);
        if (l.status === "R") revokedLines.set(i, revokedEntryOf(lineToEntry(part.toString("utf8", l.start, l.end - 1), l.line)));
        return undefined;
      },
      undefined,
      lines.length + 1,
    );
  }

  /**
   * Another writer replaced index.txt with what this index covers plus `tail` (follow.ts): `fd`
   * (of the new file) serves from now on and the new lines are indexed. False when a new line
   * does not index (then the index is stale: the caller reads the whole file, which says why).
   */
  extend(fd: number, ino: number, tail: Buffer): boolean {
    const known = this.lines.end;
    if (!this.readOnly && this.waiting.length > 0) {
      try {
        this.commitSync();
      } catch {
        // the waiters were rejected
      }
    }
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = fd;
    this.inode = ino;
    const added = new Map<number, RevokedEntry>();
    try {
      this.indexBytes(fd, this.lines, added, tail, known);
    } catch {
      this.isStale = true; // the lines pushed so far are dropped by the full read
      return false;
    }
    for (const [i, e] of added) this.revokedLines.set(i, e);
    if (added.size) this.revokedList = undefined;
    this.covered.update(tail);
    return true;
  }

  /** Line i of index.txt without its LF, read from the file (pread). */
  lineText(i: number): string {
    return readLine(this.fd!, this.lines.start(i), this.lines.byteLength(i));
  }

  status(i: number): string {
    return this.lines.status(i);
  }

  /** Index of the line recording `serial` (normalized), or -1. */
  findLine(serial: string): number {
    return this.lines.find(serial, (i) => {
      const f = this.lineText(i).split("\t");
      return f[3] === serial;
    });
  }

  /** Appends one line (`text` without its LF; not yet synced); returns its index. */
  append(serial: string, text: string): number {
    const line = Buffer.from(`${text}\n`);
    try {
      const written = fs.writeSync(this.fd!, line);
      if (written !== line.length) throw Object.assign(new Error(`short write (${written} of ${line.length} bytes)`), { code: "EIO" });
    } catch (err) {
      // the line may be partly written: make the next record() re-read (and fail loudly)
      this.isStale = true;
      throw ioError(this.file, err, `cannot append serial ${serial} to index.txt`);
    }
    this.covered.update(line);
    return this.lines.push(serial, "V", line.length);
  }

  /**
   * Resolves when every line appended so far is on disk (group commit): lines appended while a
   * flush is running share the next one, so N concurrent requests cost one fdatasync, not N. If
   * the flush fails the promise rejects (the line may or may not have reached the disk; the
   * next use re-reads index.txt).
   */
  whenDurable(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.scheduleCommit();
    });
  }

  private scheduleCommit(): void {
    if (this.commitScheduled) return;
    this.commitScheduled = true;
    // setImmediate: requests already read from the socket are signed and appended first. The
    // flush itself is synchronous: one fdatasync costs ~0.25 ms here, handing it to the thread
    // pool and back cost ~0.8 ms more, and requests arriving meanwhile share the next flush.
    setImmediate(() => {
      this.commitScheduled = false;
      if (this.waiting.length === 0) return; // a rewrite meanwhile synced (and settled) them
      if (this.fd === undefined) {
        const err = new DatabaseError("read_only", "the CA database was closed before its records were synced", { file: this.file });
        for (const b of this.waiting.splice(0)) b.reject(err);
        return;
      }
      try {
        this.commitSync();
      } catch {
        // the waiters were rejected
      }
    });
  }

  /** fdatasync of index.txt now; also settles the group-commit waiters it covers. */
  commitSync(): void {
    const batch = this.waiting.splice(0);
    try {
      fs.fdatasyncSync(this.fd!);
    } catch (err) {
      this.isStale = true;
      const e = ioError(this.file, err, "cannot sync index.txt");
      for (const b of batch) b.reject(e);
      throw e;
    }
    for (const b of batch) b.resolve();
  }

  /** All entries in index.txt order (reads the file). */
  *entries(): Iterable<IndexEntry> {
    const bytes = this.indexedBytes();
    for (let i = 0; i < this.lines.length; i++) {
      const start = this.lines.start(i);
      yield lineToEntry(bytes.toString("utf8", start, start + this.lines.byteLength(i) - 1), i + 1);
    }
  }

  /**
   * Serial and status of the lines from index `first` (0-based) on: one read of that part of
   * index.txt, so the cost is that of the lines asked for, not of the database.
   */
  linesFrom(first: number): { index: number; serialHex: string; status: string }[] {
    const out: { index: number; serialHex: string; status: string }[] = [];
    if (first >= this.lines.length || this.fd === undefined) return out;
    const base = this.lines.start(first);
    const bytes = this.indexedBytes(base);
    for (let i = first; i < this.lines.length; i++) {
      const start = this.lines.start(i) - base;
      const f = bytes.toString("utf8", start, start + this.lines.byteLength(i) - 1).split("\t");
      out.push({ index: i, serialHex: f[3] ?? "", status: this.lines.status(i) });
    }
    return out;
  }

  /** The bytes of index.txt the memory index covers (from byte `from` on), read through its descriptor. */
  private indexedBytes(from = 0): Buffer {
    const size = this.lines.end - from;
    const bytes = Buffer.allocUnsafe(size);
    let got = 0;
    try {
      while (got < size) {
        const r = fs.readSync(this.fd!, bytes, got, size - got, from + got);
        if (r === 0) break;
        got += r;
      }
    } catch (err) {
      throw ioError(this.file, err, "cannot read index.txt");
    }
    if (got !== size) throw new DatabaseError("io", `index.txt is shorter (${from + got} bytes) than when it was read (${this.lines.end}): changed behind our back`, { file: this.file });
    return bytes;
  }

  /** Writes index.txt anew with `changed` lines (index -> text without LF, now R lines) replaced, atomically. */
  rewrite(changed: ReadonlyMap<number, string>): void {
    const old = this.indexedBytes();
    const order = [...changed.keys()].sort((a, b) => a - b);
    const parts: Buffer[] = [];
    const lengths = new Map<number, number>();
    let at = 0;
    for (const i of order) {
      const start = this.lines.start(i);
      parts.push(old.subarray(at, start));
      const line = Buffer.from(`${changed.get(i)!}\n`);
      parts.push(line);
      lengths.set(i, line.length);
      at = start + this.lines.byteLength(i);
    }
    parts.push(old.subarray(at));
    const data = Buffer.concat(parts);
    try {
      writeFileAtomic(this.file, data, { mode: 0o600 });
    } catch (err) {
      throw ioError(this.file, err, "cannot rewrite index.txt");
    }
    // the rewrite was fsynced: every appended line waiting for a group commit is on disk now
    for (const b of this.waiting.splice(0)) b.resolve();
    fs.closeSync(this.fd!);
    this.fd = undefined;
    try {
      this.fd = fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_APPEND);
      this.inode = fs.fstatSync(this.fd).ino;
    } catch (err) {
      this.isStale = true;
      throw ioError(this.file, err, "cannot open the rewritten index.txt");
    }
    this.lines.relayout(lengths);
    for (const [i, text] of changed) {
      this.lines.setStatus(i, "R");
      this.revokedLines.set(i, revokedEntryOf(lineToEntry(text, i + 1)));
    }
    this.revokedList = undefined;
    this.covered = createHash("sha256").update(data);
  }

  /** The R lines, for CRLs, in index.txt order (parsed when read or revoked; the list is kept until the next change). */
  revokedEntries(): readonly RevokedEntry[] {
    if (this.revokedList) return this.revokedList;
    const list: RevokedEntry[] = [];
    for (let i = 0; i < this.lines.length; i++) if (this.lines.isRevoked(i)) list.push(this.revokedLines.get(i)!);
    this.revokedList = list;
    return list;
  }
}
