// The queue in front of the `request` lock (issue 20, sixth round). Every client waiting for the
// link watched for it going away, so each release woke all of them, they all tried the link and
// one won (under the bench's (c), 31 of 32 woke for nothing). Clients now queue with flock(2) on
// SPOOL_DIR: only the queue's head watches the link; a release of the link wakes the head, and the
// head's release of the flock wakes only the next client, in the order they queued.
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import { REQUEST_LINK, REQUEST_NAME } from "../../services/common/spool-protocol.js";
import { flockQueue, flockThreads, flockThreadSwitches, signalThread } from "../fixtures/flock-queue.js";
import { IN_DELETE, inotifyMasks } from "../fixtures/inotify.js";
import { type ClientRun, makeCsr, myproxyInput, runClient, SpoolHarness } from "../fixtures/spool-harness.js";

interface Queued {
  readonly child: ChildProcess;
  readonly run: Promise<ClientRun>;
  /** its request file's name, the link's target once it holds the lock */
  readonly id: string;
}

const requestFiles = (dir: string): string[] => fs.readdirSync(dir).filter((n) => REQUEST_NAME.test(n));
const target = (link: string): string | undefined => {
  try {
    return fs.readlinkSync(link);
  } catch {
    return undefined;
  }
};

/** Starts a client and waits until it holds or waits for the flock on the spool directory. */
async function queueClient(h: SpoolHarness, csrPem: string, what: string): Promise<Queued> {
  const before = new Set(requestFiles(h.spoolDir));
  let child: ChildProcess | undefined;
  const run = runClient(h, myproxyInput({}, csrPem), { onSpawn: (c) => (child = c) });
  const inQueue = (): boolean => {
    const pid = child?.pid;
    if (pid === undefined) return false;
    const q = flockQueue(h.spoolDir);
    return q.holder === pid || q.waiters.includes(pid);
  };
  const exited = (): boolean => child !== undefined && child.exitCode !== null;
  await h.until(() => inQueue() || exited(), 20_000, `${what} in the spool directory's flock queue`);
  if (!inQueue()) {
    const r = await run;
    throw new Error(`${what} ended (status ${r.code}) instead of queueing: ${JSON.stringify(r.stderr)}`);
  }
  const id = requestFiles(h.spoolDir).filter((n) => !before.has(n));
  if (id.length !== 1) throw new Error(`${what}: ${id.length} new request files`);
  return { child: child!, run, id: id[0]! };
}

const watchesLink = (pid: number): boolean => inotifyMasks(pid).some((m) => (m & IN_DELETE) !== 0);

t.test("one release of the lock wakes one queued client; all get through in the order they queued", async (t) => {
  const N = 8;
  const h = new SpoolHarness({ clientTimeout: "120" }); // no spool: the test releases the link as the spool does
  const clients: Queued[] = [];
  t.teardown(async () => {
    for (const c of clients) c.child.kill("SIGKILL");
    await Promise.all(clients.map((c) => c.run));
    h.cleanup();
  });
  const { csrPem } = makeCsr(h.root, "queue");
  const link = path.join(h.spoolDir, REQUEST_LINK);
  fs.symlinkSync("req.SomeoneElse0001", link);
  for (let i = 0; i < N; i++) clients.push(await queueClient(h, csrPem, `client ${i}`));
  const pids = clients.map((c) => c.child.pid!);
  t.same(flockQueue(h.spoolDir), { holder: pids[0], waiters: pids.slice(1) }, "the first client heads the queue, the others wait in the order they came");
  await h.until(() => watchesLink(pids[0]!), 10_000, "the head's watch on the link");
  t.same(
    pids.filter((p) => watchesLink(p)),
    [pids[0]],
    "only the head watches for the link going away (before: every waiting client did, and every release woke them all)",
  );

  const order: string[] = [];
  for (let k = 0; k < N; k++) {
    const waiting = pids.slice(k + 2); // behind the next one
    const before = waiting.map((p) => flockThreadSwitches(p));
    t.ok(
      before.every((s) => s !== undefined),
      `release ${k + 1}: the clients behind the next one are blocked in flock`,
    );
    fs.unlinkSync(link); // what the spool does when it takes a request
    await h.until(() => target(link) === clients[k]!.id, 20_000, `client ${k} taking the lock`);
    order.push(target(link)!);
    if (k + 1 < N) {
      await h.until(() => flockQueue(h.spoolDir).holder === pids[k + 1], 20_000, `client ${k + 1} heading the queue`);
      t.same(flockQueue(h.spoolDir).waiters, waiting, `release ${k + 1}: the rest still wait, in order`);
      const woken = waiting.filter((p, i) => flockThreadSwitches(p) !== before[i]);
      t.same(woken, [], `release ${k + 1}: none of the ${waiting.length} clients behind the next one was woken`);
    }
  }
  t.same(order, clients.map((c) => c.id), "every client took the lock, in the order they queued");
  t.same(flockQueue(h.spoolDir), { holder: undefined, waiters: [] }, "the queue is empty once the last took the lock");
});

