// services/common/long-timer.ts: a timeout longer than setTimeout's 2^31-1 ms waits in steps
// instead of firing after 1 ms.
import t from "tap";
import { LongTimeout, MAX_TIMER_MS, setLongTimeout } from "../../services/common/long-timer.js";

const liveTimers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

t.test("a delay longer than one step fires once, at its time, not at the first step", async (t) => {
  const start = performance.now();
  const fired: number[] = [];
  await new Promise<void>((resolve) => {
    new LongTimeout(() => {
      fired.push(performance.now() - start);
      resolve();
    }, 100, 30);
  });
  await new Promise((r) => setTimeout(r, 20));
  t.equal(fired.length, 1, "once");
  // a step taken for the end would show at 30 ms (the first) or 90 ms (the last whole one). Like
  // any setTimeout, the last step counts from libuv's loop time, which lags performance.now() by
  // as long as the loop was busy (a loaded machine, tap's parallel files): 5 ms of allowance
  t.ok(fired[0]! >= 95, `at its time (${fired[0]!.toFixed(1)} ms, 100 ms asked): the steps of 30 ms did not end it`);
});

t.test("30 days: no TimeoutOverflowWarning, nothing fired; clear() and unref() act on the step that is armed", async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.name);
  process.on("warning", onWarning);
  t.teardown(() => process.off("warning", onWarning));
  let fired = false;
  const before = liveTimers();
  const timer = setLongTimeout(() => (fired = true), 30 * 86_400_000);
  t.equal(liveTimers() - before, 1, "one timer, referenced");
  timer.unref();
  t.equal(liveTimers() - before, 0, "unref: it no longer keeps the process alive");
  timer.ref();
  t.equal(liveTimers() - before, 1, "ref again");
  await new Promise((r) => setTimeout(r, 30));
  t.equal(fired, false, "not fired after 1 ms");
  timer.clear();
  t.equal(liveTimers() - before, 0, "cleared");
  t.same(warnings, [], "no warning");
  t.equal(MAX_TIMER_MS, 2 ** 31 - 1);
});
