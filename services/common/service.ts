// The four steps every service's main does, in order: verify its own identity, connect fd 3,
// say Hello, serve. The kernel's ping and shutdown are answered here; everything else goes to
// the service's dispatch function, which must end in "invalid message from kernel: fatal".
import * as net from "node:net";
import type { Frame, MessageType } from "../../proto/wire.js";
import { Channel } from "./channel.js";
import { VERSION } from "./cli.js";
import { describeError, errorCode, ProtocolError, SecurityError } from "./errors.js";
import { disableCoreDumps, verifyDroppedTo, type Identity } from "./identity.js";
import { createLogger, setLogLevel, type Logger } from "./log.js";
import { configKeysOf, SERVICE_ENV, SERVICES, type ServiceConfig, type ServiceName } from "./service-table.js";
import { MAX_REASON, oneLine } from "./spool-protocol.js";

export { VERSION };

export interface ServiceContext<N extends ServiceName = ServiceName> {
  readonly name: N;
  readonly config: ServiceConfig<N>;
  readonly channel: Channel;
  readonly log: Logger;
  readonly identity: Identity;
}

export interface ServiceImpl<N extends ServiceName, In extends MessageType> {
  /** Called once after Hello was sent. */
  start?(ctx: ServiceContext<N>): void | Promise<void>;
  /** What the kernel may ask of this service besides ping and shutdown; anything else is fatal. */
  readonly accepts: readonly In[];
  /** A request or unsolicited message from the kernel, one of `accepts` (a `switch` ends in unhandled()). */
  dispatch(frame: Frame<In>, ctx: ServiceContext<N>): void | Promise<void>;
  /** Called on shutdown or when the kernel goes away; release resources (token session, timers). */
  stop?(ctx: ServiceContext<N>): void | Promise<void>;
}

/** Reads the configuration the kernel handed over in the environment: service N's keys (configFor). */
export function configFromEnvironment<N extends ServiceName>(name: N): ServiceConfig<N> {
  const raw = process.env[SERVICE_ENV.config];
  if (!raw) throw new SecurityError("no_config", `started without ${SERVICE_ENV.config}: services are started by etoken-ca-server only`);
  const config = JSON.parse(raw) as Record<string, unknown>;
  const missing = configKeysOf(name).filter((key) => !(key in config));
  if (missing.length > 0) throw new SecurityError("no_config", `${SERVICE_ENV.config} lacks ${missing.join(", ")}: services are started by etoken-ca-server only`);
  return Object.freeze(config) as ServiceConfig<N>;
}

export function fatal(log: Logger, message: string): never {
  log.error(message);
  process.exit(70);
}

/** The end of a service's dispatch switch: the compiler proves every accepted type has its case. */
export function unhandled(what: never): never {
  const type = typeof what === "string" ? what : String((what as { type?: unknown }).type); // never the message: it may hold the PIN
  throw new ProtocolError("unhandled", `no handler for ${type}`);
}

/**
 * The reason a service cannot start, as an unsolicited Failure to the kernel (which shows it on
 * the console and in the status) before the exit with 78 (EX_CONFIG).
 */
async function sayWhy(channel: Channel, err: unknown): Promise<void> {
  try {
    channel.send("failure", { code: errorCode(err), message: oneLine(describeError(err), MAX_REASON) });
  } catch {
    return; // the kernel is gone
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 2_000);
    channel.end(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export async function runService<N extends ServiceName, In extends MessageType>(name: N, impl: ServiceImpl<N, In>): Promise<void> {
  const log = createLogger(name);
  let ctx: ServiceContext<N> | undefined;
  try {
    process.title = SERVICES[name].title;
    disableCoreDumps();
    const config = configFromEnvironment(name);
    setLogLevel(config.LOG_LEVEL);
    // 1. identity
    const identity = verifyDroppedTo(Number(process.env[SERVICE_ENV.uid]), Number(process.env[SERVICE_ENV.gid]));
    // 2. fd 3
    const socket = new net.Socket({ fd: 3, readable: true, writable: true });
    const channel = new Channel(socket, "kernel");
    const context: ServiceContext<N> = { name, config, channel, log, identity };
    ctx = context;
    let stopping = false;
    // Requests wait for start() (which may load modules asynchronously after the Hello).
    let started!: () => void;
    const startedPromise = new Promise<void>((resolve) => (started = resolve));
    const stop = async (why: string, code: number): Promise<void> => {
      if (stopping) return;
      stopping = true;
      log.info("stopping", { why });
      try {
        await impl.stop?.(context);
      } catch (err) {
        log.error("error while stopping", { error: describeError(err) });
      }
      process.exit(code);
    };
    channel.onClose((reason, violation) => {
      if (violation) log.error("invalid message from kernel: fatal", { error: violation.message });
      void stop(reason, violation ? 70 : 0);
    });
    channel.onFrame((frame) => {
      switch (frame.type) {
        case "ping":
          channel.reply(frame, "pong", { nonce: frame.message.nonce });
          return;
        case "shutdown":
          // after the frames read before it are dispatched (a microtask each once started): the
          // signer records a ConfirmDelivery that came with the Shutdown before it stops
          void Promise.resolve().then(() => {
            channel.reply(frame, "ack", {});
            void stop("shutdown requested by the kernel", 0);
          });
          return;
        default:
          if (!(impl.accepts as readonly MessageType[]).includes(frame.type)) fatal(log, `invalid message from kernel: ${frame.type}: fatal`);
          startedPromise
            .then(() => impl.dispatch(frame as Frame<In>, context))
            .catch((err) => {
              if (err instanceof ProtocolError) {
                log.error("invalid message from kernel: fatal", { error: err.message });
                process.exit(70);
              }
              log.error("request failed", { type: frame.type, error: describeError(err) });
              channel.fail(frame, "internal", describeError(err));
            });
      }
    });
    process.on("SIGTERM", () => void stop("SIGTERM", 0));
    process.on("SIGINT", () => {}); // the kernel decides; a console ^C reaches the whole group
    // 3. Hello
    channel.send("hello", { service: name, pid: process.pid, uid: identity.uid, gid: identity.gid, version: VERSION });
    // 4. serve
    await impl.start?.(context);
    started();
  } catch (err) {
    log.error("cannot start", { error: describeError(err) });
    if (ctx) await sayWhy(ctx.channel, err);
    try {
      await impl.stop?.(ctx!);
    } catch {
      // already failing
    }
    process.exit(78);
  }
}
