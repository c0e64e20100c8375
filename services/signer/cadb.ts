// The CA database in `openssl ca`'s on-disk format, so that stock `openssl ca` works on the same
// directory and an existing directory can be adopted as is:
//
//   index.txt          one line per certificate, tab-separated, exactly as openssl writes it:
//                      V <TAB> expiry <TAB>                  <TAB> SERIAL <TAB> unknown <TAB> /subject
//                      R <TAB> expiry <TAB> revdate[,reason] <TAB> SERIAL <TAB> unknown <TAB> /subject
//                      (E lines, written by `openssl ca -updatedb`, are read as well)
//   index.txt.attr     "unique_subject = no" (we issue many certificates per subject)
//   serial             hex of the last serial + 1, as `openssl ca` expects it
//   crlnumber          hex of the next CRL number
//   newcerts/SERIAL.pem
//
// The line format and its strict reader are in index-format.ts.
//
// Unlike `openssl ca` (which rewrites index.txt on every run), issuing costs the same whatever
// the size of the database: the index lives in memory, packed (index-lines.ts: where each line
// starts, its status, a hash table of serials; ~25 bytes a line), a new certificate is
// one O_EXCL file plus one appended line; the line is synced (fdatasync of index.txt) before
// record() returns. Only a revocation rewrites index.txt (temporary file, fsync, rename, fsync
// of the directory).
//
// Durability (DESIGN §6, "a certificate is recorded (and fsynced) before it is handed back"):
// the record is the index.txt line. It holds everything the CA needs to account for a
// certificate it handed out: serial, expiry, subject, status; revocation and CRLs read nothing
// else (neither do `openssl ca -revoke/-gencrl/-status/-updatedb`). So the one flush on the
// hand-out path is fdatasync(index.txt) after the append: index.txt is never renamed or created
// on this path (its directory entry is already durable), and the append changes its size, which
// fdatasync commits with the data. newcerts/<SERIAL>.pem is a copy of what the client receives;
// it is written before the line (so a line never points at a file that was never written) but
// flushed off the hand-out path: its fsync and the fsync of newcerts/ are deferred to a
// background flush (at most NEWCERTS_FLUSH_MS later, and always on close()). A crash in that
// window can lose or truncate newcerts files of the last moments (check-db reports them as
// missing); it cannot lose an index line of a certificate that was handed out. Measured on this
// project's CI disk one flush costs ~4 ms, so 3 flushes (file, directory, index) were ~12 ms per
// certificate; this makes it one. recordGroupCommit() goes further for concurrent requests:
// every line appended before the flush runs (requests read in the same turn of the event loop,
// and those that arrived during the previous flush) shares it (group commit).
//
// One writer at a time: the signer. Running `openssl ca` on the directory while the signer is
// up is not supported; if index.txt is replaced or grows behind our back, the next record()
// notices it (inode/size) and re-reads it before appending: only the new lines when what we had
// indexed is still its beginning byte for byte (a SHA-256 of it is kept), the whole file
// otherwise. That is how the openssl backend follows `openssl ca`'s rewrite after each run.
import { createHash, randomBytes, type Hash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../common/durable-file.js";
import { DatabaseError } from "../common/errors.js";
import { REVOCATION_REASONS, type RevocationReason } from "../common/reasons.js";
import { normalizeSerial } from "../common/spool-protocol.js";
import {
  CRLNUMBER, INDEX, INDEX_ATTR, NEWCERTS, SERIAL, formatTime, lineToEntry, revokedEntryOf, scanIndex, serialFieldIs, serialToHex,
  type IndexEntry, type RevokedEntry,
} from "../common/ca-dir/index-format.js";
import { IndexLines } from "./index-lines.js";
import { ioError, readLinePieces } from "../common/ca-dir/index-reader.js";

/** The `serial` file is rewritten at most this often (see scheduleSerialFile). */
const SERIAL_FILE_DELAY_MS = 1000;

export interface RecordEntry {
  serial: Buffer;
  notAfter: Date;
  subject: string;
  /** the certificate, DER */
  certificate: Buffer;
}

export interface RevokeItem {
  serialHex: string;
  reason: RevocationReason;
  revokedAt: Date;
}

export type RevokeResult = { serialHex: string; result: "revoked" | "already-revoked" | "unknown" };

const SUBJECT_FORBIDDEN = /[\t\r\n\0]/;

// ---------------------------------------------------------------------------------------------
// small file helpers

/** The line at [start, start + length) of the file, without its LF (pread). */
function readLine(fd: number, start: number, length: number): string {
  const buf = Buffer.allocUnsafe(length);
  const got = fs.readSync(fd, buf, 0, length, start);
  return buf.toString("utf8", 0, Math.max(0, got - 1));
}

/** Deferred newcerts flush: at most this long after the file was written (off the hand-out path). */
const NEWCERTS_FLUSH_MS = 1000;
/** More unsynced newcerts files than this are flushed at once (bounds open descriptors). */
const MAX_UNSYNCED_CERTS = 256;

/** PEM as openssl writes it: 64-column base64 lines. */
function pemCertificate(der: Buffer): Buffer {
  const b64 = der.toString("base64");
  const parts = ["-----BEGIN CERTIFICATE-----\n"];
  for (let i = 0; i < b64.length; i += 64) parts.push(b64.slice(i, i + 64), "\n");
  parts.push("-----END CERTIFICATE-----\n");
  return Buffer.from(parts.join(""), "latin1");
}

// ---------------------------------------------------------------------------------------------

export interface OpenOptions {
  /** never write anything (check-db, status) */
  readOnly?: boolean;
  /** create a missing directory and files (index.txt, index.txt.attr, serial, crlnumber, newcerts/) */
  create?: boolean;
}

export class CaDatabase {
  readonly dir: string;
  readonly readOnly: boolean;
  /** where each line of index.txt starts, its status, its serial's hash (index-lines.ts) */
  private lines = new IndexLines();
  /** the parsed R lines, by line index (CRLs read nothing else) */
  private revokedLines = new Map<number, RevokedEntry>();
  private revokedList: RevokedEntry[] | undefined;
  /** index.txt, opened once per load: O_RDWR|O_APPEND (appends, and preads of lines), O_RDONLY when read-only */
  private fd: number | undefined;
  private ino = 0;
  /** after a failed write or re-read, index.txt may differ from the memory index: read it again */
  private stale = false;
  /** sha256 of the bytes the memory index covers (lines.end of them): recognises a rewrite that only added lines at the end (what `openssl ca` does) */
  private covered: Hash = createHash("sha256");
  private closed = false;
  private pendingSerial: Buffer | undefined;
  private serialTimer: NodeJS.Timeout | undefined;
  private newcertsFd: number | undefined;
  /** newcerts files written but not yet fsynced (fds kept open until the background flush). */
  private unsyncedCerts: number[] = [];
  private certFlushTimer: NodeJS.Timeout | undefined;
  private certFlushRunning = false;
  /** group commit: records appended, waiting for the next fdatasync of index.txt */
  private waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private commitScheduled = false;

  private constructor(dir: string, readOnly: boolean) {
    this.dir = dir;
    this.readOnly = readOnly;
  }

  private p(name: string): string {
    return path.join(this.dir, name);
  }

  static open(dir: string, opts: OpenOptions = {}): CaDatabase {
    const db = new CaDatabase(path.resolve(dir), opts.readOnly ?? false);
    if (opts.create && !db.readOnly) db.createMissing();
    db.checkLayout();
    db.load();
    return db;
  }

  private createMissing(): void {
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      fs.mkdirSync(this.p(NEWCERTS), { recursive: true, mode: 0o700 });
      const init = (name: string, content: string) => {
        try {
          fs.writeFileSync(this.p(name), content, { flag: "wx", mode: 0o600 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        }
      };
      init(INDEX, "");
      init(SERIAL, "01\n");
      init(CRLNUMBER, "01\n");
    } catch (err) {
      throw ioError(this.dir, err, "cannot create the CA database");
    }
  }

  private checkLayout(): void {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.dir);
    } catch {
      throw new DatabaseError("missing_dir", "CA database directory does not exist (CA_DIR)", { file: this.dir });
    }
    if (!st.isDirectory()) throw new DatabaseError("missing_dir", "CA_DIR is not a directory", { file: this.dir });
    if (!fs.existsSync(this.p(INDEX))) {
      throw new DatabaseError("missing_index", "index.txt is missing: not an openssl ca directory (an empty index.txt starts a new one)", { file: this.p(INDEX) });
    }
    let nst: fs.Stats | undefined;
    try {
      nst = fs.statSync(this.p(NEWCERTS));
    } catch {
      nst = undefined;
    }
    if (!nst || !nst.isDirectory()) {
      throw new DatabaseError("missing_newcerts", "the newcerts directory is missing: expected a directory holding <SERIAL>.pem for each index.txt line", { file: this.p(NEWCERTS) });
    }
  }

  /**
   * (Re)reads index.txt through a new descriptor, which then serves appends and line reads (so
   * the memory index and the descriptor always describe the same file). Pending records on the
   * old descriptor are synced first.
   */
  private load(): void {
    this.closeFds();
    const file = this.p(INDEX);
    let fd: number;
    try {
      if (!this.readOnly && !fs.existsSync(this.p(INDEX_ATTR))) writeFileAtomic(this.p(INDEX_ATTR), "unique_subject = no\n", { mode: 0o600 });
      fd = fs.openSync(file, this.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_APPEND);
    } catch (err) {
      throw ioError(file, err, "cannot open index.txt");
    }
    const lines = new IndexLines();
    const revokedLines = new Map<number, RevokedEntry>();
    const covered = createHash("sha256");
    try {
      let st: fs.Stats;
      try {
        st = fs.fstatSync(fd);
        if (!this.readOnly) this.newcertsFd = fs.openSync(this.p(NEWCERTS), "r");
      } catch (err) {
        throw ioError(file, err, "cannot read index.txt");
      }
      readLinePieces(
        fd,
        st.size,
        (piece, offset) => {
          this.indexBytes(fd, lines, revokedLines, piece, offset);
          covered.update(piece);
        },
        (err) => ioError(file, err, "cannot read index.txt"),
      );
      this.ino = st.ino;
    } catch (err) {
      fs.closeSync(fd);
      if (this.newcertsFd !== undefined) fs.closeSync(this.newcertsFd);
      this.newcertsFd = undefined;
      throw err;
    }
    this.fd = fd;
    this.lines = lines;
    this.revokedLines = revokedLines;
    this.revokedList = undefined;
    this.stale = false;
    this.covered = covered;
  }

  /**
   * Indexes the lines in `part`, which starts at byte `partStart` of index.txt (read through
   * `fd`), after the lines already in `lines`. A duplicate serial or a bad line throws.
   */
  private indexBytes(fd: number, lines: IndexLines, revokedLines: Map<number, RevokedEntry>, part: Buffer, partStart: number): void {
    scanIndex(
      part,
      this.p(INDEX),
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

  private closeFds(): void {
    if (this.fd !== undefined && !this.readOnly && this.waiting.length > 0) {
      try {
        this.commitSync();
      } catch {
        // the waiters were rejected
      }
    }
    this.flushCertsSync();
    if (this.fd !== undefined) fs.closeSync(this.fd);
    if (this.newcertsFd !== undefined) fs.closeSync(this.newcertsFd);
    this.fd = undefined;
    this.newcertsFd = undefined;
  }

  /**
   * index.txt was replaced or extended, and what we had indexed is still its beginning, byte for
   * byte (`openssl ca` rewrites the whole file to add one line): index only the new lines, through
   * a descriptor of the new file. False (nothing changed here) when anything else is different;
   * the caller then reads the whole file, which also reports any problem precisely.
   */
  private adoptAppended(): boolean {
    const file = this.p(INDEX);
    let fd: number;
    try {
      fd = fs.openSync(file, this.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_APPEND);
    } catch {
      return false;
    }
    const known = this.lines.end;
    let tail: Buffer;
    let ino: number;
    try {
      const st = fs.fstatSync(fd);
      if (st.size <= known) throw new Error("not longer");
      const prefix = createHash("sha256");
      const chunk = Buffer.allocUnsafe(Math.min(known, 1 << 20) || 1);
      let pos = 0;
      while (pos < known) {
        const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, known - pos), pos);
        if (n === 0) throw new Error("short read");
        prefix.update(chunk.subarray(0, n));
        pos += n;
      }
      if (!prefix.digest().equals(this.covered.copy().digest())) throw new Error("beginning changed");
      tail = Buffer.allocUnsafe(st.size - known);
      let got = 0;
      while (got < tail.length) {
        const n = fs.readSync(fd, tail, got, tail.length - got, known + got);
        if (n === 0) throw new Error("short read");
        got += n;
      }
      ino = st.ino;
    } catch {
      fs.closeSync(fd);
      return false;
    }
    if (!this.readOnly && this.waiting.length > 0) {
      try {
        this.commitSync();
      } catch {
        // the waiters were rejected
      }
    }
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = fd;
    this.ino = ino;
    const added = new Map<number, RevokedEntry>();
    try {
      this.indexBytes(fd, this.lines, added, tail, known);
    } catch {
      this.stale = true; // the lines pushed so far are dropped by the full read
      return false;
    }
    for (const [i, e] of added) this.revokedLines.set(i, e);
    if (added.size) this.revokedList = undefined;
    this.covered.update(tail);
    return true;
  }

  /** Line i of index.txt without its LF, read from the file (pread). */
  private lineText(i: number): string {
    return readLine(this.fd!, this.lines.start(i), this.lines.byteLength(i));
  }

  /** Index of the line recording `serial` (normalized), or -1. */
  private findLine(serial: string): number {
    return this.lines.find(serial, (i) => {
      const f = this.lineText(i).split("\t");
      return f[3] === serial;
    });
  }

  /** Closes the descriptors (after syncing what is pending); the object must not be used afterwards. */
  close(): void {
    this.closed = true;
    this.flushSerialFile();
    this.closeFds();
    if (this.certFlushTimer) clearTimeout(this.certFlushTimer);
    this.certFlushTimer = undefined;
  }

  /** fsync of every newcerts file written since the last flush, then of newcerts/ (sync). */
  private flushCertsSync(): void {
    if (this.unsyncedCerts.length === 0 || this.certFlushRunning) return;
    const fds = this.unsyncedCerts.splice(0);
    try {
      for (const fd of fds) fs.fsyncSync(fd);
      if (this.newcertsFd !== undefined) fs.fsyncSync(this.newcertsFd);
    } catch {
      // the index line is the record; check-db reports a damaged newcerts file
    } finally {
      for (const fd of fds) fs.closeSync(fd);
    }
  }

  /** Background flush of newcerts files: off the hand-out path, on the thread pool. */
  private scheduleCertFlush(): void {
    if (this.unsyncedCerts.length >= MAX_UNSYNCED_CERTS) {
      this.flushCertsSync();
      return;
    }
    if (this.certFlushTimer || this.certFlushRunning) return;
    this.certFlushTimer = setTimeout(() => {
      this.certFlushTimer = undefined;
      const fds = this.unsyncedCerts.splice(0);
      const dirFd = this.newcertsFd;
      if (fds.length === 0) return;
      this.certFlushRunning = true;
      // one fsync at a time: the thread pool (4 threads) stays free for the index.txt commits
      const finish = (): void => {
        this.certFlushRunning = false;
        if (this.unsyncedCerts.length > 0) this.scheduleCertFlush();
      };
      const next = (i: number): void => {
        if (i === fds.length) {
          if (dirFd !== undefined && dirFd === this.newcertsFd) fs.fsync(dirFd, finish);
          else finish();
          return;
        }
        fs.fsync(fds[i]!, () => fs.close(fds[i]!, () => next(i + 1)));
      };
      next(0);
    }, NEWCERTS_FLUSH_MS);
    this.certFlushTimer.unref();
  }

  private assertWritable(): void {
    if (this.readOnly || this.closed) throw new DatabaseError("read_only", "the CA database was opened read-only (or closed)", { file: this.dir });
  }

  /** index.txt replaced or extended by someone else (openssl ca)? Then read it again. */
  private resyncIfChanged(): void {
    if (this.fd === undefined) {
      // the last read failed (index.txt was damaged behind our back): read it again, which says what is wrong
      this.load();
      return;
    }
    let st: fs.Stats;
    try {
      st = fs.statSync(this.p(INDEX));
    } catch (err) {
      throw ioError(this.p(INDEX), err, "index.txt disappeared");
    }
    const known = this.lines.end;
    if (!this.stale && st.ino === this.ino && st.size === known) return;
    if (!(!this.stale && st.size > known && this.adoptAppended())) this.load();
  }

  /**
   * Re-reads index.txt when another writer (`openssl ca`, through the openssl backend) has
   * replaced or extended it since we last looked. Cheap when nothing changed (one stat).
   */
  refresh(): void {
    this.assertWritable();
    this.resyncIfChanged();
  }

  get size(): number {
    return this.lines.length;
  }

  get revokedCount(): number {
    return this.revokedLines.size;
  }

  /** 16 random bytes, top bit cleared, first byte non-zero (so 32 hex digits), unused so far. */
  newSerial(): Buffer {
    for (;;) {
      const b = randomBytes(16);
      b[0] = b[0]! & 0x7f;
      if (b[0] === 0) continue;
      if (this.findLine(serialToHex(b)) === -1) return b;
    }
  }

  /**
   * Records an issued certificate: newcerts/<SERIAL>.pem (O_EXCL; its fsync is deferred, see the
   * header), the V line appended to index.txt and fdatasynced, then `serial`. Returns only when
   * the line is on disk. Costs the same whatever the size of the index.
   */
  record(entry: RecordEntry): IndexEntry {
    const e = this.append(entry);
    this.commitSync();
    return e;
  }

  /**
   * record() with group commit: resolves when the line is on disk. Lines appended while a flush
   * is running share the next one, so N concurrent requests cost one fdatasync, not N. The
   * in-memory index has the entry at once (a second record of the same serial is refused). If
   * the flush fails the promise rejects: the certificate must not be handed out (its line may
   * or may not have reached the disk; the next call re-reads index.txt).
   */
  recordGroupCommit(entry: RecordEntry): Promise<IndexEntry> {
    let e: IndexEntry;
    try {
      e = this.append(entry);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<IndexEntry>((resolve, reject) => {
      this.waiting.push({ resolve: () => resolve(e), reject });
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
        const err = new DatabaseError("read_only", "the CA database was closed before its records were synced", { file: this.dir });
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
  private commitSync(): void {
    const batch = this.waiting.splice(0);
    try {
      fs.fdatasyncSync(this.fd!);
    } catch (err) {
      this.stale = true;
      const e = ioError(this.p(INDEX), err, "cannot sync index.txt");
      for (const b of batch) b.reject(e);
      throw e;
    }
    for (const b of batch) b.resolve();
  }

  /** Writes the newcerts file and appends the line (not yet synced); updates the memory index. */
  private append(entry: RecordEntry): IndexEntry {
    this.assertWritable();
    this.resyncIfChanged();
    const serial = serialToHex(entry.serial);
    const existing = this.findLine(serial);
    if (existing !== -1) {
      throw new DatabaseError("duplicate_serial", `serial ${serial} is already recorded (line ${existing + 1})`, { file: this.p(INDEX) });
    }
    if (SUBJECT_FORBIDDEN.test(entry.subject) || !entry.subject.startsWith("/")) {
      throw new DatabaseError("bad_subject", `subject ${JSON.stringify(entry.subject)} cannot be recorded: expected a /-form DN without tabs, newlines or NUL`, { file: this.p(INDEX) });
    }
    if (Number.isNaN(entry.notAfter.getTime())) throw new DatabaseError("bad_date", `invalid notAfter for serial ${serial}`, { file: this.p(INDEX) });
    const exp = formatTime(entry.notAfter);
    const certFile = this.p(path.join(NEWCERTS, `${serial}.pem`));
    const pem = pemCertificate(entry.certificate);
    let fd: number;
    try {
      fd = fs.openSync(certFile, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EEXIST") throw new DatabaseError("duplicate_serial", `newcerts/${serial}.pem already exists although index.txt has no line for ${serial} (run etoken-ca check-db)`, { file: certFile });
      throw ioError(certFile, err, "cannot create the certificate file");
    }
    try {
      const w = fs.writeSync(fd, pem);
      if (w !== pem.length) throw Object.assign(new Error(`short write (${w} of ${pem.length} bytes)`), { code: "EIO" });
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(certFile, { force: true });
      throw ioError(certFile, err, "cannot write the certificate file");
    }
    this.unsyncedCerts.push(fd);
    this.scheduleCertFlush();
    const text = `V\t${exp}\t\t${serial}\tunknown\t${entry.subject}`;
    const line = Buffer.from(`${text}\n`);
    try {
      const written = fs.writeSync(this.fd!, line);
      if (written !== line.length) throw Object.assign(new Error(`short write (${written} of ${line.length} bytes)`), { code: "EIO" });
    } catch (err) {
      // the line may be partly written: make the next record() re-read (and fail loudly)
      this.stale = true;
      throw ioError(this.p(INDEX), err, `cannot append serial ${serial} to index.txt`);
    }
    this.covered.update(line);
    const i = this.lines.push(serial, "V", line.length);
    this.scheduleSerialFile(entry.serial);
    return lineToEntry(text, i + 1);
  }

  /**
   * `serial` only matters to `openssl ca` (our serials are random), and a rename per certificate
   * costs more than the token's signature on some file systems: write it at most once a second,
   * and on close.
   */
  private scheduleSerialFile(last: Buffer): void {
    this.pendingSerial = last;
    if (this.serialTimer) return;
    this.serialTimer = setTimeout(() => this.flushSerialFile(), SERIAL_FILE_DELAY_MS);
    this.serialTimer.unref();
  }

  /** Writes what is deferred (the `serial` file) now, e.g. before handing the directory to `openssl ca`. */
  flushPending(): void {
    this.flushSerialFile();
  }

  private flushSerialFile(): void {
    if (this.serialTimer) clearTimeout(this.serialTimer);
    this.serialTimer = undefined;
    const last = this.pendingSerial;
    this.pendingSerial = undefined;
    if (!last || this.readOnly) return;
    try {
      this.writeSerialFile(last);
    } catch {
      // a stale serial file is harmless: our serials are random and checked against the index
    }
  }

  /** `serial` = recorded serial + 1 (openssl ca's next serial). Not fsynced: a stale value is harmless. */
  private writeSerialFile(last: Buffer): void {
    const next = BigInt(`0x${last.toString("hex") || "0"}`) + 1n;
    let hex = next.toString(16).toUpperCase();
    if (hex.length % 2) hex = "0" + hex;
    const file = this.p(SERIAL);
    const tmp = `${file}.tmp`;
    try {
      fs.writeFileSync(tmp, `${hex}\n`, { mode: 0o600 });
      fs.renameSync(tmp, file);
    } catch (err) {
      throw ioError(file, err, "cannot update the serial file");
    }
  }

  get(serialHex: string): IndexEntry | undefined {
    const s = normalizeSerial(serialHex);
    if (s === undefined || this.fd === undefined) return undefined;
    const i = this.findLine(s);
    return i === -1 ? undefined : lineToEntry(this.lineText(i), i + 1);
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
      throw ioError(this.p(INDEX), err, "cannot read index.txt");
    }
    if (got !== size) throw new DatabaseError("io", `index.txt is shorter (${from + got} bytes) than when it was read (${this.lines.end}): changed behind our back`, { file: this.p(INDEX) });
    return bytes;
  }

  /**
   * Marks certificates revoked: one atomic rewrite of index.txt, only when a line changed.
   * 'unspecified' is written as a bare date (what `openssl ca -revoke` without -crl_reason writes).
   */
  revoke(list: RevokeItem[]): RevokeResult[] {
    this.assertWritable();
    this.resyncIfChanged();
    const results: RevokeResult[] = [];
    const changed = new Map<number, string>();
    for (const item of list) {
      const s = normalizeSerial(item.serialHex);
      const i = s === undefined ? -1 : this.findLine(s);
      if (i === -1) {
        results.push({ serialHex: s ?? item.serialHex, result: "unknown" });
        continue;
      }
      if (this.lines.status(i) === "R" || changed.has(i)) {
        results.push({ serialHex: s!, result: "already-revoked" });
        continue;
      }
      if (!(item.reason in REVOCATION_REASONS)) throw new DatabaseError("bad_reason", `unknown revocation reason ${JSON.stringify(item.reason)}`);
      if (Number.isNaN(item.revokedAt.getTime())) throw new DatabaseError("bad_date", `invalid revocation date for serial ${s}`);
      const date = formatTime(item.revokedAt);
      const f = this.lineText(i).split("\t");
      f[0] = "R";
      f[2] = item.reason === "unspecified" ? date : `${date},${item.reason}`;
      changed.set(i, f.join("\t"));
      results.push({ serialHex: s!, result: "revoked" });
    }
    if (changed.size === 0) return results;
    this.rewriteIndex(changed);
    return results;
  }

  /** Writes index.txt anew with `changed` lines (index -> text without LF) replaced, atomically. */
  private rewriteIndex(changed: ReadonlyMap<number, string>): void {
    const file = this.p(INDEX);
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
      writeFileAtomic(file, data, { mode: 0o600 });
    } catch (err) {
      throw ioError(file, err, "cannot rewrite index.txt");
    }
    // the rewrite was fsynced: every appended line waiting for a group commit is on disk now
    for (const b of this.waiting.splice(0)) b.resolve();
    fs.closeSync(this.fd!);
    this.fd = undefined;
    try {
      this.fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_APPEND);
      this.ino = fs.fstatSync(this.fd).ino;
    } catch (err) {
      this.stale = true;
      throw ioError(file, err, "cannot open the rewritten index.txt");
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

  /** Reads crlnumber, stores crlnumber + 1 atomically, returns the number to use now. */
  nextCrlNumber(): bigint {
    this.assertWritable();
    const file = this.p(CRLNUMBER);
    let current = 1n;
    let text: string | undefined;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw ioError(file, err, "cannot read crlnumber");
    }
    if (text !== undefined) {
      const m = /^([0-9A-Fa-f]+)\n?$/.exec(text);
      if (!m) throw new DatabaseError("corrupt_crlnumber", `expected one line of hex digits, found ${JSON.stringify(text.slice(0, 40))}`, { file, line: 1 });
      current = BigInt(`0x${m[1]}`);
    }
    let hex = (current + 1n).toString(16).toUpperCase();
    if (hex.length % 2) hex = "0" + hex;
    try {
      writeFileAtomic(file, `${hex}\n`, { mode: 0o600 });
    } catch (err) {
      throw ioError(file, err, "cannot update crlnumber");
    }
    return current;
  }
}
