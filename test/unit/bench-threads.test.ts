// The bench's split of a process's CPU and wake-ups by kind of thread (lib/processes.ts:
// classify() and schedOf() on a directory laid out like /proc) and (b)'s goal as issue 20
// words it (sections/latency.ts bGoal()).
import t, { type Test } from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { classify, cpuOf, kindPerCert, schedOf, type Sched } from "../../bench/lib/processes.js";
import { bGoal } from "../../bench/sections/latency.js";
import { C_WRITERS } from "../../bench/sections/throughput.js";

const __filename_ = fileURLToPath(import.meta.url);

/** Node 20's threads as a service has them (--v8-pool-size=1): what /proc showed of a running spool. */
const NODE20 = [
  { tid: 100, comm: "etoken-ca: spoo", stackKiB: 132 }, // main
  { tid: 103, comm: "node", stackKiB: 8192 }, // V8's delayed-task thread (epoll_wait)
  { tid: 105, comm: "node", stackKiB: 8192 }, // V8's one worker
  { tid: 113, comm: "node", stackKiB: 32 }, // the inspector's SIGUSR1 thread
  { tid: 128, comm: "node", stackKiB: 8192 }, // libuv's pool, made at first use
  { tid: 129, comm: "node", stackKiB: 8192 },
  { tid: 130, comm: "node" }, // running when read: no stack pointer
  { tid: 131, comm: "node", stackKiB: 8192 },
];

t.test("threads by kind: the order Node makes them in, split by the inspector's small-stack thread; names win when a newer Node gives them", async (t) => {
  const kinds = classify(100, [...NODE20].reverse());
  t.same(Object.fromEntries(kinds), { 100: "main", 103: "v8", 105: "v8", 113: "other", 128: "uv", 129: "uv", 130: "uv", 131: "uv" }, "in any order of the listing");
  t.same(
    Object.fromEntries(classify(100, [{ tid: 100, comm: "node" }, { tid: 101, comm: "V8 DefaultWorke" }, { tid: 102, comm: "libuv-worker" }, { tid: 103, comm: "node" }])),
    { 100: "main", 101: "v8", 102: "uv", 103: "other" },
    "named threads by name; an unnamed one without the separator is not guessed",
  );
  t.same(
    Object.fromEntries(classify(100, NODE20.map((x) => (x.tid === 113 ? { tid: x.tid, comm: x.comm } : x)))),
    { 100: "main", 103: "other", 105: "other", 113: "other", 128: "other", 129: "other", 130: "other", 131: "other" },
    "the separator's stack not read: other, not a guess",
  );
  // the monitor's slot-event thread (native/slot-wait) comes after libuv's pool: not one of them
  t.same(
    Object.fromEntries(classify(100, [...NODE20, { tid: 140, comm: "etca-slot-wait", stackKiB: 8192 }])),
    { 100: "main", 103: "v8", 105: "v8", 113: "other", 128: "uv", 129: "uv", 130: "uv", 131: "uv", 140: "other" },
    "our own named threads are other native threads",
  );
});

/** A /proc-like directory for pid 100 with the Node 20 threads above, each given [schedstat line, voluntary switches]. */
function fakeProc(t: Test, counters: Record<number, [string, number]>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-proc-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // stacks: one mapping per size, the stack pointer inside it
  const maps: string[] = [];
  const spOf = new Map<number, bigint>();
  let at = 0x7f0000000000n;
  for (const th of NODE20) {
    if (th.stackKiB === undefined) continue;
    const end = at + BigInt(th.stackKiB * 1024);
    maps.push(`${at.toString(16)}-${end.toString(16)} rw-p 00000000 00:00 0 `);
    spOf.set(th.tid, end - 256n);
    at = end + 0x1000n;
  }
  fs.mkdirSync(path.join(dir, "100"), { recursive: true });
  fs.writeFileSync(path.join(dir, "100", "maps"), `${maps.join("\n")}\n`);
  for (const th of NODE20) {
    const task = path.join(dir, "100", "task", String(th.tid));
    fs.mkdirSync(task, { recursive: true });
    const [schedstat, voluntary] = counters[th.tid] ?? ["0 0 0", 0];
    fs.writeFileSync(path.join(task, "comm"), `${th.comm}\n`);
    fs.writeFileSync(path.join(task, "syscall"), spOf.has(th.tid) ? `202 0x1 0x2 0x3 0x4 0x5 0x6 0x${spOf.get(th.tid)!.toString(16)} 0x7f00deadbeef\n` : "running\n");
    fs.writeFileSync(path.join(task, "schedstat"), `${schedstat}\n`);
    fs.writeFileSync(path.join(task, "status"), `Name:\tnode\nvoluntary_ctxt_switches:\t${voluntary}\nnonvoluntary_ctxt_switches:\t0\n`);
  }
  return dir;
}

