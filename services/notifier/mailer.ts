// E-mail to the operator through nodemailer's SMTP transport. Never blocks the notifier: one
// message at a time from a bounded queue. The same event is mailed at most once per
// NOTIFY_RATE_LIMIT; repeats inside the window are counted, and when the window ends the
// latest of them is mailed with the count (so the last state always reaches the operator).
import * as os from "node:os";
import { createRequire } from "node:module";
import type * as Nodemailer from "nodemailer";

/** nodemailer costs ~12 MiB resident: loaded only when e-mail is configured. */
function loadNodemailer(): typeof Nodemailer {
  return createRequire(import.meta.url)("nodemailer") as typeof Nodemailer;
}
import type { Logger } from "../common/log.js";
import { redactCredentials } from "../common/redact.js";
import type { NotifyEvent } from "./validate.js";

export interface MailerOptions {
  readonly to: readonly string[];
  readonly from: string;
  readonly smtpUrl: string;
  readonly rateLimitMs: number;
  /** Connection, greeting and socket timeout of one SMTP delivery. */
  readonly timeoutMs: number;
  readonly hostname?: string;
  readonly maxQueue?: number;
  readonly log: Logger;
  readonly onFailure: (event: string, message: string) => void;
}

interface Window {
  until: number;
  suppressed: number;
  latest: NotifyEvent | undefined;
  firstSuppressedAt: number;
  timer: NodeJS.Timeout | undefined;
}

interface Mail {
  readonly ev: NotifyEvent;
  readonly suppressed: number;
  readonly since: number;
}

const SUBJECT_MAX = 200;

export function subjectOf(hostname: string, ev: NotifyEvent): string {
  const s = `[etoken-ca ${hostname}] ${ev.event}: ${ev.message}`;
  return s.length > SUBJECT_MAX ? `${s.slice(0, SUBJECT_MAX - 3)}...` : s;
}

export function bodyOf(hostname: string, ev: NotifyEvent, suppressed: number, since: number): string {
  const lines = [ev.message, ""];
  for (const [k, v] of ev.details) lines.push(`${k}: ${v}`);
  if (ev.details.length) lines.push("");
  if (suppressed > 0) {
    lines.push(`${suppressed} more ${ev.event} event(s) since ${new Date(since).toISOString()} were not mailed (NOTIFY_RATE_LIMIT); this is the latest.`, "");
  }
  lines.push(`event: ${ev.event}`, `host: ${hostname}`, `time: ${new Date().toISOString()}`, "", "-- etoken-ca notifier");
  return lines.join("\n") + "\n";
}

export class Mailer {
  private readonly transport: Nodemailer.Transporter;
  private readonly windows = new Map<string, Window>();
  private readonly queue: Mail[] = [];
  private sending = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private readonly hostname: string;
  private readonly maxQueue: number;

  constructor(private readonly opts: MailerOptions) {
    this.hostname = opts.hostname ?? os.hostname();
    this.maxQueue = opts.maxQueue ?? 50;
    this.transport = loadNodemailer().createTransport({
      url: opts.smtpUrl,
      connectionTimeout: opts.timeoutMs,
      greetingTimeout: opts.timeoutMs,
      socketTimeout: opts.timeoutMs,
      disableFileAccess: true,
      disableUrlAccess: true,
    } as never);
  }

  /** Rate-limits and queues; returns at once. */
  notify(ev: NotifyEvent): void {
    if (this.closed) return;
    const now = Date.now();
    const w = this.windows.get(ev.event);
    if (w && now < w.until) {
      if (w.suppressed === 0) w.firstSuppressedAt = now;
      w.suppressed++;
      w.latest = ev;
      this.opts.log.info("e-mail rate-limited", { event: ev.event, suppressed: w.suppressed });
      if (!w.timer) {
        w.timer = setTimeout(() => this.flush(ev.event), w.until - now);
        w.timer.unref();
      }
      return;
    }
    this.windows.set(ev.event, { until: now + this.opts.rateLimitMs, suppressed: 0, latest: undefined, firstSuppressedAt: 0, timer: undefined });
    this.push({ ev, suppressed: 0, since: now });
  }

  idle(): Promise<void> {
    if (!this.sending && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.closed = true;
    for (const w of this.windows.values()) if (w.timer) clearTimeout(w.timer);
    this.queue.length = 0;
    this.transport.close();
  }

  /** The window of this event ended with repeats in it: mail the latest one, open a new window. */
  private flush(event: string): void {
    const w = this.windows.get(event);
    if (!w || !w.latest || this.closed) return;
    const mail = { ev: w.latest, suppressed: w.suppressed - 1, since: w.firstSuppressedAt };
    this.windows.set(event, { until: Date.now() + this.opts.rateLimitMs, suppressed: 0, latest: undefined, firstSuppressedAt: 0, timer: undefined });
    this.push(mail);
  }

  private push(mail: Mail): void {
    if (this.queue.length >= this.maxQueue) {
      const message = `e-mail for ${mail.ev.event} dropped: ${this.maxQueue} messages already waiting for ${redactCredentials(this.opts.smtpUrl)}`;
      this.opts.log.error(message);
      this.opts.onFailure(mail.ev.event, message);
      return;
    }
    this.queue.push(mail);
    if (!this.sending) void this.drain();
  }

  private async drain(): Promise<void> {
    this.sending = true;
    while (this.queue.length > 0 && !this.closed) {
      const mail = this.queue.shift()!;
      try {
        const info = await this.transport.sendMail({
          from: this.opts.from,
          to: [...this.opts.to],
          subject: subjectOf(this.hostname, mail.ev),
          text: bodyOf(this.hostname, mail.ev, mail.suppressed, mail.since),
        });
        this.opts.log.info("e-mail sent", { event: mail.ev.event, to: this.opts.to.join(","), messageId: String(info.messageId ?? "") });
      } catch (err) {
        const message = redactCredentials(`e-mail for ${mail.ev.event} to ${this.opts.to.join(",")} through ${this.opts.smtpUrl} failed: ${(err as Error).message}`);
        this.opts.log.warning("e-mail failed", { event: mail.ev.event, error: message });
        this.opts.onFailure(mail.ev.event, message);
      }
    }
    this.sending = false;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}
