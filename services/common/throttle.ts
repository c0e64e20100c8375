// At most one run per interval: a request within the interval of the last run is served once,
// when the interval is over, however many came. What must not wait calls runNow().
export interface Clock {
  now(): number;
  /** Calls fn after ms; returns a function that cancels it. */
  after(fn: () => void, ms: number): () => void;
}

const REAL_CLOCK: Clock = {
  now: Date.now,
  after(fn, ms) {
    // a pending run never keeps the process alive: whoever stops runs what it must (runNow)
    const timer = setTimeout(fn, ms).unref();
    return () => clearTimeout(timer);
  },
};

export class Throttle {
  private lastRun = -Infinity;
  private cancelPending: (() => void) | undefined;

  constructor(
    private readonly task: () => void,
    private readonly intervalMs: number,
    private readonly clock: Clock = REAL_CLOCK,
  ) {}

  /** Runs the task now if the interval since the last run is over, else once when it is. */
  request(): void {
    if (this.cancelPending) return;
    const wait = this.lastRun + this.intervalMs - this.clock.now();
    if (wait <= 0) this.runNow();
    else this.cancelPending = this.clock.after(() => this.runNow(), wait);
  }

  /** Runs the task at once; a pending run is no longer needed. */
  runNow(): void {
    this.cancel();
    this.lastRun = this.clock.now();
    this.task();
  }

  cancel(): void {
    this.cancelPending?.();
    this.cancelPending = undefined;
  }
}