t.test("schedOf sums each kind's CPU and wake-ups from the thread's stack in maps; per certificate by kind", async (t) => {
  const proc = fakeProc(t, { 100: ["3000000 0 30", 20], 105: ["2000000 0 5", 4], 113: ["7 0 1", 1], 128: ["500000 0 9", 8], 130: ["250000 0 3", 2] });
  const s = schedOf(100, proc);
  t.equal(s.cpuNs, 5750007, "all threads, as before");
  t.same(s.kinds, { main: { cpuNs: 3000000, wakeups: 20 }, v8: { cpuNs: 2000000, wakeups: 4 }, other: { cpuNs: 7, wakeups: 1 }, uv: { cpuNs: 750000, wakeups: 10 } });
  const before: Record<string, Sched> = { spool: { ...s, kinds: { main: { cpuNs: 1e6, wakeups: 10 }, v8: { cpuNs: 2e6, wakeups: 4 } } } };
  const after = { spool: s, kernel: { cpuNs: 1e6, slices: 1, wakeups: 1, preempted: 0, mainWakeups: 1, kinds: { main: { cpuNs: 1e6, wakeups: 1 } } } };
  const main = kindPerCert(before, after, 2, "main", "cpuMs");
  t.equal(main.rows, "spool 1.00, kernel 0.50");
  t.equal(main.total.toFixed(2), "1.50");
  t.same(kindPerCert(before, after, 2, "v8", "cpuMs").by, { spool: 0, kernel: 0 }, "V8's threads idle in the window");
  t.same(kindPerCert(before, after, 2, "uv", "wakeups").by, { spool: 5, kernel: 0 }, "a kind absent from the first reading counts from 0");
});

t.test("this node's own threads (the same Node as the services'): the layout classify() expects is there, every thread in one kind", async (t) => {
  await fs.promises.readFile(__filename_); // libuv's pool made
  const own = schedOf(process.pid);
  t.same(Object.keys(own.kinds ?? {}).sort(), ["main", "other", "uv", "v8"], "the inspector's small-stack thread found: V8's and libuv's threads told apart");
  t.same(Object.keys(cpuOf(process.pid)).map((name) => Object.keys(cpuOf(process.pid)[name]!.kinds ?? {}).length), [4], "cpuOf keeps the split");
  t.ok(own.kinds?.main && own.kinds.main.cpuNs > 0, "the main thread ran");
  t.equal(Object.values(own.kinds ?? {}).reduce((a, k) => a + k.cpuNs, 0), own.cpuNs, "every thread in exactly one kind");
});

t.test("(b)'s goal as the issue words it: p50 <= 3 ms and <= 4 x the same run's C_Sign p50", async (t) => {
  t.same(bGoal(2.64, 0.588), { goal: "p50 <= 3 ms and <= 4x C_Sign p50 = 2.35 ms", pass: false }, "under 3 ms but 4.5x C_Sign: a miss");
  t.equal(bGoal(2.2, 0.588).pass, true);
  t.equal(bGoal(3.2, 1).pass, false, "under 4x but over 3 ms: a miss");
  t.same(bGoal(2.9, undefined), { goal: "p50 <= 3 ms (and <= 4x C_Sign p50: no (a) in this run)", pass: true });
});

t.test("(c) is taken with the issue's 32 writers, --quick too", async (t) => {
  t.equal(C_WRITERS, 32);
});
