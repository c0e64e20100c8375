// The kernel's core: the state machine, the table that dispatches every message a service sends
// (policy.ts), the token as the monitor reports it, the services coming and going, notifications
// and the status file. What it owns besides lives in its parts: the issuing path (issuing.ts),
// the PIN (pin.ts), the revoke queue and CRLs (revocations.ts). It parses nothing untrusted:
// every frame was checked against the contract (proto/contract.ts) before it gets here.
import { contractProblem, MAX_NOTIFY_DETAIL_VALUE, MAX_NOTIFY_MESSAGE, MAX_REASON, MAX_SERVICE_WARNING, MAX_TOKEN_AUDIT_DETAIL, type TOKEN_AUDIT_EVENTS } from "../../proto/contract.js";
import type { Frame, Message } from "../../proto/wire.js";
import { TokenPresence } from "../../proto/wire.js";
import { RemoteFailure } from "../common/channel.js";
import type { Config } from "../common/config-schema.js";
import { describeError } from "../common/errors.js";
import { droppedLogWrites, type Logger } from "../common/log.js";
import { redactCredentials } from "../common/redact.js";
import type { ServiceName } from "../common/service-table.js";
import { oneLine } from "../common/spool-protocol.js";
import { NO_MATCHING_TOKEN } from "../common/pkcs11/token-match.js";
import type { OperatorConsole } from "./console.js";
import { crlCheckIntervalMs } from "../common/crl-schedule.js";
import { IssuingPath } from "./issuing.js";
import { KernelMetrics, MetricsFile } from "./metrics.js";
import { pinFlagNames, PinKeeper } from "./pin.js";
import { permittedRow, runRow, type KernelHandlers } from "./policy.js";
import { Revocations } from "./revocations.js";
import { nextState, type KernelEvent, type KernelState } from "./states.js";
import { STATUS_COUNTER_INTERVAL_MS, writeStatus, type StatusSnapshot } from "../common/status-file.js";
import { Throttle } from "../common/throttle.js";
import type { Supervisor } from "./supervisor.js";
import { FENCE_TIMEOUT_MS, SIGNER_TIMEOUT_MS } from "./timeouts.js";

export { pinFlagNames };

const STATUS_INTERVAL_MS = 5_000;

/** A text within `max` characters and without NUL (what the contract allows a notification). */
function fitText(s: string, max: number): string {
  const t = s.includes("\0") ? s.replace(/\0/g, " ") : s;
  return t.length <= max ? t : `${t.slice(0, max - 1)}…`;
}
/** Between prompts the console repeats the live state this often. */
const CONSOLE_HEARTBEAT_MS = 10 * 60_000;

export interface TokenView {
  present: boolean;
  serial: string;
  label: string;
  pinFlags: number;
  epoch: number;
  usbAvailable: boolean;
}

/** What the kernel's parts (issuing.ts, pin.ts, revocations.ts) see of the core and of each other. */
export interface KernelCore {
  readonly config: Config;
  readonly supervisor: Supervisor;
  readonly console: OperatorConsole;
  readonly log: Logger;
  readonly state: KernelState;
  token: TokenView;
  readonly tokenGeneration: number;
  readonly tokenDetail: string;
  readonly signerReady: boolean;
  readonly counters: { issued: number; failed: number; rejected: number; fenceRevoked: number; undelivered: number };
  readonly pin: PinKeeper;
  readonly issuing: IssuingPath;
  readonly revocations: Revocations;
  /** Counters and histograms for METRICS_FILE beyond the status snapshot (metrics.ts). */
  readonly metrics: KernelMetrics;
  transition(event: KernelEvent): void;
  notify(event: string, message: string, details: Record<string, string>): void;
  showState(): void;
  writeStatus(): void;
  scheduleStatus(): void;
}

