// Watching SPOOL_DIR: inotify (native/spool-watch: names appearing only) is a hint, a periodic rescan the safety net. Taking a
// request = reading the `request` symlink and removing it (which frees the lock for the next
// client); the target name is checked against the strict pattern before anything else.
// Nothing the client can write is ever removed recursively or followed: a file is unlinked (which
// never follows a symlink), a directory renamed aside within SPOOL_DIR and removed only if empty.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { loadSpoolAddon, type SpoolAddon } from "../common/spool-addon.js";
import { ABANDONED_SUFFIX, ASIDE_NAME, ASIDE_PREFIX, randomName, REQUEST_LINK, REQUEST_NAME, SPOOL_FILE } from "../common/spool-protocol.js";

export type Taken =
  | { readonly kind: "request"; readonly requestId: string }
  /** The link pointed at something that is not a plain request name (removed). */
  | { readonly kind: "bad_target"; readonly target: string }
  /**
   * `request` was not a symlink: removed (the lock is free again; a non-empty directory is kept
   * under `keptAs`), or not (`error`: the lock stays blocked, the caller retries with back-off).
   */
  | { readonly kind: "not_symlink"; readonly type: string; readonly removed: boolean; readonly keptAs?: string; readonly error?: string };

/** `dir/name` for a plain basename (no path.join: these names are checked against their patterns). */
export function inDir(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/**
 * Takes the pending request link, or returns undefined when there is none. Most calls find no
 * link (a hint for the spool's own removal of it): lstat without an exception for ENOENT first,
 * which costs less than the exception readlink would throw.
 */
export function takeRequestLink(dir: string): Taken | undefined {
  const link = inDir(dir, REQUEST_LINK);
  const st = fs.lstatSync(link, { throwIfNoEntry: false });
  if (st === undefined) return undefined;
  if (!st.isSymbolicLink()) return removeNonLink(dir, link);
  let target: string;
  try {
    target = fs.readlinkSync(link);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "EINVAL") return removeNonLink(dir, link); // replaced by a non-link since the lstat
    throw err;
  }
  // Removing the link frees the lock. A client may have swapped it since readlink (only the
  // client user can write here); whatever we read is what we check and serve.
  try {
    fs.unlinkSync(link);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (!REQUEST_NAME.test(target)) return { kind: "bad_target", target };
  return { kind: "request", requestId: target };
}

function typeOf(st: fs.Stats): string {
  return st.isDirectory() ? "directory" : st.isFile() ? "regular file" : st.isFIFO() ? "FIFO" : st.isSymbolicLink() ? "symbolic link" : "special file";
}

function removeNonLink(dir: string, link: string): Taken | undefined {
  let type = "file";
  try {
    const st = fs.lstatSync(link);
    type = typeOf(st);
    if (!st.isDirectory()) {
      fs.unlinkSync(link);
      return { kind: "not_symlink", type, removed: true };
    }
    // rename frees the lock whatever the directory holds, and follows nothing (a directory
    // swapped for a symlink meanwhile is moved aside as the symlink it now is)
    const aside = ASIDE_PREFIX + randomName(16, crypto.randomBytes);
    fs.renameSync(link, path.join(dir, aside));
    try {
      fs.rmdirSync(path.join(dir, aside));
      return { kind: "not_symlink", type, removed: true };
    } catch {
      return { kind: "not_symlink", type, removed: true, keptAs: aside };
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined; // gone meanwhile: nothing blocks the lock
    return { kind: "not_symlink", type, removed: false, error: code ?? String(err) };
  }
}

export interface WatcherOptions {
  readonly dir: string;
  /** Called on every inotify event for `request`. Must not throw. */
  readonly onHint: () => void;
  /** Called on the rescan tick (`eventsLost` false), and when inotify could not name what changed (true). Must not throw. */
  readonly onRescan: (eventsLost: boolean) => void;
  /** Called when the client's `.abandoned` marker of `requestId` may have appeared (inotify only). */
  readonly onMarker: (requestId: string) => void;
  readonly rescanMs: number;
  readonly onError: (err: Error) => void;
}

/** dist/services/spool/watcher.js -> dist/native/spool_watch.node (npm run build copies it there) */
const ADDON = fileURLToPath(new URL("../../native/spool_watch.node", import.meta.url));

export type { SpoolAddon };

/** The addon, loaded once; throws (the same Error each time) when it cannot be loaded. */
function loadAddon(): SpoolAddon {
  return loadSpoolAddon(ADDON);
}

/** The addon, or undefined when it cannot be loaded (the caller's fall-back then; the watcher reports why). */
export function spoolAddon(): SpoolAddon | undefined {
  try {
    return loadAddon();
  } catch {
    return undefined;
  }
}

/**
 * inotify on the directory plus a periodic rescan; a failing watch falls back to the rescan.
 * The watch reports only what the spool acts on: the `request` lock or a `.abandoned` marker
 * appearing (created or renamed in). A request is complete when its link appears (the client
 * writes and closes the file first, spool-protocol.ts); the file's own creation, writes and
 * mode changes, removals (the client's cleanup, the spool's own) and the steps of the spool's
 * own publication wake nobody. A request pending at start is found by the first rescan.
 */
export class SpoolWatcher {
  private watcher: { close(): void } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: WatcherOptions) {}

  /** inotify is watching: every change in the directory will be reported (the rescan is only the safety net). */
  get active(): boolean {
    return this.watcher !== undefined;
  }

  start(): void {
    try {
      this.watcher = loadAddon().watch(this.opts.dir, REQUEST_LINK, ABANDONED_SUFFIX, (names, overflow, gone) => {
        if (gone) {
          this.watcher = undefined;
          this.opts.onError(new Error("the spool directory was removed or moved away: its inotify watch ended"));
        }
        if (overflow || gone) this.opts.onRescan(true);
        for (const name of names) {
          if (name === REQUEST_LINK) this.opts.onHint();
          else this.opts.onMarker(name.slice(0, -ABANDONED_SUFFIX.length));
        }
      });
    } catch (err) {
      this.opts.onError(err as Error);
    }
    this.timer = setInterval(() => this.opts.onRescan(false), this.opts.rescanMs);
    this.opts.onRescan(true);
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * Removes leftovers of the spool protocol older than maxAgeMs (abandoned markers, claims, results
 * nobody collected, request files whose link never came, directories moved aside), except names
 * in `busy`. Never recursively: a directory goes only once empty. Other names are reported (once
 * per call) but not touched.
 */
export async function sweepSpool(dir: string, maxAgeMs: number, now: number, busy: ReadonlySet<string>): Promise<{ removed: string[]; foreign: string[] }> {
  const removed: string[] = [];
  const foreign: string[] = [];
  for (const name of await fs.promises.readdir(dir)) {
    if (name === REQUEST_LINK) continue;
    if (!SPOOL_FILE.test(name) && !ASIDE_NAME.test(name)) {
      foreign.push(name);
      continue;
    }
    const id = name.split(".").slice(0, 2).join(".");
    if (busy.has(id)) continue;
    try {
      const st = await fs.promises.lstat(path.join(dir, name));
      if (now - st.mtimeMs < maxAgeMs) continue;
      if (st.isDirectory()) await fs.promises.rmdir(path.join(dir, name));
      else await fs.promises.unlink(path.join(dir, name));
      removed.push(name);
    } catch {
      // gone meanwhile, or not removable: next sweep
    }
  }
  return { removed, foreign };
}
