// CPU and wake-ups per certificate by kind of thread (lib/processes.ts classify()): what tells
// V8 compiling (its platform threads) and libuv's pool (fs calls, fsync) from the JavaScript's
// own work (the main thread), per process.
import { fig, note } from "./report.js";
import { kindPerCert, THREAD_KIND_NAMES, THREAD_KINDS, type Sched } from "./processes.js";

/**
 * One figure per kind of thread for CPU ("(PREFIX-cpu KIND)" ids given by `ids`) and one for
 * wake-ups, each with the per-process list --compare makes rows of. `window` says which
 * certificates ("in the steady state", "during (c)").
 */
export function threadKindFigures(ids: { cpu: string; wake: string }, window: string, before: Record<string, Sched>, after: Record<string, Sched>, n: number): void {
  for (const kind of THREAD_KINDS) {
    const cpu = kindPerCert(before, after, n, kind, "cpuMs");
    fig(`(${ids.cpu} ${kind})`, `CPU per certificate ${window}, ${THREAD_KIND_NAMES[kind]}`, `${cpu.total.toFixed(2)} ms (${cpu.rows})`);
  }
  for (const kind of THREAD_KINDS) {
    const wake = kindPerCert(before, after, n, kind, "wakeups");
    fig(`(${ids.wake} ${kind})`, `wake-ups per certificate ${window}, ${THREAD_KIND_NAMES[kind]}`, `${wake.total.toFixed(1)} wake-ups (${wake.rows})`);
  }
}

/** The same split as one note (the cold window, whose rows would only repeat the figures' shape). */
export function threadKindNote(label: string, before: Record<string, Sched>, after: Record<string, Sched>, n: number): void {
  const part = (what: "cpuMs" | "wakeups"): string =>
    THREAD_KINDS.map((kind) => {
      const x = kindPerCert(before, after, n, kind, what);
      return `${kind} ${x.total.toFixed(what === "cpuMs" ? 2 : 1)} (${x.rows})`;
    }).join("; ");
  note(`${label}: CPU ms per certificate by kind of thread: ${part("cpuMs")}; wake-ups: ${part("wakeups")}`);
}
