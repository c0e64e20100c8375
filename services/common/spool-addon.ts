// native/spool-watch (native/spool-watch/spool_watch.c): its whole interface, and its one loader,
// for the spool (services/spool/watcher.ts, results.ts) and the writers of requests
// (services/common/spool-waiter.ts: etoken-ca-client and the bench's driver).
// Compiled twice (CommonJS for the client, ES modules for the rest): nothing here may use
// __dirname or import.meta, so the caller names the addon's file.

export interface SpoolAddon {
  /**
   * inotify on `dir` for names created or renamed in (IN_CREATE, IN_MOVED_TO), or with
   * `disappear` removed or renamed away (IN_DELETE, IN_MOVED_FROM), that equal `exact` or end with
   * `suffix`; nothing else wakes JavaScript. `gone`: the directory itself went away (the watch ended).
   */
  watch(dir: string, exact: string, suffix: string, onEvents: (names: string[], overflow: boolean, gone: boolean) => void, disappear?: boolean): { close(): void };
  /** An unnamed file in `dir` (O_TMPFILE), open for writing; throws with `code`. */
  openTmpfile(dir: string, mode: number): number;
  /** Names a file from openTmpfile (linkat(2): never replaces a name, EEXIST); throws with `code`. */
  linkTmpfile(fd: number, path: string): void;
  /**
   * Queues for flock(2) LOCK_EX on `dir` itself (opened O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC;
   * throws with `code` when it cannot be opened or flock fails at once). Held at once when it is
   * free (`held`, and onTurn is never called); else queued in a thread of its own: onTurn(null)
   * once it is held, onTurn(errno name) when flock failed. release() frees it, or gives up the
   * place in the queue (onTurn is then never called).
   */
  queueFlock(dir: string, onTurn: (code: string | null) => void): { readonly held?: boolean; release(): void };
}

const loaded = new Map<string, SpoolAddon | Error>();

/** native/spool-watch from `file` (dist/native/spool_watch.node), loaded once per process; throws (the same Error each time) when it cannot be. */
export function loadSpoolAddon(file: string): SpoolAddon {
  let addon = loaded.get(file);
  if (addon === undefined) {
    try {
      // process.dlopen, not require: no module resolution, the same call in both module systems,
      // and the client's bundle step leaves it alone
      const m = { exports: {} as SpoolAddon };
      process.dlopen(m, file);
      addon = m.exports;
    } catch (err) {
      const text = err instanceof Error ? err.message.split("\n")[0] : String(err);
      addon = new Error(`cannot load the spool's inotify helper ${file} (npm run build makes it): ${text}`);
    }
    loaded.set(file, addon);
  }
  if (addon instanceof Error) throw addon;
  return addon;
}
