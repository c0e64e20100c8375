// Result files: written as req.<id>.result.tmp<rand> (O_EXCL, 0640), then published
// with link(2) under req.<id>.result. link never replaces an existing name, so a client that gave
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
import { inDir } from "./watcher.js";

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
 */
export function publishResult(dir: string, requestId: string, content: string): Publication {
  // 32 hex digits from randomUUID (122 random bits from node's cached entropy pool: no call into
  // the random generator per result)
  const tmp = inDir(dir, `${requestId}${RESULT_TMP_INFIX}${crypto.randomUUID().replaceAll("-", "")}`);
  // Created with its mode through the umask (the service's is 077; the client reads via the
  // group), not an fchmod after: each change in SPOOL_DIR wakes every client waiting there.
  const umask = process.umask(RESULT_UMASK);
  let fd: number;
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, RESULT_FILE_MODE);
  } finally {
    process.umask(umask);
  }
  try {
    let ino: number;
    try {
      fs.writeSync(fd, content);
      ino = fs.fstatSync(fd).ino;
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.linkSync(tmp, inDir(dir, resultName(requestId)));
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
