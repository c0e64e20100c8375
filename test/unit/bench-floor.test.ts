// The bench's scheduler counters (lib/processes.ts: CPU, wake-ups, run slices and preemptions of
// every thread, from a directory laid out like /proc) and the floor section's arithmetic (the
// design's floor: wake-ups per certificate at a bare echo's cost, + C_Sign).
import t, { type Test } from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { countPerCert, cpuPerCert, schedOf } from "../../bench/lib/processes.js";
import { aboveFloor, costAt, designFloor, durableWritesCpu, echoCosts, wakeupBudget, type EchoCost } from "../../bench/sections/floor.js";
import { fileSystemNote } from "../../bench/lib/file-system.js";

/** A /proc-like directory: pid 4242 with threads given as [schedstat line, voluntary, involuntary] (null: the thread ended). */
function fakeProc(t: Test, threads: Record<string, [string, number, number] | null>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-proc-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [tid, th] of Object.entries(threads)) {
    const task = path.join(dir, "4242", "task", tid);
    fs.mkdirSync(task, { recursive: true });
    if (!th) continue;
    fs.writeFileSync(path.join(task, "schedstat"), `${th[0]}\n`);
    fs.writeFileSync(path.join(task, "status"), `Name:\tnode\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t${th[1]}\nnonvoluntary_ctxt_switches:\t${th[2]}\n`);
  }
  return dir;
}

t.test("schedstat fields 1 and 3 and the context switches are summed over every thread; an ended thread counts nothing", async (t) => {
  const proc = fakeProc(t, {
    "4242": ["1000000 52000 40", 30, 10], // main
    "4243": ["250000 100 7", 6, 1], // a V8 worker
    "4250": ["3 0 1", 1, 0], // libuv's pool
    "4251": null,
  });
  t.same(
    schedOf(4242, proc),
    { cpuNs: 1250003, slices: 48, wakeups: 37, preempted: 11, mainWakeups: 30, kinds: { main: { cpuNs: 1000000, wakeups: 30 }, other: { cpuNs: 250003, wakeups: 7 } } },
    "the main thread: the one whose id is the process's; without the threads' stacks the others are not told apart",
  );
});

t.test("per certificate: each counter's increase over n, per process and in all; a process new since the first reading counts from 0", async (t) => {
  const before = { kernel: { cpuNs: 1e6, slices: 10, wakeups: 8, preempted: 2, mainWakeups: 5 }, spool: { cpuNs: 5e6, slices: 40, wakeups: 30, preempted: 10, mainWakeups: 20 } };
  const after = {
    kernel: { cpuNs: 21e6, slices: 70, wakeups: 48, preempted: 22, mainWakeups: 35 },
    spool: { cpuNs: 25e6, slices: 100, wakeups: 70, preempted: 30, mainWakeups: 50 },
    notifier: { cpuNs: 2e6, slices: 4, wakeups: 4, preempted: 0, mainWakeups: 3 },
  };
  const cpu = cpuPerCert(before, after, 10);
  t.equal(cpu.rows, "kernel 2.00, spool 2.00, notifier 0.20");
  t.equal(cpu.total.toFixed(2), "4.20");
  const w = countPerCert(before, after, 10, "wakeups");
  t.equal(w.rows, "kernel 4.0, spool 4.0, notifier 0.4");
  t.equal(w.total.toFixed(1), "8.4");
  t.same(countPerCert(before, after, 10, "slices").by, { kernel: 6, spool: 6, notifier: 0.4 });
  t.same(countPerCert(before, after, 10, "preempted").by, { kernel: 2, spool: 2, notifier: 0 });
  t.same(countPerCert(before, after, 10, "mainWakeups").by, { kernel: 3, spool: 3, notifier: 0.3 });
});

const costs: EchoCost[] = [
  { gapMs: 0, n: 600, us: 40, wakeups: 1, preempted: 0, idleMs: 0 },
  { gapMs: 1, n: 200, us: 80, wakeups: 1, preempted: 0.5, idleMs: 1.1 },
  { gapMs: 3, n: 100, us: 200, wakeups: 1, preempted: 0.8, idleMs: 3.2 },
];

