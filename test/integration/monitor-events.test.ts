// Event-driven presence: the monitor (a real process under its own user, the test playing the
// kernel) waits in C_WaitForSlotEvent where the module offers it, and polls where it does not.
// One token: a SoftHSM2 token behind the eToken-like test module (slot events), also opened
// through SoftHSM2 itself (no blocking C_WaitForSlotEvent: CKR_FUNCTION_NOT_SUPPORTED).
// Which path saw a change is read from the tokenEvent's detail and the monitor's log, never timed.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import t, { type Test } from "tap";
import { TokenPresence, type Frame } from "../../proto/wire.js";
import { parseConfig } from "../../services/common/config.js";
import type { KeyRef } from "../../services/common/config-schema.js";
import { createLogger } from "../../services/common/log.js";
import { loadModule, Pkcs11Source } from "../../services/monitor/pkcs11-source.js";
import { SlotEventThread } from "../../services/monitor/slot-events.js";
import { simOf } from "../fixtures/etoken-sim.js";
import { FakeKernel, spawnService } from "../fixtures/fake-kernel.js";
import { createSoftToken, SOFTHSM_MODULE } from "../fixtures/softhsm.js";
import { ensureTestUsers } from "../fixtures/users.js";

const users = ensureTestUsers();
const mon = users.MONITOR_USER;
const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-monitor-events-"));
fs.chmodSync(base, 0o711);
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
const token = createSoftToken({ dir: path.join(base, "hsm"), label: "etca events", pkcs11: "etoken-sim", ownerUid: users.SIGNER_USER.uid, ownerGid: users.SIGNER_USER.gid, readerGid: mon.gid });
const sim = simOf(token);
/** The same token seen through SoftHSM2 itself. */
const softhsm = { modulePath: SOFTHSM_MODULE, env: { SOFTHSM2_CONF: token.confPath } };
const KEY0: KeyRef = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };

function startMonitor(t: Test, module: { modulePath: string; env: Record<string, string> }, poll: string): FakeKernel {
  const text = [
    "DN_FORMAT=/DC=org/DC=example/CN=%s",
    "CA_OIDS=1.3.6.1.4.1.99999.1.1",
    "CRL_URLS=URI:http://ca.example.org/crl.der",
    `PKCS11_MODULE=${module.modulePath}`,
    `PKCS11_ENV="${Object.entries(module.env).map(([k, v]) => `${k}=${v}`).join(" ")}"`,
    `CA_CERT=${token.caCertPath}`,
    `TOKEN_POLL_INTERVAL=${poll}`,
    `MONITOR_USER=${mon.name}`,
    "LOG_LEVEL=debug",
    "",
  ].join("\n");
  const k = spawnService("monitor", mon, parseConfig(text, "test"), { env: module.env, captureStderr: true });
  t.teardown(() => k.kill());
  return k;
}

