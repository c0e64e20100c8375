// A draining channel (its peer's process has exited; a descendant may still hold the socket):
// nothing more is sent, and a send fails the way a send to a closed channel does, while what the
// peer wrote before is still read, answers to pending requests included, until the socket ends.
import t from "tap";
import type { Frame } from "../../proto/wire.js";
import { Channel } from "../../services/common/channel.js";
import { ProtocolError } from "../../services/common/errors.js";
import { socketPair } from "../fixtures/socket-pair.js";

async function pair(t: { teardown: (fn: () => void) => void }): Promise<{ kernel: Channel; service: Channel }> {
  const [a, b, cleanup] = await socketPair();
  const kernel = new Channel(a, "notifier");
  const service = new Channel(b, "kernel");
  t.teardown(() => {
    kernel.close("done");
    service.close("done");
    cleanup();
  });
  return { kernel, service };
}

/** What a send on a channel does now: the error it throws, or "sent". */
function trySend(ch: Channel, nonce: number): ProtocolError | "sent" {
  try {
    ch.send("ping", { nonce });
    return "sent";
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw err;
  }
}

t.test("a send while draining fails as a send to a closed channel does; the peer gets nothing more", async (t) => {
  const { kernel, service } = await pair(t);
  const got: Frame[] = [];
  service.onFrame((f) => got.push(f));
  kernel.send("ping", { nonce: 1 });
  await new Promise((r) => setTimeout(r, 50));
  t.same(got.map((f) => (f as Frame<"ping">).message.nonce), [1], "sent before draining: delivered");

  kernel.drain("notifier exited");
  t.ok(kernel.draining, "draining");
  t.notOk(kernel.writable, "not writable");
  t.notOk(kernel.closed, "not closed: reads go on");
  const whileDraining = trySend(kernel, 2);
  t.not(whileDraining, "sent", "send throws");
  const e = whileDraining as ProtocolError;
  t.equal(e.code, "protocol.closed", "the code of a send to a closed channel");
  t.match(e.message, /^channel to notifier is closed for sending: notifier exited$/);
  await t.rejects(kernel.request("ping", { nonce: 3 }, "pong", 1_000), { code: "protocol.closed" }, "a request fails at once");
  kernel.reply({ id: 7, replyTo: 0, type: "ping", message: { nonce: 4 } } as Frame, "pong", { nonce: 4 });

  // the same failure as on a closed channel
  const { kernel: other } = await pair(t);
  other.close("gone");
  const closedErr = trySend(other, 5) as ProtocolError;
  t.equal(closedErr.code, e.code, "same code as a send to a closed channel");
  t.equal(closedErr.constructor, e.constructor, "same error class");

  await new Promise((r) => setTimeout(r, 100));
  t.same(got.map((f) => (f as Frame<"ping">).message.nonce), [1], "the peer read nothing sent after drain()");
});

t.test("frames sent in the turn drain() was called are not written either", async (t) => {
  const { kernel, service } = await pair(t);
  const got: number[] = [];
  service.onFrame((f) => got.push((f as Frame<"ping">).message.nonce));
  kernel.send("ping", { nonce: 1 }); // the turn's first frame leaves at once
  kernel.send("ping", { nonce: 2 }); // held for the turn's end
  kernel.drain("notifier is being killed");
  await new Promise((r) => setTimeout(r, 100));
  t.same(got, [1], "the held frame was dropped");
});

t.test("while draining, what the peer wrote is still read: its messages and answers to pending requests", async (t) => {
  const { kernel, service } = await pair(t);
  const asked: Frame[] = [];
  service.onFrame((f) => asked.push(f));
  const answer = kernel.request("ping", { nonce: 9 }, "pong", 5_000);
  while (asked.length < 1) await new Promise((r) => setTimeout(r, 5));
  const frames: Frame[] = [];
  kernel.onFrame((f) => frames.push(f));
  kernel.drain("notifier exited");
  service.send("hookFailed", { hook: "/etc/etoken-ca/hook", event: "ready", message: "exit 1" });
  service.reply(asked[0]!, "pong", { nonce: 9 });
  const pong = await answer;
  t.equal(pong.message.nonce, 9, "the pending request got its answer");
  t.same(frames.map((f) => f.type), ["hookFailed"], "the peer's message was delivered");
  const closed = new Promise<string>((resolve) => kernel.onClose((reason) => resolve(reason)));
  service.socket.end();
  t.equal(await closed, "peer closed the channel", "closed at the socket's end");
  t.notOk(kernel.draining, "closed, no longer draining");
  t.notOk(kernel.writable);
});

t.test("a request still pending when the drained channel closes fails as closed", async (t) => {
  const { kernel, service } = await pair(t);
  service.onFrame(() => undefined);
  const answer = kernel.request("ping", { nonce: 1 }, "pong", 5_000);
  kernel.drain("notifier exited");
  service.socket.end();
  await t.rejects(answer, { code: "protocol.closed" });
});
