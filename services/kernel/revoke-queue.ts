// The revoke queue, read by the kernel (root) itself: REVOKE_DIR (root 0700) holds
// rev.<ms>.<random> entries written by root (revoke-cert). No service can read, forge, suppress
// or delete them. Each entry is safe-opened (O_NOFOLLOW, fstat: owner root, regular file, one
// link, size limit) and parsed strictly. Entries are deleted once the signer applied them. A
// refused entry is renamed to bad.<name>: reported once, kept for the operator to inspect.
import * as fs from "node:fs";
import * as path from "node:path";
import { MAX_QUEUE_ENTRIES } from "../../proto/contract.js";
import { describeError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { safeReadFile } from "../common/safe-open.js";
import { MAX_REVOKE_BYTES, parseRevokeEntry, REVOKE_NAME, REVOKE_REJECTED_PREFIX } from "../common/spool-protocol.js";
import type { RevocationReason } from "../common/reasons.js";

export interface QueueEntry {
  readonly queueFile: string;
  readonly serial: string;
  readonly reason: RevocationReason;
  /** When revoke-cert queued it (informational: the revocation date is the kernel's clock). */
  readonly queuedAt: number;
}

export interface QueueScan {
  readonly entries: QueueEntry[];
  /** "<name>: <why>" for every refused file (already logged) */
  readonly rejected: string[];
}

/** Largest number of entries applied per pass (the rest comes with the next SIGUSR1 or start). */
export { MAX_QUEUE_ENTRIES };

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

/** Deletes exactly the named queue entries (after the signer applied them). Names are checked. */
export async function removeQueueFiles(dir: string, names: readonly string[], log: Logger): Promise<number> {
  let removed = 0;
  for (const name of names) {
    if (!REVOKE_NAME.test(name)) continue;
    try {
      await fs.promises.unlink(path.join(dir, name));
      removed++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.error("cannot remove a revoke queue entry", { file: name, error: describeError(err) });
    }
  }
  return removed;
}
