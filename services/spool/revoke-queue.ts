// The revoke queue, spool side: REVOKE_DIR holds rev.<ms>.<random> entries written by root
// (revoke-cert). Each entry is safe-opened (owner root, regular file, one link, size limit) and
// parsed strictly. Valid entries are only ever deleted when the kernel says they are done
// (revokeDone). A refused entry is reported in `rejected` and renamed to bad.<name>, so it is
// reported once and kept for the operator to inspect.
import * as fs from "node:fs";
import * as path from "node:path";
import { describeError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { safeReadFile } from "../common/safe-open.js";
import { MAX_REVOKE_BYTES, parseRevokeEntry, REVOKE_NAME, REVOKE_REJECTED_PREFIX } from "../common/spool-protocol.js";

export interface QueueEntry {
  queueFile: string;
  serial: string;
  reason: string;
  queuedAt: number;
}

export interface QueueScan {
  entries: QueueEntry[];
  /** "<name>: <why>" for every refused file */
  rejected: string[];
}

/** Largest number of entries handed over per read (the rest comes with the next SIGUSR1). */
export const MAX_QUEUE_ENTRIES = 1000;

export async function readRevokeQueue(dir: string, log: Logger, owner = 0): Promise<QueueScan> {
  const entries: QueueEntry[] = [];
  const rejected: string[] = [];
  const names = (await fs.promises.readdir(dir)).sort();
  for (const name of names) {
    if (name.startsWith(".") || name.startsWith(REVOKE_REJECTED_PREFIX)) continue; // revoke-cert's temp files; already reported
    if (entries.length >= MAX_QUEUE_ENTRIES) break;
    const refuse = async (why: string): Promise<void> => {
      rejected.push(`${name}: ${why}`);
      log.warning("revoke queue entry refused", { event: "security", file: path.join(dir, name), why });
      await fs.promises.rename(path.join(dir, name), path.join(dir, REVOKE_REJECTED_PREFIX + name)).catch((err) => {
        log.warning("cannot move a refused revoke queue entry aside", { file: path.join(dir, name), error: describeError(err) });
      });
    };
    if (!REVOKE_NAME.test(name)) {
      await refuse("the name does not match rev.<ms>.<random>");
      continue;
    }
    try {
      const file = await safeReadFile(dir, name, { owner, maxBytes: MAX_REVOKE_BYTES, what: "revoke queue entry" });
      const e = parseRevokeEntry(file.data.toString("latin1"));
      entries.push({ queueFile: name, serial: e.serial, reason: e.reason, queuedAt: e.queuedAt });
    } catch (err) {
      if ((err as { reason?: string }).reason === "missing") continue; // removed meanwhile
      await refuse(describeError(err));
    }
  }
  return { entries, rejected };
}

/** Deletes exactly the named queue files (after the kernel applied them). Names are checked. */
export async function removeQueueFiles(dir: string, names: readonly string[], log: Logger): Promise<number> {
  let removed = 0;
  for (const name of names) {
    if (!REVOKE_NAME.test(name)) {
      log.error("revokeDone names a file that is not a queue entry: ignored", { file: name.slice(0, 80) });
      continue;
    }
    try {
      await fs.promises.unlink(path.join(dir, name));
      removed++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.error("cannot remove a revoke queue entry", { file: name, error: describeError(err) });
    }
  }
  return removed;
}