t.test("the echo's cost after an idle time: linear between the measured gaps, the last one's beyond", async (t) => {
  t.same([0, 0.5, 1, 2, 3, 40, Infinity].map((x) => costAt(costs, x)), [40, 60, 80, 140, 200, 200, 200]);
  t.same(costAt([...costs].reverse(), 2), 140, "in any order");
});

t.test("the design's floor: wake-ups per certificate x the echo's cost at the nearest gap, + C_Sign", async (t) => {
  // 5 ms wall per certificate; the kernel wakes 5 times (idle (5 - 1) / 5 = 0.8 ms: 72 µs), the
  // signer 10 times (idle (5 - 3) / 10 = 0.2 ms: 48 µs), the monitor once (4.5 ms: beyond 3 ms, 200 µs), the notifier never
  const f = designFloor(
    { wallMs: 5, cpuMs: { kernel: 1, signer: 3, monitor: 0.5, notifier: 0 }, wakeups: { kernel: 5, signer: 10, monitor: 1, notifier: 0 } },
    costs,
    0.8,
  );
  t.same(Object.fromEntries(Object.entries(f.byProcess).map(([k, v]) => [k, v.toFixed(3)])), { kernel: "0.360", signer: "0.480", monitor: "0.200", notifier: "0.000" });
  t.same(Object.fromEntries(Object.entries(f.idle).map(([k, v]) => [k, [v.idleMs, v.us.toFixed(0)]])), { kernel: [0.8, "72"], signer: [0.2, "48"], monitor: [4.5, "200"], notifier: [Infinity, "200"] });
  t.equal(f.total.toFixed(2), "1.84");
});

t.test("the wake-ups a budget leaves room for at each gap's cost, after C_Sign", async (t) => {
  t.equal(wakeupBudget(2.5, 0.9, costs), "40 at 0 ms idle, 20 at 1 ms idle, 8 at 3 ms idle");
  t.equal(wakeupBudget(0.5, 0.9, costs), "0 at 0 ms idle, 0 at 1 ms idle, 0 at 3 ms idle", "C_Sign alone over the budget: none");
});

t.test("an echoing child that cannot start: the section fails with why, it does not hang or crash the bench", async (t) => {
  await t.rejects(echoCosts("/nonexistent/etca-echo", [], {}), /ENOENT/);
});

t.test("above the design's floor: per process its CPU less its wake-ups as echoes, the signer's less C_Sign too", async (t) => {
  const w = { wallMs: 5, cpuMs: { kernel: 1, signer: 3, monitor: 0.1, notifier: 0 }, wakeups: { kernel: 5, signer: 10, monitor: 1, notifier: 0 } };
  const f = designFloor(w, costs, 0.8);
  const a = aboveFloor(w, f, 0.8);
  t.same(Object.fromEntries(Object.entries(a.byProcess).map(([k, v]) => [k, v.toFixed(2)])), { kernel: "0.64", signer: "1.72", monitor: "-0.10", notifier: "0.00" }, "kernel 1 - 0.36; signer 3 - 0.48 - 0.8; the monitor below its echo");
  t.equal(a.total.toFixed(2), (1 + 3 + 0.1 - f.total).toFixed(2), "in all: the CPU less the whole floor");
});

t.test("the signer's writes before hand-out: the newcerts create and the index line's flush are timed apart", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-floor-writes-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const w = durableWritesCpu(dir, 20);
  t.ok(Number.isFinite(w.createMs) && w.createMs > 0, `the create part has a cost (${w.createMs} ms)`);
  t.ok(Number.isFinite(w.lineMs) && w.lineMs > 0, `the line part has a cost (${w.lineMs} ms)`);
  t.same(fs.readdirSync(dir), [], "its scratch directory is removed");
});

t.test("the probe names the file system it measured: the mount holding the directory, the longest match", async (t) => {
  t.equal(fileSystemNote("/proc/self"), "proc at /proc", "not the root's");
  t.equal(fileSystemNote("/nonexistent/etca"), "file system not known");
  const root = fileSystemNote("/");
  t.match(root, / at \/($|:)/, `the root (${root})`);
});
