// A late answer (after the request timed out) goes to the request's onLateAnswer: the kernel
// revokes a certificate the signer recorded after the kernel stopped waiting for it.
import t from "tap";
import type { Frame } from "../../proto/wire.js";
import { Channel } from "../../services/common/channel.js";
import { socketPair } from "../fixtures/socket-pair.js";

async function pair(): Promise<[Channel, Channel, () => void]> {
  const [client, server, cleanup] = await socketPair();
  return [new Channel(client, "signer"), new Channel(server, "kernel"), cleanup];
}

t.test("a late answer reaches onLateAnswer; without one it is dropped quietly", async (t) => {
  const [kernel, signer, cleanup] = await pair();
  t.teardown(() => {
    kernel.close("done");
    signer.close("done");
    cleanup();
  });
  const held: Frame[] = [];
  signer.onFrame((f) => held.push(f));
  const late: Frame[] = [];
  const withHandler = kernel.request("ping", { nonce: 1 }, "pong", 20, { onLateAnswer: (f) => late.push(f) });
  const without = kernel.request("ping", { nonce: 2 }, "pong", 20);
  await t.rejects(withHandler, /did not answer ping within 20 ms/);
  await t.rejects(without, /did not answer ping within 20 ms/);
  // on a loaded machine the requests can reach the signer after their 20 ms are over
  while (held.length < 2) await new Promise((r) => setTimeout(r, 5));
  for (const f of held) signer.reply(f, "pong", { nonce: (f as Frame<"ping">).message.nonce });
  while (late.length < 1) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 100)); // time for a second one, which must not come
  t.equal(late.length, 1, "one late answer handed over");
  t.equal((late[0] as Frame<"pong">).message.nonce, 1, "the answer to the request that asked for it");
  t.notOk(kernel.closed, "late answers are not a protocol violation");
});
