// newcerts/<SERIAL>.pem: a copy of each certificate as openssl writes it, written (O_EXCL)
// before its index line and flushed off the hand-out path: the files written since the last
// flush, then newcerts/ itself, are fsynced at most DEFERRED_FLUSH_MS later (on the signer's one
// deferred-flush timer, ../deferred-flush.ts), one at a time, and always on close. The index line is the record (see ../cadb.ts); check-db reports a newcerts
// file lost in a crash.
import * as fs from "node:fs";
import * as path from "node:path";
import { DatabaseError } from "../../common/errors.js";
import { singleFlight } from "../../common/single-flight.js";
import { deferredFlush } from "../deferred-flush.js";
import { NEWCERTS } from "../../common/ca-dir/index-format.js";
import { ioError } from "../../common/ca-dir/index-reader.js";

/**
 * This many unsynced newcerts files start the background flush at once, without waiting for the
 * timer: at 256 certificates a second or more the files then keep being synced one at a time in
 * the thread pool. (A synchronous flush here blocked the main thread, which signs, for 256 fsyncs
 * about once a second at the bench's sequential pace: issue 20, fifth round.)
 */
const FLUSH_EARLY_AT = 256;
/** Open newcerts descriptors (unsynced and being synced) past which a flush is synchronous: bounds them when the disk falls behind. */
const MAX_OPEN_CERTS = 1024;

/** PEM as openssl writes it: 64-column base64 lines. */
function pemCertificate(der: Buffer): Buffer {
  const b64 = der.toString("base64");
  const parts = ["-----BEGIN CERTIFICATE-----\n"];
  for (let i = 0; i < b64.length; i += 64) parts.push(b64.slice(i, i + 64), "\n");
  parts.push("-----END CERTIFICATE-----\n");
  return Buffer.from(parts.join(""), "latin1");
}

export class NewCerts {
  private readonly dir: string;
  /** newcerts/, open while the database is writable (its fsync commits the new names) */
  private dirFd: number | undefined;
  /** newcerts files written but not yet fsynced (fds kept open until the background flush). */
  private unsynced: number[] = [];
  /** descriptors handed to the background flush and not yet closed */
  private syncing = 0;
  /** the background flush, one at a time (flushInBackground) */
  private readonly scheduleFlush = singleFlight(
    () => this.flushInBackground(),
    () => {
      // the index line is the record; check-db reports a damaged newcerts file
    },
  );
  /** the deferred flush's turn (the same function each time: scheduled once per timer) */
  private readonly flushDue = (): void => this.scheduleFlush();

  constructor(caDir: string) {
    this.dir = path.join(caDir, NEWCERTS);
  }

  /** Opens newcerts/ for the flushes (a writable database). */
  openDir(): void {
    this.dirFd = fs.openSync(this.dir, "r");
  }

  /** Flushes what is pending and closes newcerts/. */
  close(): void {
    this.flushSync();
    if (this.dirFd !== undefined) fs.closeSync(this.dirFd);
    this.dirFd = undefined;
  }

  /** newcerts/<serial>.pem, created (never replaced) and written; its fsync is deferred. */
  write(serial: string, der: Buffer): void {
    const certFile = path.join(this.dir, `${serial}.pem`);
    const pem = pemCertificate(der);
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
    this.unsynced.push(fd);
    if (this.unsynced.length + this.syncing >= MAX_OPEN_CERTS) this.flushSync();
    else if (this.unsynced.length >= FLUSH_EARLY_AT) {
      deferredFlush.cancel(this.flushDue);
      this.scheduleFlush();
    } else deferredFlush.schedule(this.flushDue);
  }

  /** fsync of every newcerts file written since the last flush, then of newcerts/ (sync). */
  private flushSync(): void {
    deferredFlush.cancel(this.flushDue);
    if (this.unsynced.length === 0) return;
    const fds = this.unsynced.splice(0);
    try {
      for (const fd of fds) fs.fsyncSync(fd);
      if (this.dirFd !== undefined) fs.fsyncSync(this.dirFd);
    } catch {
      // the index line is the record; check-db reports a damaged newcerts file
    } finally {
      for (const fd of fds) fs.closeSync(fd);
    }
  }

  /**
   * Off the hand-out path, on the deferred-flush timer: fsync of the files written until then
   * and of newcerts/, one at a time in the thread pool (each can take milliseconds on a small
   * disk: never on the main thread; handed to the pool all at once they compete with the
   * index.txt commit on the hand-out path: one run under load measured (c) 145 -> 103/s). Each file
   * is closed on the main thread once its fsync is done (a close costs less than a second trip
   * through the thread pool).
   */
  private async flushInBackground(): Promise<void> {
    const fds = this.unsynced.splice(0);
    const dirFd = this.dirFd;
    if (fds.length === 0) return;
    this.syncing += fds.length;
    for (const fd of fds) {
      await new Promise<void>((resolve) =>
        fs.fsync(fd, () => {
          this.syncing--;
          try {
            fs.closeSync(fd);
          } catch {
            // closed
          }
          resolve();
        }),
      );
    }
    if (dirFd !== undefined && dirFd === this.dirFd) await new Promise<void>((resolve) => fs.fsync(dirFd, () => resolve()));
  }

}
