// How a writer of requests waits in SPOOL_DIR: for the `request` lock, then for its result.
// etoken-ca-client's one way, also used by the bench's in-process driver (bench/lib/spool-driver.ts)
// so that its figures include the client's wake-ups, not those of another way of waiting.
// Compiled twice (CommonJS for the client, ES modules for the rest): nothing here may use
// __dirname or import.meta, so the caller names the addon's file.
import * as fs from "node:fs";
import { loadSpoolAddon, type SpoolAddon } from "./spool-addon.js";
import { MAX_RESULT_BYTES, parseResultFile, REQUEST_LINK, type ResultFile } from "./spool-protocol.js";

const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

/** The fallback polls, should a wake-up be missed (or inotify be unusable). */
export const LOCK_POLL_MS = 50;
export const RESULT_POLL_MS = 100;

/** Reads the result file `file` if it is there; undefined when it is not (yet). What the client pays for each look. */
export function tryReadResult(file: string): ResultFile | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    return { ok: false, code: "bad_result", message: `cannot read the result file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > MAX_RESULT_BYTES) return { ok: false, code: "bad_result", message: `the result file ${file} is not a regular file of at most ${MAX_RESULT_BYTES} bytes` };
    const buf = Buffer.alloc(MAX_RESULT_BYTES + 1);
    let total = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, total, buf.length - total, null);
      if (n === 0) break;
      total += n;
      if (total > MAX_RESULT_BYTES) return { ok: false, code: "bad_result", message: `the result file ${file} is larger than ${MAX_RESULT_BYTES} bytes` };
    }
    return parseResultFile(buf.subarray(0, total).toString("utf8"));
  } finally {
    fs.closeSync(fd);
  }
}

/** native/spool-watch from `file`; undefined when it cannot be loaded (fs.watch and no queue then). */
function loadWatchAddon(file: string): SpoolAddon | undefined {
  try {
    return loadSpoolAddon(file);
  } catch {
    return undefined;
  }
}

/**
 * Wakes waiters when the one name they wait for appears (or goes away) in the spool directory,
 * with a poll fallback. Through native/spool-watch, the kernel wakes the process for that name's
 * kind of event only (IN_CREATE/IN_MOVED_TO, or IN_DELETE/IN_MOVED_FROM): fs.watch asks for every
 * change in the directory, and woke the client for each step of its own request, of the spool's
 * publication and of every other request (under load, every other client's files).
 */
export class DirWaiter {
  private watcher: { close(): void } | undefined;
  private waiters: (() => void)[] = [];
  /** Set while queued for the lock: gives up the place. */
  private leaveQueue: (() => void) | undefined;

  /** `addonFile`: native/spool-watch's spool_watch.node (dist/native/); fs.watch when it cannot be loaded. */
  constructor(
    private readonly dir: string,
    private readonly addonFile: string,
  ) {}

  /** Watches for `name` appearing (created or renamed in), or with `disappear` going away; replaces the previous watch. */
  watchName(name: string, disappear: boolean): void {
    this.close();
    const addon = loadWatchAddon(this.addonFile);
    try {
      if (addon) {
        this.watcher = addon.watch(this.dir, name, "", (_names, _overflow, gone) => {
          if (gone) this.watcher = undefined; // the directory went away: polling only
          this.wake();
        }, disappear);
        return;
      }
      const w = fs.watch(this.dir, { persistent: false }, (_event, changed) => {
        if (changed === null || changed === name) this.wake();
      });
      w.on("error", () => this.close());
      this.watcher = w;
    } catch {
      // no inotify: polling only
    }
  }

  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      }, Math.max(1, ms));
      this.waiters.push(done);
    });
  }

  /**
   * Takes the lock: creates the `request` symlink to `id`. True once it is ours, false when the
   * deadline passed first (or close() was called); any error but EEXIST is thrown as it came.
   *
   * Writers queue first, with flock(2) on SPOOL_DIR itself (native/spool-watch's queueFlock):
   * only the queue's head tries the link and, while another request holds it, waits for it to go
   * away; once its link is made, it frees the queue for the next. The kernel (>= 4.20) wakes only
   * the next flock waiter, in the order they queued, so the spool's release of the link wakes one
   * writer: without the queue, every waiting writer woke and tried the link, and one won. The
   * queue adds no name to the spool, and the spool does not see it: the link is the lock. Without
   * the addon, or when flock fails, every writer tries the link as before.
   */
  async lock(id: string, deadline: number): Promise<boolean> {
    const turn = await this.queue(deadline);
    if (turn === "late") return false;
    try {
      return await this.link(id, deadline);
    } finally {
      turn?.release();
    }
  }

  /** This writer's turn at the head of the queue; undefined when there is no queue; "late" when the deadline (or close()) came first. */
  private queue(deadline: number): Promise<{ release(): void } | undefined | "late"> {
    const addon = loadWatchAddon(this.addonFile);
    if (addon === undefined) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let turn: ReturnType<SpoolAddon["queueFlock"]>;
      try {
        turn = addon.queueFlock(this.dir, (code) => {
          clearTimeout(timer);
          this.leaveQueue = undefined;
          resolve(code === null ? turn : undefined); // flock failed: the link alone, as without the queue
        });
      } catch {
        resolve(undefined); // the directory cannot be opened (or is a symlink), or an addon built before queueFlock: the link alone
        return;
      }
      if (turn.held === true) {
        resolve(turn); // nobody queued: no thread, no wait
        return;
      }
      // No wake-up while queued but this one: the deadline. A queue head that never lets go (only
      // the client user can queue) ends here, as a link that is never removed does.
      this.leaveQueue = (): void => {
        clearTimeout(timer);
        this.leaveQueue = undefined;
        turn.release();
        resolve("late");
      };
      timer = setTimeout(this.leaveQueue, Math.max(1, deadline - Date.now()));
    });
  }

  /** Creates the link, waiting while another request holds it. */
  private async link(id: string, deadline: number): Promise<boolean> {
    const link = `${this.dir}/${REQUEST_LINK}`;
    let watching = false;
    for (;;) {
      try {
        fs.symlinkSync(id, link);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      if (!watching) {
        // held by another request: watch for its removal, then try again at once (it may have
        // gone before the watch was made)
        this.watchName(REQUEST_LINK, true);
        watching = true;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.wait(Math.min(LOCK_POLL_MS, left));
    }
  }

  /**
   * Waits for the file `name` to appear: watches for it, then looks (`look`: what it holds, or
   * undefined while it is not there) at once and after each wake-up. Undefined when `giveUp`
   * passed first.
   */
  async waitFor<T>(name: string, giveUp: number, look: () => T | undefined): Promise<T | undefined> {
    this.watchName(name, false); // before the first look: no result is missed
    for (;;) {
      const r = look();
      if (r !== undefined) return r;
      const left = giveUp - Date.now();
      if (left <= 0) return undefined;
      await this.wait(Math.min(RESULT_POLL_MS, left));
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Stops watching; a lock() still queued returns false. */
  close(): void {
    this.leaveQueue?.();
    this.watcher?.close();
    this.watcher = undefined;
  }
}
