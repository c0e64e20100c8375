// Following `openssl ca`: the signer is the one writer of the CA directory, but the openssl
// backend runs `openssl ca`, which rewrites index.txt to add a line. Before each use the index
// looks at the file (one stat): unchanged, nothing to do; replaced by what it had indexed plus
// new lines at the end (the beginning still matches the kept SHA-256 byte for byte), only the
// new lines are indexed; anything else, the whole file is read again (which also reports any
// problem precisely).
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import type { IndexFile } from "./index-file.js";
import { ioError } from "../../common/ca-dir/index-reader.js";

/** index.txt replaced or extended by someone else (openssl ca)? Then `index` follows it; `reload` reads it whole. */
export function followIndex(index: IndexFile, reload: () => void): void {
  if (!index.isOpen) {
    // the last read failed (index.txt was damaged behind our back): read it again, which says what is wrong
    reload();
    return;
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(index.file);
  } catch (err) {
    throw ioError(index.file, err, "index.txt disappeared");
  }
  const known = index.end;
  if (!index.stale && st.ino === index.ino && st.size === known) return;
  if (!(!index.stale && st.size > known && adoptAppended(index))) reload();
}

/**
 * index.txt was replaced or extended, and what `index` covers is still its beginning, byte for
 * byte: index only the new lines, through a descriptor of the new file. False (nothing changed)
 * when anything else is different.
 */
function adoptAppended(index: IndexFile): boolean {
  let fd: number;
  try {
    fd = index.openFile();
  } catch {
    return false;
  }
  const known = index.end;
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
    if (!prefix.digest().equals(index.coveredDigest())) throw new Error("beginning changed");
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
  return index.extend(fd, ino, tail);
}
