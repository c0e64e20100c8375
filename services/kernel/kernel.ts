// The kernel: holds the PIN and the state machine, routes typed messages between the services
// and enforces the policy table. It parses nothing untrusted; it validates the shape of every
// message it moves.
import { redactCredentials } from "../common/redact.js";
import type { Frame } from "../../proto/wire.js";
import { PinFlag, TokenPresence } from "../../proto/wire.js";
import { RemoteFailure } from "../common/channel.js";
import type { Config } from "../common/config-schema.js";
import { describeError, errorCode, EtokenError } from "../common/errors.js";
import { droppedLogWrites, type Logger } from "../common/log.js";
import { secretBuffer } from "../common/secret-buffer.js";
import type { ServiceName } from "../common/service-table.js";
import { DELIVERY_GRACE_MS, MAX_REASON, MAX_USERNAME_BYTES, oneLine } from "../common/spool-protocol.js";
import { NO_MATCHING_TOKEN } from "../common/pkcs11/token-match.js";
import type { OperatorConsole } from "./console.js";
import { crlAction, crlCheckIntervalMs, crlCheckpointDue } from "./crl-schedule.js";
import type { RevocationOrigin, TOKEN_AUDIT_EVENTS } from "../common/audit/trail.js";
import { Handouts } from "./handouts.js";
import { isPermitted } from "./policy.js";
import { readRevokeQueue, removeQueueFiles } from "./revoke-queue.js";
import { nextState, type KernelEvent, type KernelState } from "./states.js";
import { writeStatus, type StatusSnapshot } from "./status.js";
import type { Supervisor } from "./supervisor.js";

const REQUEST_ID = /^req\.[A-Za-z0-9]{8,32}$/;
const MAX_PUBLIC_KEY = 8192;
/** The CSR forwarded for the openssl backend (the spool's limit, services/spool/csr.ts MAX_CSR_BYTES). */
const MAX_CSR = 64 * 1024;
const TEN_YEARS_S = 10 * 366 * 86400;
const SIGNER_TIMEOUT_MS = 30_000;
const FENCE_TIMEOUT_MS = 10_000;
const CRL_TIMEOUT_MS = 300_000;
/** A spool that has said neither `delivered` nor `undelivered` this long after the client's deadline: revoked. */
const SPOOL_REPORT_SLACK_MS = 60_000;
const STATUS_INTERVAL_MS = 5_000;
/** Between prompts the console repeats the live state this often. */
const CONSOLE_HEARTBEAT_MS = 10 * 60_000;
const NOT_AVAILABLE = "CA token not available: issuing is suspended (token removed or PIN not yet entered); try again later";
/**
 * Login failures that the configuration causes, with the keys to fix: retyping the PIN cannot
 * help, so the console says so and does not ask again until the token is re-inserted.
 */
const CONFIG_FAULTS: Readonly<Record<string, string>> = {
  "token.no_key": "KEY",
  "token.ambiguous_key": "KEY",
  "token.ambiguous_token": "KEY",
  "token.no_key_id": "KEY",
  "token.wrong_key": "KEY or CA_CERT",
};

interface TokenView {
  present: boolean;
  serial: string;
  label: string;
  pinFlags: number;
  epoch: number;
  usbAvailable: boolean;
}

export function pinFlagNames(flags: number): string[] {
  const names: string[] = [];
  if (flags & PinFlag.PIN_COUNT_LOW) names.push("count-low");
  if (flags & PinFlag.PIN_FINAL_TRY) names.push("final-try");
  if (flags & PinFlag.PIN_LOCKED) names.push("locked");
  if (flags & PinFlag.PIN_TO_BE_CHANGED) names.push("to-be-changed");
  return names;
}

/** What the token looked like when a request went to the signer (compared by its fence). */
interface FenceMark {
  readonly epoch: number;
  readonly generation: number;
}
/** A request at the signer: the token as it was at dispatch, and its fence once started. */
interface Issuing {
  readonly at: FenceMark;
  fence?: Promise<boolean>;
}
type PresenceAnswer = Frame<"presence">["message"];

export class Kernel {
  private state: KernelState = "STARTING";
  private stateSince = Date.now();
  /** The PIN, held only while READY so that a restarted signer can be logged in again. */
  private pin: Buffer | undefined;
  private token: TokenView = { present: false, serial: "", label: "", pinFlags: 0, epoch: 0, usbAvailable: false };
  /**
   * Bumped on every token event and on every monitor (re)start: the presence fence compares it,
   * since a restarted monitor counts its epochs from 1 again and saw nothing in between.
   */
  private tokenGeneration = 0;
  /** The last epoch the current monitor process reported. */
  private monitorEpoch = 0;
  private trustedSerial: string | undefined;
  private readonly counters = { issued: 0, failed: 0, rejected: 0, fenceRevoked: 0, undelivered: 0 };
  /** Requests sent to the signer, by request id: where their presence fence stands. */
  private readonly issuing = new Map<string, Issuing>();
  /** Certificates from the signer whose delivery is not settled (handouts.ts). */
  private readonly handouts = new Handouts();
  /** Delivered serials to confirm to the signer in the next batch, by request id. */
  private confirmBatch = new Map<string, string>();
  /** Group fence: callers waiting for a presence check that starts after they asked. */
  private fenceWaiters: ((p: PresenceAnswer | undefined) => void)[] = [];
  private fenceRunning = false;
  private crl: StatusSnapshot["crl"] = null;
  private lastHookFailure: string | null = null;
  private revoking = false;
  private revokeAgain = false;
  private crlBusy = false;
  /** A revocation was recorded that no published CRL carries yet. */
  private crlDirty = false;
  /** How many such revocations (shown by `etoken-ca status`). */
  private revokedSinceCrl = 0;
  private lastCrlWarning = 0;
  private loginBusy = false;
  private statusTimer: NodeJS.Timeout | undefined;
  private crlTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly upOnce = new Set<ServiceName>();
  /** The signer answered once since it last started: its start-up (CA database, CA_CERT) worked. */
  private signerReady = false;
  /** What the console last said about each service going down (said again only when it changes). */
  private readonly lastDownShown = new Map<ServiceName, string>();
  /** A login failure that only a configuration change fixes; no prompt until the token comes back. */
  private configFault: string | undefined;
  /** The monitor's word on why the token is absent (which token KEY looked for, what it found). */
  private tokenDetail = "";

