// The issuing path: requests in flight at the signer, the presence fence (one check shared by
// every certificate waiting: the group fence), revoke-and-withhold when the token may have gone
// while signing, and delivery: every certificate from the signer ends confirmed delivered or
// revoked (handouts.ts, the signer's delivery journal).
import type { Frame } from "../../proto/wire.js";
import { DEADLINE_SLACK_MS, DELIVERY_GRACE_MS, type RevocationOrigin } from "../../proto/contract.js";
import { RemoteFailure, type Channel } from "../common/channel.js";
import { describeError, errorCode, EtokenError, ProtocolError } from "../common/errors.js";
import { singleFlight } from "../common/single-flight.js";
import { Handouts } from "./handouts.js";
import type { KernelCore } from "./kernel.js";
import { type HungSignature, QueueRefusal, SignQueue, type SignStats, type Ticket } from "./sign-queue.js";
import { FENCE_TIMEOUT_MS, SIGNER_TIMEOUT_MS } from "./timeouts.js";

/**
 * Deliveries wait at most this long for the next frame to the signer (in practice the next
 * IssueRequest, which carries them in the same write): one wake-up of the signer fewer per
 * certificate under load. The price: a kernel that dies within this time after a delivery takes
 * its confirmation with it, and the signer's next start revokes that delivered certificate
 * (docs/design.md, section 5). The journal's own fdatasync leaves a power loss a second.
 */
export const CONFIRM_HOLD_MS = 1000;
/** A spool that has said neither `delivered` nor `undelivered` this long after the client's deadline: revoked. */
const SPOOL_REPORT_SLACK_MS = 60_000;
const NOT_AVAILABLE = "CA token not available: issuing is suspended (token removed or PIN not yet entered); try again later";

/** What the token looked like when a request went to the signer (compared by its fence). */
interface FenceMark {
  readonly epoch: number;
  readonly generation: number;
}
/** A request at the signer: the token as it was at dispatch, and its fence once started. */
interface InFlight {
  at: FenceMark;
  fence?: Promise<boolean>;
}
type PresenceAnswer = Frame<"presence">["message"];

export class IssuingPath {
  /** Requests sent to the signer, by request id: where their presence fence stands. */
  private readonly inFlight = new Map<string, InFlight>();
  /** Certificates from the signer whose delivery is not settled (handouts.ts). */
  readonly handouts = new Handouts();
  /** Delivered serials to confirm to the signer in the next batch, by request id. */
  private confirmBatch = new Map<string, string>();
  /** The last ConfirmDelivery batch number sent (to any signer process). */
  private lastBatch = 0;
  private confirmTimer: NodeJS.Timeout | undefined;
  /** Group fence: callers waiting for a presence check that starts after they asked. */
  private fenceWaiters: ((p: PresenceAnswer | undefined) => void)[] = [];
  private readonly presenceRun = singleFlight(
    () => this.presenceCheck(),
    (err) => this.core.log.error("presence fence check failed", { error: describeError(err) }),
  );

  /** Requests waiting for the token, in arrival order; its watchdog catches a hung token. */
  private signQueue: SignQueue | undefined;

  constructor(private readonly core: KernelCore) {}

  /** Made on first use: the kernel builds its parts before its own fields (config) are set. */
  private get queue(): SignQueue {
    this.signQueue ??= new SignQueue({ signTimeoutMs: this.core.config.SIGN_TIMEOUT, onHung: (hung) => this.onSignerHung(hung), log: this.core.log });
    return this.signQueue;
  }

  /** The token's measured signature times (the status file's signMs). */
  signTimes(): SignStats | null {
    return this.queue.times.stats();
  }

  /** The kernel's state changed: requests go to the signer only in READY; outside it, those waiting fail. */
  stateChanged(ready: boolean): void {
    this.queue.setOpen(ready);
    if (!ready) this.queue.refuseWaiting("token.not_available", NOT_AVAILABLE);
  }

  /** The signer is down: requests wait for its successor's login (signerLoggedIn). */
  signerDown(): void {
    this.queue.setOpen(false);
  }

  /** A restarted signer is logged in with the held PIN. */
  signerLoggedIn(): void {
    if (this.core.state === "READY") this.queue.setOpen(true);
  }

  stop(): void {
    this.queue.stop();
    this.sendConfirmations(); // before the signer's Shutdown, which it handles after them
  }

  /** The client gave up: a request still queued is dropped; one at the signer ends undelivered. */
  onWithdrawn(frame: Frame<"withdrawn">): void {
    const id = frame.message.requestId;
    if (this.queue.withdraw(id)) this.core.log.info("request withdrawn by its client before signing", { request: id });
  }

