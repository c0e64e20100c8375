// What wakes etoken-ca-client while it waits (issue 20, fifth round): the kernel wakes a process
// for every event its inotify watch asks for, whatever its code does with it after. fs.watch asks
// for every change in the directory, so a waiting client woke for each step of its own request,
// of the spool's publication and, under load, of every other client's request. The client now
// asks for names appearing while it waits for its result, names going away while another request
// holds the lock, and filters to the one name it waits for (native/spool-watch).
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import type { Frame } from "../../proto/wire.js";
import { REQUEST_LINK } from "../../services/common/spool-protocol.js";
import { IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, inotifyMasks, NAME_EVENTS } from "../fixtures/inotify.js";
import { makeCsr, myproxyInput, runClient, SpoolHarness } from "../fixtures/spool-harness.js";

const hex = (m: number | undefined): string => `0x${(m ?? 0).toString(16)}`;

t.test("waiting for its result, the client is woken by names appearing only", async (t) => {
  const h = new SpoolHarness();
  t.teardown(async () => {
    await h.stop();
    h.cleanup();
  });
  await h.start();
  const { csrPem } = makeCsr(h.root, "watch");
  let held: Frame<"issueRequest"> | undefined;
  h.onIssue = (f) => {
    held = f;
  };
  let client: ChildProcess | undefined;
  const run = runClient(h, myproxyInput({}, csrPem), { onSpawn: (c) => (client = c) });
  await h.until(() => held !== undefined, 20_000, "the request at the kernel");
  await h.until(() => inotifyMasks(client!.pid!).length > 0, 10_000, "the client's watch");
  const masks = inotifyMasks(client!.pid!);
  t.equal(masks.length, 1, "one inotify watch");
  t.equal(masks[0]! & NAME_EVENTS, IN_CREATE | IN_MOVED_TO, `names created or renamed in, nothing else (mask ${hex(masks[0])}: before, fs.watch's 0xfc6 woke it for every write, mode change and removal)`);
  const cert = h.makeCertificate(held!.message.publicKey, held!.message.username);
  h.channel!.reply(held!, "issued", { requestId: held!.message.requestId, serial: cert.serial, certificate: cert.der, notAfter: Date.now() + 3600_000, subject: `/CN=${held!.message.username}` });
  const r = await run;
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^-----BEGIN CERTIFICATE-----\n/, "and it got its certificate through that watch");
});

t.test("waiting for the lock, the client is woken by names going away only, and takes the lock once it is free", async (t) => {
  const h = new SpoolHarness({ clientTimeout: "30" }); // no spool: the test holds the lock
  t.teardown(() => h.cleanup());
  const { csrPem } = makeCsr(h.root, "lock");
  const link = path.join(h.spoolDir, REQUEST_LINK);
  fs.symlinkSync("req.SomeoneElse0001", link);
  let client: ChildProcess | undefined;
  const run = runClient(h, myproxyInput({}, csrPem), { onSpawn: (c) => (client = c) });
  await h.until(() => client?.pid !== undefined && inotifyMasks(client.pid).length > 0, 20_000, "the client's watch");
  const masks = inotifyMasks(client!.pid!);
  t.equal(masks.length, 1, "one inotify watch");
  t.equal(masks[0]! & NAME_EVENTS, IN_DELETE | IN_MOVED_FROM, `names removed or renamed away, nothing else (mask ${hex(masks[0])})`);
  fs.unlinkSync(link);
  const target = (): string | undefined => {
    try {
      return fs.readlinkSync(link);
    } catch {
      return undefined;
    }
  };
  await h.until(() => /^req\.[A-Za-z0-9]{16}$/.test(target() ?? ""), 10_000, "the client's lock");
  t.pass(`the client took the lock once it was free (${target()})`);
  await h.until(() => inotifyMasks(client!.pid!).some((m) => (m & NAME_EVENTS) === (IN_CREATE | IN_MOVED_TO)), 10_000, "the client's result watch");
  const after = inotifyMasks(client!.pid!);
  t.equal(after.length, 1, "the lock's watch was replaced by the result's");
  client!.kill("SIGTERM");
  const r = await run;
  t.equal(r.code, 1);
  t.match(r.stderr, /interrupted by SIGTERM; the request was abandoned/);
  t.notOk(fs.existsSync(link), "the interrupted client freed the lock");
});
