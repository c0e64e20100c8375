// The kernel's status file: counter changes written at most once a second (not once per
// certificate), what must not wait written at once (services/common/throttle.ts).
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Throttle, type Clock } from "../../services/common/throttle.js";
import { STATUS_FILE_MODE, writeStatus, type StatusSnapshot } from "../../services/common/status-file.js";

/** A clock the test moves by hand; timers fire when it passes them. */
function fakeClock(): Clock & { advance(ms: number): void; pending(): number } {
  let now = 1_000_000;
  let timers: { at: number; fn: () => void }[] = [];
  return {
    now: () => now,
    after(fn, ms) {
      const timer = { at: now + ms, fn };
      timers.push(timer);
      return () => {
        timers = timers.filter((x) => x !== timer);
      };
    },
    advance(ms) {
      now += ms;
      const due = timers.filter((x) => x.at <= now);
      timers = timers.filter((x) => x.at > now);
      for (const x of due) x.fn();
    },
    pending: () => timers.length,
  };
}

t.test("a burst of requests runs the task once at once and once when the interval is over", async (t) => {
  const clock = fakeClock();
  let runs = 0;
  const th = new Throttle(() => runs++, 1000, clock);
  th.request();
  t.equal(runs, 1, "the first request after a quiet interval runs at once");
  for (let i = 0; i < 100; i++) {
    clock.advance(5); // a certificate every 5 ms
    th.request();
  }
  t.equal(runs, 1, "100 requests within the second: not run again yet");
  t.equal(clock.pending(), 1, "one run pending, not one per request");
  clock.advance(500);
  t.equal(runs, 2, "run once when the second is over");
  t.equal(clock.pending(), 0);
  clock.advance(5000);
  t.equal(runs, 2, "nothing requested: nothing run");
});

t.test("runNow runs at once, takes the place of a pending run and restarts the interval", async (t) => {
  const clock = fakeClock();
  let runs = 0;
  const th = new Throttle(() => runs++, 1000, clock);
  th.request();
  clock.advance(10);
  th.request();
  t.equal(clock.pending(), 1);
  th.runNow(); // a state change
  t.equal(runs, 2, "written at once");
  t.equal(clock.pending(), 0, "the pending run is dropped: what it would write is written");
  clock.advance(10);
  th.request();
  t.equal(runs, 2, "a counter change right after waits for the interval");
  clock.advance(1000);
  t.equal(runs, 3);
  th.request();
  clock.advance(100);
  th.cancel(); // the kernel stops
  clock.advance(5000);
  t.equal(runs, 3, "cancelled: not run");
});

t.test("the status file is replaced whole, 0644 whatever the umask, no temporary file left", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-status-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "status.json");
  fs.writeFileSync(file, "old\n", { mode: 0o600 });
  const snapshot = { version: 1, kernelPid: 1, state: "READY", counters: { issued: 3 } } as unknown as StatusSnapshot;
  const old = process.umask(0o077);
  try {
    writeStatus(file, snapshot);
  } finally {
    process.umask(old);
  }
  t.same(JSON.parse(fs.readFileSync(file, "utf8")), snapshot);
  t.equal(fs.statSync(file).mode & 0o777, STATUS_FILE_MODE);
  t.same(fs.readdirSync(dir), ["status.json"]);
});
