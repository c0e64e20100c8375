// Which certificates reached their clients: CA_DIR/delivery.journal, kept by the signer beside
// index.txt, so that a certificate signed and never handed out is revoked whoever died when.
//
//   from 1234            index.txt lines from this one (0-based) on are tracked; those before are settled
//   D 0A1B...            this serial was handed to its client (the kernel confirmed it)
//
// The record that a certificate was signed is its index.txt line itself (already synced before
// the certificate leaves the signer): a V line at or after `from` without a D line is "signed,
// delivery not confirmed". So the signing path writes nothing more, and the record can never be
// missing for a certificate that exists. A confirmation is one small append (write(2), no fsync
// on the way: a killed process loses nothing written; a background fdatasync follows within
// DEFERRED_FLUSH_MS, on the signer's one deferred-flush timer). A power loss inside that second
// can only lose confirmations: those certificates are then revoked although delivered (the error errs towards revoking, never towards a valid
// certificate nobody has).
//
// On every signer start the kernel settles the records found at start (SettleUndelivered): every
// one it does not still hold in flight is revoked. Compaction (rewrite with `from` moved past the
// settled lines, on settle and every COMPACT_AFTER confirmations) keeps start-up and memory cost
// bounded by the certificates since then, not by the size of the database.
import * as fs from "node:fs";
import * as path from "node:path";
import { SERIAL } from "../../proto/contract.js";
import { writeFileAtomic } from "../common/durable-file.js";
import { DatabaseError } from "../common/errors.js";
import type { CaDatabase } from "./cadb.js";
import { ioError } from "../common/ca-dir/index-reader.js";
import { deferredFlush } from "./deferred-flush.js";

export const DELIVERY_JOURNAL = "delivery.journal";
/** Confirmations between compactions. */
const COMPACT_AFTER = 20_000;

export class DeliveryJournal {
  private fd: number | undefined;
  /** serials of lines at or after `from` that were confirmed delivered */
  private readonly delivered = new Set<string>();
  private from = 0;
  private appended = 0;
  /**
   * The deferred-flush turn: fdatasync in the thread pool. On the main thread it saved two
   * wake-ups a second but queued the main thread behind the newcerts fsyncs of the same flush
   * (milliseconds on a small disk): (b) p50 was worse in three runs of four (issue 20, fourth round).
   */
  private readonly flushDue = (): void => {
    if (this.fd !== undefined) fs.fdatasync(this.fd, () => {});
  };
  /** unconfirmed V lines found at start: what SettleUndelivered decides about */
  private atStart: string[] = [];

  private constructor(
    private readonly file: string,
    private readonly db: CaDatabase,
  ) {}

