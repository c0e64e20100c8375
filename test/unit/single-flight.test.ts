// singleFlight: one run at a time, and calls during a run ask for exactly one more run.
import t from "tap";
import { singleFlight } from "../../services/common/single-flight.js";

/** A task whose runs finish when the test says so. */
function gatedTask(): { task: () => Promise<void>; starts: number; finish: () => Promise<void> } {
  const gates: (() => void)[] = [];
  const state = {
    starts: 0,
    task: (): Promise<void> => {
      state.starts++;
      return new Promise<void>((resolve) => gates.push(resolve));
    },
    finish: async (): Promise<void> => {
      gates.shift()?.();
      await new Promise((r) => setImmediate(r));
    },
  };
  return state;
}

t.test("calls during a run start exactly one more run after it, none more", async (t) => {
  const g = gatedTask();
  const run = singleFlight(() => g.task(), (err) => t.fail(String(err)));
  run();
  run();
  run();
  run();
  t.equal(g.starts, 1, "one run in flight");
  await g.finish();
  t.equal(g.starts, 2, "the calls made during it asked for one more");
  await g.finish();
  t.equal(g.starts, 2, "no call during the second run: no third");
  run();
  t.equal(g.starts, 3, "idle again: a call runs at once");
  await g.finish();
});

t.test("a failed run goes to onError and does not stop the next", async (t) => {
  const errors: unknown[] = [];
  let runs = 0;
  const run = singleFlight(async () => {
    runs++;
    if (runs === 1) throw new Error("first run fails");
  }, (err) => errors.push(err));
  run();
  run();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(errors.length, 1);
  t.match(String(errors[0]), /first run fails/);
  t.equal(runs, 2, "the call made during the failed run still ran");
});