export class Kernel implements KernelCore {
  private current: KernelState = "STARTING";
  private stateSince = Date.now();
  token: TokenView = { present: false, serial: "", label: "", pinFlags: 0, epoch: 0, usbAvailable: false };
  /**
   * Bumped on every token event but a PIN-flags-only one, and on every monitor (re)start: the presence fence compares it,
   * since a restarted monitor counts its epochs from 1 again and saw nothing in between.
   */
  tokenGeneration = 0;
  /** The last epoch the current monitor process reported. */
  private monitorEpoch = 0;
  /** The monitor's word on why the token is absent (which token KEY looked for, what it found). */
  tokenDetail = "";
  readonly counters = { issued: 0, failed: 0, rejected: 0, fenceRevoked: 0, undelivered: 0 };
  private lastHookFailure: string | null = null;
  /** ServiceWarning codes already shown: a restarted service's repeat is logged, not shown again. */
  private readonly warningsShown = new Set<string>();
  private statusTimer: NodeJS.Timeout | undefined;
  private crlTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly upOnce = new Set<ServiceName>();
  /** The signer answered once since it last started: its start-up (CA database, CA_CERT) worked. */
  signerReady = false;
  /** What the console last said about each service going down (said again only when it changes). */
  private readonly lastDownShown = new Map<ServiceName, string>();

  readonly pin: PinKeeper = new PinKeeper(this);
  readonly issuing: IssuingPath = new IssuingPath(this);
  readonly revocations: Revocations = new Revocations(this);
  readonly metrics = new KernelMetrics(() => this.scheduleStatus());
  private metricsFile: MetricsFile | undefined;

  /** The handler of every row of the kernel's table (policy.ts). */
  private readonly handlers: KernelHandlers = {
    onIssueRequest: (frame) => void this.issuing.onIssueRequest(frame),
    onRequestRejected: (frame) => this.onRequestRejected(frame),
    onUndelivered: (frame) => this.issuing.onUndelivered(frame),
    onDelivered: (frame) => this.issuing.onDelivered(frame),
    onWithdrawn: (frame) => this.issuing.onWithdrawn(frame),
    onSigned: (frame) => this.issuing.onSigned(frame),
    onSignerFault: (frame) => this.onSignerFault(frame),
    onTokenEvent: (frame) => this.onTokenEvent(frame),
    onHookFailed: (frame) => this.onHookFailed(frame),
    onServiceWarning: (frame) => this.onServiceWarning(frame),
  };

  constructor(
    readonly config: Config,
    readonly supervisor: Supervisor,
    readonly console: OperatorConsole,
    readonly log: Logger,
    private readonly userNames: Record<ServiceName, string>,
  ) {}

  get state(): KernelState {
    return this.current;
  }

  get currentState(): KernelState {
    return this.current;
  }

  start(): void {
    this.supervisor.on("frame", (name, frame) => this.dispatch(name, frame));
    this.supervisor.on("up", (name, restarted) => this.onServiceUp(name, restarted));
    this.supervisor.on("down", (name, how) => this.onServiceDown(name, how));
    this.supervisor.on("violation", (name, reason) =>
      this.notify("policy-violation", `service ${name} broke the protocol and was killed: ${reason}`, { service: name }),
    );
    this.console.say(`etoken-ca: starting (${this.config.sourceFile})`);
    if (this.config.METRICS_FILE) this.metricsFile = new MetricsFile(this.config.METRICS_FILE, this.metrics, this.log);
    this.supervisor.startAll();
    this.statusTimer = setInterval(() => this.writeStatus(), STATUS_INTERVAL_MS);
    this.crlTimer = setInterval(() => void this.revocations.checkCrl(), crlCheckIntervalMs(this.config.CRL_REISSUE_BEFORE));
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
    this.issuing.stop();
    this.pin.wipe();
    this.console.abortPrompt();
    await this.supervisor.stopAll();
    this.writeStatus();
  }

  /** SIGUSR1: apply the revoke queue, then make a CRL when the PIN is there. */
  processRevocations(trigger: string): void {
    this.revocations.process(trigger);
  }

  // ---- state ----------------------------------------------------------------------------