  /**
   * A CRL is sent to the signer now: the watchdog times it from when the token starts it (after
   * what was sent before), like a certificate (sign-queue.ts). done() once answered.
   */
  crlSent(timeoutMs: number): Ticket {
    return this.queue.crlSent(timeoutMs);
  }

  /** The token did not finish a signature (a certificate's or a CRL's) in time: the requests at the signer failed (sign-queue.ts); replace the signer. */
  private onSignerHung(hung: HungSignature): void {
    const seconds = Math.round(hung.timeoutMs / 100) / 10;
    const requests = `${hung.requestIds.length} request(s) failed`;
    const fields = { requests: hung.requestIds.join(" "), waitedMs: hung.waitedMs, timeoutMs: hung.timeoutMs };
    if (hung.crl) {
      this.replaceHungSigner(`a CRL signature within ${seconds} s (SIGN_TIMEOUT and its size)`, `no CRL was made (the schedule or SIGUSR1 makes it with the new signer), ${requests}`, hung.requestIds.length, fields);
    } else {
      this.replaceHungSigner(`a signature within SIGN_TIMEOUT (${seconds} s)`, requests, hung.requestIds.length, fields);
    }
  }

  /** The token hangs in C_Sign (a certificate's or a CRL's): kill the signer; its restart is logged in with the PIN held. */
  private replaceHungSigner(noAnswerTo: string, failed: string, requests: number, fields: Record<string, string | number>): void {
    const k = this.core;
    const why = `no answer to ${noAnswerTo}: the token hangs`;
    k.log.error("the token did not finish a signature in time: replacing the signer", { ...fields, signTimeoutMs: k.config.SIGN_TIMEOUT });
    k.console.say(`signer: ${why}; replacing it (the PIN is kept for the new one)`);
    k.notify("signer-hung", `the CA token did not answer ${noAnswerTo}; the signer was killed and restarted, ${failed}`, {
      requests: String(requests),
    });
    k.supervisor.kill("signer", `killed: ${why}`);
    k.writeStatus();
  }

  /** Requests in the kernel now, queued for the token or at the signer (the status file's queueDepth). */
  get depth(): number {
    return this.inFlight.size;
  }

  /**
   * Starts the fence while the signer syncs the record. An id we are not waiting for (its
   * request timed out here) needs nothing: its Issued answer will find no taker either.
   */
  onSigned(frame: Frame<"signed">): void {
    if (frame.message.crl) return this.queue.crlSigned();
    const requestId = frame.message.requestId;
    const entry = this.inFlight.get(requestId);
    this.queue.signed(requestId);
    if (entry && !entry.fence) {
      entry.fence = this.fence(entry.at);
      if (this.core.log.enabled("debug")) this.core.log.debug("presence fence started on Signed", { request: requestId });
    }
  }


