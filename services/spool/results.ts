// Result files: written unnamed (O_TMPFILE, 0640; else as req.<id>.result.tmp<rand>, O_EXCL),
// then published with linkat(2)/link(2) under req.<id>.result. link never replaces an existing name, so a client that gave
// up and claimed the result name first makes the publication fail: the certificate is then
// reported undelivered (see spool-protocol.ts).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { pemEncode } from "../common/x509/pem.js";
import {
  abandonedName,
  formatErrorResult,
  RESULT_FILE_MODE,
  RESULT_TMP_INFIX,
  resultName,
} from "../common/spool-protocol.js";
import { inDir, spoolAddon, type SpoolAddon } from "./watcher.js";

/** The umask that lets open(2) give a result RESULT_FILE_MODE exactly. */
const RESULT_UMASK = 0o777 & ~RESULT_FILE_MODE;

/** "published" with the result's inode (to tell it from a file put in its place later). */
export type Publication = { kind: "published"; ino: number } | { kind: "claimed_by_client" };

export function derToPem(der: Uint8Array, label = "CERTIFICATE"): string {
  return pemEncode(Buffer.from(der), label);
}

/**
 * Writes and publishes a result; "claimed_by_client" when the client had already given up.
 * Synchronous on purpose (no promise either: its callers go on in the same turn): a handful of small local calls is cheaper than a dozen event-loop
 * round trips on the hand-out path. No fsync: the result is a hand-off to a live process that
 * reads it at once; after a crash its client is gone and the certificate is already recorded.
 *
 * The result is written unnamed (O_TMPFILE) and named with linkat(2): its only event in SPOOL_DIR
 * is the IN_CREATE of its name, which wakes its client once; a named temporary file woke every
 * client watching the directory for its creation and cost an unlink after. A file system without
 * O_TMPFILE (or no /proc to link through) gets the named temporary file and link(2).
 */
export function publishResult(dir: string, requestId: string, content: string): Publication {
  const result = inDir(dir, resultName(requestId));
  tmpfileWorks ??= fs.existsSync("/proc/self/fd");
  const addon = tmpfileWorks ? spoolAddon() : undefined;
  if (addon) {
    const published = publishUnnamed(addon, dir, result, content);
    if (published) return published;
  }
  return publishNamed(dir, requestId, result, content);
}

/**
 * Whether results are written unnamed: decided at the first result (no /proc/self/fd to link
 * through: never), and cleared for good when the file system has no O_TMPFILE. A linkat that
 * fails for another reason sends only that result the named way.
 */
let tmpfileWorks: boolean | undefined;
const NO_TMPFILE = new Set(["EOPNOTSUPP", "EISDIR", "EINVAL"]);

/** Opens a new result file with RESULT_FILE_MODE exactly (through the umask: no fchmod after, whose IN_ATTRIB would wake waiting clients). */
function openResult(open: () => number): number {
  const umask = process.umask(RESULT_UMASK);
  try {
    return open();
  } finally {
    process.umask(umask);
  }
}

function publishUnnamed(addon: SpoolAddon, dir: string, result: string, content: string): Publication | undefined {
  let fd: number;
  try {
    fd = openResult(() => addon.openTmpfile(dir, RESULT_FILE_MODE));
  } catch (err) {
    if (NO_TMPFILE.has((err as NodeJS.ErrnoException).code ?? "")) tmpfileWorks = false;
    return undefined; // the named path: it works, or fails with the error the caller reports
  }
  try {
    fs.writeSync(fd, content);
    const ino = fs.fstatSync(fd).ino;
    try {
      addon.linkTmpfile(fd, result);
      return { kind: "published", ino };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return { kind: "claimed_by_client" };
      return undefined; // nothing was named: the named path does it all again
    }
  } finally {
    fs.closeSync(fd);
  }
}

function publishNamed(dir: string, requestId: string, result: string, content: string): Publication {
  // 32 hex digits from randomUUID (122 random bits from node's cached entropy pool: no call into
  // the random generator per result)
  const tmp = inDir(dir, `${requestId}${RESULT_TMP_INFIX}${crypto.randomUUID().replaceAll("-", "")}`);
  const fd = openResult(() => fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, RESULT_FILE_MODE));
  try {
    let ino: number;
    try {
      fs.writeSync(fd, content);
      ino = fs.fstatSync(fd).ino;
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.linkSync(tmp, result);
      return { kind: "published", ino };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return { kind: "claimed_by_client" };
      throw err;
    }
  } finally {
    // after the result is visible: the client need not wait for this unlink
    setImmediate(() => {
      try {
        fs.unlinkSync(tmp);
      } catch {
        // already gone
      }
    });
  }
}

export function publishError(dir: string, requestId: string, code: string, message: string): Publication {
  return publishResult(dir, requestId, formatErrorResult(code, message));
}

// The lookups below run several times per request and usually find nothing: without an
// exception for ENOENT (throwIfNoEntry), which costs more than the lstat itself.

/** The inode now at the request's result name, or undefined when there is none. */
export function resultInode(dir: string, requestId: string): number | undefined {
  try {
    return fs.lstatSync(inDir(dir, resultName(requestId)), { throwIfNoEntry: false })?.ino;
  } catch {
    return undefined;
  }
}

/** Has the client left its `.abandoned` marker for the request? */
export function hasAbandonedMarker(dir: string, requestId: string): boolean {
  try {
    return fs.lstatSync(inDir(dir, abandonedName(requestId)), { throwIfNoEntry: false }) !== undefined;
  } catch {
    return false;
  }
}

/** Removes what the spool leaves behind of an abandoned request (marker and the client's claim). */
export async function removeAbandoned(dir: string, requestId: string): Promise<void> {
  await fs.promises.unlink(inDir(dir, abandonedName(requestId))).catch(() => {});
  await fs.promises.unlink(inDir(dir, resultName(requestId))).catch(() => {});
}
