// The kernel's queue in front of the token (services/kernel/sign-queue.ts): arrival order, the
// pipeline to the signer, admission by measured sign time ("CA busy"), requests dropped before
// signing (deadline passed, client gave up, token gone) and the SIGN_TIMEOUT watchdog. The clock
// is the test's; nothing here waits on real time except the watchdog's own (short) timer.
import t from "tap";
import { readFileSync } from "node:fs";
import { createLogger, type Logger, setLogLevel, setLogSink } from "../../services/common/log.js";
import { type HungSignature, QueueRefusal, SignQueue, SignTimes, type Ticket } from "../../services/kernel/sign-queue.js";

function queue(opts: { signTimeoutMs?: number; clock?: { now: number } } = {}) {
  const clock = opts.clock ?? { now: 1_000_000 };
  const hung: string[][] = [];
  const reports: HungSignature[] = [];
  const q = new SignQueue({
    signTimeoutMs: opts.signTimeoutMs ?? 3_600_000,
    onHung: (h) => {
      hung.push(h.requestIds);
      reports.push(h);
    },
    now: () => clock.now,
    log: createLogger("kernel.sign-queue"),
  });
  t.teardown(() => q.stop());
  return { q, clock, hung, reports };
}

/** Enters requests and records the order in which they get their turn (or why not); each is sent at once, as the kernel does. */
function enterAll(q: SignQueue, ids: string[], deadline: number) {
  const admitted: string[] = [];
  const refused: Record<string, QueueRefusal> = {};
  const tickets = new Map<string, Ticket>();
  const settled = ids.map((id) =>
    q.enter(id, deadline).then(
      (tk) => {
        admitted.push(id);
        tickets.set(id, tk);
        tk.sent();
      },
      (e: QueueRefusal) => {
        refused[id] = e;
      },
    ),
  );
  return { admitted, refused, tickets, settled };
}

const tick = () => new Promise((r) => setImmediate(r));
/** The watchdog's timer does not hold the process open (unref): this does, while a test waits for it. */
function keepAlive(t: { teardown: (fn: () => void) => void }): void {
  const timer = setTimeout(() => undefined, 10_000);
  t.teardown(() => clearTimeout(timer));
}

t.test("arrival order, and no more unsigned requests at the signer than the pipeline", async (t) => {
  const { q, clock } = queue();
  for (let i = 0; i < 5; i++) q.times.add(250); // a slow token: the pipeline is two deep
  q.setOpen(true);
  const ids = ["a", "b", "c", "d", "e"];
  const r = enterAll(q, ids, clock.now + 60_000);
  await tick();
  t.same(r.admitted, ["a", "b"], "the token's request and the next one");
  t.equal(q.depth, 5);
  q.signed("a");
  await tick();
  t.same(r.admitted, ["a", "b", "c"], "a signature frees a place");
  r.tickets.get("a")!.done();
  r.tickets.get("b")!.done(); // answered without a Signed (a backend that cannot tell)
  await tick();
  t.same(r.admitted, ["a", "b", "c", "d"], "two unsigned at the signer again");
  q.signed("c");
  await tick();
  t.same(r.admitted, ["a", "b", "c", "d", "e"], "in arrival order");
});

t.test("a fast token gets a deeper pipeline", async (t) => {
  const { q, clock } = queue();
  for (let i = 0; i < 5; i++) q.times.add(1);
  q.setOpen(true);
  const r = enterAll(q, Array.from({ length: 12 }, (_, i) => `r${i}`), clock.now + 60_000);
  await tick();
  t.equal(r.admitted.length, 8, "up to eight at the signer");
});

t.test("closed: requests wait; opened: they go", async (t) => {
  const { q, clock } = queue();
  const r = enterAll(q, ["a"], clock.now + 60_000);
  await tick();
  t.same(r.admitted, []);
  q.setOpen(true);
  await tick();
  t.same(r.admitted, ["a"]);
});

