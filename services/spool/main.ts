// The spool service: picks request files up from SPOOL_DIR, checks them, forwards typed
// IssueRequests to the kernel, writes result files. It has no access to the revoke queue.
// Runs as SPOOL_USER with only its own primary group: it reads client files through their
// "other" bits only. Hostile input never crashes it: every case ends in an error result for that
// client (when the name is valid), a requestRejected to the kernel and a log line.
import * as fs from "node:fs";
import { MAX_SERVICE_WARNING, SERIAL } from "../../proto/contract.js";
import type { Frame } from "../../proto/wire.js";
import { dnTemplateOf } from "../common/config.js";
import { ConfigError, describeError, errorCode, RequestError } from "../common/errors.js";
import { lookupUser } from "../common/identity.js";
import { fatal, runService, unhandled, type ServiceContext } from "../common/service.js";
import { DELIVERY_GRACE_MS, REFUSAL_WATCH_MS } from "../../proto/contract.js";
import { oneLine, REQUEST_LINK } from "../common/spool-protocol.js";
import type { DnTemplate } from "../common/x509/dn.js";
import { singleFlight } from "../common/single-flight.js";
import { readRequest, type ValidRequest } from "./request-file.js";
import { derToPem, hasAbandonedMarker, publishError, publishResult, removeAbandoned, resultInode } from "./results.js";
import { inDir, spoolAddon, SpoolWatcher, sweepSpool, takeRequestLink, type Taken } from "./watcher.js";

/** Requests read and waiting for the kernel at once; beyond this the lock is left held. */
export const MAX_IN_FLIGHT = 256;
const RESCAN_MS = 1000;
/**
 * Every watched result is looked at again every this many rescans (a marker whose inotify event
 * was lost without an overflow report), well within REFUSAL_WATCH_MS; every certificate in the
 * watch costs one lstat per look: looking once a second cost ~50 lstats per certificate.
 */
const REFUSAL_RESCAN_TICKS = 10;
const SWEEP_EVERY_MS = 30_000;
/** A lock the spool cannot clear is retried after this, doubling up to BLOCKED_RETRY_MAX_MS. */
const BLOCKED_RETRY_MIN_MS = 1000;
const BLOCKED_RETRY_MAX_MS = 60_000;
/** The spool waits this much longer than the client, so the client is the one that gives up. */
/** Longer than any wait inside the kernel (signer 30 s, presence fence 10 s). */
const KERNEL_ANSWER_SLACK_MS = 60_000;

/** A result the spool published, watched for the client's refusal until `until` (spool-protocol.ts). */
interface Published {
  /** the published file's inode: another one at the result name is not what the spool wrote */
  readonly ino: number;
  /** the certificate's serial; undefined for an error result */
  readonly serial?: string;
  readonly until: number;
}

class Spool {
  private readonly dir: string;
  private readonly clientUid: number;
  private readonly dn: DnTemplate;
  private readonly inFlight = new Set<string>();
  /** Requests the kernel has not answered yet (it may still hold them in its queue for the token). */
  private readonly awaitingKernel = new Set<string>();
  private readonly published = new Map<string, Published>();
  private readonly watcher: SpoolWatcher;
  /** scan() once at a time; a hint during a scan asks for one more */
  private readonly scanOnce = singleFlight(
    async () => {
      if (!this.stopped && Date.now() >= this.blockedUntil) await this.scan();
    },
    (err) => fatal(this.ctx.log, `scanning the spool failed: ${describeError(err)}`),
  );
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastScanError = "";
  private rescans = 0;
  /** Back-off while the lock is blocked by something the spool cannot remove (0: not blocked). */
  private blockedDelay = 0;
  private blockedUntil = 0;
  private blockedTimer: NodeJS.Timeout | undefined;
  /** A scan is scheduled for the end of this turn of the event loop (every hint of one inotify read makes one scan). */
  private kickPending = false;
  /** The last scan stopped at MAX_IN_FLIGHT: a finished request scans again. */
  private saturated = false;

