// The kernel's queue in front of the token. The token signs one request at a time, so requests
// wait here, in arrival order, and go to the signer only as the token can take them: a few not
// yet signed at once (at least the one signing and the next, already validated at the signer, so
// the token never waits for the kernel; about PIPELINE_MS of signing for a fast token, whose
// round trips would otherwise cost more than its signatures). Here, and nowhere else:
//   - admission: a request that cannot be signed before its deadline at the measured sign time
//     (queue length × p50 of the last signatures) is refused at once as "CA busy";
//   - a request whose deadline passed, or whose client gave up (withdraw), while it waited is
//     dropped before the token spends a signature on it;
//   - the watchdog: a signature the token has not finished SIGN_TIMEOUT after it became the
//     signer's current one means a hung token; the requests at the signer fail and the kernel
//     replaces the signer (onHung). The signer takes its work in the order it was sent, CRLs
//     included (crlSent): a CRL's clock, and that of a certificate sent after it, start only
//     when what was sent before is done (the signer's Signed, for a CRL too: crlSigned), so a slow
//     token with a queue is not taken for a hung one; and whatever the token finishes starts the
//     clock again.
import { EtokenError } from "../common/errors.js";
import type { Logger } from "../common/log.js";

/** Why the queue did not (or no longer) let a request reach the token; the message is for the client. */
export class QueueRefusal extends EtokenError {}

/** Requests at the signer not yet signed: at least the one at the token and the next one... */
const MIN_PIPELINE = 2;
/** ...or as many as make this much signing (ms) at the measured sign time... */
const PIPELINE_MS = 10;
/** ...but no more (also before the first measurement). */
const MAX_PIPELINE = 8;
/** Recent signatures the status figures (p50, max) cover. */
const STATS_WINDOW = 1000;
/** Recent signatures the admission estimate covers (their median: one slow outlier does not count). */
const ESTIMATE_WINDOW = 5;

export interface SignStats {
  p50: number;
  max: number;
  count: number;
}

/** C_Sign durations as the signer measured them. */
export class SignTimes {
  private readonly recent: number[] = [];
  private count = 0;