t.test("admission: a request the queue cannot reach before its deadline is refused at once", async (t) => {
  const { q, clock } = queue();
  for (let i = 0; i < 5; i++) q.times.add(1000);
  const r = enterAll(q, ["a", "b", "c", "d"], clock.now + 3_500); // room for three signatures
  await Promise.all(r.settled.slice(3));
  t.same(Object.keys(r.refused), ["d"], "the fourth is refused while the queue is still closed");
  t.equal(r.refused["d"]!.code, "ca.busy");
  t.match(r.refused["d"]!.message, /^CA busy: 3 requests ahead, about 4 s of signing at 1000 ms each, more than the 3\.5 s this request may wait; try again later$/);
  t.equal(q.depth, 3, "the refused request is not queued");
});

t.test("before any measurement nothing is refused as busy", async (t) => {
  const { q, clock } = queue();
  const r = enterAll(q, ["a", "b", "c"], clock.now + 1);
  q.setOpen(true);
  await tick();
  t.same(r.admitted, ["a", "b", "c"]);
});

t.test("a deadline that passes in the queue: dropped, never sent to the signer", async (t) => {
  const { q, clock } = queue();
  for (let i = 0; i < 5; i++) q.times.add(100);
  q.setOpen(true);
  const soon = enterAll(q, ["a", "b"], clock.now + 10_000);
  const late = enterAll(q, ["c"], clock.now + 1_000);
  await tick();
  clock.now += 2_000;
  q.signed("a");
  await Promise.all(late.settled);
  t.equal(late.refused["c"]?.code, "request.expired");
  t.same(soon.admitted, ["a", "b"]);
  t.same(late.admitted, []);
});

t.test("a withdrawn request is dropped; one already at the signer is not", async (t) => {
  const { q, clock } = queue();
  for (let i = 0; i < 5; i++) q.times.add(250);
  q.setOpen(true);
  const r = enterAll(q, ["a", "b", "c"], clock.now + 60_000);
  await tick();
  t.equal(q.withdraw("a"), false, "at the signer already");
  t.equal(q.withdraw("c"), true);
  t.equal(q.withdraw("nope"), false);
  await Promise.all(r.settled.slice(2));
  t.equal(r.refused["c"]?.code, "request.abandoned");
  t.match(r.refused["c"]!.message, /nothing was signed/);
});

t.test("refuseWaiting fails what waits, not what the signer holds", async (t) => {
  const { q, clock } = queue();
  for (let i = 0; i < 5; i++) q.times.add(250);
  q.setOpen(true);
  const r = enterAll(q, ["a", "b", "c"], clock.now + 60_000);
  await tick();
  q.refuseWaiting("token.not_available", "CA token not available");
  await Promise.all(r.settled);
  t.same(r.admitted, ["a", "b"]);
  t.same(Object.keys(r.refused), ["c"]);
  t.equal(r.refused["c"]!.code, "token.not_available");
});

t.test("the watchdog: a signature not finished within SIGN_TIMEOUT fails the requests at the signer and closes the queue", async (t) => {
  keepAlive(t);
  const { q, clock, hung } = queue({ signTimeoutMs: 20 });
  for (let i = 0; i < 5; i++) q.times.add(250);
  q.setOpen(true);
  const r = enterAll(q, ["a", "b", "c"], clock.now + 60_000);
  await tick();
  const aborted = await Promise.allSettled([r.tickets.get("a")!.aborted, r.tickets.get("b")!.aborted]);
  t.same(hung, [["a", "b"]], "onHung names the requests at the signer");
  for (const a of aborted) {
    t.equal(a.status, "rejected");
    t.match((a as PromiseRejectedResult).reason.message, /^CA token did not answer a signature within SIGN_TIMEOUT \(0 s\); the CA replaced its signer, try again$/);
  }
  await tick();
  t.same(r.admitted, ["a", "b"], "the next one waits for the replaced signer");
  q.setOpen(true);
  await tick();
  t.same(r.admitted, ["a", "b", "c"]);
});

t.test("a token that keeps signing does not trip the watchdog", async (t) => {
  keepAlive(t);
  const { q, clock, hung } = queue({ signTimeoutMs: 30 });
  for (let i = 0; i < 5; i++) q.times.add(250);
  q.setOpen(true);
  const r = enterAll(q, ["a", "b", "c", "d"], clock.now + 60_000);
  for (const id of ["a", "b", "c", "d"]) {
    await tick();
    q.signed(id);
    r.tickets.get(id)!.done();
  }
  await new Promise((res) => setTimeout(res, 60));
  t.same(hung, [], "no hang reported");
  t.equal(q.depth, 0);
});