t.test("a client waiting in the queue abandons on SIGTERM, and leaves the queue", async (t) => {
  const h = new SpoolHarness({ clientTimeout: "60" });
  const clients: Queued[] = [];
  t.teardown(async () => {
    for (const c of clients) c.child.kill("SIGKILL");
    await Promise.all(clients.map((c) => c.run));
    h.cleanup();
  });
  const { csrPem } = makeCsr(h.root, "queue-term");
  fs.symlinkSync("req.SomeoneElse0001", path.join(h.spoolDir, REQUEST_LINK));
  const head = await queueClient(h, csrPem, "the head");
  clients.push(head);
  const queued = await queueClient(h, csrPem, "the queued client");
  clients.push(queued);
  t.same(flockQueue(h.spoolDir).waiters, [queued.child.pid], "it waits behind the head");
  queued.child.kill("SIGTERM");
  const r = await queued.run;
  t.equal(r.code, 1);
  t.match(r.stderr, /^etoken-ca-client: interrupted by SIGTERM; the request was abandoned\n$/);
  t.notOk(fs.existsSync(path.join(h.spoolDir, queued.id)), "its request file is gone");
  t.same(flockQueue(h.spoolDir), { holder: head.child.pid, waiters: [] }, "it left the queue; the head still holds it");
  t.equal(target(path.join(h.spoolDir, REQUEST_LINK)), "req.SomeoneElse0001", "and it never touched the link");
});

t.test("a CLIENT_TIMEOUT beyond a timer's range (30d, over 24.8 days): etoken-ca-client refuses it in one line, before queueing", async (t) => {
  // setTimeout takes at most 2^31-1 ms (a longer delay fires after 1 ms): CLIENT_TIMEOUT is at
  // most 1h (config-schema.ts)
  const h = new SpoolHarness({ clientTimeout: "60" });
  t.teardown(() => h.cleanup());
  const lines = fs.readFileSync(h.configFile, "utf8").split("\n");
  const line = lines.indexOf("CLIENT_TIMEOUT=60") + 1;
  t.ok(line > 0, "the harness's CLIENT_TIMEOUT line");
  lines[line - 1] = "CLIENT_TIMEOUT=30d";
  fs.writeFileSync(h.configFile, lines.join("\n"));
  const { csrPem } = makeCsr(h.root, "queue-long");
  const r = await runClient(h, myproxyInput({}, csrPem));
  t.equal(r.code, 1);
  t.equal(r.stderr, `etoken-ca-client: ${h.configFile}:${line}: CLIENT_TIMEOUT="30d": longer than 1h (MyProxy's request_timeout, which it stays below, is minutes)\n`, "one line: file, line, value, limit; no warning");
  t.same(requestFiles(h.spoolDir), [], "no request was written");
});

t.test("a signal that reaches a queued client's flock thread does not cost it its place", async (t) => {
  // An interrupted flock(2) leaves the queue and, restarted, joins it again at the end: behind
  // the client after it whenever that one (woken as the interrupted one leaves) queues again
  // first. A process-directed signal goes to the main thread while it does not block it; this
  // sends SIGUSR2 (the client ignores it with a listener, no-inspector.ts) to the thread itself.
  const SIGUSR2 = 12;
  const h = new SpoolHarness({ clientTimeout: "60" });
  const clients: Queued[] = [];
  t.teardown(async () => {
    for (const c of clients) c.child.kill("SIGKILL");
    await Promise.all(clients.map((c) => c.run));
    h.cleanup();
  });
  const { csrPem } = makeCsr(h.root, "queue-signal");
  fs.symlinkSync("req.SomeoneElse0001", path.join(h.spoolDir, REQUEST_LINK));
  for (const what of ["the head", "the second", "the third"]) clients.push(await queueClient(h, csrPem, what));
  const [head, second, third] = clients.map((c) => c.child.pid!) as [number, number, number];
  t.same(flockQueue(h.spoolDir), { holder: head, waiters: [second, third] }, "queued in the order they came");
  const threads = flockThreads(second);
  t.equal(threads.length, 1, "the second client has one thread in flock");
  for (let i = 0; i < 20; i++) {
    signalThread(second, threads[0]!, SIGUSR2);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  t.same(flockQueue(h.spoolDir), { holder: head, waiters: [second, third] }, "after 20 signals to its flock thread, the second is still second");
});
