// A service that cannot start says why and ends its channel in the same turn of the event loop
// (services/common/service.ts sayWhy): every frame sent before the end must reach the peer, the
// ones the channel holds back to write together at the turn's end included.
import t from "tap";
import type { Frame } from "../../proto/wire.js";
import { Channel } from "../../services/common/channel.js";
import { socketPair } from "../fixtures/socket-pair.js";

t.test("frames sent in the same turn as end() all arrive, in order, before the end", async (t) => {
  const [a, b, cleanup] = await socketPair();
  const service = new Channel(a, "kernel");
  const kernel = new Channel(b, "signer");
  t.teardown(() => {
    kernel.close("done");
    cleanup();
  });
  const got: Frame[] = [];
  kernel.onFrame((f) => got.push(f));
  const closed = new Promise<string>((resolve) => kernel.onClose((reason) => resolve(reason)));
  service.send("ping", { nonce: 1 });
  service.send("ping", { nonce: 2 });
  service.send("failure", { code: "db.corrupt", message: "index.txt:2: duplicate serial 0A" });
  await new Promise<void>((resolve) => service.end(resolve));
  t.equal(await closed, "peer closed the channel");
  t.same(
    got.map((f) => f.type),
    ["ping", "ping", "failure"],
    "all three frames, in order",
  );
  t.equal((got[2] as Frame<"failure">).message.message, "index.txt:2: duplicate serial 0A");
});