  add(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0 || ms > 86_400_000) return;
    this.count++;
    this.recent.push(ms);
    if (this.recent.length > STATS_WINDOW) this.recent.shift();
  }

  /** p50 and max over the last STATS_WINDOW signatures, count since start; null before the first. */
  stats(): SignStats | null {
    if (this.recent.length === 0) return null;
    return { p50: round(median(this.recent)), max: round(Math.max(...this.recent)), count: this.count };
  }

  /** What the next signature should take (ms), or undefined before any was measured. */
  estimate(): number | undefined {
    return this.recent.length === 0 ? undefined : median(this.recent.slice(-ESTIMATE_WINDOW));
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const round = (ms: number): number => Math.round(ms * 10) / 10;

/**
 * A turn at the signer: sent() when it goes to the signer (its place in the token's order),
 * `aborted` rejects if the watchdog gives up on it, done() when answered.
 */
export interface Ticket {
  readonly aborted: Promise<never>;
  sent(): void;
  done(): void;
}

interface Waiting {
  readonly requestId: string;
  readonly deadline: number;
  readonly admit: (t: Ticket) => void;
  readonly refuse: (e: QueueRefusal) => void;
}

interface AtSigner {
  /** The certificate request's id; undefined for a CRL. */
  readonly requestId: string | undefined;
  /** Its watchdog's bound: SIGN_TIMEOUT, or a CRL's (SIGN_TIMEOUT and its size). */
  readonly timeoutMs: number;
  /** Gone to the signer: entries sent are kept in the order sent (the token's order). */
  sent: boolean;
  signed: boolean;
  /** when it became the oldest unsigned request at the signer (the token's current one) */
  headSince: number | undefined;
  readonly abort: (e: QueueRefusal) => void;
}

/** What the watchdog found: the token did not finish the signer's current work in time. */
export interface HungSignature {
  /** The certificate requests at the signer, all failed. */
  readonly requestIds: string[];
  readonly waitedMs: number;
  /** The work the token hung in was a CRL. */
  readonly crl: boolean;
  readonly timeoutMs: number;
}

export interface SignQueueOptions {
  readonly signTimeoutMs: number;
  /** The token hangs: the requests at the signer have failed; replace the signer. */
  readonly onHung: (hung: HungSignature) => void;
  readonly now?: () => number;
  /** Debug lines: when each clock starts and what the token finished (the watchdog's timeline). */
  readonly log: Logger;
}

export class SignQueue {
  private readonly waiting: Waiting[] = [];
  private readonly atSigner: AtSigner[] = [];
  private open = false;
  private watchdog: NodeJS.Timeout | undefined;
  /** The work the watchdog's timer is armed for, until the token finishes something (its clock starts again). */
  private watched: AtSigner | undefined;
  readonly times = new SignTimes();
  private readonly now: () => number;
  private readonly log: Logger;

  constructor(private readonly opts: SignQueueOptions) {
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
  }

  /** Requests not yet signed: waiting here or at the signer. */
  get depth(): number {
    return this.waiting.length + this.unsigned().length;
  }

  /**
   * Waits for the request's turn at the signer. Rejects with a QueueRefusal: ca.busy (at once,
   * when the queue cannot reach it before its deadline), request.expired, request.abandoned,
   * or what refuseWaiting() says.
   */
  enter(requestId: string, deadline: number): Promise<Ticket> {
    const est = this.times.estimate();
    const ahead = this.depth;
    const now = this.now();
    if (est !== undefined && now + (ahead + 1) * est > deadline) {
      const waitS = Math.ceil(((ahead + 1) * est) / 100) / 10;
      const leftS = Math.max(0, Math.floor((deadline - now) / 100) / 10);
      return Promise.reject(
        new QueueRefusal(
          "ca.busy",
          `CA busy: ${ahead} request${ahead === 1 ? "" : "s"} ahead, about ${waitS} s of signing at ${Math.round(est)} ms each, more than the ${leftS} s this request may wait; try again later`,
        ),
      );
    }
    return new Promise<Ticket>((admit, refuse) => {
      this.waiting.push({ requestId, deadline, admit, refuse });
      this.pump();
    });
  }

  /** The client gave up: a request still waiting is dropped (never signed). False if it already went to the signer. */
  withdraw(requestId: string): boolean {
    const i = this.waiting.findIndex((w) => w.requestId === requestId);
    if (i < 0) return false;
    const [w] = this.waiting.splice(i, 1);
    w!.refuse(new QueueRefusal("request.abandoned", "the client gave up while the request waited for the token; nothing was signed"));
    return true;
  }

  /** The token has signed this request (the signer's Signed, or its answer). */
  signed(requestId: string): void {
    const e = this.atSigner.find((x) => x.requestId === requestId);
    if (!e || e.signed) return;
    e.signed = true;
    if (this.log.enabled("debug")) this.log.debug("sign queue: signed", { request: requestId });
    this.tokenProgressed();
    this.pump();
  }

  /** The token has signed the CRL at the signer (the signer's Signed with crl set); its answer follows. */
  crlSigned(): void {
    const e = this.atSigner.find((x) => x.requestId === undefined && x.sent && !x.signed);
    if (!e) return;
    e.signed = true;
    if (this.log.enabled("debug")) this.log.debug("sign queue: CRL signed");
    this.tokenProgressed();
    this.pump();
  }

  /** Opens (signer logged in) or closes (signer down or being replaced) the way to the signer. */
  setOpen(open: boolean): void {
    this.open = open;
    if (open) this.pump();
  }

  /** Fails every request still waiting (the token went away: none of them can be signed now). */
  refuseWaiting(code: string, message: string): void {
    for (const w of this.waiting.splice(0)) w.refuse(new QueueRefusal(code, message));
  }

  stop(): void {
    this.disarm();
  }

  private disarm(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
    this.watched = undefined;
  }

  private unsigned(): AtSigner[] {
    return this.atSigner.filter((e) => !e.signed);
  }

  /** How many unsigned requests the signer may hold now. */
  private pipeline(): number {
    const est = this.times.estimate();
    if (est === undefined || est <= 0) return MAX_PIPELINE;
    return Math.min(MAX_PIPELINE, Math.max(MIN_PIPELINE, Math.ceil(PIPELINE_MS / est)));
  }

  private pump(): void {
    const now = this.now();
    const depth = this.pipeline();
    while (this.open && this.waiting.length > 0 && this.unsigned().length < depth) {
      const w = this.waiting.shift()!;
      if (now >= w.deadline) {
        w.refuse(new QueueRefusal("request.expired", "request expired in the CA's queue before the token could sign it; nothing was signed"));
        continue;
      }
      w.admit(this.ticket(w.requestId, this.opts.signTimeoutMs));
    }
    this.advance();
  }

  /**
   * A CRL sent to the signer now (call it in the same turn as the send): the token signs it
   * after what was sent before it, and its clock (timeoutMs) starts then. done() when answered.
   */
  crlSent(timeoutMs: number): Ticket {
    const t = this.ticket(undefined, timeoutMs);
    t.sent();
    return t;
  }

  private ticket(requestId: string | undefined, timeoutMs: number): Ticket {
    let abort!: (e: QueueRefusal) => void;
    const aborted = new Promise<never>((_, reject) => (abort = reject));
    aborted.catch(() => undefined); // observed by the caller's race; never unhandled
    const entry: AtSigner = { requestId, timeoutMs, sent: false, signed: false, headSince: undefined, abort };
    this.atSigner.push(entry);
    return { aborted, sent: () => this.sent(entry), done: () => this.finish(entry) };
  }

  /** Entries sent are kept in the order sent, after those admitted and not sent yet. */
  private sent(entry: AtSigner): void {
    const i = this.atSigner.indexOf(entry);
    if (i < 0 || entry.sent) return;
    entry.sent = true;
    if (this.log.enabled("debug")) this.log.debug("sign queue: sent", { request: entry.requestId ?? "CRL" });
    this.atSigner.splice(i, 1);
    this.atSigner.push(entry);
    this.advance();
  }

  private finish(entry: AtSigner): void {
    const i = this.atSigner.indexOf(entry);
    if (i >= 0) this.atSigner.splice(i, 1);
    if (entry.sent && !entry.signed) {
      if (this.log.enabled("debug")) this.log.debug("sign queue: CRL done");
      this.tokenProgressed(); // a CRL done (no Signed of its own)
    }
    this.pump();
  }

  /**
   * The token finished something: the current work's clock starts again. Should the token not
   * be at "the first sent and unsigned" (a backend that takes its work in another order), a
   * token that finishes nothing for the bound is still hung whatever it was at.
   */
  private tokenProgressed(): void {
    for (const e of this.atSigner) e.headSince = undefined;
    this.watched = undefined; // the timer, if any, is for a clock that no longer runs
  }

  /**
   * Starts the clock of the token's current work (the first sent and unsigned) and arms the
   * watchdog for it; a timer already armed for that work and clock is kept (under load the queue
   * changes with every request while the token stays at the same one).
   */
  private advance(): void {
    const head = this.atSigner.find((e) => e.sent && !e.signed);
    if (!head) return this.disarm();
    if (this.watchdog && this.watched === head) return;
    this.disarm();
    if (head.headSince === undefined) {
      head.headSince = this.now();
      if (this.log.enabled("debug")) this.log.debug("sign queue: clock started", { request: head.requestId ?? "CRL", timeoutMs: head.timeoutMs });
    }
    const left = head.headSince + head.timeoutMs - this.now();
    this.watchdog = setTimeout(() => this.hung(head), Math.max(0, left));
    this.watchdog.unref();
    this.watched = head;
  }

  private hung(head: AtSigner): void {
    this.watchdog = undefined;
    this.watched = undefined;
    if (head.signed || !this.atSigner.includes(head)) return this.advance();
    const waited = this.now() - (head.headSince ?? this.now());
    const seconds = Math.round(head.timeoutMs / 100) / 10;
    const crl = head.requestId === undefined;
    const what = crl ? `a CRL signature within ${seconds} s` : `a signature within SIGN_TIMEOUT (${seconds} s)`;
    const ids: string[] = [];
    for (const e of this.unsigned()) {
      if (e.requestId !== undefined) ids.push(e.requestId);
      e.abort(new QueueRefusal("token.hung", `CA token did not answer ${what}; the CA replaced its signer, try again`));
      this.atSigner.splice(this.atSigner.indexOf(e), 1);
    }
    this.open = false; // until the replaced signer is logged in
    this.opts.onHung({ requestIds: ids, waitedMs: waited, crl, timeoutMs: head.timeoutMs });
  }
}