  transition(event: KernelEvent): void {
    const to = nextState(this.current, event);
    if (to === this.current) return;
    this.log.notice("state change", { from: this.current, to, event });
    this.current = to;
    this.stateSince = Date.now();
    if (to !== "READY") this.pin.wipe();
    this.issuing.stateChanged(to === "READY");
    this.showState();
    this.writeStatus();
  }

  showState(): void {
    const t = this.token;
    // epoch 0: the monitor has not reported yet, so nobody knows whether there is a token
    const tok = t.present ? `token "${t.label}" serial ${t.serial}` : t.epoch === 0 ? "token not checked yet" : "no token";
    const crl = this.revocations.crl ? `CRL #${this.revocations.crl.number} expires ${new Date(this.revocations.crl.nextUpdate).toISOString()}` : "no CRL yet";
    this.console.say(`[${new Date().toISOString()}] state ${this.current} | ${tok} | issued ${this.counters.issued} | ${crl}`);
  }

  snapshot(): StatusSnapshot {
    return {
      version: 1,
      kernelPid: process.pid,
      state: this.current,
      stateSince: this.stateSince,
      updatedAt: Date.now(),
      token: { ...this.token, pinFlags: pinFlagNames(this.token.pinFlags) },
      trustedTokenSerial: this.pin.trustedSerial ?? null,
      counters: { ...this.counters },
      queueDepth: this.issuing.depth,
      signMs: this.issuing.signTimes(),
      crl: this.revocations.crl,
      lastHookFailure: this.lastHookFailure,
      logWritesDropped: droppedLogWrites(),
      revokedSinceCrl: this.revocations.revokedSinceCrl,
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

  private readonly statusThrottle = new Throttle(() => this.writeStatusFile(), STATUS_COUNTER_INTERVAL_MS);

  /** Counter changes: written at most once a second, not once per request. */
  scheduleStatus(): void {
    this.statusThrottle.request();
  }

  /** What `etoken-ca status` and `check` must show promptly (state, token, services, stop): written now. */
  writeStatus(): void {
    this.statusThrottle.runNow();
  }

  private writeStatusFile(): void {
    const snapshot = this.snapshot();
    try {
      writeStatus(this.config.STATUS_FILE, snapshot);
    } catch (err) {
      this.log.error("cannot write the status file", { file: this.config.STATUS_FILE, error: describeError(err) });
    }
    this.metricsFile?.update(snapshot);
  }

  // ---- services coming and going ------------------------------------------------------------

  private onServiceUp(name: ServiceName, restarted: boolean): void {
    if (restarted) this.notify("service-restarted", `service ${name} was restarted`, { service: name });
    this.upOnce.add(name);
    if (this.current === "STARTING" && this.upOnce.size === 4) {
      this.transition("services-up");
      this.revocations.process("start-up");
      this.pin.considerPrompt();
    }
    if (name === "monitor") {
      this.monitorEpoch = 0;
      this.tokenGeneration++;
    }
    if (name === "signer") {
      this.signerReady = false;
      void this.issuing.settleUndelivered();
      void this.refreshSignerStatus();
      if (this.current === "READY" && this.pin.holding) void this.pin.reLogin();
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
      this.issuing.signerDown(); // requests wait for the restarted signer's login
      // a PIN typed now would reach no signer: close the prompt, open it when one is up
      if (this.current === "NEED_PIN" && this.console.prompting) {
        this.console.abortPrompt();
        this.console.say("no PIN prompt until the signer is up");
      }
    }
    if (name === "spool") {
      for (const h of this.issuing.handouts.orphaned()) this.issuing.revokeUndelivered(h.serial, "the spool stopped before it reported the certificate delivered");
    }
    this.writeStatus();
  }

  /** The signer's CRL and token session; its first answer also says its start-up worked. */
  private async refreshSignerStatus(): Promise<void> {
    const signer = this.supervisor.channel("signer");
    if (!signer) return;
    try {
      const s = await signer.request("getSignerStatus", {}, "signerStatus", SIGNER_TIMEOUT_MS);
      const c = s.message.latestCrl;
      if (c && Number(c.number) > 0) {
        this.revocations.crl = { number: Number(c.number), thisUpdate: Number(c.thisUpdate), nextUpdate: Number(c.nextUpdate), entries: Number(c.entries ?? 0), path: String(c.path ?? "") };
      }
      this.writeStatus();
      this.signerReady = true;
      this.lastDownShown.delete("signer");
      this.pin.considerPrompt();
    } catch (err) {
      this.log.warning("cannot read the signer status", { error: describeError(err) });
      // a Failure is still an answer: the signer serves requests only once its start-up is done
      if (err instanceof RemoteFailure) {
        this.signerReady = true;
        this.pin.considerPrompt();
      }
    }
  }

  // ---- dispatch: the kernel's table (policy.ts) names the handler of every permitted message --

  private dispatch(sender: ServiceName, frame: Frame): void {
    const row = permittedRow(sender, frame.type, this.current);
    if (!row) {
      this.supervisor.securityEvent(sender, `message ${frame.type} is not permitted from ${sender} in state ${this.current}`);
      return;
    }
    runRow(row, frame, this.handlers);
  }

  private onRequestRejected(frame: Frame<"requestRejected">): void {
    const m = frame.message;
    this.counters.rejected++;
    this.metrics.requestRejected(String(m.code));
    this.scheduleStatus();
    this.log.info("request rejected by the spool", { request: String(m.requestId).slice(0, 64), code: String(m.code).slice(0, 64) });
  }

  private onSignerFault(frame: Frame<"signerFault">): void {
    const m = frame.message;
    this.log.error("signer reports a token fault", { code: m.code, message: m.message.slice(0, 300), deviceLost: m.deviceLost });
    if (m.deviceLost) this.tokenLost(`the signer lost the token: ${m.message.slice(0, 200)}`, "device-error");
  }

  private onHookFailed(frame: Frame<"hookFailed">): void {
    const m = frame.message;
    // the status file is world-readable
    this.lastHookFailure = `${new Date().toISOString()} ${m.hook.slice(0, 100)} (${m.event.slice(0, 40)}): ${redactCredentials(m.message.slice(0, 300))}`;
    this.log.warning("hook failed", { hook: m.hook.slice(0, 200), event: m.event.slice(0, 40), message: m.message.slice(0, 300) });
    this.writeStatus();
  }

  private onServiceWarning(frame: Frame<"serviceWarning">): void {
    const m = frame.message;
    const message = oneLine(m.message, MAX_SERVICE_WARNING);
    this.log.warning("service warning", { code: m.code, message });
    if (this.warningsShown.has(m.code)) return;
    this.warningsShown.add(m.code);
    this.console.say(`WARNING: ${message}`);
  }

  // ---- the token ------------------------------------------------------------------------------

  private onTokenEvent(frame: Frame<"tokenEvent">): void {
    const ev = frame.message;
    // serial, label and presence are the contract's (proto/contract.ts); the order is the kernel's
    if (ev.epoch <= this.monitorEpoch) {
      this.supervisor.securityEvent("monitor", `invalid token event (epoch ${ev.epoch} after ${this.monitorEpoch})`);
      return;
    }
    this.monitorEpoch = ev.epoch;
    const before = this.token;
    const present = ev.presence === TokenPresence.TOKEN_PRESENT;
    // PIN flags alone (the counter a successful login resets) are not another token: in-flight
    // signatures keep their fence; any other change (presence, serial, label, USB) breaks it
    const sameToken = before.present && present && before.serial === ev.serial && before.label === ev.label && before.usbAvailable === ev.usbAvailable;
    if (!sameToken) this.tokenGeneration++;
    this.token = { present, serial: ev.serial, label: ev.label, pinFlags: ev.pinFlags, epoch: ev.epoch, usbAvailable: ev.usbAvailable };
    const detail = oneLine(ev.detail, MAX_REASON);
    if (!present && detail !== this.tokenDetail && detail.startsWith(NO_MATCHING_TOKEN)) {
      this.console.say(`CA token not found: ${detail}; check KEY in ${this.config.sourceFile}`);
    }
    this.tokenDetail = detail;
    this.log.info("token event", { epoch: ev.epoch, present, serial: ev.serial, source: ev.source, detail: ev.detail.slice(0, 200) });
    if (!present) {
      if (!before.present) {
        // no token to begin with (at start, whether the services are all up yet or not; or a
        // restarted monitor saying it again): nothing was removed, the state stays, and NEED_PIN
        // asks for the token (pin.ts decides whether to say it, here as everywhere)
        this.pin.considerPrompt();
        this.writeStatus();
        return;
      }
      this.notify("token-removed", `CA token ${before.serial} removed: issuing suspended, PIN forgotten`, { serial: before.serial });
      this.auditToken("removed", before.serial, before.label, detail);
      this.tokenLost("token removed", "token-absent");
      return;
    }
    if (this.pin.trustedSerial !== undefined && ev.serial !== this.pin.trustedSerial) {
      this.console.say(`REFUSED: token serial ${ev.serial} is not the CA token (expected serial ${this.pin.trustedSerial}); insert the CA token`);
      this.notify("token-refused", `a token with serial ${ev.serial} was inserted, but the CA token has serial ${this.pin.trustedSerial}; refused`, {
        serial: ev.serial,
        expected: this.pin.trustedSerial,
      });
      this.auditToken("refused", ev.serial, ev.label, `expected serial ${this.pin.trustedSerial}`);
      this.tokenLost("another token", "token-refused");
      return;
    }
    if (before.present && before.serial !== ev.serial && this.current === "READY") {
      this.auditToken("replaced", ev.serial, ev.label, `token ${before.serial} replaced while READY`);
      this.tokenLost("token replaced", "token-refused");
      return;
    }
    if (!before.present) {
      this.notify("token-inserted", `CA token ${ev.serial} inserted`, { serial: ev.serial });
      this.auditToken("inserted", ev.serial, ev.label, detail);
    }
    if (this.current === "SUSPENDED") this.transition("token-present");
    this.pin.considerPrompt();
    this.writeStatus();
  }

  /** The signer writes the audit trail: tell it what happened to the token (no reply expected). */
  private auditToken(event: (typeof TOKEN_AUDIT_EVENTS)[number], serial: string, label: string, detail: string): void {
    try {
      this.supervisor.channel("signer")?.send("tokenAudit", { event, serial, label, detail: detail.slice(0, MAX_TOKEN_AUDIT_DETAIL) });
    } catch (err) {
      this.log.warning("cannot tell the signer about a token event for the audit trail", { event, error: describeError(err) });
    }
  }

  private tokenLost(why: string, event: KernelEvent): void {
    const wasReady = this.current === "READY";
    this.pin.tokenGone();
    this.console.abortPrompt();
    this.transition(event);
    this.pin.wipe();
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
      if (p.message.present && this.current === "SUSPENDED" && p.message.serial === (this.pin.trustedSerial ?? p.message.serial)) {
        this.transition("token-present");
        this.pin.considerPrompt();
      }
    } catch (err) {
      this.log.warning("presence re-check failed", { error: describeError(err) });
    }
  }

  // ---- notifications --------------------------------------------------------------------------

  notify(event: string, message: string, details: Record<string, string>): void {
    this.log.info("event", { event, message });
    const notifier = this.supervisor.channel("notifier");
    if (!notifier) return;
    // texts that may come from elsewhere (a service's message) are cut to the contract's bounds;
    // a frame that still breaks it is a kernel bug, logged here: the notifier would die of it
    const payload = {
      event,
      message: fitText(message, MAX_NOTIFY_MESSAGE),
      details: Object.fromEntries(Object.entries(details).map(([k, v]) => [k, fitText(v, MAX_NOTIFY_DETAIL_VALUE)])),
    };
    const problem = contractProblem("notify", payload as Message<"notify">);
    if (problem !== undefined) {
      this.log.error("notification not sent: it breaks the contract", { event: event.slice(0, 60), problem });
      return;
    }
    try {
      notifier.send("notify", payload);
    } catch (err) {
      this.log.warning("cannot reach the notifier", { error: describeError(err) });
    }
  }
}
