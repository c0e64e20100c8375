// A dead service's socket may outlive it (a descendant holds it); the supervisor reads it to its
// end (5 s at most) before it handles the death, so that what the service wrote before dying
// counts. Meanwhile the kernel must write nothing more into that socket: the service is not up,
// its channel drains (services/common/channel.ts), a send fails as on a closed channel, and the
// descendant reads nothing. Before the fix the kernel still saw the service up and sent to it.
import t from "tap";
import * as path from "node:path";
import * as fs from "node:fs";
import { ProtocolError } from "../../services/common/errors.js";
import { SERVICE_NAMES } from "../../services/common/service-table.js";
import { waitFor } from "../fixtures/server.js";
import { standInKernel } from "../fixtures/stand-in-kernel.js";

t.test("while a dead notifier's socket drains, the kernel sends nothing into it", async (t) => {
  // seen when the descendant's frame arrives, i.e. after the notifier's exit and before its death is handled
  let duringDrain: { up: boolean; record: boolean; sendError: unknown } | undefined;
  const { supervisor, lines, shared } = standInKernel(t, { notifier: "linger" }, ({ supervisor, kernel }) => {
    supervisor.on("frame", (name, frame) => {
      if (name !== "notifier" || frame.type !== "hookFailed" || duringDrain) return;
      const record = supervisor.all().find((r) => r.name === "notifier")!;
      let sendError: unknown;
      try {
        record.channel!.send("ping", { nonce: 99 });
      } catch (err) {
        sendError = err;
      }
      duringDrain = { up: supervisor.isUp("notifier"), record: record.up, sendError };
      // an event the kernel tells the notifier about, at this very moment
      kernel.notify("drain-test", "an event while the notifier's socket drains", {});
    });
  });
  const readFile = path.join(shared, "read");
  await waitFor("the descendant's frame, written after the notifier exited", () => duringDrain, 20_000);
  await waitFor("the descendant ended the socket", () => (fs.existsSync(readFile) && fs.readFileSync(readFile, "utf8").includes("end\n")) || undefined, 20_000);
  const notifier = await waitFor("the notifier restarted and up", () => {
    const r = supervisor.all().find((x) => x.name === "notifier")!;
    return r.restarts >= 1 && r.up ? r : undefined;
  }, 20_000);
  const all = lines.join("");
  t.match(all, /"msg":"hook failed".*"hook":"lingering-descendant"/, "what the dead service's socket still carried was read and handled");
  t.equal(duringDrain!.record, true, "its death was not handled yet (the socket was still being read)");
  t.equal(duringDrain!.up, false, "the supervisor no longer offers the dead notifier's channel");
  t.ok(duringDrain!.sendError instanceof ProtocolError, `a send into the draining channel fails: ${String(duringDrain!.sendError)}`);
  t.equal((duringDrain!.sendError as ProtocolError | undefined)?.code, "protocol.closed", "as a send to a closed channel");
  const read = fs.readFileSync(readFile, "utf8").split("\n").filter((l) => l && l !== "end");
  t.same(read, [], "the descendant holding the dead notifier's socket read nothing the kernel wrote after the exit");
  t.match(notifier.lastError ?? "", /exited with status 0/, `the death was handled as an exit: ${notifier.lastError}`);
  t.ok(SERVICE_NAMES.filter((n) => n !== "notifier").every((n) => supervisor.all().find((r) => r.name === n)!.restarts === 0), "no other service restarted");
});
