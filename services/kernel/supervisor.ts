// Starts every service of the service table under its own user, waits for its Hello, kills a
// service that breaks the contract, and restarts crashed services with back-off.
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import type * as net from "node:net";
import { fileURLToPath } from "node:url";
import { cpuProfileFlags } from "./cpu-profile.js";
import type { Frame } from "../../proto/wire.js";
import { Channel } from "../common/channel.js";
import type { Config } from "../common/config-schema.js";
import { ProtocolError } from "../common/errors.js";
import type { UserInfo } from "../common/identity.js";
import type { Logger } from "../common/log.js";
import { configFor, INSPECT_PORT_NOWHERE, MALLOC_ENV, SERVICE_ENV, SERVICE_NAMES, SERVICES, type ServiceName } from "../common/service-table.js";
import { MAX_REASON, oneLine } from "../common/spool-protocol.js";
import { ONCE } from "./policy.js";

const START_SCRIPT = fileURLToPath(new URL("../common/start.js", import.meta.url));
const HELLO_TIMEOUT_MS = 15_000;
const PING_INTERVAL_MS = 15_000;
const PING_TIMEOUT_MS = 10_000;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 30_000;
/** A service that lived shorter than this before dying is throttled harder. */
const STABLE_AFTER_MS = 10_000;
const STOP_GRACE_MS = 3_000;
/**
 * After a service's exit, how long its channel may still deliver what it wrote before dying (the
 * socket's end-of-file normally follows at once; a descendant holding the socket must not wedge
 * the restart).
 */
const DRAIN_AFTER_EXIT_MS = 5_000;

export interface ServiceRecord {
  readonly name: ServiceName;
  readonly user: UserInfo;
  child: ChildProcess | undefined;
  channel: Channel | undefined;
  pid: number | undefined;
  up: boolean;
  startedAt: number | undefined;
  restarts: number;
  lastError: string | undefined;
  /** The service's own reason for exiting (its unsolicited Failure), for the exit that follows. */
  farewell: string | undefined;
  backoffMs: number;
  restartTimer: NodeJS.Timeout | undefined;
}

export interface SupervisorEvents {
  up: [name: ServiceName, restarted: boolean];
  down: [name: ServiceName, reason: string];
  frame: [name: ServiceName, frame: Frame];
  violation: [name: ServiceName, reason: string];
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  private readonly records = new Map<ServiceName, ServiceRecord>();
  private stopping = false;
  private pingTimer: NodeJS.Timeout | undefined;
  private pingNonce = 1;

  /**
   * `startScript` and `scriptArgs` exist for tests that start a misbehaving service;
   * `cpuProfileDir` is the root operator's --cpu-prof-dir (cpu-profile.ts).
   */
  constructor(
    private readonly config: Config,
    users: Record<ServiceName, UserInfo>,
    private readonly log: Logger,
    private readonly spawnOptions: { startScript?: string; scriptArgs?: Partial<Record<ServiceName, string[]>>; cpuProfileDir?: string } = {},
  ) {
    super();
    for (const name of SERVICE_NAMES) {
      this.records.set(name, {
        name, user: users[name], child: undefined, channel: undefined, pid: undefined, up: false,
        startedAt: undefined, restarts: 0, lastError: undefined, farewell: undefined, backoffMs: BACKOFF_MIN_MS, restartTimer: undefined,
      });
    }
  }

  startAll(): void {
    for (const name of SERVICE_NAMES) this.start(name);
    this.pingTimer = setInterval(() => this.pingAll(), PING_INTERVAL_MS);
    this.pingTimer.unref();
  }

  /** The channel of a service that has said Hello and can be written to (not dying, not draining), or undefined. */
  channel(name: ServiceName): Channel | undefined {
    const r = this.records.get(name)!;
    return r.up && r.channel && r.channel.writable ? r.channel : undefined;
  }

  isUp(name: ServiceName): boolean {
    return this.channel(name) !== undefined;
  }

  all(): readonly ServiceRecord[] {
    return [...this.records.values()];
  }

