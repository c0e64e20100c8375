// The notifier: turns the kernel's notify frames into hook runs (NOTIFY_HOOK on every
// event, POST_CRL_HOOK on crl-updated) and operator e-mail. Nothing here ever waits for a hook
// or a mail server: failures come back to the kernel as unsolicited hookFailed frames.
import type { Frame } from "../../proto/wire.js";
import type { ServiceConfig } from "../common/service-table.js";
import type { Logger } from "../common/log.js";
import { checkHook, hookEnvironment, HookRunner } from "./hooks.js";
import { Mailer } from "./mailer.js";
import { crlPathOf, normalizeNotify } from "./validate.js";

/** Failures while handling this event are logged but not reported (the report would come back as it). */
const NO_REPORT_EVENT = "hook-failed";

export class Notifier {
  readonly hooks: HookRunner;
  readonly mailer: Mailer | undefined;

  constructor(
    private readonly config: ServiceConfig<"notifier">,
    private readonly log: Logger,
    private readonly report: (hook: string, event: string, message: string) => void,
  ) {
    const reportUnlessLoop = (hook: string, event: string, message: string): void => {
      if (event === NO_REPORT_EVENT) return;
      this.report(hook, event, message);
    };
    this.hooks = new HookRunner({
      timeoutMs: config.HOOK_TIMEOUT,
      log: log.child("hook"),
      onFailure: (job, message) => reportUnlessLoop(job.hook, job.event, message),
    });
    this.mailer =
      config.NOTIFY_EMAIL.length > 0
        ? new Mailer({
            to: config.NOTIFY_EMAIL,
            from: config.NOTIFY_FROM,
            smtpUrl: config.SMTP_URL,
            rateLimitMs: config.NOTIFY_RATE_LIMIT,
            timeoutMs: Math.max(1000, config.HOOK_TIMEOUT),
            log: log.child("mail"),
            onFailure: (event, message) => reportUnlessLoop("email", event, message),
          })
        : undefined;
    checkHook("NOTIFY_HOOK", config.NOTIFY_HOOK, log);
    checkHook("POST_CRL_HOOK", config.POST_CRL_HOOK, log);
  }

  /** Fans out a notification (the channel checked it against the contract); returns at once. */
  handle(frame: Frame<"notify">): void {
    const ev = normalizeNotify(frame.message);
    this.log.info("event", { event: ev.event, message: ev.message });
    const env = hookEnvironment(ev.event, ev.message, ev.details);
    const stdin = `${ev.message}\n`;
    if (this.config.NOTIFY_HOOK) {
      this.hooks.enqueue({ hook: "NOTIFY_HOOK", path: this.config.NOTIFY_HOOK, args: [ev.event], env, stdin, event: ev.event });
    }
    if (ev.event === "crl-updated" && this.config.POST_CRL_HOOK) {
      const crl = crlPathOf(ev);
      if (crl === undefined) {
        const message = `POST_CRL_HOOK ${this.config.POST_CRL_HOOK} not run: crl-updated carries no absolute CRL path`;
        this.log.warning(message);
        this.report("POST_CRL_HOOK", ev.event, message);
      } else {
        this.hooks.enqueue({ hook: "POST_CRL_HOOK", path: this.config.POST_CRL_HOOK, args: [crl], env, stdin, event: ev.event });
      }
    }
    this.mailer?.notify(ev);
  }

  stop(): void {
    this.hooks.stop();
    this.mailer?.close();
  }
}

