// How a writer of requests waits in SPOOL_DIR: for the `request` lock, then for its result.
// etoken-ca-client's one way, also used by the bench's in-process driver (bench/lib/spool-driver.ts)
// so that its figures include the client's wake-ups, not those of another way of waiting.
// Compiled twice (CommonJS for the client, ES modules for the rest): nothing here may use
// __dirname or import.meta, so the caller names the addon's file.
import * as fs from "node:fs";
import { REQUEST_LINK } from "./spool-protocol.js";

/** The fallback polls, should a wake-up be missed (or inotify be unusable). */
export const LOCK_POLL_MS = 50;
export const RESULT_POLL_MS = 100;

/** What the waiter uses of native/spool-watch (see services/spool/watcher.ts). */
interface WatchAddon {
  watch(dir: string, exact: string, suffix: string, onEvents: (names: string[], overflow: boolean, gone: boolean) => void, disappear: boolean): { close(): void };
}

const addons = new Map<string, WatchAddon | null>();

/** native/spool-watch from `file`, loaded once per process; undefined when it cannot be loaded. */
function loadWatchAddon(file: string): WatchAddon | undefined {
  const known = addons.get(file);
  if (known !== undefined) return known ?? undefined;
  addons.set(file, null);
  try {
    // process.dlopen, not require: no module resolution, and the client's bundle step leaves it alone
    const m = { exports: {} as WatchAddon };
    process.dlopen(m, file);
    addons.set(file, m.exports);
    return m.exports;
  } catch {
    return undefined; // fs.watch instead
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
   * deadline passed first; any error but EEXIST is thrown as it came.
   */
  async lock(id: string, deadline: number): Promise<boolean> {
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

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }
}