  /** The channel checked the request against the contract (proto/contract.ts) on receipt. */
  async onIssueRequest(frame: Frame<"issueRequest">): Promise<void> {
    const spool = this.core.supervisor.channel("spool");
    if (!spool) return;
    const m = frame.message;
    const now = Date.now();
    const fail = (code: string, message: string): void => {
      this.core.counters.failed++;
      this.core.metrics.requestFailed(code);
      this.core.scheduleStatus();
      spool.fail(frame, code, message);
    };
    // the spool refuses a request file whose deadline lies further out: only a broken or hostile
    // spool sends one, and the kernel's timers for the request would follow it
    if (m.deadline > now + this.core.config.CLIENT_TIMEOUT + DEADLINE_SLACK_MS) {
      this.core.supervisor.securityEvent("spool", `issueRequest deadline ${Math.round((m.deadline - now) / 1000)} s away, more than CLIENT_TIMEOUT + ${DEADLINE_SLACK_MS / 1000} s`);
      return fail("request.bad_deadline", "the request's deadline lies beyond CLIENT_TIMEOUT");
    }
    if (this.core.state !== "READY") return fail("token.not_available", NOT_AVAILABLE);
    if (m.deadline <= Date.now()) return fail("request.expired", "request expired before it could be signed");
    if (this.inFlight.has(m.requestId) || this.handouts.phaseOf(m.requestId) !== undefined) {
      this.core.supervisor.securityEvent("spool", "issueRequest for a request id already being issued");
      return fail("request.duplicate", "this request is already being served");
    }
    const entry: InFlight = { at: { epoch: this.core.token.epoch, generation: this.core.tokenGeneration } };
    this.inFlight.set(m.requestId, entry);
    let ticket: Ticket | undefined;
    try {
      ticket = await this.queue.enter(m.requestId, m.deadline);
      // the token as it is when the request goes to the signer is what its fence compares
      entry.at = { epoch: this.core.token.epoch, generation: this.core.tokenGeneration };
      const signer = this.core.supervisor.channel("signer");
      if (!signer) return fail("signer.unavailable", "the signer is restarting; try again");
      this.sendConfirmations(); // held deliveries leave with the request, in one write
      ticket.sent(); // its place in the token's order (sign-queue.ts): in the same turn as the send
      const answer = signer.request(
        "issueRequest",
        {
          requestId: m.requestId,
          username: m.username,
          proxyLifetime: m.proxyLifetime,
          maxCertLifetime: m.maxCertLifetime,
          publicKey: m.publicKey,
          csr: m.csr,
          deadline: m.deadline,
          clientUid: m.clientUid,
          fenceEpoch: entry.at.epoch,
        },
        "issued",
        // past this the spool would not deliver it; a token that hangs is the queue's watchdog's
        Math.max(1, m.deadline - Date.now()) + DELIVERY_GRACE_MS,
        // signed after we stopped waiting: the client was told it failed; nobody gets it
        { onLateAnswer: (late) => this.onLateIssued(late) },
      );
      const issued = await Promise.race([answer, ticket.aborted]);
      const cert = issued.message;
      const bookkeeping = this.signerConfirmed(signer, cert.confirmedThrough);
      this.queue.signed(m.requestId);
      this.queue.times.add(cert.signMs);
      const idMatches = cert.requestId === m.requestId;
      if (!idMatches) this.core.supervisor.securityEvent("signer", "issued answer does not match the request");
      if (!bookkeeping || !idMatches) {
        // the signer broke the protocol (its delivery journal, or which request it answered): nothing it made on that answer is handed out
        this.revokeUndelivered(cert.serial, "the signer that made it broke the delivery protocol");
        return fail("signer.invalid", "the signer gave an invalid answer; nothing was handed out, try again");
      }
      // from here on the certificate exists: it ends delivered (confirmed) or revoked
      const handout = this.handouts.signed(m.requestId, cert.serial, spool);
      // the fence Signed started (or, from a backend that does not send it, one started now)
      if (!entry.fence) {
        entry.fence = this.fence(entry.at);
        if (this.core.log.enabled("debug")) this.core.log.debug("presence fence started after Issued", { request: m.requestId });
      }
      if (!((await entry.fence) && this.tokenUnchangedSince(entry.at))) {
        this.handouts.drop(m.requestId);
        this.core.counters.fenceRevoked++;
        const tokenGone = !this.core.token.present || this.core.token.serial !== this.core.pin.trustedSerial || this.core.state !== "READY";
        this.core.log.warning("presence fence: token presence not confirmed after signing; certificate revoked and withheld", { serial: cert.serial, tokenGone });
        await this.revokeInDatabase(cert.serial, this.core.config.FENCE_REVOKE_REASON, "presence fence", "presence-fence");
        this.core.notify("fence-revoked", `certificate ${cert.serial} was signed while the token was being removed; it was revoked and not handed out`, {
          serial: cert.serial,
        });
        return tokenGone
          ? fail("token.removed", "CA token was removed while the certificate was being signed; nothing was issued")
          : fail("token.unconfirmed", "the CA could not confirm its token after signing (token monitor restarting); nothing was issued, try again");
      }
      if (!spool.writable) {
        this.handouts.drop(m.requestId);
        this.revokeUndelivered(cert.serial, "the spool that asked for it stopped before the certificate was returned");
        return;
      }
      spool.reply(frame, "issued", {
        requestId: cert.requestId,
        serial: cert.serial,
        certificate: cert.certificate,
        notAfter: cert.notAfter,
        subject: cert.subject,
      });
      this.core.metrics.certificateReturned(Date.now() - now, cert.signMs);
      this.handouts.returned(handout, Math.max(0, m.deadline - Date.now()) + DELIVERY_GRACE_MS + SPOOL_REPORT_SLACK_MS, (h) => {
        this.handouts.drop(h.requestId);
        this.revokeUndelivered(h.serial, "the spool never reported whether it delivered the certificate");
      });
    } catch (err) {
      if (err instanceof QueueRefusal && err.code === "ca.busy") this.core.log.info("request refused: CA busy", { request: m.requestId, queueDepth: this.queue.depth });
      if (err instanceof RemoteFailure || err instanceof QueueRefusal) return fail(err.code, err.message);
      // the signer died with this request at it (its channel closed): a restart, not a bug
      if (err instanceof ProtocolError && err.code === "protocol.closed") return fail("signer.unavailable", "the signer stopped while this request was at it; nothing was handed out, try again");
      this.core.log.error("issuing failed", { request: m.requestId, error: describeError(err) });
      return fail(err instanceof EtokenError ? err.code : errorCode(err), "the CA could not sign the request (internal error; see the CA log)");
    } finally {
      ticket?.done();
      this.inFlight.delete(m.requestId);
      // signed, and neither returned nor revoked above (an unexpected error): it must not stay valid
      if (this.handouts.phaseOf(m.requestId) === "fencing") {
        const serial = this.handouts.serialOf(m.requestId)!;
        this.handouts.drop(m.requestId);
        this.revokeUndelivered(serial, "issuing failed after the signature");
      }
    }
  }

