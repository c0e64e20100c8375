// The one way to replace a file or a symbolic link atomically (index.txt rewrites, crlnumber, CRLs
// and their latest links, revoke queue entries, trust files, the pid and status files): written
// under a hidden temporary name in the same directory, fsynced, then renamed over the final name,
// so a reader sees the old file or the whole new one. Hidden (".name.tmp-") so that nothing
// scanning the directory (the spool's revoke queue reader) takes a half-written file for an entry.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

export interface DurableWrite {
  /** permission bits, set with fchmod (the process umask does not reduce them) */
  mode: number;
  /** owner of the new file (root writing a file for a service's group) */
  owner?: { uid: number; gid: number };
  /** fsync the directory after the rename (default); false when the caller syncs it once for several files */
  syncDirectory?: boolean;
  /**
   * false: no fsync at all, only the atomic replacement (the status file: rewritten from memory
   * at every start, so readers need the old or the new content whole, never a crash-proof one)
   */
  durable?: boolean;
}

/** fsync of a directory: makes the creations and renames in it durable. */
export function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function temporaryName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** tmp + fsync + rename (+ fsync of the directory): the file is either the old or the new content (durable: false: the same without the fsyncs). */
export function writeFileAtomic(file: string, data: string | Buffer, opts: DurableWrite): void {
  const dir = path.dirname(file);
  const tmp = temporaryName(file);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, opts.mode);
  try {
    if (opts.owner) fs.fchownSync(fd, opts.owner.uid, opts.owner.gid);
    fs.fchmodSync(fd, opts.mode);
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
    if (opts.durable !== false) fs.fsyncSync(fd);
    fs.closeSync(fd);
  } catch (err) {
    try {
      fs.closeSync(fd);
    } catch {
      // closed already
    }
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  if (opts.durable !== false && opts.syncDirectory !== false) syncDirectory(dir);
}

/** A symbolic link `link` -> `target` made under a temporary name and renamed over `link`. */
export function replaceSymlink(link: string, target: string, opts: { syncDirectory?: boolean } = {}): void {
  const tmp = temporaryName(link);
  fs.symlinkSync(target, tmp);
  try {
    fs.renameSync(tmp, link);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  if (opts.syncDirectory !== false) syncDirectory(path.dirname(link));
}