  constructor(
    private readonly config: Config,
    private readonly supervisor: Supervisor,
    private readonly console: OperatorConsole,
    private readonly log: Logger,
    private readonly userNames: Record<ServiceName, string>,
  ) {}

  get currentState(): KernelState {
    return this.state;
  }

  start(): void {
    this.supervisor.on("frame", (name, frame) => this.dispatch(name, frame));
    this.supervisor.on("up", (name, restarted) => this.onServiceUp(name, restarted));
    this.supervisor.on("down", (name, how) => this.onServiceDown(name, how));
    this.supervisor.on("violation", (name, reason) =>
      this.notify("policy-violation", `service ${name} broke the protocol and was killed: ${reason}`, { service: name }),
    );
    this.console.say(`etoken-ca: starting (${this.config.sourceFile})`);
    this.supervisor.startAll();
    this.statusTimer = setInterval(() => this.writeStatus(), STATUS_INTERVAL_MS);
    this.crlTimer = setInterval(() => void this.checkCrl(), crlCheckIntervalMs(this.config.CRL_REISSUE_BEFORE));
    this.heartbeatTimer = setInterval(() => {
      if (!this.console.prompting) this.showState();
    }, CONSOLE_HEARTBEAT_MS);
    this.writeStatus();
  }

  async stop(): Promise<void> {
    this.transition("stop");
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.crlTimer) clearInterval(this.crlTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.wipePin();
    this.console.abortPrompt();
    await this.supervisor.stopAll();
    this.writeStatus();
  }

  // ---- state ----------------------------------------------------------------------------

  private transition(event: KernelEvent): void {
    const to = nextState(this.state, event);
    if (to === this.state) return;
    this.log.notice("state change", { from: this.state, to, event });
    this.state = to;
    this.stateSince = Date.now();
    if (to !== "READY") this.wipePin();
    this.showState();
    this.writeStatus();
  }

  private wipePin(): void {
    if (this.pin) {
      this.pin.fill(0);
      this.pin = undefined;
    }
  }

  private showState(): void {
    const t = this.token;
    const tok = t.present ? `token "${t.label}" serial ${t.serial}` : "no token";
    const crl = this.crl ? `CRL #${this.crl.number} expires ${new Date(this.crl.nextUpdate).toISOString()}` : "no CRL yet";
    this.console.say(`[${new Date().toISOString()}] state ${this.state} | ${tok} | issued ${this.counters.issued} | ${crl}`);
  }

  snapshot(): StatusSnapshot {
    return {
      version: 1,
      kernelPid: process.pid,
      state: this.state,
      stateSince: this.stateSince,
      updatedAt: Date.now(),
      token: { ...this.token, pinFlags: pinFlagNames(this.token.pinFlags) },
      trustedTokenSerial: this.trustedSerial ?? null,
      counters: { ...this.counters },
      queueDepth: this.issuing.size,
      crl: this.crl,
      lastHookFailure: this.lastHookFailure,
      logWritesDropped: droppedLogWrites(),
      revokedSinceCrl: this.revokedSinceCrl,
      services: this.supervisor.all().map((r) => ({
        name: r.name,
        user: this.userNames[r.name],
        uid: r.user.uid,
        pid: r.pid ?? null,
        up: r.up,
        startedAt: r.startedAt ?? null,
        restarts: r.restarts,
        lastError: r.lastError ?? null,
      })),
    };
  }

  private statusPending: NodeJS.Timeout | undefined;

  /** Counter changes are written within 100 ms, not once per request. */
  private scheduleStatus(): void {
    if (this.statusPending) return;
    this.statusPending = setTimeout(() => {
      this.statusPending = undefined;
      this.writeStatus();
    }, 100);
  }

  private writeStatus(): void {
    try {
      writeStatus(this.config.STATUS_FILE, this.snapshot());
    } catch (err) {
      this.log.error("cannot write the status file", { file: this.config.STATUS_FILE, error: describeError(err) });
    }
  }

  // ---- services coming and going ------------------------------------------------------------

  private onServiceUp(name: ServiceName, restarted: boolean): void {
    if (restarted) this.notify("service-restarted", `service ${name} was restarted`, { service: name });
    this.upOnce.add(name);
    if (this.state === "STARTING" && this.upOnce.size === 4) {
      this.transition("services-up");
      void this.processRevocations("start-up");
      this.considerPrompt();
    }
    if (name === "monitor") {
      this.monitorEpoch = 0;
      this.tokenGeneration++;
    }
    if (name === "signer") {
      this.signerReady = false;
      void this.settleUndelivered();
      void this.refreshSignerStatus();
      if (this.state === "READY" && this.pin) void this.reLogin();
    }
    this.writeStatus();
  }