  // ---- delivery: every certificate from the signer ends confirmed delivered or revoked --------

  /**
   * `undelivered` counts only for a request this spool process got a certificate for: the
   * serial revoked is the one the kernel returned, and the message must name that one.
   */
  onUndelivered(frame: Frame<"undelivered">): void {
    const m = frame.message;
    const spool = this.core.supervisor.channel("spool");
    const known = spool && this.handouts.find(m.requestId, spool, true);
    if (!known) {
      this.core.supervisor.securityEvent("spool", `undelivered for request ${JSON.stringify(m.requestId.slice(0, 40))}, which the kernel did not return to this spool`);
      return;
    }
    this.handouts.drop(m.requestId);
    this.revokeUndelivered(known.serial, m.reason.slice(0, 200));
    if (m.serial !== known.serial) {
      this.core.supervisor.securityEvent("spool", `undelivered names serial ${JSON.stringify(m.serial.slice(0, 70))}, but the kernel returned ${known.serial} for request ${m.requestId}`);
    }
  }

  onDelivered(frame: Frame<"delivered">): void {
    const requestId = frame.message.requestId;
    const spool = this.core.supervisor.channel("spool");
    const known = spool && this.handouts.find(requestId, spool, false);
    if (!known?.handout) {
      this.core.supervisor.securityEvent("spool", `delivered for request ${JSON.stringify(requestId.slice(0, 40))}, which the kernel did not return to this spool`);
      return;
    }
    this.handouts.confirming(known.handout);
    this.core.counters.issued++;
    this.core.scheduleStatus();
    this.confirmBatch.set(requestId, known.serial);
    this.confirmTimer ??= setTimeout(() => this.sendConfirmations(), CONFIRM_HOLD_MS);
  }

  /**
   * Tells the signer which certificates reached their clients. No answer: the signer's next
   * Issued says how far it recorded them (signerConfirmed); until then they stay `confirming`.
   */
  private sendConfirmations(): void {
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.confirmTimer = undefined;
    const batch = this.confirmBatch;
    if (batch.size === 0) return;
    this.confirmBatch = new Map();
    const signer = this.core.supervisor.channel("signer");
    if (!signer) return; // a restarted signer gets them after settling (settleUndelivered)
    const number = ++this.lastBatch;
    try {
      signer.post("confirmDelivery", { serials: [...batch.values()], batch: number });
    } catch (err) {
      this.core.log.warning("cannot send delivered certificates to the signer; sent again when it restarts", { count: batch.size, error: describeError(err) });
      return;
    }
    for (const id of batch.keys()) this.handouts.sent(id, signer, number);
  }

  /**
   * An Issued from this signer process: every batch up to `through` is in its journal. False
   * when it claims batches never sent (a security event: the signer is killed).
   */
  private signerConfirmed(signer: Channel, through: number): boolean {
    if (through > this.lastBatch) {
      this.core.supervisor.securityEvent("signer", `issued says confirmation batch ${through} is recorded, but the kernel sent ${this.lastBatch} batches`);
      return false;
    }
    if (through > 0) this.handouts.confirmedThrough(signer, through);
    return true;
  }

  private onLateIssued(late: Frame): void {
    // a late answer is checked against the contract too: its serial is one
    if (late.type !== "issued") return;
    this.queue.times.add(late.message.signMs);
    this.revokeUndelivered(late.message.serial, "signed after the kernel had stopped waiting for it");
  }

  revokeUndelivered(serial: string, why: string): void {
    this.core.counters.undelivered++;
    this.core.scheduleStatus();
    this.core.log.warning("certificate not delivered to its client: revoking", { serial, reason: why });
    this.core.notify("undelivered-revoked", `certificate ${serial} was signed but did not reach its client (${why}); it is revoked`, { serial });
    void this.revokeInDatabase(serial, this.core.config.UNDELIVERED_REVOKE_REASON, "not delivered", "undelivered");
  }