t.test("SignTimes: p50 and max over recent signatures, count of all; the estimate follows the last few", async (t) => {
  const s = new SignTimes();
  t.equal(s.stats(), null);
  t.equal(s.estimate(), undefined);
  for (const x of [250, 260, 240, 2000, 250]) s.add(x);
  t.same(s.stats(), { p50: 250, max: 2000, count: 5 });
  t.equal(s.estimate(), 250, "one slow signature does not move the median");
  for (const x of [1000, 1000, 1000]) s.add(x);
  t.equal(s.estimate(), 1000, "a token that slowed down is seen within a few signatures");
  s.add(Number.NaN);
  s.add(-1);
  t.equal(s.stats()!.count, 8, "nonsense durations are not counted");
});

t.test("a CRL sent behind certificates: its clock starts when the token gets to it, not when it was sent", async (t) => {
  keepAlive(t);
  const { q, clock, hung, reports } = queue();
  for (let i = 0; i < 5; i++) q.times.add(250);
  q.setOpen(true);
  const r = enterAll(q, ["a", "b"], clock.now + 60_000);
  await tick();
  const crl = q.crlSent(30); // a CRL whose own bound is 30 ms
  const crlAborted = crl.aborted.then(
    () => "answered",
    (e: QueueRefusal) => e.message,
  );
  // the token is still at a and b, far longer than the CRL's bound
  await new Promise((res) => setTimeout(res, 80));
  t.same(hung, [], "no hang while the certificates sent before it are being signed");
  q.signed("a");
  q.signed("b");
  t.equal(await crlAborted, "CA token did not answer a CRL signature within 0 s; the CA replaced its signer, try again", "then the CRL's own bound applies");
  t.same(reports.map((h) => [h.crl, h.timeoutMs, h.requestIds]), [[true, 30, []]], "reported as a hung CRL");
  r.tickets.get("a")!.done();
  r.tickets.get("b")!.done();
});

t.test("a certificate sent behind a CRL: its clock starts when the CRL is done", async (t) => {
  keepAlive(t);
  const { q, clock, hung, reports } = queue({ signTimeoutMs: 30 });
  for (let i = 0; i < 5; i++) q.times.add(1);
  q.setOpen(true);
  const crl = q.crlSent(3_600_000); // a large CRL: a long bound of its own
  const r = enterAll(q, ["c"], clock.now + 60_000);
  await tick();
  t.same(r.admitted, ["c"]);
  await new Promise((res) => setTimeout(res, 80));
  t.same(hung, [], "the certificate's SIGN_TIMEOUT does not run while the token signs the CRL");
  crl.done(); // the CRL's answer
  await Promise.allSettled([r.tickets.get("c")!.aborted]);
  t.same(reports.map((h) => [h.crl, h.requestIds]), [[false, ["c"]]], "then it does");
});

t.test("a certificate the signer takes before the CRL sent ahead of it: the CRL's clock starts again when it is signed", async (t) => {
  keepAlive(t);
  const { q, clock, hung, reports } = queue({ signTimeoutMs: 3_600_000 });
  for (let i = 0; i < 5; i++) q.times.add(1);
  q.setOpen(true);
  const crl = q.crlSent(1_000); // the CRL's own bound
  const r = enterAll(q, ["d"], clock.now + 60_000);
  await tick();
  t.same(r.admitted, ["d"]);
  await new Promise((res) => setTimeout(res, 600));
  clock.now += 600;
  q.signed("d"); // the token signed d first (the CRL was still reading the database)
  await new Promise((res) => setTimeout(res, 600));
  clock.now += 600;
  t.same(hung, [], "1.2 s after the CRL was sent, but 0.6 s after the token last finished something: not hung");
  const crlAborted = await crl.aborted.then(
    () => "answered",
    (e: QueueRefusal) => e.code,
  );
  t.equal(crlAborted, "token.hung", "a CRL the token then does not finish is still found hung");
  t.same(reports.map((h) => h.crl), [true], "reported as a hung CRL");
  r.tickets.get("d")!.done();
});

