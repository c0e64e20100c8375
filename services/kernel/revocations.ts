// The revoke queue and the CRL schedule: root's queue applied through the signer (on start-up,
// login and SIGUSR1), what no published CRL carries yet, and a new CRL well before nextUpdate.
import { describeError } from "../common/errors.js";
import { singleFlight } from "../common/single-flight.js";
import { crlAction, crlCheckpointDue } from "../common/crl-schedule.js";
import type { KernelCore } from "./kernel.js";
import { readRevokeQueue, removeQueueFiles } from "./revoke-queue.js";
import type { StatusSnapshot } from "../common/status-file.js";
import { crlSignTimeoutMs, SIGNER_TIMEOUT_MS } from "./timeouts.js";

export class Revocations {
  /** The latest CRL the signer published (from its answers and its status). */
  crl: StatusSnapshot["crl"] = null;
  /** A revocation was recorded that no published CRL carries yet. */
  private crlDirty = false;
  /** How many such revocations (shown by `etoken-ca status`). */
  revokedSinceCrl = 0;
  private crlBusy = false;
  private lastCrlWarning = 0;
  /** What asked for the queue to be processed since the last pass started. */
  private readonly triggers = new Set<string>();
  private readonly run: () => void;

  constructor(private readonly core: KernelCore) {
    this.run = singleFlight(
      () => this.pass(),
      (err) => core.log.error("revoke queue processing failed", { error: describeError(err) }),
    );
  }

  /** SIGUSR1, start-up and login: apply the revoke queue, then make a CRL when the PIN is there. */
  process(trigger: string): void {
    this.triggers.add(trigger);
    this.run();
  }

  /** A revocation the signer recorded outside the queue (fence, undelivered): the next CRL carries it. */
  recorded(count: number): void {
    this.crlDirty = true;
    this.revokedSinceCrl += count;
  }

  private async pass(): Promise<void> {
    const triggers = [...this.triggers];
    this.triggers.clear();
    const trigger = triggers.join("+");
    const applied = await this.applyRevokeQueue(trigger);
    if (applied > 0) this.crlDirty = true;
    this.revokedSinceCrl += applied;
    if (this.core.state === "READY" && (this.crlDirty || triggers.includes("SIGUSR1"))) await this.makeCrl(`revocations (${trigger})`);
    else if (this.crlDirty) this.core.log.notice("revocations recorded; the next CRL will carry them (no PIN now)", { applied });
    await this.checkCrl();
  }

  /**
   * Root's queue, read here (not by a service): a compromised service can neither forge, nor
   * suppress, nor delete an entry. The revocation date is this clock when the entry is applied.
   */
  private async applyRevokeQueue(trigger: string): Promise<number> {
    const k = this.core;
    const signer = k.supervisor.channel("signer");
    if (!signer) return 0;
    const dir = k.config.REVOKE_DIR;
    let applied = 0;
    try {
      const q = await readRevokeQueue(dir, k.log);
      if (q.entries.length === 0) return 0;
      const revokedAt = Date.now();
      const entries = q.entries.map((e) => ({ queueFile: e.queueFile, serial: e.serial, reason: e.reason, queuedAt: revokedAt, origin: "revoke-queue" }));
      const r = await signer.request("revoke", { entries }, "revokeResults", SIGNER_TIMEOUT_MS);
      const done: string[] = [];
      const queued = new Set(entries.map((e) => e.queueFile));
      for (const res of r.message.results) {
        if (res.applied) applied++;
        else k.log.error("queued revocation not applied; dropped from the queue", { serial: res.serial, message: String(res.message ?? "").slice(0, 300) });
        if (res.queueFile && queued.has(res.queueFile)) done.push(res.queueFile);
      }
      await removeQueueFiles(dir, done, k.log);
      k.metrics.revoked("revoke-queue", applied);
      k.log.notice("revoke queue processed", { trigger, applied, entries: entries.length });
    } catch (err) {
      k.log.error("revoke queue processing failed; the queue is kept", { dir, error: describeError(err) });
    }
    return applied;
  }

