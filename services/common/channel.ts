// A typed message channel over one socketpair end: framing, request/answer matching with
// expect(type), timeouts. A protocol violation closes the channel; the owner decides the rest.
// Its life: open (sends and reads), draining (the peer's process is gone: no sends, what it wrote
// before is still read to the end), closed.
import type * as net from "node:net";
import { performance } from "node:perf_hooks";
import { contractProblem } from "../../proto/contract.js";
import type { Frame, MessageType, Payload } from "../../proto/wire.js";
import { EtokenError, ProtocolError } from "./errors.js";
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from "./framing.js";

/** The peer answered a request with a Failure message. */
export class RemoteFailure extends EtokenError {}

interface Pending {
  expect: readonly MessageType[];
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  /** performance.now() past which the request has timed out; Infinity: no timeout */
  deadline: number;
  /** Why, once it has: `${peer} did not answer ${type} within ${timeoutMs} ms` */
  type: MessageType;
  timeoutMs: number;
  onLateAnswer: ((late: Frame) => void) | undefined;
}

export type FrameHandler = (frame: Frame, channel: Channel) => void;

export class Channel {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /**
   * One timer for every pending request's timeout, armed for the earliest deadline (a timer of
   * its own per request cost each request a timer list in Node's priority queue). While nothing
   * is pending it stays, unref'd (no answered request keeps the process alive), and the next
   * request with a later deadline needs no timer of its own: it fires once, finds nothing due,
   * and is armed for what is pending then.
   */
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepAt = Infinity;
  /** Requests that timed out, with what to do if their answer comes after all. */
  private readonly expired = new Map<number, ((late: Frame) => void) | undefined>();
  private readonly decoder: FrameDecoder;
  private handler: FrameHandler = () => {};
  private closedReason: string | undefined;
  /** Why sends stopped while reads go on (drain()), or undefined. */
  private drainReason: string | undefined;
  private closeListeners: ((reason: string, violation: ProtocolError | undefined) => void)[] = [];
  /** Frames sent after the first one of this turn of the event loop: they leave together at its end. */
  private held: Buffer[] | undefined;
  private readonly writeHeld = (): void => this.flush();