  /** Reads (or, for a database without one, starts) the journal; every line before now counts as settled then. */
  static open(db: CaDatabase): DeliveryJournal {
    const j = new DeliveryJournal(path.join(db.dir, DELIVERY_JOURNAL), db);
    let text: string | undefined;
    try {
      text = fs.readFileSync(j.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw ioError(j.file, err, "cannot read the delivery journal");
    }
    if (text === undefined) {
      j.from = db.size;
      j.rewrite();
    } else {
      j.parse(text);
      // a torn last line is rewritten away, or the next append would continue it
      if (text.endsWith("\n")) j.openAppend();
      else j.rewrite();
    }
    j.atStart = j.unconfirmed();
    return j;
  }

  private parse(text: string): void {
    const lines = text.split("\n");
    // a last line without its LF was being appended when the process died: it never counted
    lines.pop();
    const head = /^from (0|[1-9][0-9]{0,15})$/.exec(lines[0] ?? "");
    if (!head) {
      throw new DatabaseError("corrupt_journal", `expected "from <line number>" as the first line, found ${JSON.stringify((lines[0] ?? "").slice(0, 60))}`, { file: this.file, line: 1 });
    }
    this.from = Number(head[1]);
    if (this.from > this.db.size) {
      throw new DatabaseError("corrupt_journal", `tracks index.txt from line ${this.from + 1}, but index.txt has ${this.db.size} lines: index.txt was replaced by an older one (check it; removing ${DELIVERY_JOURNAL} starts tracking from its end)`, { file: this.file, line: 1 });
    }
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i]!;
      if (!(l.startsWith("D ") && SERIAL.test(l.slice(2)))) {
        throw new DatabaseError("corrupt_journal", `expected "D <SERIAL>" (upper-case hex), found ${JSON.stringify(l.slice(0, 80))}`, { file: this.file, line: i + 1 });
      }
      this.delivered.add(l.slice(2));
    }
  }

  /** Serials of the V lines at or after `from` that were never confirmed delivered. */
  unconfirmed(): string[] {
    const out: string[] = [];
    for (const l of this.db.linesFrom(this.from)) if (l.status === "V" && !this.delivered.has(l.serialHex)) out.push(l.serialHex);
    return out;
  }

  /** What was unconfirmed when this signer started, less what was confirmed since or is still in flight. */
  toSettle(inFlight: ReadonlySet<string>): string[] {
    return this.atStart.filter((s) => !this.delivered.has(s) && !inFlight.has(s));
  }

  /** After the kernel settled the records found at start: they are decided now. */
  settled(): void {
    this.atStart = [];
    this.compact();
  }

  /** Records that these certificates reached their clients. Returns how many were new. */
  confirm(serials: readonly string[]): number {
    const fresh = serials.filter((s) => SERIAL.test(s) && !this.delivered.has(s));
    if (fresh.length === 0) return 0;
    // an earlier append failed and so did the rewrite after it: no file is open, start it afresh
    // (its error names the rewrite; a torn line from that append goes with the old file)
    if (this.fd === undefined) this.rewrite();
    const bytes = Buffer.from(fresh.map((s) => `D ${s}\n`).join(""));
    try {
      const n = fs.writeSync(this.fd!, bytes);
      if (n !== bytes.length) throw Object.assign(new Error(`short write (${n} of ${bytes.length} bytes)`), { code: "EIO" });
    } catch (err) {
      // a torn line is ignored when read; the next confirmation must start on a line of its own
      this.reopenAfterFailure();
      throw ioError(this.file, err, "cannot append to the delivery journal");
    }
    for (const s of fresh) this.delivered.add(s);
    this.appended += fresh.length;
    this.scheduleFlush();
    if (this.appended >= COMPACT_AFTER) this.compact();
    return fresh.length;
  }

  /** Moves `from` past every settled line and drops the confirmations before it. */
  compact(): void {
    let next = -1;
    const keep: string[] = [];
    for (const l of this.db.linesFrom(this.from)) {
      if (l.status !== "V") continue;
      if (!this.delivered.has(l.serialHex)) {
        if (next === -1) next = l.index;
      } else if (next !== -1) keep.push(l.serialHex);
    }
    this.from = next === -1 ? this.db.size : next;
    this.delivered.clear();
    for (const s of keep) this.delivered.add(s);
    this.rewrite();
  }

  private rewrite(): void {
    const text = [`from ${this.from}`, ...[...this.delivered].map((s) => `D ${s}`)].join("\n") + "\n";
    this.closeFd();
    try {
      writeFileAtomic(this.file, text, { mode: 0o600 });
    } catch (err) {
      throw ioError(this.file, err, "cannot write the delivery journal");
    }
    this.appended = 0;
    this.openAppend();
  }

  private openAppend(): void {
    try {
      this.fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW);
    } catch (err) {
      throw ioError(this.file, err, "cannot open the delivery journal");
    }
  }

  private reopenAfterFailure(): void {
    try {
      this.rewrite();
    } catch {
      // the next confirm() fails again and says why
    }
  }

  private scheduleFlush(): void {
    deferredFlush.schedule(this.flushDue);
  }

  private closeFd(): void {
    if (this.fd === undefined) return;
    try {
      fs.fdatasyncSync(this.fd);
    } catch {
      // rewritten or closed next anyway
    }
    fs.closeSync(this.fd);
    this.fd = undefined;
  }

  close(): void {
    deferredFlush.cancel(this.flushDue);
    this.closeFd();
  }
}