  /** Kills a service (it is restarted by the exit handler). */
  kill(name: ServiceName, reason: string): void {
    const r = this.records.get(name)!;
    // already killed: the first reason stands (its channel closing as it dies is not a new one)
    if (r.child?.killed) return;
    r.lastError = reason;
    if (r.child && r.child.exitCode === null && r.child.signalCode === null) {
      // nothing more goes to a process being killed; what it wrote before still counts
      r.channel?.drain(reason);
      r.child.kill("SIGKILL");
    }
  }

  /** Reports a broken contract: a security event, then kill and restart. */
  securityEvent(name: ServiceName, reason: string): void {
    this.log.warning("security event: service broke the protocol; killing it", { service: name, reason });
    this.emit("violation", name, reason);
    this.kill(name, `killed: ${reason}`);
  }

  private start(name: ServiceName): void {
    if (this.stopping) return;
    const r = this.records.get(name)!;
    r.restartTimer = undefined;
    const spec = SERVICES[name];
    const env: Record<string, string> = {
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
      LANG: "C.UTF-8",
      [SERVICE_ENV.name]: name,
      [SERVICE_ENV.config]: JSON.stringify(configFor(name, this.config)),
      [SERVICE_ENV.uid]: String(r.user.uid),
      [SERVICE_ENV.gid]: String(r.user.gid),
      ...MALLOC_ENV,
      ...(spec.pkcs11Env ? this.config.PKCS11_ENV : {}),
    };
    let child: ChildProcess;
    try {
      const script = this.spawnOptions.startScript ?? START_SCRIPT;
      const extra = this.spawnOptions.scriptArgs?.[name] ?? [];
      const profile = this.spawnOptions.cpuProfileDir ? cpuProfileFlags(this.spawnOptions.cpuProfileDir, name, r.user) : [];
      child = spawn(process.execPath, ["--disable-proto=delete", INSPECT_PORT_NOWHERE, ...spec.nodeFlags[this.config.SIGNER_BACKEND], ...profile, script, name, ...extra], {
        uid: r.user.uid,
        gid: r.user.gid,
        cwd: "/",
        env,
        stdio: ["ignore", "ignore", "inherit", "pipe"],
      });
    } catch (err) {
      r.lastError = `cannot start: ${(err as Error).message}`;
      this.log.error("cannot start service", { service: name, error: r.lastError });
      this.scheduleRestart(r);
      return;
    }
    r.child = child;
    r.pid = child.pid;
    r.up = false;
    r.farewell = undefined;
    r.startedAt = Date.now();
    const socket = child.stdio[3] as net.Socket;
    const channel = new Channel(socket, name);
    r.channel = channel;
    const helloTimer = setTimeout(() => this.securityEvent(name, `no Hello within ${HELLO_TIMEOUT_MS} ms`), HELLO_TIMEOUT_MS);
    channel.onFrame((frame) => {
      if (!r.up) {
        clearTimeout(helloTimer);
        const problem = this.checkHello(r, frame);
        if (problem) {
          this.securityEvent(name, problem);
          return;
        }
        r.up = true;
        const restarted = r.restarts > 0;
        this.log.info("service up", { service: name, pid: r.pid, uid: r.user.uid, user: r.user.name });
        this.emit("up", name, restarted);
        return;
      }
      if (frame.type === ONCE) {
        this.securityEvent(name, "second Hello");
        return;
      }
      if (frame.type === "failure") {
        // a service that cannot start says why before it exits (services/common/service.ts)
        const m = frame.message;
        r.farewell = oneLine(m.message, MAX_REASON) || oneLine(m.code, 64) || "no reason given";
        return;
      }
      this.emit("frame", name, frame);
    });
    // The death is handled once the process has exited AND its channel has been read to the end:
    // a report it wrote just before dying (a spool's `delivered`) is processed, and validated, first.
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    const died = (): void => {
      if (!exit || !channel.closed || r.child !== child) return;
      clearTimeout(drainTimer);
      this.handleDeath(r, exit.code, exit.signal);
    };
    channel.onClose((reason, violation) => {
      clearTimeout(helloTimer);
      const running = (): boolean => !this.stopping && r.child === child && child.exitCode === null && child.signalCode === null;
      if (violation) this.securityEvent(name, violation.message);
      else if (r.farewell && running()) {
        // it said why it is leaving and is exiting: its own status, unless it lingers
        setTimeout(() => {
          if (running()) this.kill(name, `killed: said "${r.farewell}" and did not exit`);
        }, STOP_GRACE_MS).unref();
      } else if (running()) {
        this.log.warning("service closed its channel; killing it", { service: name, reason });
        this.kill(name, `killed: channel closed (${reason})`);
      }
      died();
    });
    child.on("error", (err) => {
      r.lastError = err.message;
    });
    child.on("exit", (code, signal) => {
      clearTimeout(helloTimer);
      exit = { code, signal };
      if (this.stopping) channel.close("process exited");
      else if (!channel.closed) {
        // the socket may outlive the process (a descendant holds it): nothing more is written to it
        channel.drain(`${name} exited`);
        drainTimer = setTimeout(() => channel.close(`process exited; its channel stayed open ${DRAIN_AFTER_EXIT_MS} ms`), DRAIN_AFTER_EXIT_MS);
        drainTimer.unref();
      }
      died();
    });
  }

