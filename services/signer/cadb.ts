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
// The line format and its strict reader are in ../common/ca-dir/index-format.ts and index-reader.ts.
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
// background flush (at most DEFERRED_FLUSH_MS later, and always on close()). A crash in that
// window can lose or truncate newcerts files of the last moments (check-db reports them as
// missing); it cannot lose an index line of a certificate that was handed out. Measured on this
// project's CI disk one flush costs ~4 ms, so 3 flushes (file, directory, index) were ~12 ms per
// certificate; this makes it one. recordGroupCommit() goes further for concurrent requests:
// every line appended before the flush runs (requests read in the same turn of the event loop,
// and those that arrived during the previous flush) shares it (group commit).
//
// The parts, by what each owns (cadb/): index-file.ts (index.txt: memory index, append, sync,
// group commit, rewrite), newcerts.ts (newcerts/ and its deferred flush), follow.ts (following
// `openssl ca`'s rewrites of index.txt), serial-files.ts (serial, crlnumber). This file is the
// database the signer uses: it checks what is recorded and keeps the parts in step.
//
// One writer at a time: the signer. Running `openssl ca` on the directory while the signer is
// up is not supported; if index.txt is replaced or grows behind our back, the next record()
// notices it (inode/size) and re-reads it before appending: only the new lines when what we had
// indexed is still its beginning byte for byte (a SHA-256 of it is kept), the whole file
// otherwise. That is how the openssl backend follows `openssl ca`'s rewrite after each run.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../common/durable-file.js";
import { DatabaseError } from "../common/errors.js";
import { REVOCATION_REASONS, type RevocationReason } from "../common/reasons.js";
import { normalizeSerial } from "../common/spool-protocol.js";
import { followIndex } from "./cadb/follow.js";
import { IndexFile } from "./cadb/index-file.js";
import { NewCerts } from "./cadb/newcerts.js";
import { nextCrlNumber, SerialFile } from "./cadb/serial-files.js";
import { CRLNUMBER, INDEX, INDEX_ATTR, NEWCERTS, SERIAL, formatTime, lineToEntry, serialToHex, type IndexEntry, type RevokedEntry } from "../common/ca-dir/index-format.js";
import { ioError } from "../common/ca-dir/index-reader.js";

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

export interface OpenOptions {
  /** never write anything (check-db, status) */
  readOnly?: boolean;
  /** create a missing directory and files (index.txt, index.txt.attr, serial, crlnumber, newcerts/) */
  create?: boolean;
}

/** 16 random bytes, top bit cleared, first byte non-zero: a positive DER INTEGER of 32 hex digits. */
export function randomSerial(): Buffer {
  for (;;) {
    const b = randomBytes(16);
    b[0] = b[0]! & 0x7f;
    if (b[0] !== 0) return b;
  }
}

export class CaDatabase {
  readonly dir: string;
  readonly readOnly: boolean;
  private readonly index: IndexFile;
  private readonly newcerts: NewCerts;
  private readonly serialFile: SerialFile;
  private closed = false;