t.test("the token's order is the order sent: a request admitted but not yet sent does not start a clock", async (t) => {
  keepAlive(t);
  const { q, clock, hung } = queue({ signTimeoutMs: 30 });
  for (let i = 0; i < 5; i++) q.times.add(1);
  q.setOpen(true);
  const admitted: Ticket[] = [];
  void q.enter("x", clock.now + 60_000).then((tk) => admitted.push(tk));
  await tick();
  t.equal(admitted.length, 1, "admitted");
  const crl = q.crlSent(3_600_000); // sent before x goes out: the token takes the CRL first
  await new Promise((res) => setTimeout(res, 80));
  t.same(hung, [], "x, not sent, has no clock; the CRL ahead of it has its own");
  admitted[0]!.sent();
  await new Promise((res) => setTimeout(res, 80));
  t.same(hung, [], "x, sent after the CRL, waits for it");
  crl.done();
  await Promise.allSettled([admitted[0]!.aborted]);
  t.same(hung, [["x"]], "x's clock started when the CRL was done");
});

t.test("the CRL's Signed: the token is done with it, the next clock starts then, not at the CRL's answer", async (t) => {
  keepAlive(t);
  const { q, clock, reports } = queue({ signTimeoutMs: 30 });
  for (let i = 0; i < 5; i++) q.times.add(1);
  q.setOpen(true);
  const crl = q.crlSent(30);
  const crlAborted = crl.aborted.then(
    () => "answered",
    (e: QueueRefusal) => e.code,
  );
  const r = enterAll(q, ["e"], clock.now + 60_000);
  await tick();
  q.crlSigned(); // its answer waits for the CRL's files, and for e if the signer read both at once
  await Promise.allSettled([r.tickets.get("e")!.aborted]);
  t.same(reports.map((h) => [h.crl, h.requestIds]), [[false, ["e"]]], "e's clock started at the CRL's Signed (no answer from the CRL yet)");
  crl.done();
  t.equal(await Promise.race([crlAborted, tick().then(() => "pending")]), "pending", "the CRL, signed, was not found hung");
});

// The queue's debug lines are on the per-certificate path: with debug off they must cost nothing,
// not even the field objects built for them (services/common/log.ts' enabled()). Observed through
// the real logger, whose debug() records whether it was called at all. Before the fix every
// signature called debug() with a fresh field object at any level.
t.test("debug lines: not even called when debug is off; written when it is on", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => {
    setLogSink(process.stderr);
    setLogLevel("info");
  });
  const real = createLogger("kernel.sign-queue");
  const debugCalls: string[] = [];
  const log: Logger = { ...real, debug: (m, f) => (debugCalls.push(m), real.debug(m, f)) };
  const run = async (): Promise<void> => {
    const clock = { now: 1_000_000 };
    const q = new SignQueue({ signTimeoutMs: 3_600_000, onHung: () => undefined, now: () => clock.now, log });
    t.teardown(() => q.stop());
    q.setOpen(true);
    const r = enterAll(q, ["a", "b"], clock.now + 60_000);
    await tick();
    q.signed("a");
    r.tickets.get("a")!.done();
    const crl = q.crlSent(1_000);
    q.signed("b");
    r.tickets.get("b")!.done();
    q.crlSigned();
    crl.done();
    q.stop();
  };
  setLogLevel("info");
  await run();
  t.same(debugCalls, [], "debug off: no debug call, so no field object built");
  t.same(lines, [], "and nothing written");
  setLogLevel("debug");
  await run();
  t.ok(debugCalls.length >= 6, `debug on: the calls are made (${debugCalls.join(", ")})`);
  const written = lines.map((l) => JSON.parse(l) as { msg: string; request?: string; timeoutMs?: number });
  t.match(written, [{ msg: "sign queue: sent", request: "a" }], "the lines are written with their fields");
  t.ok(written.some((w) => w.msg === "sign queue: clock started" && w.request === "CRL" && w.timeoutMs === 1_000), "the CRL's clock with its bound");
  t.ok(written.some((w) => w.msg === "sign queue: CRL signed"), "the CRL's Signed");
});