  private onServiceDown(name: ServiceName, how: string): void {
    this.log.warning("service down", { service: name, how });
    if (this.lastDownShown.get(name) !== how) {
      this.lastDownShown.set(name, how);
      this.console.say(`${name}: ${how}; restarting it`);
    }
    if (name === "signer") {
      this.signerReady = false;
      // a PIN typed now would reach no signer: close the prompt, open it when one is up
      if (this.state === "NEED_PIN" && this.console.prompting) {
        this.console.abortPrompt();
        this.console.say("no PIN prompt until the signer is up");
      }
    }
    if (name === "spool") {
      for (const h of this.handouts.orphaned()) this.revokeUndelivered(h.serial, "the spool stopped before it reported the certificate delivered");
    }
    this.writeStatus();
  }

  // ---- dispatch: one function per peer, each ending in "invalid message: fatal" --------------

  private dispatch(sender: ServiceName, frame: Frame): void {
    if (!isPermitted(sender, frame.type, this.state)) {
      this.supervisor.securityEvent(sender, `message ${frame.type} is not permitted from ${sender} in state ${this.state}`);
      return;
    }
    switch (sender) {
      case "spool":
        return this.kernelDispatchSpool(frame);
      case "signer":
        return this.kernelDispatchSigner(frame);
      case "monitor":
        return this.kernelDispatchMonitor(frame);
      case "notifier":
        return this.kernelDispatchNotifier(frame);
      default: {
        const never: never = sender;
        throw new Error(`unknown sender ${String(never)}`);
      }
    }
  }

  private kernelDispatchSpool(frame: Frame): void {
    switch (frame.type) {
      case "issueRequest":
        void this.handleIssue(frame as Frame<"issueRequest">);
        return;
      case "requestRejected": {
        const m = (frame as Frame<"requestRejected">).message;
        this.counters.rejected++;
        this.scheduleStatus();
        this.log.info("request rejected by the spool", { request: String(m.requestId).slice(0, 64), code: String(m.code).slice(0, 64) });
        return;
      }
      case "undelivered":
        this.onUndelivered(frame as Frame<"undelivered">);
        return;
      case "delivered":
        this.onDelivered(frame as Frame<"delivered">);
        return;
      default:
        this.supervisor.securityEvent("spool", `invalid message from spool: ${frame.type}: fatal`);
    }
  }

  private kernelDispatchSigner(frame: Frame): void {
    switch (frame.type) {
      case "signed": {
        // Starts the fence while the signer syncs the record. An id we are not waiting for (its
        // request timed out here) needs nothing: its Issued answer will find no taker either.
        const requestId = (frame as Frame<"signed">).message.requestId;
        const entry = this.issuing.get(requestId);
        if (entry && !entry.fence) {
          entry.fence = this.fence(entry.at);
          this.log.debug("presence fence started on Signed", { request: requestId });
        }
        return;
      }
      case "signerFault": {
        const m = (frame as Frame<"signerFault">).message;
        this.log.error("signer reports a token fault", { code: m.code, message: m.message.slice(0, 300), deviceLost: m.deviceLost });
        if (m.deviceLost) this.tokenLost(`the signer lost the token: ${m.message.slice(0, 200)}`, "device-error");
        return;
      }
      default:
        this.supervisor.securityEvent("signer", `invalid message from signer: ${frame.type}: fatal`);
    }
  }

  private kernelDispatchMonitor(frame: Frame): void {
    switch (frame.type) {
      case "tokenEvent":
        this.onTokenEvent(frame as Frame<"tokenEvent">);
        return;
      default:
        this.supervisor.securityEvent("monitor", `invalid message from monitor: ${frame.type}: fatal`);
    }
  }

  private kernelDispatchNotifier(frame: Frame): void {
    switch (frame.type) {
      case "hookFailed": {
        const m = (frame as Frame<"hookFailed">).message;
        // the status file is world-readable
        this.lastHookFailure = `${new Date().toISOString()} ${m.hook.slice(0, 100)} (${m.event.slice(0, 40)}): ${redactCredentials(m.message.slice(0, 300))}`;
        this.log.warning("hook failed", { hook: m.hook.slice(0, 200), event: m.event.slice(0, 40), message: m.message.slice(0, 300) });
        this.writeStatus();
        return;
      }
      default:
        this.supervisor.securityEvent("notifier", `invalid message from notifier: ${frame.type}: fatal`);
    }
  }

  // ---- issuing --------------------------------------------------------------------------------

  private validIssueRequest(m: Frame<"issueRequest">["message"]): string | undefined {
    if (!REQUEST_ID.test(m.requestId)) return "invalid request id";
    if (m.username.length === 0 || Buffer.byteLength(m.username, "utf8") > MAX_USERNAME_BYTES) return "invalid username length";
    if (m.proxyLifetime > TEN_YEARS_S || m.maxCertLifetime > TEN_YEARS_S) return "absurd lifetime";
    if (m.publicKey.length === 0 || m.publicKey.length > MAX_PUBLIC_KEY) return "invalid public key size";
    if (m.csr.length > MAX_CSR) return "invalid CSR size";
    if (!Number.isFinite(m.deadline) || m.deadline <= 0) return "invalid deadline";
    return undefined;
  }

