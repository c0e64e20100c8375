// Requests injected exactly as etoken-ca-client does it (services/common/spool-protocol.ts):
// request file (O_EXCL, 0644, not fsynced, owned by CLIENT_USER), then the `request` symlink (the
// lock, retried while taken); the result file is awaited with fs.watch (inotify) plus a 20 ms poll.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { formatRequestFile, randomName, REQUEST_LINK, resultName } from "../../services/common/spool-protocol.js";
import { lookupUser } from "../../services/common/identity.js";
import { type Installation } from "../../test/fixtures/server.js";
import { now } from "./stats.js";

// ---------------------------------------------------------------------------------------------
// the spool driver: writes requests like the client, waits for results with inotify

export class SpoolDriver {
  private readonly waiters = new Map<string, () => void>();
  private readonly lockWaiters: (() => void)[] = [];
  private readonly watcher: fs.FSWatcher;
  private readonly timer: NodeJS.Timeout;
  readonly dir: string;
  /** CLIENT_USER of the configuration (the spool accepts requests owned by it only) */
  private readonly client: { uid: number; gid: number };

  constructor(private readonly inst: Installation) {
    this.dir = inst.config.SPOOL_DIR;
    this.client = lookupUser(inst.config.CLIENT_USER);
    this.watcher = fs.watch(this.dir, (_e, f) => {
      if (f === REQUEST_LINK) this.wakeLock();
      else if (f && this.waiters.has(f)) this.check(f);
    });
    this.timer = setInterval(() => {
      for (const f of this.waiters.keys()) this.check(f);
      this.wakeLock();
    }, 20);
  }
  private check(f: string): void {
    if (fs.existsSync(path.join(this.dir, f))) {
      const w = this.waiters.get(f);
      this.waiters.delete(f);
      w?.();
    }
  }
  /** One writer at a time tries the lock (all of them would only collide on EEXIST). */
  private wakeLock(): void {
    this.lockWaiters.shift()?.();
  }
  close(): void {
    this.watcher.close();
    clearInterval(this.timer);
  }

  /** One request; times: start (before the request file), linked (symlink made), done (result seen). */
  async issue(username: string, csrPem: string): Promise<{ t0: number; linked: number; done: number; ok: boolean; text: string; id: string }> {
    const u = this.client;
    const id = `req.${randomName(16, randomBytes)}`;
    const file = path.join(this.dir, id);
    const t0 = now();
    const deadline = Date.now() + this.inst.config.CLIENT_TIMEOUT;
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    fs.fchmodSync(fd, 0o644);
    fs.writeSync(fd, formatRequestFile({ username, proxyLifetime: 43200, maxCertLifetime: 0, deadline, csrPem }));
    fs.fchownSync(fd, u.uid, u.gid);
    fs.closeSync(fd);
    const res = resultName(id);
    const seen = new Promise<void>((r) => this.waiters.set(res, r));
    let tries = 0;
    for (;;) {
      try {
        fs.symlinkSync(id, path.join(this.dir, REQUEST_LINK));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        // first in line again: the writers of this process take the lock in turn
        await new Promise<void>((r) => (tries++ === 0 ? this.lockWaiters.push(r) : this.lockWaiters.unshift(r)));
      }
    }
    const linked = now();
    this.check(res);
    await seen;
    const done = now();
    const text = fs.readFileSync(path.join(this.dir, res), "utf8");
    fs.rmSync(path.join(this.dir, res), { force: true });
    fs.rmSync(file, { force: true });
    return { t0, linked, done, ok: text.startsWith("-----BEGIN CERTIFICATE-----"), text, id };
  }
}