  private constructor(dir: string, readOnly: boolean) {
    this.dir = dir;
    this.readOnly = readOnly;
    this.index = new IndexFile(this.p(INDEX), readOnly);
    this.newcerts = new NewCerts(dir);
    this.serialFile = new SerialFile(dir);
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
   * (Re)reads index.txt through a new descriptor, which then serves appends and line reads.
   * Pending records on the old descriptor, and pending newcerts files, are synced first.
   */
  private load(): void {
    this.closeFiles();
    const file = this.p(INDEX);
    try {
      if (!this.readOnly && !fs.existsSync(this.p(INDEX_ATTR))) writeFileAtomic(this.p(INDEX_ATTR), "unique_subject = no\n", { mode: 0o600 });
    } catch (err) {
      throw ioError(file, err, "cannot open index.txt");
    }
    this.index.load();
    if (this.readOnly) return;
    try {
      this.newcerts.openDir();
    } catch (err) {
      this.index.close();
      throw ioError(file, err, "cannot read index.txt");
    }
  }

  private closeFiles(): void {
    this.index.close();
    this.newcerts.close();
  }

  /** index.txt replaced or extended by someone else (openssl ca)? Then read it again. */
  private resyncIfChanged(): void {
    followIndex(this.index, () => this.load());
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
    return this.index.size;
  }

  get revokedCount(): number {
    return this.index.revokedCount;
  }

  /** A random serial (randomSerial) unused so far. */
  newSerial(): Buffer {
    for (;;) {
      const b = randomSerial();
      if (this.index.findLine(serialToHex(b)) === -1) return b;
    }
  }

  /**
   * Records an issued certificate: newcerts/<SERIAL>.pem (O_EXCL; its fsync is deferred, see the
   * header), the V line appended to index.txt and fdatasynced, then `serial`. Returns only when
   * the line is on disk. Costs the same whatever the size of the index.
   */
  record(entry: RecordEntry): IndexEntry {
    const e = this.append(entry);
    this.index.commitSync();
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
    return this.index.whenDurable().then(() => e);
  }

  /** Closes the descriptors (after syncing what is pending); the object must not be used afterwards. */
  close(): void {
    this.closed = true;
    this.serialFile.flush();
    this.closeFiles();
  }

  private assertWritable(): void {
    if (this.readOnly || this.closed) throw new DatabaseError("read_only", "the CA database was opened read-only (or closed)", { file: this.dir });
  }

  /** Writes the newcerts file and appends the line (not yet synced); updates the memory index. */
  private append(entry: RecordEntry): IndexEntry {
    this.assertWritable();
    this.resyncIfChanged();
    const serial = serialToHex(entry.serial);
    const existing = this.index.findLine(serial);
    if (existing !== -1) {
      throw new DatabaseError("duplicate_serial", `serial ${serial} is already recorded (line ${existing + 1})`, { file: this.p(INDEX) });
    }
    if (SUBJECT_FORBIDDEN.test(entry.subject) || !entry.subject.startsWith("/")) {
      throw new DatabaseError("bad_subject", `subject ${JSON.stringify(entry.subject)} cannot be recorded: expected a /-form DN without tabs, newlines or NUL`, { file: this.p(INDEX) });
    }
    if (Number.isNaN(entry.notAfter.getTime())) throw new DatabaseError("bad_date", `invalid notAfter for serial ${serial}`, { file: this.p(INDEX) });
    const exp = formatTime(entry.notAfter);
    this.newcerts.write(serial, entry.certificate);
    const text = `V\t${exp}\t\t${serial}\tunknown\t${entry.subject}`;
    const i = this.index.append(serial, text);
    if (!this.readOnly) this.serialFile.schedule(entry.serial);
    return lineToEntry(text, i + 1);
  }

  /** Writes what is deferred (the `serial` file) now, e.g. before handing the directory to `openssl ca`. */
  flushPending(): void {
    if (!this.readOnly) this.serialFile.flush();
  }

  get(serialHex: string): IndexEntry | undefined {
    const s = normalizeSerial(serialHex);
    if (s === undefined || !this.index.isOpen) return undefined;
    const i = this.index.findLine(s);
    return i === -1 ? undefined : lineToEntry(this.index.lineText(i), i + 1);
  }

  /** All entries in index.txt order (reads the file). */
  entries(): Iterable<IndexEntry> {
    return this.index.entries();
  }

  /**
   * Serial and status of the lines from index `first` (0-based) on: one read of that part of
   * index.txt, so the cost is that of the lines asked for, not of the database.
   */
  linesFrom(first: number): { index: number; serialHex: string; status: string }[] {
    return this.index.linesFrom(first);
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
      const i = s === undefined ? -1 : this.index.findLine(s);
      if (i === -1) {
        results.push({ serialHex: s ?? item.serialHex, result: "unknown" });
        continue;
      }
      if (this.index.status(i) === "R" || changed.has(i)) {
        results.push({ serialHex: s!, result: "already-revoked" });
        continue;
      }
      if (!(item.reason in REVOCATION_REASONS)) throw new DatabaseError("bad_reason", `unknown revocation reason ${JSON.stringify(item.reason)}`);
      if (Number.isNaN(item.revokedAt.getTime())) throw new DatabaseError("bad_date", `invalid revocation date for serial ${s}`);
      const date = formatTime(item.revokedAt);
      const f = this.index.lineText(i).split("\t");
      f[0] = "R";
      f[2] = item.reason === "unspecified" ? date : `${date},${item.reason}`;
      changed.set(i, f.join("\t"));
      results.push({ serialHex: s!, result: "revoked" });
    }
    if (changed.size === 0) return results;
    this.index.rewrite(changed);
    return results;
  }

  /** The R lines, for CRLs, in index.txt order (parsed when read or revoked; the list is kept until the next change). */
  revokedEntries(): readonly RevokedEntry[] {
    return this.index.revokedEntries();
  }

  /** Reads crlnumber, stores crlnumber + 1 atomically, returns the number to use now. */
  nextCrlNumber(): bigint {
    this.assertWritable();
    return nextCrlNumber(this.dir);
  }
}
