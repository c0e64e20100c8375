// Reading a file another user controls, the Postfix way (safe_open.c): open with O_NOFOLLOW and
// O_NONBLOCK (a FIFO must not block us), fstat the descriptor (type, owner, link count, size),
// compare it with lstat of the path (same device and inode), then read at most the limit.
import * as fs from "node:fs";
import * as path from "node:path";
import { SecurityError } from "./errors.js";

export interface SafeOpenPolicy {
  /** The only uid allowed to own the file. */
  readonly owner: number;
  /** Largest accepted size in bytes. */
  readonly maxBytes: number;
  /** What the file is, for messages ("request file", "revoke queue entry"). */
  readonly what: string;
}

export interface SafeFile {
  readonly data: Buffer;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  readonly mtimeMs: number;
  readonly dev: number;
  readonly ino: number;
}

/** Codes (after "security.") a caller can map to a client answer. */
export type SafeOpenCode = "missing" | "symlink" | "not_regular" | "wrong_owner" | "hard_link" | "too_large" | "replaced" | "unreadable";

export class SafeOpenError extends SecurityError {
  constructor(
    readonly reason: SafeOpenCode,
    message: string,
    context: Record<string, string | number | undefined> = {},
  ) {
    super(reason, message, context);
  }
}

function typeOf(st: fs.Stats): string {
  if (st.isFile()) return "regular file";
  if (st.isDirectory()) return "directory";
  if (st.isFIFO()) return "FIFO";
  if (st.isSymbolicLink()) return "symbolic link";
  if (st.isSocket()) return "socket";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "device";
  return "special file";
}

/**
 * Opens `dir/name` (name must be a plain basename, checked by the caller against its pattern) and
 * returns its contents after every check passed. Throws SafeOpenError naming the file and the check.
 */
export async function safeReadFile(dir: string, name: string, policy: SafeOpenPolicy): Promise<SafeFile> {
  if (name.includes("/") || name === "." || name === ".." || name === "") {
    throw new SafeOpenError("unreadable", `${policy.what} ${JSON.stringify(name)}: not a plain file name`);
  }
  const file = path.join(dir, name);
  const label = `${policy.what} ${file}`;
  // Synchronous calls: a few local syscalls on a small file cost less than as many trips
  // through libuv's thread pool on the issuing path.
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new SafeOpenError("missing", `${label} does not exist`, { file });
    if (code === "ELOOP") throw new SafeOpenError("symlink", `${label} is a symbolic link (refused)`, { file });
    throw new SafeOpenError("unreadable", `${label} cannot be opened: ${code ?? String(err)}`, { file });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new SafeOpenError("not_regular", `${label} is a ${typeOf(st)}, not a regular file`, { file });
    if (st.uid !== policy.owner) {
      throw new SafeOpenError("wrong_owner", `${label} is owned by uid ${st.uid}, expected uid ${policy.owner}`, { file, uid: st.uid });
    }
    if (st.nlink !== 1) throw new SafeOpenError("hard_link", `${label} has ${st.nlink} links, expected 1`, { file });
    if (st.size > policy.maxBytes) {
      throw new SafeOpenError("too_large", `${label} is ${st.size} bytes, more than the limit of ${policy.maxBytes}`, { file });
    }
    let lst: fs.Stats;
    try {
      lst = fs.lstatSync(file);
    } catch {
      throw new SafeOpenError("replaced", `${label} disappeared while it was being opened`, { file });
    }
    if (lst.dev !== st.dev || lst.ino !== st.ino || !lst.isFile()) {
      throw new SafeOpenError("replaced", `${label} was replaced while it was being opened`, { file });
    }
    // Read at most maxBytes + 1: the size may still grow after fstat. Into a buffer of the size
    // fstat saw (plus one byte to see the end), not a zeroed one of the limit's size per file:
    // every byte returned is one read from the file.
    let buf = Buffer.allocUnsafe(st.size + 1);
    let total = 0;
    for (;;) {
      if (total === buf.length) {
        const bigger = Buffer.allocUnsafe(policy.maxBytes + 1); // it grew since fstat
        buf.copy(bigger, 0, 0, total);
        buf = bigger;
      }
      const bytesRead = fs.readSync(fd, buf, total, buf.length - total, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > policy.maxBytes) {
        throw new SafeOpenError("too_large", `${label} grew beyond the limit of ${policy.maxBytes} bytes`, { file });
      }
    }
    return { data: buf.subarray(0, total), uid: st.uid, gid: st.gid, mode: st.mode, mtimeMs: st.mtimeMs, dev: st.dev, ino: st.ino };
  } finally {
    fs.closeSync(fd);
  }
}