  constructor(private readonly ctx: ServiceContext<"spool">) {
    this.dir = ctx.config.SPOOL_DIR;
    this.clientUid = lookupUser(ctx.config.CLIENT_USER, "CLIENT_USER", ctx.config.sourceFile).uid;
    this.dn = dnTemplateOf(ctx.config);
    try {
      fs.accessSync(this.dir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
    } catch (err) {
      throw new ConfigError("spool_dir", `SPOOL_DIR ${this.dir} is not usable by the spool user: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}`, {
        file: ctx.config.sourceFile,
        key: "SPOOL_DIR",
      });
    }
    this.watcher = new SpoolWatcher({
      dir: this.dir,
      rescanMs: RESCAN_MS,
      onHint: () => this.kick(),
      onRescan: (eventsLost) => {
        this.checkWithdrawals();
        if (eventsLost || ++this.rescans % REFUSAL_RESCAN_TICKS === 0) this.checkRefusals();
        this.kick();
      },
      onMarker: (requestId) => {
        this.checkWithdrawal(requestId);
        this.checkRefusal(requestId);
      },
      onError: (err) => {
        ctx.log.warning("inotify watch failed; relying on the periodic rescan", { dir: this.dir, error: describeError(err) });
        this.warnNoWatch(err);
      },
    });
  }

  /** The operator's console says once that requests now wait for the rescan, and what to do. */
  private warnNoWatch(err: Error): void {
    // the loader's own message names the file and the build that makes it
    const [what, remedy] =
      spoolAddon() === undefined
        ? [oneLine(err.message), "on an installed system, rerun deploy/install"]
        : [`inotify watch on SPOOL_DIR failed (${oneLine(err.message)})`, "restart the CA once SPOOL_DIR is in order"];
    const message = `spool: ${what}: requests are picked up by the rescan, up to ${RESCAN_MS / 1000} s late; ${remedy}`;
    try {
      this.ctx.channel.send("serviceWarning", { code: "spool.no_watch", message: message.slice(0, MAX_SERVICE_WARNING) });
    } catch (e) {
      this.ctx.log.warning("cannot tell the kernel that the spool rescans", { error: describeError(e) });
    }
  }

  start(): void {
    this.watcher.start();
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_EVERY_MS);
    this.ctx.log.info("watching the request spool", { dir: this.dir, clientUid: this.clientUid });
  }

