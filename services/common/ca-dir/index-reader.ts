// Reading index.txt without holding it: in pieces of whole lines (a file of 1,000,000 lines is
// never in memory at once), and finding the one line of a serial by searching the bytes for it
// (revoke-cert's lookup), which checks that line alone.
import * as fs from "node:fs";
import { DatabaseError } from "../errors.js";
import { lineToEntry, scanIndex, serialFieldIs, type IndexEntry } from "./index-format.js";

/** index.txt is read in pieces of this size (whole lines; a longer line is carried over). */
export const PIECE_BYTES = 4 << 20;

/**
 * Reads the first `size` bytes of `fd` in pieces that end at a line end; the last piece ends
 * where the file does, which may be inside a line. `visit` gets each piece and its offset in the
 * file. Returns how many bytes were read (fewer than `size` when the file is shorter than fstat
 * said). A failed read throws what `readError` makes of it.
 */
export function readLinePieces(fd: number, size: number, visit: (piece: Buffer, offset: number) => void, readError: (err: unknown) => Error): number {
  const chunk = Buffer.allocUnsafe(Math.min(size, PIECE_BYTES) || 1);
  let done = 0;
  let carry = Buffer.alloc(0);
  while (done + carry.length < size) {
    let n: number;
    try {
      n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, size - done - carry.length), done + carry.length);
    } catch (err) {
      throw readError(err);
    }
    if (n === 0) break; // shorter than fstat said: what was read is the file
    const data = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
    const whole = done + data.length >= size ? data.length : data.lastIndexOf(10) + 1;
    if (whole > 0) visit(data.subarray(0, whole), done);
    done += whole;
    carry = Buffer.from(data.subarray(whole)); // the chunk buffer is reused
  }
  if (carry.length) {
    visit(carry, done); // a last line the file ended in the middle of
    done += carry.length;
  }
  return done;
}

/** How many LFs `bytes` holds in [from, to). */
export function countLineEnds(bytes: Buffer, from = 0, to = bytes.length): number {
  let n = 0;
  for (let p = bytes.indexOf(10, from); p !== -1 && p < to; p = bytes.indexOf(10, p + 1)) n++;
  return n;
}

/** A failed file operation on the CA database, as one line naming the file and the errno. */
export function ioError(file: string, err: unknown, doing: string): DatabaseError {
  const e = err as NodeJS.ErrnoException;
  return new DatabaseError("io", `${doing}: ${e.code ?? ""}${e.code ? " " : ""}${e.message.replace(/^[A-Z]+: /, "")}`, { file });
}

/**
 * The line of index.txt (`file`) whose serial field is `serialHex`, in the form index.txt holds
 * it (normalizeSerial), or undefined. The bytes are searched for the serial between tabs, so one
 * serial is found in a database of millions of lines without indexing them. The line found is
 * checked as strictly as the signer checks every line, and a serial on two lines is an error;
 * the other lines are not checked (that is `etoken-ca check-db`).
 */
export function findSerialLine(file: string, serialHex: string): IndexEntry | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new DatabaseError("missing_index", "index.txt is missing: is CA_DIR an openssl ca directory?", { file });
    }
    throw ioError(file, err, "cannot open index.txt");
  }
  try {
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch (err) {
      throw ioError(file, err, "cannot read index.txt");
    }
    if (!st.isFile()) throw new DatabaseError("io", "index.txt is not a regular file", { file });
    const needle = Buffer.from(`\t${serialHex}\t`, "latin1");
    let linesBefore = 0; // lines of the pieces already searched
    let found: IndexEntry | undefined;
    readLinePieces(
      fd,
      st.size,
      (piece) => {
        let counted = 0; // line ends of this piece counted up to this offset
        for (let hit = piece.indexOf(needle); hit !== -1; hit = piece.indexOf(needle, hit + 1)) {
          const start = piece.lastIndexOf(10, hit) + 1;
          const lf = piece.indexOf(10, hit);
          const end = lf === -1 ? piece.length : lf + 1;
          if (!serialFieldIs(piece, start, end, serialHex)) continue; // the serial in another field
          linesBefore += countLineEnds(piece, counted, start);
          counted = start;
          const line = linesBefore + 1;
          if (found) throw new DatabaseError("corrupt_index", `duplicate serial ${serialHex}, already on line ${found.line}`, { file, line });
          scanIndex(piece.subarray(start, end), file, () => undefined, undefined, line);
          found = lineToEntry(piece.toString("utf8", start, lf === -1 ? end : end - 1), line);
          hit = end - 1;
        }
        linesBefore += countLineEnds(piece, counted, piece.length);
      },
      (err) => ioError(file, err, "cannot read index.txt"),
    );
    return found;
  } finally {
    fs.closeSync(fd);
  }
}
