// Requests injected exactly as etoken-ca-client does it (services/common/spool-protocol.ts):
// request file (O_EXCL, 0644, not fsynced, owned by CLIENT_USER), then the `request` symlink (the
// lock), and the wait for the result, both through the client's own DirWaiter
// (services/common/spool-waiter.ts: the queue in front of the link, native/spool-watch on exactly
// the one name, the client's polls as the fallback; the result read with the client's
// tryReadResult). Each request has its own waiter, as each client process has: (b) and
// (c) include the wake-ups a real client has, no more, no fewer.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { DELIVERY_GRACE_MS, formatRequestFile, randomName, REQUEST_FILE_MODE, REQUEST_RANDOM_CHARS, resultName, type ResultFile } from "../../services/common/spool-protocol.js";
import { DirWaiter, tryReadResult } from "../../services/common/spool-waiter.js";
import { lookupUser } from "../../services/common/identity.js";
import { type Installation } from "../../test/fixtures/server.js";
import { now } from "./stats.js";

/** dist/bench/lib -> dist/native/spool_watch.node, the file the client loads from dist/client/bin */
const WATCH_ADDON = fileURLToPath(new URL("../../native/spool_watch.node", import.meta.url));

// ---------------------------------------------------------------------------------------------
// the spool driver: writes requests like the client, waits like the client

export class SpoolDriver {
  readonly dir: string;
  /** CLIENT_USER of the configuration (the spool accepts requests owned by it only) */
  private readonly client: { uid: number; gid: number };
  /** the waiters of the requests in flight (close() stops them) */
  private readonly waiting = new Set<DirWaiter>();

  constructor(private readonly inst: Pick<Installation, "config">) {
    this.dir = inst.config.SPOOL_DIR;
    this.client = lookupUser(inst.config.CLIENT_USER);
  }
  close(): void {
    for (const w of this.waiting) w.close();
    this.waiting.clear();
  }

  /** One request; times: start (before the request file), linked (symlink made), done (result seen). */
  async issue(username: string, csrPem: string): Promise<{ t0: number; linked: number; done: number; ok: boolean; text: string; id: string }> {
    const u = this.client;
    const id = `req.${randomName(REQUEST_RANDOM_CHARS, randomBytes)}`;
    const file = path.join(this.dir, id);
    const t0 = now();
    const deadline = Date.now() + this.inst.config.CLIENT_TIMEOUT;
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, REQUEST_FILE_MODE);
    fs.fchmodSync(fd, REQUEST_FILE_MODE);
    fs.writeSync(fd, formatRequestFile({ username, proxyLifetime: 43200, maxCertLifetime: 0, deadline, csrPem }));
    fs.fchownSync(fd, u.uid, u.gid);
    fs.closeSync(fd);
    const res = resultName(id);
    const waiter = new DirWaiter(this.dir, WATCH_ADDON);
    this.waiting.add(waiter);
    let result: ResultFile | undefined;
    let linked = t0;
    try {
      if (!(await waiter.lock(id, deadline))) return { t0, linked, done: now(), ok: false, text: "the spool stayed busy (the lock) past the request's deadline", id };
      linked = now();
      result = await waiter.waitFor(res, deadline + DELIVERY_GRACE_MS, () => tryReadResult(path.join(this.dir, res)));
    } finally {
      waiter.close();
      this.waiting.delete(waiter);
    }
    const done = now();
    fs.rmSync(path.join(this.dir, res), { force: true });
    fs.rmSync(file, { force: true });
    if (result === undefined) return { t0, linked, done, ok: false, text: "no result before the request's deadline", id };
    return result.ok ? { t0, linked, done, ok: true, text: result.certificatePem, id } : { t0, linked, done, ok: false, text: `${result.code}: ${result.message}`, id };
  }
}