  async makeCrl(reason: string): Promise<void> {
    const k = this.core;
    const signer = k.supervisor.channel("signer");
    if (!signer || k.state !== "READY" || this.crlBusy) return;
    this.crlBusy = true;
    const wasDirty = this.crlDirty;
    const carried = this.revokedSinceCrl;
    this.crlDirty = false;
    // the signer blocks in C_Sign: no answer within the bound, counted from when the token starts
    // the CRL (after the certificates sent before it), means a hung token, as for a certificate
    const timeoutMs = crlSignTimeoutMs(k.config.SIGN_TIMEOUT, (this.crl?.entries ?? 0) + carried);
    const turn = k.issuing.crlSent(timeoutMs);
    try {
      const r = await Promise.race([signer.request("makeCrl", { reason }, "crlInfo", 0), turn.aborted]);
      const c = r.message;
      this.crl = { number: c.number, thisUpdate: c.thisUpdate, nextUpdate: c.nextUpdate, entries: c.entries, path: c.path };
      this.revokedSinceCrl -= carried;
      k.metrics.crlSigned();
      k.log.notice("CRL updated", { number: c.number, entries: c.entries, nextUpdate: new Date(c.nextUpdate).toISOString(), reason });
      k.notify("crl-updated", `CRL #${c.number} with ${c.entries} entries, valid until ${new Date(c.nextUpdate).toISOString()}`, {
        path: c.path,
        crl_urls: k.config.CRL_URLS.join(" "),
        number: String(c.number),
        next_update: new Date(c.nextUpdate).toISOString(),
      });
      k.showState();
    } catch (err) {
      this.crlDirty = this.crlDirty || wasDirty;
      // a hung token: the watchdog (sign-queue.ts) has already replaced the signer
      k.log.error("CRL generation failed", { error: describeError(err) });
      k.notify("crl-failed", `CRL generation failed: ${describeError(err)}`, {});
    } finally {
      turn.done();
      this.crlBusy = false;
      k.writeStatus();
    }
  }

  /** The schedule: a new CRL well before nextUpdate; a warning when it cannot be made. */
  async checkCrl(): Promise<void> {
    const k = this.core;
    if (k.state === "STARTING" || k.state === "STOPPING") return;
    const now = Date.now();
    const action = crlAction({
      ready: k.state === "READY",
      now,
      nextUpdate: this.crl?.nextUpdate,
      thisUpdate: this.crl?.thisUpdate,
      checkpointIntervalMs: k.config.AUDIT_CHECKPOINT_INTERVAL,
      dirty: this.crlDirty,
      reissueBeforeMs: k.config.CRL_REISSUE_BEFORE,
      lastWarning: this.lastCrlWarning,
    });
    if (action === "make") {
      const why = !this.crl
        ? "no CRL yet"
        : this.crlDirty
          ? "revocations since the last CRL"
          : crlCheckpointDue(now, this.crl.thisUpdate, k.config.AUDIT_CHECKPOINT_INTERVAL)
            ? "audit checkpoint (AUDIT_CHECKPOINT_INTERVAL)"
            : "scheduled re-issue";
      await this.makeCrl(why);
    } else if (action === "warn" && this.crl) {
      this.lastCrlWarning = now;
      const hours = Math.max(0, Math.floor((this.crl.nextUpdate - now) / 3_600_000));
      k.console.say(`WARNING: the CRL expires in ${hours} h and no PIN is available to renew it`);
      k.notify("crl-expiring", `CRL #${this.crl.number} expires within ${hours} hours and no PIN is available to renew it`, {
        number: String(this.crl.number),
        next_update: new Date(this.crl.nextUpdate).toISOString(),
        hours: String(hours),
      });
    }
  }
}