/** The next tokenEvent with this presence, or a failure naming what was awaited (no timing asserted). */
function nextPresence(k: FakeKernel, present: boolean, what: string): Promise<Frame<"tokenEvent">> {
  const want = present ? TokenPresence.TOKEN_PRESENT : TokenPresence.TOKEN_ABSENT;
  return Promise.race([
    k.next("tokenEvent", (f) => f.message.presence === want),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no tokenEvent for ${what} within 20 s`)), 20_000).unref()),
  ]);
}

/** Each test starts with the token in the reader, whatever the one before left. */
function inReader(): void {
  if (!sim.current.present) sim.insert();
}

function logLines(k: FakeKernel, re: RegExp): string[] {
  return k.stderr.split("\n").filter((l) => re.test(l));
}

t.test("a reader's module with slot events: removal and insertion arrive through C_WaitForSlotEvent", async (t) => {
  inReader();
  // an hour between polls: only an event can report the removal within the test
  const k = startMonitor(t, token, "3600");
  t.equal((await nextPresence(k, true, "the token at start")).message.serial, token.serial);

  sim.remove();
  const gone = await nextPresence(k, false, "the removal");
  t.match(gone.message.detail, /slot event/, `seen through a slot event: ${gone.message.detail}`);

  sim.insert();
  const back = await nextPresence(k, true, "the insertion");
  t.match(back.message.detail, /slot event/, `seen through a slot event: ${back.message.detail}`);
  t.equal(back.message.serial, token.serial);

  const fence = await k.channel.request("presenceCheck", { epoch: Number(back.message.epoch) }, "presence", 10_000);
  t.equal(fence.message.present, true, "the presence fence still answers");
  t.equal(Number(fence.message.epoch), Number(back.message.epoch));
  t.same(logLines(k, /no slot events|slot events failed/), [], "no fallback to polling");
});

t.test("SoftHSM2 (no blocking C_WaitForSlotEvent): the monitor polls and says so once", async (t) => {
  const k = startMonitor(t, softhsm, "100ms");
  await nextPresence(k, true, "the token at start");
  const [sub] = fs.readdirSync(token.tokenDir);
  const parked = path.join(base, "parked");
  fs.renameSync(path.join(token.tokenDir, sub!), parked); // SoftHSM's removal: the token's directory goes
  const gone = await nextPresence(k, false, "the removal");
  t.notMatch(gone.message.detail, /slot event/, `seen by polling: ${gone.message.detail}`);
  fs.renameSync(parked, path.join(token.tokenDir, sub!));
  await nextPresence(k, true, "the re-insertion");
  const said = logLines(k, /no slot events/);
  t.equal(said.length, 1, "the fallback is logged once, not at every poll");
  t.match(said[0], /CKR_FUNCTION_NOT_SUPPORTED/, "with the module's answer");
  t.match(said[0], /polling/);
});

t.test("a module whose C_WaitForSlotEvent fails: the monitor lives on and polls", async (t) => {
  inReader();
  sim.set({ waitError: "device_error" });
  t.teardown(() => sim.set({ waitError: undefined }));
  const k = startMonitor(t, token, "100ms");
  await nextPresence(k, true, "the token at start");
  sim.remove();
  const gone = await nextPresence(k, false, "the removal");
  t.notMatch(gone.message.detail, /slot event/, `seen by polling: ${gone.message.detail}`);
  sim.insert();
  const back = await nextPresence(k, true, "the insertion");
  const fence = await k.channel.request("presenceCheck", { epoch: Number(back.message.epoch) }, "presence", 10_000);
  t.equal(fence.message.present, true, "the monitor still answers the fence");
  t.equal(k.child.exitCode, null, "and still runs");
  const said = logLines(k, /slot events failed/);
  t.equal(said.length, 1, "the failure is logged once");
  t.match(said[0], /CKR_DEVICE_ERROR/);
});

// The slot-event thread is a whole V8 isolate (~10 MiB of the monitor's RSS): the monitor asks
// the module on its own thread first and starts one only where events may come.
t.test("the slot-event thread runs only for a module that may have slot events", async (t) => {
  // the modules read their environment (SOFTHSM2_CONF, the simulator's) at load and C_Initialize
  const saved = { ...process.env };
  Object.assign(process.env, token.env);
  t.teardown(() => {
    for (const k of Object.keys(token.env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  inReader();
  const log = createLogger("test");
  for (const [module, events] of [[softhsm.modulePath, false], [token.modulePath, true]] as const) {
    const thread = new SlotEventThread(module);
    const source = new Pkcs11Source(loadModule(module), KEY0, 3_600_000, log, thread);
    source.start(() => undefined);
    t.equal(source.current().present, true, `${module}: the token is seen`);
    t.equal(thread.started, events, `${module}: slot-event thread ${events ? "started" : "not started"}`);
    t.equal(source.eventDriven, events, `${module}: ${events ? "event-driven" : "polling"}`);
    source.stop();
    const alive = setInterval(() => undefined, 1000); // the thread and its close timer are unref'd
    await source.stopped();
    clearInterval(alive);
  }
});