  /**
   * Every signer start: the signer revokes what was signed before it and never confirmed
   * delivered, except what is still in flight here; then the confirmations it missed.
   */
  async settleUndelivered(): Promise<void> {
    const signer = this.core.supervisor.channel("signer");
    if (!signer) return;
    try {
      const r = await signer.request("settleUndelivered", { inFlight: this.handouts.inFlightSerials() }, "undeliveredRevoked", SIGNER_TIMEOUT_MS);
      const revoked = r.message.serials;
      if (revoked.length > 0) {
        this.core.counters.undelivered += revoked.length;
        this.core.metrics.revoked("undelivered", revoked.length);
        this.core.revocations.recorded(revoked.length);
        this.core.log.warning("certificates signed but never delivered (a process died): revoked", { count: revoked.length, serials: revoked.slice(0, 50).join(" "), reason: r.message.reason });
        this.core.notify("undelivered-revoked", `${revoked.length} certificate(s) signed before a restart never reached their clients; revoked (${r.message.reason})`, {
          serial: revoked.slice(0, 50).join(" "),
          count: String(revoked.length),
        });
        if (this.core.state === "READY") void this.core.revocations.makeCrl("certificates never delivered");
        this.core.scheduleStatus();
      }
      const missed = this.handouts.unconfirmed();
      if (missed.length > 0) {
        for (const h of missed) this.confirmBatch.set(h.requestId, h.serial);
        this.sendConfirmations();
      }
    } catch (err) {
      this.core.log.error("the signer could not settle the certificates never delivered; they are settled at its next start", { error: describeError(err) });
    }
  }

  private tokenUnchangedSince(at: FenceMark): boolean {
    return this.core.state === "READY" && this.core.tokenGeneration === at.generation;
  }

  /**
   * True only if the monitor confirms, by a check started after the signature (the caller asks
   * after it), the same token, and nothing about the token but its PIN flags changed (or the
   * monitor restarted) since dispatch.
   */
  private async fence(at: FenceMark): Promise<boolean> {
    if (!this.tokenUnchangedSince(at)) return false;
    const p = await this.freshPresence();
    // the monitor reports a change before it answers: its epoch is the kernel's latest, and any
    // change since dispatch other than PIN flags has moved the generation
    return p !== undefined && p.present && p.epoch === this.core.token.epoch && this.tokenUnchangedSince(at);
  }

  /**
   * A presence check that starts after this call. Callers that arrive while one is running
   * share the next one (a group fence: under load one check covers many certificates).
   */
  private freshPresence(): Promise<PresenceAnswer | undefined> {
    return new Promise((resolve) => {
      this.fenceWaiters.push(resolve);
      this.presenceRun();
    });
  }

  /** One presence check for every caller waiting when it starts. */
  private async presenceCheck(): Promise<void> {
    const batch = this.fenceWaiters.splice(0);
    const monitor = this.core.supervisor.channel("monitor");
    let answer: PresenceAnswer | undefined;
    if (monitor) {
      try {
        answer = (await monitor.request("presenceCheck", { epoch: this.core.token.epoch }, "presence", FENCE_TIMEOUT_MS)).message;
      } catch (err) {
        this.core.log.error("presence fence check failed", { error: describeError(err) });
      }
    }
    for (const w of batch) w(answer);
  }

  private async revokeInDatabase(serial: string, reason: string, why: string, origin: RevocationOrigin): Promise<void> {
    const signer = this.core.supervisor.channel("signer");
    if (!signer) {
      // never confirmed delivered: the signer's journal has it, and the signer revokes it when it starts
      this.core.log.error("cannot revoke now: signer not running; it revokes the certificate when it starts", { serial, why });
      return;
    }
    try {
      const r = await signer.request("revoke", { entries: [{ queueFile: "", serial, reason, queuedAt: Date.now(), origin }] }, "revokeResults", SIGNER_TIMEOUT_MS);
      const result = r.message.results[0];
      if (!result || !result.applied) throw new Error(result?.message ?? "no result");
      this.core.revocations.recorded(1);
      this.core.metrics.revoked(origin);
      this.core.log.notice("certificate revoked", { serial, reason, why });
      if (this.core.state === "READY") void this.core.revocations.makeCrl(why);
      else this.core.log.notice("the revocation goes into the next CRL (no PIN now)", { serial });
    } catch (err) {
      this.core.log.error("revocation failed: revoke it by hand with revoke-cert", { serial, why, error: describeError(err) });
    }
  }
}
