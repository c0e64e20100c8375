// Runs hooks without ever blocking the notifier: a bounded queue, a few at once, each in its
// own process group (spawned detached) so that a timeout kills the hook and everything it
// started. Completion is the hook's exit, not the end of its output (a background child that
// keeps stderr open does not hold the queue).
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import type { Logger } from "../common/log.js";
import { oneLine } from "./validate.js";

export const HOOK_PATH_ENV = "/usr/sbin:/usr/bin:/sbin:/bin";

export interface HookJob {
  /** Which hook, as reported in hookFailed: NOTIFY_HOOK or POST_CRL_HOOK. */
  readonly hook: string;
  readonly path: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string;
  readonly event: string;
}

export interface HookOutcome {
  readonly ok: boolean;
  /** One line for the operator: what happened. */
  readonly message: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
}

export interface HookRunnerOptions {
  readonly timeoutMs: number;
  readonly maxConcurrent?: number;
  readonly maxQueue?: number;
  /** Grace between SIGTERM and SIGKILL to the hook's process group. */
  readonly killGraceMs?: number;
  readonly log: Logger;
  /** Called for every failed hook (and for jobs dropped because the queue is full). */
  readonly onFailure: (job: HookJob, message: string) => void;
}

const STDERR_KEEP = 2048;

/** Environment of a hook: PATH, ETOKEN_EVENT, ETOKEN_MESSAGE, ETOKEN_<DETAIL> and nothing else. */
export function hookEnvironment(event: string, message: string, details: readonly (readonly [string, string])[]): Record<string, string> {
  const env: Record<string, string> = { PATH: HOOK_PATH_ENV, ETOKEN_EVENT: event, ETOKEN_MESSAGE: message };
  for (const [k, v] of details) env[`ETOKEN_${k.toUpperCase()}`] = v;
  return env;
}

/** Start-up check: a hook that cannot be run is worth a warning now, not only at the first event. */
export function checkHook(key: string, path: string, log: Logger): void {
  if (!path) return;
  try {
    const st = fs.statSync(path);
    if (!st.isFile()) throw new Error("not a regular file");
    fs.accessSync(path, fs.constants.X_OK);
  } catch (err) {
    log.warning(`${key}=${path} cannot be run by the notifier user; its runs will fail and be reported`, { error: (err as Error).message });
  }
}

export class HookRunner {
  private readonly queue: HookJob[] = [];
  private readonly running = new Map<number, () => void>();
  private active = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private readonly maxConcurrent: number;
  private readonly maxQueue: number;
  private readonly killGraceMs: number;

  constructor(private readonly opts: HookRunnerOptions) {
    this.maxConcurrent = opts.maxConcurrent ?? 3;
    this.maxQueue = opts.maxQueue ?? 100;
    this.killGraceMs = opts.killGraceMs ?? 2000;
  }

  /** Queues a job and returns at once. */
  enqueue(job: HookJob): void {
    if (this.stopped) return;
    if (this.queue.length >= this.maxQueue) {
      const message = `${job.hook} ${job.path} not run for ${job.event}: ${this.maxQueue} hook runs already queued`;
      this.opts.log.error(message);
      this.opts.onFailure(job, message);
      return;
    }
    this.queue.push(job);
    this.pump();
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops the queue and kills every running hook's process group. */
  stop(): void {
    this.stopped = true;
    this.queue.length = 0;
    for (const kill of this.running.values()) kill();
  }

  private pump(): void {
    while (this.active < this.maxConcurrent && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.active++;
      void this.run(job).then((outcome) => {
        this.active--;
        if (outcome.ok) {
          this.opts.log.info(`${job.hook} done`, { event: job.event, hook: job.path });
        } else {
          this.opts.log.warning(`${job.hook} failed`, { event: job.event, hook: job.path, error: outcome.message });
          this.opts.onFailure(job, outcome.message);
        }
        this.pump();
        if (this.active === 0 && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  /** Runs one hook to its end (or its kill). Never rejects. */
  run(job: HookJob): Promise<HookOutcome> {
    return new Promise<HookOutcome>((resolve) => {
      const what = `${job.hook} ${job.path}`;
      let stderr = "";
      let timedOut = false;
      let settled = false;
      let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      const timers: NodeJS.Timeout[] = [];
      const child = spawn(job.path, [...job.args], {
        detached: true, // its own process group: kill(-pid) reaches whatever it started
        cwd: "/",
        env: { ...job.env },
        stdio: ["pipe", "ignore", "pipe"],
      });
      const finish = (o: HookOutcome): void => {
        if (settled) return;
        settled = true;
        for (const t of timers) clearTimeout(t);
        if (child.pid !== undefined) this.running.delete(child.pid);
        child.stderr?.destroy();
        child.stdin?.destroy();
        resolve(o);
      };
      const killGroup = (signal: NodeJS.Signals): void => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, signal);
        } catch {
          // the group is gone already
        }
      };
      const terminate = (): void => {
        killGroup("SIGTERM");
        const t = setTimeout(() => killGroup("SIGKILL"), this.killGraceMs);
        timers.push(t);
      };
      child.on("error", (err: NodeJS.ErrnoException) => {
        finish({ ok: false, message: `${what} cannot be run: ${err.code ?? err.message}`, code: null, signal: null, timedOut: false });
      });
      child.stderr?.setEncoding("utf8");
      child.stderr?.on("data", (s: string) => {
        if (stderr.length < STDERR_KEEP) stderr += s.slice(0, STDERR_KEEP - stderr.length);
      });
      child.stderr?.on("error", () => {});
      child.stdin?.on("error", () => {}); // a hook that does not read its stdin: EPIPE is fine
      child.stdin?.end(job.stdin);
      if (child.pid !== undefined) this.running.set(child.pid, terminate);
      timers.push(
        setTimeout(() => {
          timedOut = true;
          terminate();
        }, this.opts.timeoutMs),
      );
      const done = (): void => {
        if (!exit) return;
        // the hook is gone; leftovers of its group are killed only on timeout or stop
        const tail = oneLine(stderr.trim()).slice(0, 300);
        const suffix = tail ? `: ${tail}` : "";
        if (timedOut) {
          killGroup("SIGKILL"); // whatever it left behind in its group
          finish({ ok: false, message: `${what} killed after ${this.opts.timeoutMs} ms (HOOK_TIMEOUT)${suffix}`, code: exit.code, signal: exit.signal, timedOut });
        } else if (exit.signal) {
          finish({ ok: false, message: `${what} was killed by ${exit.signal}${suffix}`, code: null, signal: exit.signal, timedOut });
        } else if (exit.code !== 0) {
          finish({ ok: false, message: `${what} exited with status ${exit.code}${suffix}`, code: exit.code, signal: null, timedOut });
        } else {
          finish({ ok: true, message: `${what} done`, code: 0, signal: null, timedOut });
        }
      };
      child.on("exit", (code, signal) => {
        exit = { code, signal };
        // give the stderr pipe a moment to deliver the hook's last words, then stop waiting
        const t = setTimeout(done, 100);
        timers.push(t);
      });
      child.on("close", () => done());
    });
  }
}