  private handleDeath(r: ServiceRecord, code: number | null, signal: NodeJS.Signals | null): void {
    const name = r.name;
    const wasUp = r.up;
    r.up = false;
    r.child = undefined;
    r.pid = undefined;
    if (this.stopping) return;
    const status = signal ? `killed by ${signal}` : `exited with status ${code}`;
    const how = r.farewell ? `${r.farewell} (${status})` : status;
    r.lastError = r.lastError && r.lastError.startsWith("killed:") ? `${r.lastError} (${how})` : how;
    this.log.warning("service died", { service: name, how, wasUp });
    this.emit("down", name, how);
    const lived = Date.now() - (r.startedAt ?? 0);
    r.backoffMs = lived >= STABLE_AFTER_MS ? BACKOFF_MIN_MS : Math.min(r.backoffMs * 2, BACKOFF_MAX_MS);
    this.scheduleRestart(r);
  }

  private scheduleRestart(r: ServiceRecord): void {
    if (this.stopping || r.restartTimer) return;
    r.restarts++;
    r.restartTimer = setTimeout(() => this.start(r.name), r.backoffMs);
  }

  private checkHello(r: ServiceRecord, frame: Frame): string | undefined {
    if (frame.type !== ONCE) return `first message was ${frame.type}, expected hello`;
    const h = frame.message;
    if (h.service !== r.name) return `Hello names service ${JSON.stringify(h.service)}`;
    if (h.pid !== r.pid) return `Hello claims pid ${h.pid}, process is ${r.pid}`;
    if (h.uid !== r.user.uid || h.gid !== r.user.gid) return `Hello claims uid/gid ${h.uid}/${h.gid}, expected ${r.user.uid}/${r.user.gid}`;
    return undefined;
  }

  private pingAll(): void {
    for (const r of this.records.values()) {
      const ch = this.channel(r.name);
      if (!ch) continue;
      const nonce = this.pingNonce++;
      ch.request("ping", { nonce }, "pong", PING_TIMEOUT_MS)
        .then((f) => {
          if (f.message.nonce !== nonce) this.securityEvent(r.name, "pong with the wrong nonce");
        })
        .catch((err) => {
          if (err instanceof ProtocolError && err.code === "protocol.timeout") this.securityEvent(r.name, "did not answer ping");
        });
    }
  }

  /** Asks every service to stop, then kills what is left. */
  async stopAll(): Promise<void> {
    this.stopping = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    const exits: Promise<void>[] = [];
    for (const r of this.records.values()) {
      if (r.restartTimer) clearTimeout(r.restartTimer);
      const child = r.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      exits.push(
        new Promise<void>((resolve) => {
          const killTimer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
          child.once("exit", () => {
            clearTimeout(killTimer);
            resolve();
          });
        }),
      );
      const ch = r.channel;
      if (r.up && ch && ch.writable) {
        ch.request("shutdown", { reason: "kernel stopping" }, "ack", STOP_GRACE_MS).catch(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        });
      } else {
        child.kill("SIGTERM");
      }
    }
    await Promise.all(exits);
  }
}
