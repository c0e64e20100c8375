// What the signer makes durable off the hand-out path (the `serial` file, the audit trail's
// issuance lines, the delivery journal's confirmations, the newcerts files) is flushed at most
// DEFERRED_FLUSH_MS after it was written, all on one timer: a certificate's deferred flushes
// then wake the signer once, not once per file (issue 20: every wake-up of an idle Node process
// costs 76-210 µs of CPU on the test VM). Each owner keeps its own flush; this only times them.

/** The bound every deferred flush keeps (the crash windows in docs/design.md section 6). */
export const DEFERRED_FLUSH_MS = 1000;

export class DeferredFlush {
  private timer: NodeJS.Timeout | undefined;
  /** in the order first scheduled since the last run */
  private readonly tasks = new Set<() => void>();

  constructor(private readonly delayMs: number) {}

  /**
   * `task` runs at most delayMs from now, in the same timer turn as every task scheduled until
   * then. A task already waiting is not scheduled twice. A task that throws is the owner's to
   * report (it is dropped here; the others still run).
   */
  schedule(task: () => void): void {
    this.tasks.add(task);
    if (this.timer) return;
    this.timer = setTimeout(() => this.run(), this.delayMs);
    this.timer.unref();
  }

  /** The owner flushed by itself (a synchronous flush, close): `task` need not run. */
  cancel(task: () => void): void {
    this.tasks.delete(task);
    if (this.tasks.size === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private run(): void {
    this.timer = undefined;
    const due = [...this.tasks];
    this.tasks.clear();
    for (const task of due) {
      try {
        task();
      } catch {
        // the owner's next write or flush reports it
      }
    }
  }
}

/** The signer's one deferred-flush timer (one process, one timer). */
export const deferredFlush = new DeferredFlush(DEFERRED_FLUSH_MS);
