// The monitor as a real process under its own user (etca-mon), against a real SoftHSM token;
// the test plays the kernel on fd 3. Removal, re-insertion and replacement of the token are
// simulated by test/fixtures/softhsm.ts (the token directory leaves / comes back / changes, or
// with ETCA_TEST_PKCS11=etoken-sim the eToken-like module reports an empty reader).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import t from "tap";
import { TokenPresence, type Frame } from "../../proto/wire.js";
import { parseConfig } from "../../services/common/config.js";
import { createSoftToken, reinsertToken, removeToken, replaceToken, type SoftToken } from "../fixtures/softhsm.js";
import { FakeKernel, spawnService } from "../fixtures/fake-kernel.js";
import { ensureTestUsers } from "../fixtures/users.js";

const users = ensureTestUsers();
const mon = users.MONITOR_USER;

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-monitor-"));
fs.chmodSync(base, 0o711);
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));

function startMonitor(token: SoftToken, poll = "100ms"): FakeKernel {
  const text = [
    "DN_FORMAT=/DC=org/DC=example/CN=%s",
    "CA_OIDS=1.3.6.1.4.1.99999.1.1",
    "CRL_URLS=URI:http://ca.example.org/crl.der",
    `PKCS11_MODULE=${token.modulePath}`,
    `PKCS11_ENV="${Object.entries(token.env).map(([k, v]) => `${k}=${v}`).join(" ")}"`,
    `CA_CERT=${token.caCertPath}`,
    `TOKEN_POLL_INTERVAL=${poll}`,
    `MONITOR_USER=${mon.name}`,
    "",
  ].join("\n");
  const k = spawnService("monitor", mon, parseConfig(text, "test"), { env: token.env });
  t.teardown(() => k.kill());
  return k;
}

async function fence(k: FakeKernel, epoch: number): Promise<Frame<"presence">> {
  return k.channel.request("presenceCheck", { epoch }, "presence", 10_000);
}

t.test("presence, removal, re-insertion, replacement and the fence", async (t) => {
  const token = createSoftToken({ dir: path.join(base, "hsm"), label: "etca mon test", ownerUid: users.SIGNER_USER.uid, ownerGid: users.SIGNER_USER.gid, readerGid: mon.gid });
  const k = startMonitor(token);

  const hello = await k.next("hello");
  t.equal(hello.message.service, "monitor");
  t.equal(hello.message.uid, mon.uid, "runs as the monitor user");

  const first = await k.next("tokenEvent");
  t.equal(Number(first.message.epoch), 1, "the first report is epoch 1");
  t.equal(first.message.presence, TokenPresence.TOKEN_PRESENT);
  t.equal(first.message.serial, token.serial, "the token's serial");
  t.equal(first.message.label, "etca mon test");
  t.equal(first.message.source, "pkcs11");
  t.equal(first.message.slot, 0);
  t.equal(first.message.usbAvailable, false, "no USB_DEVICE configured");

  let p = await fence(k, 1);
  t.same({ present: p.message.present, epoch: Number(p.message.epoch), serial: p.message.serial }, { present: true, epoch: 1, serial: token.serial }, "fence: same token, same epoch");

  removeToken(token);
  const gone = await k.next("tokenEvent", (f) => f.message.presence === TokenPresence.TOKEN_ABSENT);
  t.equal(Number(gone.message.epoch), 2, "removal is epoch 2");
  t.equal(gone.message.serial, "");
  p = await fence(k, 1);
  t.same({ present: p.message.present, epoch: Number(p.message.epoch) }, { present: false, epoch: 2 }, "fence after removal: absent, epoch moved");

  reinsertToken(token);
  const back = await k.next("tokenEvent", (f) => f.message.presence === TokenPresence.TOKEN_PRESENT);
  t.equal(Number(back.message.epoch), 3, "re-insertion gets a higher epoch");
  t.equal(back.message.serial, token.serial, "same serial after re-insertion");
  p = await fence(k, 3);
  t.same({ present: p.message.present, epoch: Number(p.message.epoch), serial: p.message.serial }, { present: true, epoch: 3, serial: token.serial });

  const other = replaceToken(token, { label: "etca mon test" });
  t.not(other.serial, token.serial);
  const replaced = await k.next("tokenEvent", (f) => f.message.presence === TokenPresence.TOKEN_PRESENT && f.message.serial === other.serial);
  t.ok(Number(replaced.message.epoch) > 3, "replacement is a new epoch");
  p = await fence(k, Number(replaced.message.epoch));
  t.equal(p.message.serial, other.serial, "fence reports the other serial");
  t.equal(Number(p.message.epoch), Number(replaced.message.epoch));

  k.channel.send("shutdown", { reason: "test done" });
  t.equal(await k.exited, 0, "clean exit on shutdown");
});

t.test("the fence sees a removal before the next poll and reports the event first", async (t) => {
  const token = createSoftToken({ dir: path.join(base, "hsm-fence"), ownerUid: users.SIGNER_USER.uid, ownerGid: users.SIGNER_USER.gid, readerGid: mon.gid });
  const k = startMonitor(token, "1h"); // no poll during the test: only the fence can notice
  const first = await k.next("tokenEvent");
  t.equal(first.message.serial, token.serial);

  removeToken(token);
  const p = await fence(k, 1);
  t.equal(p.message.present, false, "the fence's own check saw the removal");
  t.equal(Number(p.message.epoch), 2);
  const ev = k.frames.find((f): f is Frame<"tokenEvent"> => f.type === "tokenEvent");
  t.ok(ev, "the tokenEvent arrived before the presence answer");
  t.equal(ev?.message.presence, TokenPresence.TOKEN_ABSENT);
  t.equal(Number(ev?.message.epoch), 2);

  reinsertToken(token);
  const again = await fence(k, 2);
  t.same({ present: again.message.present, epoch: Number(again.message.epoch), serial: again.message.serial }, { present: true, epoch: 3, serial: token.serial });

  k.channel.send("shutdown", { reason: "test done" });
  t.equal(await k.exited, 0);
});

t.test("an unexpected message from the kernel is fatal", async (t) => {
  const token = createSoftToken({ dir: path.join(base, "hsm-bad"), ownerUid: users.SIGNER_USER.uid, ownerGid: users.SIGNER_USER.gid, readerGid: mon.gid });
  const k = startMonitor(token, "1h");
  await k.next("tokenEvent");
  k.channel.send("logout", { reason: "not for the monitor" });
  t.equal(await k.exited, 70, "exits 70 (the kernel restarts it)");
});