  constructor(
    readonly socket: net.Socket,
    readonly peer: string,
    maxFrame: number = MAX_FRAME_BYTES,
  ) {
    this.decoder = new FrameDecoder(maxFrame);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.shutdown(`socket error: ${err.message}`, undefined));
    socket.on("close", () => {
      const partial = this.decoder.buffered;
      if (partial > 0) {
        this.shutdown(`truncated frame: channel closed with ${partial} bytes of an incomplete frame`, new ProtocolError("truncated", `${this.peer} closed the channel in the middle of a frame (${partial} bytes)`));
      } else {
        this.shutdown("peer closed the channel", undefined);
      }
    });
  }

  /** Read to the end (or broken off): nothing more comes in. */
  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Sends stopped (drain()), reads go on until the channel closes. */
  get draining(): boolean {
    return this.drainReason !== undefined && !this.closed;
  }

  /** Frames can still be sent: neither draining nor closed. */
  get writable(): boolean {
    return this.drainReason === undefined && !this.closed;
  }

  onFrame(handler: FrameHandler): void {
    this.handler = handler;
  }

  onClose(listener: (reason: string, violation: ProtocolError | undefined) => void): void {
    this.closeListeners.push(listener);
  }

  private mustBeWritable(): void {
    if (this.closed) throw new ProtocolError("closed", `channel to ${this.peer} is closed`);
    if (this.drainReason !== undefined) throw new ProtocolError("closed", `channel to ${this.peer} is closed for sending: ${this.drainReason}`);
  }

  send<T extends MessageType>(type: T, payload: Payload<T>, replyTo = 0, secret = false): number {
    this.mustBeWritable();
    const id = this.nextId++;
    const frame = encodeFrame(id, replyTo, type, payload, secret);
    if (secret) {
      this.flush(); // in order
      this.socket.write(frame, () => frame.fill(0));
    } else if (this.held === undefined) {
      // The first frame of a turn of the event loop leaves at once; the frames that follow it in
      // the same turn (a burst under load) are held and leave together in one write.
      this.held = [];
      this.socket.write(frame);
      process.nextTick(this.writeHeld);
    } else {
      this.held.push(frame);
    }
    return id;
  }

  /**
   * Sends a frame that need not leave before this turn of the event loop ends: it is held, and
   * the frames sent after it in the same turn join it in one write (one wake-up of the peer).
   */
  post<T extends MessageType>(type: T, payload: Payload<T>): number {
    this.mustBeWritable();
    if (this.held === undefined) {
      this.held = [];
      process.nextTick(this.writeHeld);
    }
    const id = this.nextId++;
    this.held.push(encodeFrame(id, 0, type, payload, false));
    return id;
  }

  reply<T extends MessageType>(to: Frame, type: T, payload: Payload<T>): void {
    if (this.writable) this.send(type, payload, to.id);
  }

  fail(to: Frame, code: string, message: string): void {
    this.reply(to, "failure", { code, message });
  }

  /** Sends a request and waits for an answer of one of the expected types. */
  request<T extends MessageType, R extends MessageType>(
    type: T,
    payload: Payload<T>,
    expect: R | readonly R[],
    timeoutMs: number,
    opts: { secret?: boolean; onLateAnswer?: (late: Frame) => void } = {},
  ): Promise<Frame<R>> {
    const expected = (Array.isArray(expect) ? expect : [expect]) as readonly MessageType[];
    return new Promise<Frame<R>>((resolve, reject) => {
      let id: number;
      try {
        id = this.send(type, payload, 0, opts.secret ?? false);
      } catch (err) {
        reject(err as Error);
        return;
      }
      const deadline = timeoutMs > 0 ? performance.now() + timeoutMs : Infinity;
      this.pending.set(id, { expect: expected, resolve: resolve as (f: Frame) => void, reject, deadline, type, timeoutMs, onLateAnswer: opts.onLateAnswer });
      if (deadline < this.sweepAt) this.armSweep(deadline);
      else if (this.pending.size === 1) this.sweepTimer?.ref();
    });
  }

  private armSweep(at: number): void {
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepAt = at;
    this.sweepTimer = at === Infinity ? undefined : setTimeout(() => this.sweep(), Math.max(0, at - performance.now()));
  }

  /** The requests whose deadline has come fail (in the order sent); the timer is armed for the next one. */
  private sweep(): void {
    // due: what the timer was armed for, and whatever else has come by now (libuv's timers run on a
    // clock that may lag performance.now() by what this turn has run so far)
    const due = Math.max(this.sweepAt, performance.now());
    this.sweepTimer = undefined;
    this.sweepAt = Infinity;
    let next = Infinity;
    for (const [id, p] of this.pending) {
      if (p.deadline <= due) {
        this.pending.delete(id);
        this.rememberExpired(id, p.onLateAnswer);
        p.reject(new ProtocolError("timeout", `${this.peer} did not answer ${p.type} within ${p.timeoutMs} ms`));
      } else if (p.deadline < next) {
        next = p.deadline;
      }
    }
    this.armSweep(next);
  }

  /** Nothing pending any more: the timer no longer keeps the process alive. */
  private sweepIfIdle(): void {
    if (this.pending.size === 0) this.sweepTimer?.unref();
  }

  /** Writes what this turn of the event loop held back now (a report that must not wait for the turn's end). */
  flush(): void {
    const held = this.held;
    this.held = undefined;
    if (held === undefined || held.length === 0 || this.socket.destroyed || this.drainReason !== undefined) return;
    this.socket.write(held.length === 1 ? held[0]! : Buffer.concat(held));
  }

  /** Sends what this turn held back, then ends the stream (the peer reads every frame, then EOF). */
  end(done: () => void): void {
    this.flush();
    this.socket.end(done);
  }

  /**
   * The peer's process is gone (or being killed): nothing more is sent (send() and request()
   * fail as on a closed channel, frames held for this turn are dropped), while what the peer
   * wrote before is still read, answers to pending requests included, until the socket's end.
   */
  drain(reason: string): void {
    if (this.closed || this.drainReason !== undefined) return;
    this.drainReason = reason;
    this.held = undefined;
  }

  close(reason: string): void {
    this.shutdown(reason, undefined);
    this.socket.destroy();
  }

  private rememberExpired(id: number, onLate: ((late: Frame) => void) | undefined): void {
    this.expired.set(id, onLate);
    if (this.expired.size > 1024) this.expired.delete(this.expired.keys().next().value as number);
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.violation(err instanceof ProtocolError ? err : new ProtocolError("undecodable", String(err)));
      return;
    }
    for (const frame of frames) {
      if (this.closed) return;
      // the contract's grammar (proto/contract.ts): breaking it is a violation, like garbage
      const problem = contractProblem(frame.type, frame.message);
      if (problem !== undefined) {
        this.violation(new ProtocolError("invalid", `${this.peer} sent ${problem}`));
        return;
      }
      if (frame.replyTo !== 0) {
        this.onAnswer(frame);
      } else {
        this.handler(frame, this);
      }
    }
  }

  private onAnswer(frame: Frame): void {
    const p = this.pending.get(frame.replyTo);
    if (!p) {
      if (this.expired.has(frame.replyTo)) {
        // a late answer to a request that timed out
        const onLate = this.expired.get(frame.replyTo);
        this.expired.delete(frame.replyTo);
        onLate?.(frame);
        return;
      }
      this.violation(new ProtocolError("unknown_reply", `${this.peer} answered unknown request id ${frame.replyTo} with ${frame.type}`));
      return;
    }
    this.pending.delete(frame.replyTo);
    this.sweepIfIdle();
    if (p.expect.includes(frame.type)) {
      p.resolve(frame);
    } else if (frame.type === "failure") {
      p.reject(new RemoteFailure(frame.message.code || "remote.failure", frame.message.message || "request failed"));
    } else {
      const err = new ProtocolError("unexpected_reply", `${this.peer} answered with ${frame.type}, expected ${p.expect.join(" or ")}`);
      p.reject(err);
      this.violation(err);
    }
  }

  /** Closes the channel because the peer broke the contract. */
  violation(err: ProtocolError): void {
    if (this.closed) return;
    this.shutdown(err.message, err);
    this.socket.destroy();
  }

  private shutdown(reason: string, violation: ProtocolError | undefined): void {
    if (this.closed) return;
    this.closedReason = reason;
    this.armSweep(Infinity);
    for (const [, p] of this.pending) {
      p.reject(new ProtocolError("closed", `channel to ${this.peer} closed: ${reason}`));
    }
    this.pending.clear();
    for (const l of this.closeListeners) l(reason, violation);
  }
}
