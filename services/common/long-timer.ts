// A timeout that may be longer than setTimeout's limit. Node's timers wait at most 2^31-1 ms
// (24.8 days): a longer delay fires after 1 ms, with a TimeoutOverflowWarning. This one re-arms
// in steps until its time (on the monotonic clock) has come.

/** setTimeout's longest delay. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export class LongTimeout {
  private timer: NodeJS.Timeout | undefined;
  private readonly due: number;
  private referenced = true;

  /** `step`: the longest single wait (tests shorten it to see the steps). */
  constructor(private readonly fn: () => void, ms: number, private readonly step = MAX_TIMER_MS) {
    this.due = performance.now() + Math.max(0, ms);
    this.arm(Math.max(0, ms));
  }

  /** Stops it; the function is not called. */
  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** As Timeout.unref(): it does not keep the process alive (every step after it neither). */
  unref(): this {
    this.referenced = false;
    this.timer?.unref();
    return this;
  }

  ref(): this {
    this.referenced = true;
    this.timer?.ref();
    return this;
  }

  private arm(left: number): void {
    const step = Math.min(left, this.step);
    this.timer = setTimeout(() => {
      const rest = this.due - performance.now();
      if (step < left && rest > 0) this.arm(rest);
      else {
        this.timer = undefined;
        this.fn();
      }
    }, step);
    if (!this.referenced) this.timer.unref();
  }
}

/** setTimeout for any delay: see LongTimeout. */
export function setLongTimeout(fn: () => void, ms: number): LongTimeout {
  return new LongTimeout(fn, ms);
}