/** Runs `fn` (synchronous queue calls) and counts the timers it arms and clears. */
function timerCalls(fn: () => void): { set: number; cleared: number } {
  const calls = { set: 0, cleared: 0 };
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    calls.set++;
    return realSet(...args);
  }) as typeof setTimeout;
  globalThis.clearTimeout = ((timer: Parameters<typeof clearTimeout>[0]) => {
    calls.cleared++;
    realClear(timer);
  }) as typeof clearTimeout;
  try {
    fn();
  } finally {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
  }
  return calls;
}

// Under load the queue changes with every request (entered, admitted, sent, answered) while the
// token stays at the same work: the watchdog's timer for it stays as it is. Only a new head, or
// the token finishing something (its clock starts again), arms it anew. Before the fix every
// change cleared the timer and set another.
t.test("the watchdog's timer is kept while the token's current work and its clock are unchanged", async (t) => {
  const { q, clock, hung } = queue({ signTimeoutMs: 3_600_000 });
  for (let i = 0; i < 5; i++) q.times.add(1); // a fast token: a deep pipeline
  q.setOpen(true);
  const r = enterAll(q, ["a"], clock.now + 60_000);
  await tick();
  t.same(r.admitted, ["a"], "a at the token");
  const later: Ticket[] = [];
  t.same(
    timerCalls(() => {
      for (const id of ["b", "c", "d"]) void q.enter(id, clock.now + 60_000).then((tk) => later.push(tk));
    }),
    { set: 0, cleared: 0 },
    "requests entered and admitted behind it: the timer stays",
  );
  await tick();
  t.equal(later.length, 3, "admitted");
  t.same(timerCalls(() => later.forEach((tk) => tk.sent())), { set: 0, cleared: 0 }, "sent behind it: the timer stays");
  let crl: Ticket | undefined;
  t.same(timerCalls(() => (crl = q.crlSent(60_000))), { set: 0, cleared: 0 }, "a CRL sent behind it: the timer stays");
  t.same(timerCalls(() => q.signed("a")), { set: 1, cleared: 1 }, "a signed: the next one's clock, one timer");
  t.same(timerCalls(() => r.tickets.get("a")!.done()), { set: 0, cleared: 0 }, "a answered, b still at the token: the timer stays");
  clock.now += 5;
  t.same(timerCalls(() => q.signed("c")), { set: 1, cleared: 1 }, "the token finished something else (another order): the clock starts again, one timer");
  for (const id of ["b", "d"]) q.signed(id);
  t.same(timerCalls(() => q.crlSigned()), { set: 0, cleared: 1 }, "nothing left at the token: the timer goes");
  crl!.done();
  for (const tk of later) tk.done();
  t.same(hung, [], "no hang reported");
  t.equal(q.depth, 0);
});

// One way to guard a debug line on the per-certificate path, the one services/common/log.ts
// documents and issuing and the signer use: `if (log.enabled("debug")) log.debug(...)`. Before
// the fix the sign queue had its own (`this.debugLog()?.debug(...)`, its logger optional).
t.test("the sign queue's debug lines are guarded as log.ts documents", async (t) => {
  const source = (file: string): string => readFileSync(new URL(`../../../services/${file}`, import.meta.url), "utf8");
  const documented = /`(if \(log\.enabled\("debug"\)\) log\.debug\(\.\.\.\))`/.exec(source("common/log.ts"))?.[1];
  t.equal(documented, 'if (log.enabled("debug")) log.debug(...)', "log.ts documents the guard");
  const calls = source("kernel/sign-queue.ts").split("\n").filter((l) => /\.debug\(/.test(l));
  t.ok(calls.length >= 5, `the sign queue has its debug lines (${calls.length})`);
  for (const l of calls) t.match(l, /^\s*if \(this\.log\.enabled\("debug"\)\) this\.log\.debug\("/, `guarded as documented: ${l.trim()}`);
});