  private async handleIssue(frame: Frame<"issueRequest">): Promise<void> {
    const spool = this.supervisor.channel("spool");
    if (!spool) return;
    const m = frame.message;
    const problem = this.validIssueRequest(m);
    if (problem) {
      spool.fail(frame, "request.invalid", `request refused: ${problem}`);
      this.supervisor.securityEvent("spool", `issueRequest failed validation: ${problem}`);
      return;
    }
    const fail = (code: string, message: string): void => {
      this.counters.failed++;
      this.scheduleStatus();
      spool.fail(frame, code, message);
    };
    if (this.state !== "READY") return fail("token.not_available", NOT_AVAILABLE);
    const now = Date.now();
    if (m.deadline <= now) return fail("request.expired", "request expired before it could be signed");
    const signer = this.supervisor.channel("signer");
    if (!signer) return fail("signer.unavailable", "the signer is restarting; try again");
    if (this.issuing.has(m.requestId) || this.handouts.phaseOf(m.requestId) !== undefined) {
      this.supervisor.securityEvent("spool", "issueRequest for a request id already being issued");
      return fail("request.duplicate", "this request is already being served");
    }
    const entry: Issuing = { at: { epoch: this.token.epoch, generation: this.tokenGeneration } };
    this.issuing.set(m.requestId, entry);
    try {
      const issued = await signer.request(
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
        Math.min(SIGNER_TIMEOUT_MS, Math.max(1, m.deadline - now + 1000)),
        // signed after we stopped waiting: the client was told it failed; nobody gets it
        { onLateAnswer: (late) => this.onLateIssued(late) },
      );
      const cert = issued.message;
      if (cert.requestId !== m.requestId || !/^[0-9A-F]{2,64}$/.test(cert.serial) || cert.certificate.length === 0) {
        this.supervisor.securityEvent("signer", "issued answer does not match the request");
        return fail("internal", "the signer gave an invalid answer");
      }
      // from here on the certificate exists: it ends delivered (confirmed) or revoked
      const handout = this.handouts.signed(m.requestId, cert.serial, spool);
      // the fence Signed started (or, from a backend that does not send it, one started now)
      if (!entry.fence) {
        entry.fence = this.fence(entry.at);
        this.log.debug("presence fence started after Issued", { request: m.requestId });
      }
      if (!((await entry.fence) && this.tokenUnchangedSince(entry.at))) {
        this.handouts.drop(m.requestId);
        this.counters.fenceRevoked++;
        const tokenGone = !this.token.present || this.token.serial !== this.trustedSerial || this.state !== "READY";
        this.log.warning("presence fence: token presence not confirmed after signing; certificate revoked and withheld", { serial: cert.serial, tokenGone });
        await this.revokeInDatabase(cert.serial, this.config.FENCE_REVOKE_REASON, "presence fence", "presence-fence");
        this.notify("fence-revoked", `certificate ${cert.serial} was signed while the token was being removed; it was revoked and not handed out`, {
          serial: cert.serial,
        });
        return tokenGone
          ? fail("token.removed", "CA token was removed while the certificate was being signed; nothing was issued")
          : fail("token.unconfirmed", "the CA could not confirm its token after signing (token monitor restarting); nothing was issued, try again");
      }
      if (spool.closed) {
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
      this.handouts.returned(handout, Math.max(0, m.deadline - Date.now()) + DELIVERY_GRACE_MS + SPOOL_REPORT_SLACK_MS, (h) => {
        this.handouts.drop(h.requestId);
        this.revokeUndelivered(h.serial, "the spool never reported whether it delivered the certificate");
      });
    } catch (err) {
      if (err instanceof RemoteFailure) return fail(err.code, err.message);
      this.log.error("issuing failed", { request: m.requestId, error: describeError(err) });
      return fail(err instanceof EtokenError ? err.code : errorCode(err), "the CA could not sign the request (internal error; see the CA log)");
    } finally {
      this.issuing.delete(m.requestId);
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
  private onUndelivered(frame: Frame<"undelivered">): void {
    const m = frame.message;
    const spool = this.supervisor.channel("spool");
    const known = spool && this.handouts.find(m.requestId, spool, true);
    if (!known) {
      this.supervisor.securityEvent("spool", `undelivered for request ${JSON.stringify(m.requestId.slice(0, 40))}, which the kernel did not return to this spool`);
      return;
    }
    this.handouts.drop(m.requestId);
    this.revokeUndelivered(known.serial, m.reason.slice(0, 200));
    if (m.serial !== known.serial) {
      this.supervisor.securityEvent("spool", `undelivered names serial ${JSON.stringify(m.serial.slice(0, 70))}, but the kernel returned ${known.serial} for request ${m.requestId}`);
    }
  }

  private onDelivered(frame: Frame<"delivered">): void {
    const requestId = frame.message.requestId;
    const spool = this.supervisor.channel("spool");
    const known = spool && this.handouts.find(requestId, spool, false);
    if (!known?.handout) {
      this.supervisor.securityEvent("spool", `delivered for request ${JSON.stringify(requestId.slice(0, 40))}, which the kernel did not return to this spool`);
      return;
    }
    this.handouts.confirming(known.handout);
    this.counters.issued++;
    this.scheduleStatus();
    this.confirmBatch.set(requestId, known.serial);
    if (this.confirmBatch.size === 1) setImmediate(() => void this.sendConfirmations());
  }

  /** Tells the signer which certificates reached their clients (one message per turn of the loop). */
  private async sendConfirmations(): Promise<void> {
    const batch = this.confirmBatch;
    this.confirmBatch = new Map();
    const signer = this.supervisor.channel("signer");
    if (!signer || batch.size === 0) return; // a restarted signer gets them after settling (settleUndelivered)
    try {
      await signer.request("confirmDelivery", { serials: [...batch.values()] }, "ack", SIGNER_TIMEOUT_MS);
      for (const id of batch.keys()) this.handouts.confirmed(id);
    } catch (err) {
      // kept as `confirming`: listed in flight when the signer settles, and sent again after
      this.log.warning("the signer did not record delivered certificates; sent again when it restarts", { count: batch.size, error: describeError(err) });
    }
  }

  private onLateIssued(late: Frame): void {
    const serial = late.type === "issued" ? (late as Frame<"issued">).message.serial : "";
    if (/^[0-9A-F]{2,64}$/.test(serial)) this.revokeUndelivered(serial, "signed after the kernel had stopped waiting for it");
  }

  private revokeUndelivered(serial: string, why: string): void {
    this.counters.undelivered++;
    this.scheduleStatus();
    this.log.warning("certificate not delivered to its client: revoking", { serial, reason: why });
    this.notify("undelivered-revoked", `certificate ${serial} was signed but did not reach its client (${why}); it is revoked`, { serial });
    void this.revokeInDatabase(serial, this.config.UNDELIVERED_REVOKE_REASON, "not delivered", "undelivered");
  }

  /**
   * Every signer start: the signer revokes what was signed before it and never confirmed
   * delivered, except what is still in flight here; then the confirmations it missed.
   */
  private async settleUndelivered(): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer) return;
    try {
      const r = await signer.request("settleUndelivered", { inFlight: this.handouts.inFlightSerials() }, "undeliveredRevoked", SIGNER_TIMEOUT_MS);
      const revoked = r.message.serials.filter((x) => /^[0-9A-F]{2,64}$/.test(x));
      if (revoked.length > 0) {
        this.counters.undelivered += revoked.length;
        this.crlDirty = true;
        this.log.warning("certificates signed but never delivered (a process died): revoked", { count: revoked.length, serials: revoked.slice(0, 50).join(" "), reason: r.message.reason });
        this.notify("undelivered-revoked", `${revoked.length} certificate(s) signed before a restart never reached their clients; revoked (${r.message.reason})`, {
          serial: revoked.slice(0, 50).join(" "),
          count: String(revoked.length),
        });
        if (this.state === "READY") void this.makeCrl("certificates never delivered");
        this.scheduleStatus();
      }
      const missed = this.handouts.unconfirmed();
      if (missed.length > 0) {
        for (const h of missed) this.confirmBatch.set(h.requestId, h.serial);
        void this.sendConfirmations();
      }
    } catch (err) {
      this.log.error("the signer could not settle the certificates never delivered; they are settled at its next start", { error: describeError(err) });
    }
  }

  private tokenUnchangedSince(at: FenceMark): boolean {
    return this.state === "READY" && this.tokenGeneration === at.generation && this.token.epoch === at.epoch;
  }

  /**
   * True only if the monitor confirms, by a check started after the signature (the caller asks
   * after it), the same token in the same epoch, and nothing about the token changed (or the
   * monitor restarted) since dispatch.
   */
  private async fence(at: FenceMark): Promise<boolean> {
    if (!this.tokenUnchangedSince(at)) return false;
    const p = await this.freshPresence();
    return p !== undefined && p.present && p.epoch === at.epoch && this.tokenUnchangedSince(at);
  }

  /**
   * A presence check that starts after this call. Callers that arrive while one is running
   * share the next one (a group fence: under load one check covers many certificates).
   */
  private freshPresence(): Promise<PresenceAnswer | undefined> {
    return new Promise((resolve) => {
      this.fenceWaiters.push(resolve);
      if (!this.fenceRunning) this.runPresenceCheck();
    });
  }

  private runPresenceCheck(): void {
    const batch = this.fenceWaiters.splice(0);
    const monitor = this.supervisor.channel("monitor");
    if (!monitor) {
      for (const w of batch) w(undefined);
      return;
    }
    this.fenceRunning = true;
    monitor
      .request("presenceCheck", { epoch: this.token.epoch }, "presence", FENCE_TIMEOUT_MS)
      .then(
        (p) => p.message,
        (err: unknown) => {
          this.log.error("presence fence check failed", { error: describeError(err) });
          return undefined;
        },
      )
      .then((p) => {
        this.fenceRunning = false;
        for (const w of batch) w(p);
        if (this.fenceWaiters.length > 0) this.runPresenceCheck();
      });
  }

  private async revokeInDatabase(serial: string, reason: string, why: string, origin: RevocationOrigin): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer) {
      // never confirmed delivered: the signer's journal has it, and the signer revokes it when it starts
      this.log.error("cannot revoke now: signer not running; it revokes the certificate when it starts", { serial, why });
      return;
    }
    try {
      const r = await signer.request("revoke", { entries: [{ queueFile: "", serial, reason, queuedAt: Date.now(), origin }] }, "revokeResults", SIGNER_TIMEOUT_MS);
      const result = r.message.results[0];
      if (!result || !result.applied) throw new Error(result?.message ?? "no result");
      this.crlDirty = true;
      this.revokedSinceCrl++;
      this.log.notice("certificate revoked", { serial, reason, why });
      if (this.state === "READY") void this.makeCrl(why);
      else this.log.notice("the revocation goes into the next CRL (no PIN now)", { serial });
    } catch (err) {
      this.log.error("revocation failed: revoke it by hand with revoke-cert", { serial, why, error: describeError(err) });
    }
  }

  // ---- the token ------------------------------------------------------------------------------

  private onTokenEvent(frame: Frame<"tokenEvent">): void {
    const ev = frame.message;
    if (ev.epoch <= this.monitorEpoch || ev.serial.length > 64 || ev.label.length > 64 || !(ev.presence in TokenPresence)) {
      this.supervisor.securityEvent("monitor", `invalid token event (epoch ${ev.epoch} after ${this.monitorEpoch})`);
      return;
    }
    this.monitorEpoch = ev.epoch;
    this.tokenGeneration++;
    const before = this.token;
    const present = ev.presence === TokenPresence.TOKEN_PRESENT;
    this.token = { present, serial: ev.serial, label: ev.label, pinFlags: ev.pinFlags, epoch: ev.epoch, usbAvailable: ev.usbAvailable };
    const detail = oneLine(ev.detail, MAX_REASON);
    if (!present && detail !== this.tokenDetail && detail.startsWith(NO_MATCHING_TOKEN)) {
      this.console.say(`CA token not found: ${detail}; check KEY in ${this.config.sourceFile}`);
    }
    this.tokenDetail = detail;
    this.log.info("token event", { epoch: ev.epoch, present, serial: ev.serial, source: ev.source, detail: ev.detail.slice(0, 200) });
    if (!present) {
      if (before.present) {
        this.notify("token-removed", `CA token ${before.serial} removed: issuing suspended, PIN forgotten`, { serial: before.serial });
        this.auditToken("removed", before.serial, before.label, detail);
      }
      this.tokenLost("token removed", "token-absent");
      return;
    }
    if (this.trustedSerial !== undefined && ev.serial !== this.trustedSerial) {
      this.console.say(`REFUSED: token serial ${ev.serial} is not the CA token (expected serial ${this.trustedSerial}); insert the CA token`);
      this.notify("token-refused", `a token with serial ${ev.serial} was inserted, but the CA token has serial ${this.trustedSerial}; refused`, {
        serial: ev.serial,
        expected: this.trustedSerial,
      });
      this.auditToken("refused", ev.serial, ev.label, `expected serial ${this.trustedSerial}`);
      this.tokenLost("another token", "token-refused");
      return;
    }
    if (before.present && before.serial !== ev.serial && this.state === "READY") {
      this.auditToken("replaced", ev.serial, ev.label, `token ${before.serial} replaced while READY`);
      this.tokenLost("token replaced", "token-refused");
      return;
    }
    if (!before.present) {
      this.notify("token-inserted", `CA token ${ev.serial} inserted`, { serial: ev.serial });
      this.auditToken("inserted", ev.serial, ev.label, detail);
    }
    if (this.state === "SUSPENDED") this.transition("token-present");
    this.considerPrompt();
    this.writeStatus();
  }

  /** The signer writes the audit trail: tell it what happened to the token (no reply expected). */
  private auditToken(event: (typeof TOKEN_AUDIT_EVENTS)[number], serial: string, label: string, detail: string): void {
    try {
      this.supervisor.channel("signer")?.send("tokenAudit", { event, serial, label, detail: detail.slice(0, 300) });
    } catch (err) {
      this.log.warning("cannot tell the signer about a token event for the audit trail", { event, error: describeError(err) });
    }
  }

  private tokenLost(why: string, event: KernelEvent): void {
    const wasReady = this.state === "READY";
    this.configFault = undefined;
    this.console.abortPrompt();
    this.transition(event);
    this.wipePin();
    if (wasReady || event === "device-error") {
      this.console.say(`SUSPENDED: ${why}; issuing stopped, PIN forgotten`);
      const signer = this.supervisor.channel("signer");
      signer?.request("logout", { reason: why }, "ack", SIGNER_TIMEOUT_MS).catch((err) => {
        this.log.warning("signer logout failed", { error: describeError(err) });
      });
    }
    if (event === "device-error") void this.recheckPresence();
  }

  /** After a signer device error the monitor may still see the token: ask, and go back to NEED_PIN. */
  private async recheckPresence(): Promise<void> {
    const monitor = this.supervisor.channel("monitor");
    if (!monitor) return;
    try {
      const p = await monitor.request("presenceCheck", { epoch: this.token.epoch }, "presence", FENCE_TIMEOUT_MS);
      if (p.message.present && this.state === "SUSPENDED" && p.message.serial === (this.trustedSerial ?? p.message.serial)) {
        this.transition("token-present");
        this.considerPrompt();
      }
    } catch (err) {
      this.log.warning("presence re-check failed", { error: describeError(err) });
    }
  }

  // ---- PIN entry ------------------------------------------------------------------------------

  private considerPrompt(): void {
    if (this.state !== "NEED_PIN" || this.loginBusy || this.console.prompting || this.configFault) return;
    if (!this.token.present) {
      if (!this.tokenDetail.startsWith(NO_MATCHING_TOKEN)) this.console.say("insert the CA token");
      return;
    }
    // prompted again when the signer has answered (its CA database and CA_CERT are loaded)
    if (!this.supervisor.isUp("signer") || !this.signerReady) return;
    void this.promptForPin();
  }

  private async promptForPin(): Promise<void> {
    const t = this.token;
    if (t.pinFlags & PinFlag.PIN_LOCKED) {
      this.console.say(`token "${t.label}" serial ${t.serial}: the user PIN is LOCKED; unlock it with the SO PIN, then re-insert the token`);
      this.notify("pin-locked", `the PIN of CA token ${t.serial} is locked`, { serial: t.serial });
      return;
    }
    this.notify("pin-needed", `CA token ${t.serial} is present; the PIN must be entered on the console`, { serial: t.serial });
    const warnings: string[] = [];
    if (t.pinFlags & PinFlag.PIN_COUNT_LOW) warnings.push("WARNING: a wrong PIN was entered before (retry count low)");
    if (t.pinFlags & PinFlag.PIN_FINAL_TRY) warnings.push("WARNING: FINAL TRY: one more wrong PIN locks the token");
    for (const w of warnings) this.console.say(w);
    const pin = await this.console.readSecret(`PIN for CA token "${t.label}" (serial ${t.serial}): `);
    if (pin === undefined) return; // aborted: token gone or stopping
    if (pin.length === 0) {
      this.considerPrompt();
      return;
    }
    await this.login(pin, t.serial);
  }

  /** Sends the PIN to the signer; keeps it (for re-login) only when it was right. */
  private async login(pin: Buffer, expectedSerial: string): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer || this.state !== "NEED_PIN" || this.token.serial !== expectedSerial || !this.token.present) {
      pin.fill(0);
      this.considerPrompt();
      return;
    }
    this.loginBusy = true;
    let ok = false;
    try {
      const r = await signer.request("login", { pin, expectedSerial }, "loginResult", SIGNER_TIMEOUT_MS, { secret: true });
      const res = r.message;
      if (res.ok && this.state === "NEED_PIN" && this.token.present && res.tokenSerial === this.token.serial) {
        ok = true;
        this.pin = pin;
        this.trustedSerial = res.tokenSerial;
        this.console.say(`PIN accepted; the token key matches the CA certificate`);
        this.transition("login-ok");
        this.notify("ready", `CA token ${res.tokenSerial} logged in; issuing`, { serial: res.tokenSerial });
        void this.processRevocations("login");
      } else if (res.ok) {
        this.log.warning("login succeeded but the token changed meanwhile; logging out");
        signer.request("logout", { reason: "token changed during login" }, "ack", SIGNER_TIMEOUT_MS).catch(() => {});
      } else {
        const flags = pinFlagNames(res.pinFlags);
        this.console.say(`LOGIN FAILED: ${res.message}${flags.length ? ` (token reports: ${flags.join(", ")})` : ""}`);
        const fix = CONFIG_FAULTS[res.code];
        if (fix) {
          this.configFault = res.code;
          this.console.say(
            `this is a configuration fault: typing the PIN again will not help. Fix ${fix} in ${this.config.sourceFile} (etoken-ca check-config shows the problems), then restart etoken-ca-server`,
          );
        }
        this.log.warning("login failed", { code: res.code, message: res.message, tokenFlags: flags.join(",") });
        this.notify(res.code === "token.pin_incorrect" ? "pin-wrong" : "login-failed", `login to CA token ${expectedSerial} failed: ${res.message}`, {
          serial: expectedSerial,
          code: res.code,
        });
        this.token = { ...this.token, pinFlags: res.pinFlags };
      }
    } catch (err) {
      this.console.say(`LOGIN FAILED: ${describeError(err)}`);
      this.log.error("login failed", { error: describeError(err) });
    } finally {
      if (!ok) pin.fill(0);
      this.loginBusy = false;
      this.writeStatus();
    }
    if (!ok) this.considerPrompt();
  }

  /** A restarted signer while READY is logged in again from the PIN root holds. */
  private async reLogin(): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer || !this.pin) return;
    const copy = secretBuffer(this.pin.length);
    this.pin.copy(copy);
    try {
      const r = await signer.request("login", { pin: copy, expectedSerial: this.token.serial }, "loginResult", SIGNER_TIMEOUT_MS, { secret: true });
      if (!r.message.ok) {
        this.log.error("re-login of the restarted signer failed", { code: r.message.code, message: r.message.message });
        this.console.say(`re-login of the restarted signer failed: ${r.message.message}`);
        this.transition("relogin-failed"); // wipes the PIN: it is not retried
        this.considerPrompt();
      } else {
        this.log.notice("restarted signer logged in again");
      }
    } catch (err) {
      this.log.error("re-login of the restarted signer failed", { error: describeError(err) });
    } finally {
      copy.fill(0);
    }
  }

  // ---- revocation and CRLs --------------------------------------------------------------------

  /** SIGUSR1, start-up and login: apply the revoke queue, then make a CRL when the PIN is there. */
  async processRevocations(trigger: string): Promise<void> {
    if (this.revoking) {
      this.revokeAgain = true;
      return;
    }
    this.revoking = true;
    try {
      do {
        this.revokeAgain = false;
        const applied = await this.applyRevokeQueue(trigger);
        if (applied > 0) this.crlDirty = true;
        this.revokedSinceCrl += applied;
        if (this.state === "READY" && (this.crlDirty || trigger === "SIGUSR1")) await this.makeCrl(`revocations (${trigger})`);
        else if (this.crlDirty) this.log.notice("revocations recorded; the next CRL will carry them (no PIN now)", { applied });
      } while (this.revokeAgain);
    } finally {
      this.revoking = false;
    }
    await this.checkCrl();
  }

  /**
   * Root's queue, read here (not by a service): a compromised service can neither forge, nor
   * suppress, nor delete an entry. The revocation date is this clock when the entry is applied.
   */
  private async applyRevokeQueue(trigger: string): Promise<number> {
    const signer = this.supervisor.channel("signer");
    if (!signer) return 0;
    const dir = this.config.REVOKE_DIR;
    let applied = 0;
    try {
      const q = await readRevokeQueue(dir, this.log);
      if (q.entries.length === 0) return 0;
      const revokedAt = Date.now();
      const entries = q.entries.map((e) => ({ queueFile: e.queueFile, serial: e.serial, reason: e.reason, queuedAt: revokedAt, origin: "revoke-queue" }));
      const r = await signer.request("revoke", { entries }, "revokeResults", SIGNER_TIMEOUT_MS);
      const done: string[] = [];
      const queued = new Set(entries.map((e) => e.queueFile));
      for (const res of r.message.results) {
        if (res.applied) applied++;
        else this.log.error("queued revocation not applied; dropped from the queue", { serial: res.serial, message: String(res.message ?? "").slice(0, 300) });
        if (res.queueFile && queued.has(res.queueFile)) done.push(res.queueFile);
      }
      await removeQueueFiles(dir, done, this.log);
      this.log.notice("revoke queue processed", { trigger, applied, entries: entries.length });
    } catch (err) {
      this.log.error("revoke queue processing failed; the queue is kept", { dir, error: describeError(err) });
    }
    return applied;
  }

  private async refreshSignerStatus(): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer) return;
    try {
      const s = await signer.request("getSignerStatus", {}, "signerStatus", SIGNER_TIMEOUT_MS);
      const c = s.message.latestCrl;
      if (c && Number(c.number) > 0) {
        this.crl = { number: Number(c.number), thisUpdate: Number(c.thisUpdate), nextUpdate: Number(c.nextUpdate), entries: Number(c.entries ?? 0), path: String(c.path ?? "") };
      }
      this.writeStatus();
      this.signerReady = true;
      this.lastDownShown.delete("signer");
      this.considerPrompt();
    } catch (err) {
      this.log.warning("cannot read the signer status", { error: describeError(err) });
      // a Failure is still an answer: the signer serves requests only once its start-up is done
      if (err instanceof RemoteFailure) {
        this.signerReady = true;
        this.considerPrompt();
      }
    }
  }

  async makeCrl(reason: string): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer || this.state !== "READY" || this.crlBusy) return;
    this.crlBusy = true;
    const wasDirty = this.crlDirty;
    const carried = this.revokedSinceCrl;
    this.crlDirty = false;
    try {
      const r = await signer.request("makeCrl", { reason }, "crlInfo", CRL_TIMEOUT_MS);
      const c = r.message;
      this.crl = { number: c.number, thisUpdate: c.thisUpdate, nextUpdate: c.nextUpdate, entries: c.entries, path: c.path };
      this.revokedSinceCrl -= carried;
      this.log.notice("CRL updated", { number: c.number, entries: c.entries, nextUpdate: new Date(c.nextUpdate).toISOString(), reason });
      this.notify("crl-updated", `CRL #${c.number} with ${c.entries} entries, valid until ${new Date(c.nextUpdate).toISOString()}`, {
        path: c.path,
        crl_urls: this.config.CRL_URLS.join(" "),
        number: String(c.number),
        next_update: new Date(c.nextUpdate).toISOString(),
      });
      this.showState();
    } catch (err) {
      this.crlDirty = this.crlDirty || wasDirty;
      this.log.error("CRL generation failed", { error: describeError(err) });
      this.notify("crl-failed", `CRL generation failed: ${describeError(err)}`, {});
    } finally {
      this.crlBusy = false;
      this.writeStatus();
    }
  }

  /** The schedule: a new CRL well before nextUpdate; a warning when it cannot be made. */
  private async checkCrl(): Promise<void> {
    if (this.state === "STARTING" || this.state === "STOPPING") return;
    const now = Date.now();
    const action = crlAction({
      ready: this.state === "READY",
      now,
      nextUpdate: this.crl?.nextUpdate,
      thisUpdate: this.crl?.thisUpdate,
      checkpointIntervalMs: this.config.AUDIT_CHECKPOINT_INTERVAL,
      dirty: this.crlDirty,
      reissueBeforeMs: this.config.CRL_REISSUE_BEFORE,
      lastWarning: this.lastCrlWarning,
    });
    if (action === "make") {
      await this.makeCrl(!this.crl ? "no CRL yet" : this.crlDirty ? "revocations since the last CRL" : crlCheckpointDue(now, this.crl.thisUpdate, this.config.AUDIT_CHECKPOINT_INTERVAL) ? "audit checkpoint (AUDIT_CHECKPOINT_INTERVAL)" : "scheduled re-issue");
    } else if (action === "warn" && this.crl) {
      this.lastCrlWarning = now;
      const hours = Math.max(0, Math.floor((this.crl.nextUpdate - now) / 3_600_000));
      this.console.say(`WARNING: the CRL expires in ${hours} h and no PIN is available to renew it`);
      this.notify("crl-expiring", `CRL #${this.crl.number} expires within ${hours} hours and no PIN is available to renew it`, {
        number: String(this.crl.number),
        next_update: new Date(this.crl.nextUpdate).toISOString(),
        hours: String(hours),
      });
    }
  }

  // ---- notifications --------------------------------------------------------------------------

  notify(event: string, message: string, details: Record<string, string>): void {
    this.log.info("event", { event, message });
    const notifier = this.supervisor.channel("notifier");
    if (!notifier) return;
    try {
      notifier.send("notify", { event, message, details });
    } catch (err) {
      this.log.warning("cannot reach the notifier", { error: describeError(err) });
    }
  }
}
