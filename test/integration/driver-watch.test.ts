// The bench's in-process driver (bench/lib/spool-driver.ts) must wait the way etoken-ca-client
// waits, or (b) and (c) time another client: compared here, watch by watch, with the real client
// waiting in the same spool directory (the kernel's inotify masks, /proc/PID/fdinfo). Before, the
// driver watched the whole directory with fs.watch's mask from its start, and the client asked
// for one kind of event on one name (test/integration/client-watch.test.ts).
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import { SpoolDriver } from "../../bench/lib/spool-driver.js";
import { REQUEST_LINK, resultName } from "../../services/common/spool-protocol.js";
import { flockQueue } from "../fixtures/flock-queue.js";
import { IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, inotifyMasks, NAME_EVENTS } from "../fixtures/inotify.js";
import { makeCsr, myproxyInput, runClient, SpoolHarness, type ClientRun } from "../fixtures/spool-harness.js";

const hex = (ms: number[]): string => ms.map((m) => `0x${m.toString(16)}`).join(", ") || "none";

/** The watches this process holds beyond `baseline` (made before the driver). */
function newMasks(baseline: number[]): number[] {
  const left = [...baseline];
  return inotifyMasks(process.pid).filter((m) => {
    const i = left.indexOf(m);
    if (i < 0) return true;
    left.splice(i, 1);
    return false;
  });
}

t.test("the driver waits for the lock and for its result with the client's watches, and gets its result through them", async (t) => {
  const h = new SpoolHarness({ clientTimeout: "30" }); // no spool: the test holds and takes the lock
  const clients: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of clients) if (c.exitCode === null) c.kill("SIGKILL");
    h.cleanup();
  });
  const { csrPem } = makeCsr(h.root, "driver");
  const link = path.join(h.spoolDir, REQUEST_LINK);
  const target = (): string | undefined => {
    try {
      return fs.readlinkSync(link);
    } catch {
      return undefined;
    }
  };
  const startClient = async (): Promise<{ client: ChildProcess; run: Promise<ClientRun> }> => {
    let client: ChildProcess | undefined;
    const run = runClient(h, myproxyInput({}, csrPem), { onSpawn: (c) => clients.push((client = c)) });
    await h.until(() => client?.pid !== undefined, 10_000, "the client");
    return { client: client!, run };
  };

  const baseline = inotifyMasks(process.pid);
  const driver = new SpoolDriver(h);
  t.teardown(() => driver.close());
  t.same(newMasks(baseline), [], "no watch before a request (the client has none before its request either)");

  // 1. the lock is held by someone else: the client heads the queue in front of it and watches
  // it; the driver queues behind the client as a second client would, and watches nothing until
  // it heads the queue (services/common/spool-waiter.ts)
  fs.symlinkSync("req.SomeoneElse0001", link);
  const first = await startClient();
  await h.until(() => inotifyMasks(first.client.pid!).length > 0, 20_000, "the client's lock watch");
  const clientLock = inotifyMasks(first.client.pid!);
  let issued: ReturnType<SpoolDriver["issue"]> | undefined = driver.issue("jdoe", csrPem);
  void issued.catch(() => {});
  await h.until(() => flockQueue(h.spoolDir).waiters.includes(process.pid), 10_000, "the driver in the queue");
  t.same(flockQueue(h.spoolDir), { holder: first.client.pid, waiters: [process.pid] }, "the driver queued behind the client");
  t.same(newMasks(baseline), [], "and watches nothing while queued, as a queued client");
  first.client.kill("SIGTERM"); // abandons while waiting: leaves the lock alone, and the queue
  await first.run;
  await h.until(() => newMasks(baseline).length > 0, 10_000, "the driver's lock watch");
  const driverLock = newMasks(baseline);
  t.same(driverLock, clientLock, `heading the queue: the driver's watches are the client's (driver ${hex(driverLock)}, client ${hex(clientLock)})`);
  t.equal(driverLock.length === 1 && driverLock[0]! & NAME_EVENTS, IN_DELETE | IN_MOVED_FROM, "one watch, for names going away");
  fs.unlinkSync(link);
  await h.until(() => /^req\.[A-Za-z0-9]{16}$/.test(target() ?? ""), 10_000, "the driver's lock");
  const id = target()!;
  t.ok(fs.existsSync(path.join(h.spoolDir, id)), `the driver took the lock once it was free, for its request file (${id})`);

  // 2. waiting for the result: the test takes the driver's link as the spool would, so that a
  // client can take the lock and wait for its own result beside the driver
  await h.until(() => newMasks(baseline).some((m) => (m & NAME_EVENTS) === (IN_CREATE | IN_MOVED_TO)), 10_000, "the driver's result watch");
  fs.unlinkSync(link);
  const second = await startClient();
  await h.until(() => (target() ?? id) !== id && inotifyMasks(second.client.pid!).some((m) => (m & NAME_EVENTS) === (IN_CREATE | IN_MOVED_TO)), 20_000, "the client's result watch");
  const clientResult = inotifyMasks(second.client.pid!);
  const driverResult = newMasks(baseline);
  t.same(driverResult, clientResult, `waiting for the result: the driver's watches are the client's (driver ${hex(driverResult)}, client ${hex(clientResult)})`);
  t.equal(driverResult.length, 1, "the lock's watch was replaced by the result's");

  // 3. the result appears (in one step, as the spool publishes it): the driver wakes and reads it
  const text = "-----BEGIN CERTIFICATE-----\nbm90IG9uZQ==\n-----END CERTIFICATE-----\n"; // the shape the client's tryReadResult accepts
  const tmp = path.join(h.spoolDir, "publish.tmp");
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, path.join(h.spoolDir, resultName(id)));
  const r = await issued;
  issued = undefined;
  t.equal(r.id, id);
  t.equal(r.text, text, "the driver read its result");
  t.ok(r.ok);
  // the addon closes its inotify descriptor once libuv has let go of it (the next loop turn)
  await h.until(() => newMasks(baseline).length === 0, 5_000, "the driver's watch to close").catch(() => {});
  t.same(newMasks(baseline), [], "and its watch is gone");
  second.client.kill("SIGTERM");
  await second.run;
});