  stop(): void {
    this.stopped = true;
    this.watcher.stop();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.blockedTimer) clearTimeout(this.blockedTimer);
  }

  /**
   * A hint that the link may be there: scan (again), once for all the hints of this turn of the
   * event loop (one inotify read reports the client's link and the spool's own removal of it).
   */
  kick(): void {
    if (this.kickPending || this.stopped || Date.now() < this.blockedUntil) return;
    this.kickPending = true;
    setImmediate(() => {
      this.kickPending = false;
      if (!this.stopped && Date.now() >= this.blockedUntil) this.scanOnce();
    });
  }

  private async scan(): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      this.saturated = this.inFlight.size >= MAX_IN_FLIGHT;
      if (this.saturated) return;
      let taken: Taken | undefined;
      try {
        taken = takeRequestLink(this.dir);
        this.lastScanError = "";
      } catch (err) {
        const msg = describeError(err);
        if (msg !== this.lastScanError) this.ctx.log.error("cannot read the request link", { dir: this.dir, error: msg });
        this.lastScanError = msg;
        return;
      }
      if (taken?.kind === "not_symlink" && !taken.removed) {
        this.blocked(taken.type, taken.error ?? "");
        return;
      }
      this.unblocked();
      if (!taken) return;
      this.onTaken(taken);
      // The next link can only be made after this one was removed: inotify reports it. Without
      // a watch, look again at once (the rescan tick alone would serve one request a second).
      if (this.watcher.active) return;
    }
  }

  /** The lock cannot be cleared: reported once, retried with back-off (not in a loop). */
  private blocked(type: string, error: string): void {
    if (this.blockedDelay === 0) {
      this.security(`the request lock is a ${type} the spool cannot remove: issuing is blocked; retrying with back-off`, { dir: this.dir, error });
      this.rejected("", "request.bad_link", `${REQUEST_LINK} in the spool directory is a ${type} that cannot be removed`);
    }
    this.blockedDelay = Math.min(BLOCKED_RETRY_MAX_MS, Math.max(BLOCKED_RETRY_MIN_MS, this.blockedDelay * 2));
    this.blockedUntil = Date.now() + this.blockedDelay;
    if (this.blockedTimer) clearTimeout(this.blockedTimer);
    this.blockedTimer = setTimeout(() => {
      this.blockedUntil = 0;
      this.kick();
    }, this.blockedDelay);
  }

  private unblocked(): void {
    if (this.blockedDelay === 0) return;
    this.blockedDelay = 0;
    this.blockedUntil = 0;
    this.ctx.log.notice("the request lock is free again: issuing resumes", { dir: this.dir });
  }

  private rejected(requestId: string, code: string, message: string): void {
    try {
      this.ctx.channel.send("requestRejected", { requestId, code, message });
    } catch {
      // channel closed: the service is stopping
    }
  }

  private security(msg: string, fields: Record<string, unknown>): void {
    this.ctx.log.warning(msg, { event: "security", ...fields });
  }

  private onTaken(taken: Taken): void {
    switch (taken.kind) {
      case "bad_target": {
        const target = JSON.stringify(taken.target.slice(0, 200));
        this.security("request link points at something that is not a request file name: removed", { target });
        this.rejected("", "request.bad_name", `request link target ${target} is not a plain req.<random> name in the spool directory`);
        return;
      }
      case "not_symlink":
        this.security(`the request lock is a ${taken.type}, not a symbolic link: ${taken.keptAs ? `moved aside as ${taken.keptAs} (not emptied)` : "removed"}`, { dir: this.dir });
        this.rejected("", "request.bad_link", `${REQUEST_LINK} in the spool directory is a ${taken.type}, not a symbolic link`);
        return;
      case "request": {
        const id = taken.requestId;
        if (this.inFlight.has(id)) {
          this.security("request linked again while it is being served: ignored", { requestId: id });
          this.rejected(id, "request.duplicate", "this request is already being served");
          return;
        }
        this.inFlight.add(id);
        void this.serve(id)
          .catch((err) => this.ctx.log.error("request handling failed", { requestId: id, error: describeError(err) }))
          .finally(() => {
            this.inFlight.delete(id);
            if (this.saturated) this.kick();
          });
        return;
      }
      default: {
        const never: never = taken;
        throw new Error(`unhandled ${String(never)}`);
      }
    }
  }

  /** Refuses a request: requestRejected to the kernel, an error result for the client, a log line. */
  private async refuse(id: string, err: RequestError): Promise<void> {
    const detail = err.context["detail"];
    if (err.context["security"]) this.security("request refused", { requestId: id, code: err.code, detail });
    else this.ctx.log.notice("request refused", { requestId: id, code: err.code, reason: err.message });
    this.rejected(id, err.code, err.message);
    await this.deliverError(id, err.code, err.message);
  }

  private async deliverError(id: string, code: string, message: string): Promise<void> {
    try {
      const p = publishError(this.dir, id, code, message);
      if (p.kind === "claimed_by_client") await removeAbandoned(this.dir, id);
      else this.watchRefusal(id, p.ino, undefined);
    } catch (err) {
      this.ctx.log.error("cannot write an error result", { requestId: id, error: describeError(err) });
    }
  }

  private removeRequestFile(id: string): void {
    const file = inDir(this.dir, id);
    try {
      fs.unlinkSync(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EISDIR" && code !== "EPERM") return;
      try {
        fs.rmdirSync(file);
      } catch {
        // not empty, or gone: the sweep's
      }
    }
  }

  private async serve(id: string): Promise<void> {
    let req: ValidRequest;
    try {
      req = await readRequest(this.dir, id, this.clientUid, {
        now: Date.now(),
        clientTimeoutMs: this.ctx.config.CLIENT_TIMEOUT,
        minKeyBits: this.ctx.config.MIN_KEY_BITS,
        dn: this.dn,
      });
      if (hasAbandonedMarker(this.dir, id)) throw new RequestError("abandoned", "the client gave up on this request before the CA read it");
    } catch (err) {
      this.removeRequestFile(id);
      if (err instanceof RequestError) {
        await this.refuse(id, err);
      } else {
        this.ctx.log.error("cannot read a request", { requestId: id, error: describeError(err) });
        await this.refuse(id, new RequestError("unreadable", "the CA could not read the request file"));
      }
      return;
    }
    const issuing = this.issue(req); // sends the request to the kernel before the first await
    this.removeRequestFile(id); // meanwhile: unlink can be slow (file systems mounted with discard)
    await issuing;
  }

  private async issue(req: ValidRequest): Promise<void> {
    const id = req.requestId;
    const log = this.ctx.log;
    let answer: Frame<"issued" | "failure">;
    try {
      const answering = this.ctx.channel.request(
        "issueRequest",
        {
          requestId: id,
          username: req.username,
          proxyLifetime: req.proxyLifetime,
          maxCertLifetime: req.maxCertLifetime,
          publicKey: req.publicKey,
          csr: req.csr,
          deadline: req.deadline,
          clientUid: req.clientUid,
        },
        ["issued", "failure"],
        // The kernel always answers (its own signer and fence waits are bounded), and a certificate
        // that comes back after the client gave up must still be reported as undelivered so that
        // it gets revoked: wait well past the client's deadline.
        Math.max(1, req.deadline + DELIVERY_GRACE_MS + KERNEL_ANSWER_SLACK_MS - Date.now()),
      );
      log.info("request forwarded", { requestId: id, username: req.username, keyBits: req.keyBits, proxyLifetime: req.proxyLifetime });
      this.awaitingKernel.add(id);
      answer = await answering;
    } catch (err) {
      log.warning("no answer from the kernel", { requestId: id, error: describeError(err) });
      await this.deliverError(id, "request.no_answer", "the CA did not answer before the request's deadline");
      return;
    } finally {
      this.awaitingKernel.delete(id);
    }
    if (answer.type === "failure") {
      const f = answer.message;
      log.notice("request failed", { requestId: id, code: f.code, reason: f.message });
      await this.deliverError(id, f.code || "failure", f.message || "the CA refused the request");
      return;
    }
    const issued = answer.message;
    const serial = issued.serial;
    if (issued.requestId !== id || issued.certificate.length === 0) {
      log.error("the kernel answered with a certificate for another request, or an empty one", { requestId: id, answeredFor: issued.requestId, serial });
      this.undelivered(id, serial, "the kernel's answer did not match the request");
      await this.deliverError(id, "internal", "the CA answered with an unusable certificate");
      return;
    }
    const late = Date.now() > req.deadline + DELIVERY_GRACE_MS;
    const abandoned = hasAbandonedMarker(this.dir, id);
    if (late || abandoned) {
      const reason = abandoned ? "the client gave up before the certificate arrived" : "the certificate arrived after the client's deadline";
      log.warning("certificate not delivered", { requestId: id, serial, reason });
      this.undelivered(id, serial, reason);
      if (abandoned) await removeAbandoned(this.dir, id);
      else await this.deliverError(id, "request.too_late", "the certificate was signed too late and has been revoked");
      return;
    }
    if (this.ctx.channel.closed) {
      // the kernel is gone: nobody can confirm the delivery, and the restarted signer revokes
      // every certificate never confirmed; the client gets its timeout error, not a revoked certificate
      log.warning("certificate not delivered: the kernel is gone", { requestId: id, serial });
      return;
    }
    let publication;
    try {
      publication = publishResult(this.dir, id, derToPem(issued.certificate));
    } catch (err) {
      log.error("cannot write the certificate result", { requestId: id, serial, error: describeError(err) });
      this.undelivered(id, serial, `the result file could not be written: ${oneLine(describeError(err))}`);
      return;
    }
    if (publication.kind === "claimed_by_client") {
      log.warning("certificate not delivered", { requestId: id, serial, reason: "the client gave up while it was being written" });
      this.undelivered(id, serial, "the client gave up while the result was being written");
      await removeAbandoned(this.dir, id);
      return;
    }
    this.delivered(id, serial); // first: a spool killed between the link and this report gets the certificate revoked
    log.info("certificate delivered", { requestId: id, serial, subject: issued.subject });
    this.watchRefusal(id, publication.ino, serial);
  }

  private watchRefusal(requestId: string, ino: number, serial: string | undefined): void {
    this.published.set(requestId, { ino, serial, until: Date.now() + REFUSAL_WATCH_MS });
    // A certificate: a marker made before the check that precedes its publication was seen
    // there; one made since is reported by inotify, and its event cannot have been handled yet
    // (no turn of the event loop passed since that check): onMarker looks. An error result has no
    // such check before it, and without a watch nothing else looks: look now.
    if (serial === undefined || !this.watcher.active) this.checkRefusal(requestId);
  }

  /**
   * Every published result still watched (when inotify reports lost events, and every
   * REFUSAL_RESCAN_TICKS rescans); the watch of a result ends after REFUSAL_WATCH_MS. Not on
   * every hint: with many results in the window that cost one lstat per result per event.
   */
  private checkRefusals(): void {
    const now = Date.now();
    for (const [id, p] of this.published) {
      if (now > p.until) this.published.delete(id);
      else this.checkRefusal(id);
    }
  }

  /**
   * A published result whose client left its `.abandoned` marker: the client refused what it read
   * (see spool-protocol.ts). A certificate is then reported undelivered, unless the result name
   * still holds the spool's own file (a client that gave up just as it arrived uses it).
   */
  private checkRefusal(id: string): void {
    const p = this.published.get(id);
    if (!p || Date.now() > p.until) return;
    if (!hasAbandonedMarker(this.dir, id)) return; // no marker (yet)
    if (p.serial !== undefined && resultInode(this.dir, id) === p.ino) return;
    this.published.delete(id);
    if (p.serial !== undefined) {
      this.security("the client refused the result it found in place of the certificate the spool published: certificate not delivered", { requestId: id, serial: p.serial });
      this.undelivered(id, p.serial, "the client refused the result it found (not the certificate the spool published)");
    }
    void removeAbandoned(this.dir, id);
  }

  /**
   * A client that gave up while the kernel still has its request: told once, so that a request
   * still queued for the token is dropped rather than signed (and then revoked as undelivered).
   */
  private checkWithdrawals(): void {
    for (const id of this.awaitingKernel) this.checkWithdrawal(id);
  }

  private checkWithdrawal(id: string): void {
    if (!this.awaitingKernel.has(id) || !hasAbandonedMarker(this.dir, id)) return;
    this.awaitingKernel.delete(id);
    try {
      this.ctx.channel.send("withdrawn", { requestId: id });
      this.ctx.log.info("request withdrawn: the client gave up while it waited", { requestId: id });
    } catch {
      // channel closed: the service is stopping
    }
  }


  /** The result is the client's now (the link won): the kernel stops holding it for revocation. */
  private delivered(requestId: string, serial: string): void {
    try {
      this.ctx.channel.send("delivered", { requestId });
      // the client may read the certificate already: a spool killed before this frame leaves gets
      // it revoked, so it does not wait for the other results of this turn
      this.ctx.channel.flush();
    } catch (err) {
      this.ctx.log.error("cannot report a delivered certificate to the kernel", { requestId, serial, error: describeError(err) });
    }
  }

  private undelivered(requestId: string, serial: string, reason: string): void {
    if (!SERIAL.test(serial)) {
      // Nothing the kernel could revoke; it would (rightly) treat a malformed serial as a violation.
      this.ctx.log.error("undelivered certificate without a usable serial", { requestId, serial: serial.slice(0, 80), reason });
      return;
    }
    try {
      this.ctx.channel.send("undelivered", { requestId, serial, reason });
    } catch (err) {
      this.ctx.log.error("cannot report an undelivered certificate to the kernel", { requestId, serial, error: describeError(err) });
    }
  }

  private async sweep(): Promise<void> {
    try {
      const maxAge = this.ctx.config.CLIENT_TIMEOUT + 2 * DELIVERY_GRACE_MS + 60_000;
      const { removed, foreign } = await sweepSpool(this.dir, maxAge, Date.now(), this.inFlight);
      if (removed.length > 0) this.ctx.log.info("removed stale spool files", { count: removed.length, files: removed.slice(0, 20).join(" ") });
      if (foreign.length > 0) this.ctx.log.debug("files in the spool that are not part of the protocol", { files: foreign.slice(0, 20).map((f) => JSON.stringify(f)).join(" ") });
    } catch (err) {
      this.ctx.log.warning("spool sweep failed", { error: describeError(err), code: errorCode(err) });
    }
  }
}

let spool: Spool | undefined;

await runService("spool", {
  start(ctx) {
    spool = new Spool(ctx);
    spool.start();
  },
  accepts: [], // the spool only asks; the kernel answers
  dispatch: unhandled,
  stop() {
    spool?.stop();
  },
});
