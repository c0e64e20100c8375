// The counter files `openssl ca` reads: `serial` (the next serial; ours are random, so it is
// written late and lazily) and `crlnumber` (the next CRL number, stored atomically).
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../../common/durable-file.js";
import { DatabaseError } from "../../common/errors.js";
import { CRLNUMBER, SERIAL } from "../../common/ca-dir/index-format.js";
import { ioError } from "../../common/ca-dir/index-reader.js";
import { deferredFlush } from "../deferred-flush.js";

/**
 * `serial` only matters to `openssl ca` (our serials are random), and a rename per certificate
 * costs more than the token's signature on some file systems: written at most once a second
 * (on the signer's deferred-flush timer), and on flush().
 */
export class SerialFile {
  private readonly file: string;
  private pending: Buffer | undefined;
  private readonly flushDue = (): void => this.flush();

  constructor(caDir: string) {
    this.file = path.join(caDir, SERIAL);
  }

  /** `last` was recorded: `serial` becomes last + 1, within DEFERRED_FLUSH_MS. */
  schedule(last: Buffer): void {
    this.pending = last;
    deferredFlush.schedule(this.flushDue);
  }

  /** Writes what is pending now. */
  flush(): void {
    deferredFlush.cancel(this.flushDue);
    const last = this.pending;
    this.pending = undefined;
    if (!last) return;
    try {
      this.write(last);
    } catch {
      // a stale serial file is harmless: our serials are random and checked against the index
    }
  }

  /** `serial` = recorded serial + 1 (openssl ca's next serial). Not fsynced: a stale value is harmless. */
  private write(last: Buffer): void {
    const next = BigInt(`0x${last.toString("hex") || "0"}`) + 1n;
    let hex = next.toString(16).toUpperCase();
    if (hex.length % 2) hex = "0" + hex;
    const tmp = `${this.file}.tmp`;
    try {
      fs.writeFileSync(tmp, `${hex}\n`, { mode: 0o600 });
      fs.renameSync(tmp, this.file);
    } catch (err) {
      throw ioError(this.file, err, "cannot update the serial file");
    }
  }
}

/** Reads crlnumber, stores crlnumber + 1 atomically, returns the number to use now. */
export function nextCrlNumber(caDir: string): bigint {
  const file = path.join(caDir, CRLNUMBER);
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
