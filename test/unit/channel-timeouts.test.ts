// Request timeouts (services/common/channel.ts): one timer per channel for every pending request,
// armed for the earliest deadline, with each request's own timeout and message as before.
import t, { type Test } from "tap";
import type { Frame } from "../../proto/wire.js";
import { Channel } from "../../services/common/channel.js";
import { socketPair } from "../fixtures/socket-pair.js";

async function pair(t: Test): Promise<[Channel, Channel]> {
  const [client, server, cleanup] = await socketPair();
  const kernel = new Channel(client, "monitor");
  const service = new Channel(server, "kernel");
  t.teardown(() => {
    kernel.close("done");
    service.close("done");
    cleanup();
  });
  return [kernel, service];
}

/** Timers keeping the event loop alive now. */
const liveTimers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

t.test("a hundred pending requests on a channel make one timer, not a hundred", async (t) => {
  const [kernel, service] = await pair(t);
  const asked: Frame[] = [];
  service.onFrame((f) => asked.push(f));
  const before = liveTimers();
  const answers = Array.from({ length: 100 }, (_, i) => kernel.request("presenceCheck", { epoch: i + 1 }, "presence", 60_000));
  t.equal(liveTimers() - before, 1, "one timer for the channel's 100 requests");
  while (asked.length < 100) await new Promise((r) => setTimeout(r, 5));
  for (const f of asked) service.reply(f, "presence", { present: true, epoch: (f as Frame<"presenceCheck">).message.epoch, serial: "", label: "" });
  const got = await Promise.all(answers);
  t.same(
    got.map((f) => f.message.epoch),
    Array.from({ length: 100 }, (_, i) => i + 1),
    "every request got its own answer",
  );
  t.equal(liveTimers() - before, 0, "nothing pending: the channel's timer no longer keeps the process alive");
});

t.test("each request times out after its own timeout, with its own message, in deadline order", async (t) => {
  const [kernel, service] = await pair(t);
  const asked: Frame[] = [];
  service.onFrame((f) => asked.push(f));
  const order: string[] = [];
  const track = (p: Promise<unknown>, name: string): Promise<unknown> =>
    p.then(
      () => order.push(`${name} answered`),
      (e: Error) => order.push(`${name}: ${e.message}`),
    );
  const slow = track(kernel.request("ping", { nonce: 1 }, "pong", 300), "slow");
  const fast = track(kernel.request("ping", { nonce: 2 }, "pong", 50), "fast");
  const answered = track(kernel.request("ping", { nonce: 3 }, "pong", 100), "answered");
  const middle = track(kernel.request("getSignerStatus", {}, "signerStatus", 150), "middle");
  const forever = kernel.request("ping", { nonce: 4 }, "pong", 0); // no timeout
  while (asked.length < 5) await new Promise((r) => setTimeout(r, 5));
  service.reply(asked.find((f) => f.type === "ping" && f.message.nonce === 3)!, "pong", { nonce: 3 });
  await Promise.all([slow, fast, answered, middle]);
  t.same(order, [
    "answered answered",
    "fast: monitor did not answer ping within 50 ms",
    "middle: monitor did not answer getSignerStatus within 150 ms",
    "slow: monitor did not answer ping within 300 ms",
  ]);
  // a request without a timeout still gets its answer after the others timed out
  service.reply(asked.find((f) => f.type === "ping" && f.message.nonce === 4)!, "pong", { nonce: 4 });
  t.equal((await forever).message.nonce, 4, "no timeout: waits for its answer");
  // the answer to a request that timed out is late, not a violation
  service.reply(asked.find((f) => f.type === "ping" && f.message.nonce === 2)!, "pong", { nonce: 2 });
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(kernel.closed, "a late answer does not close the channel");
});

t.test("a request sent while the timer waits for a later deadline gets the earlier one", async (t) => {
  const [kernel, service] = await pair(t);
  service.onFrame(() => undefined);
  const before = liveTimers();
  const late = kernel.request("ping", { nonce: 1 }, "pong", 10_000);
  const soon = kernel.request("ping", { nonce: 2 }, "pong", 30);
  await t.rejects(soon, /did not answer ping within 30 ms/);
  kernel.close("done");
  await t.rejects(late, /closed: done/, "the rest fail when the channel closes");
  t.equal(liveTimers(), before, "a closed channel leaves no timer");
});
