// Event-driven presence: the monitor (a real process under its own user, the test playing the
// kernel) waits in C_WaitForSlotEvent where the module offers it, and polls where it does not.
// One token: a SoftHSM2 token behind the eToken-like test module (slot events), also opened
// through SoftHSM2 itself (no blocking C_WaitForSlotEvent: CKR_FUNCTION_NOT_SUPPORTED).
// Which path saw a change is read from the tokenEvent's detail and the monitor's log, never timed.
import { spawn, spawnSync } from "node:child_process";
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

/** What /proc says about a running monitor: its threads' names, its event loops, peak RSS, CPU. */
function processFigures(pid: number): { threads: string[]; eventLoops: number; vmHwmKiB: number; cpuMs: number } {
  const threads = fs.readdirSync(`/proc/${pid}/task`).map((tid) => fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim());
  // every libuv loop (the main one, each worker thread's) owns an epoll instance
  const eventLoops = fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === "anon_inode:[eventpoll]";
    } catch {
      return false; // closed meanwhile
    }
  }).length;
  const vmHwmKiB = Number(/^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  // utime and stime (fields 14 and 15) in clock ticks of 10 ms; the name in parentheses may hold spaces
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuMs = (Number(fields[11]) + Number(fields[12])) * 10;
  return { threads, eventLoops, vmHwmKiB, cpuMs };
}

// A module with slot events costs the monitor one native thread (named etca-slot-wait, waiting in
// C_WaitForSlotEvent), not a worker_thread: a worker is a whole V8 isolate with a libuv loop of
// its own (~10 MiB of RSS). Compared with the same module and token whose wait fails (the monitor
// then polls and starts no thread), measured in the same state: the token seen once.
t.test("slot events cost the monitor a native thread, not a JavaScript isolate", async (t) => {
  inReader();
  sim.set({ waitError: "device_error" });
  const polling = startMonitor(t, token, "3600");
  await nextPresence(polling, true, "the token at start (polling)");
  const without = processFigures(polling.child.pid!);
  polling.kill();
  await polling.exited;
  sim.set({ waitError: undefined });

  const k = startMonitor(t, token, "3600");
  await nextPresence(k, true, "the token at start (slot events)");
  // an event seen proves the wait is running, whatever starts it
  sim.remove();
  t.match((await nextPresence(k, false, "the removal")).message.detail, /slot event/);
  sim.insert();
  t.match((await nextPresence(k, true, "the insertion")).message.detail, /slot event/);
  // the monitor reports the event before it waits again, and the last wait's thread ends just
  // after its report: give the next one a moment to start, the last one to go
  const waiting = (f: { threads: string[] }): string[] => f.threads.filter((n) => n === "etca-slot-wait");
  let withEvents = processFigures(k.child.pid!);
  for (let i = 0; i < 1000 && waiting(withEvents).length !== 1; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    withEvents = processFigures(k.child.pid!);
  }
  t.comment(`monitor on etoken-sim, token seen: polling VmHWM ${without.vmHwmKiB} KiB, CPU ${without.cpuMs} ms, ${without.threads.length} threads; ` +
    `slot events VmHWM ${withEvents.vmHwmKiB} KiB, CPU ${withEvents.cpuMs} ms, ${withEvents.threads.length} threads`);
  t.equal(withEvents.eventLoops, without.eventLoops, "no event loop (no isolate) of its own for the wait");
  t.same(waiting(withEvents), ["etca-slot-wait"], "one thread waits in the module");
  t.same(waiting(without), [], "and none without slot events");
  // the worker isolate it replaces: ~10 MiB (bench/RESULTS.md); a pthread's touched stack and the
  // addon: well under 1 MiB; the rest is what differs between two runs of the same process
  t.ok(withEvents.vmHwmKiB - without.vmHwmKiB < 4096, `peak RSS with slot events ${withEvents.vmHwmKiB} KiB, without ${without.vmHwmKiB} KiB: less than 4 MiB apart`);
});

// The monitor asks the module on its own thread first and starts a slot-event thread only where
// events may come (SoftHSM2's blocking wait would only answer CKR_FUNCTION_NOT_SUPPORTED).
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

// The monitor's stop finalises the module first (that ends the wait); a process that dies without
// that (a fatal error, an uncaught exception) leaves with the thread still inside the module.
t.test("a process that exits while the slot-event thread waits in the module exits cleanly", async (t) => {
  inReader();
  const child = new URL("../fixtures/slot-wait-exit-child.js", import.meta.url).pathname;
  for (const [when, code] of [["at-once", 0], ["waiting", 0], ["throw", 1]] as const) {
    for (let round = 0; round < 3; round++) {
      const r = spawnSync("/usr/bin/env", ["-u", "NODE_OPTIONS", process.execPath, child, token.modulePath, when], {
        env: { PATH: "/usr/bin:/bin", ...token.env },
        encoding: "utf8",
        timeout: 30_000,
      });
      t.equal(r.stdout, "armed\n", `${when}, round ${round + 1}: armed, and no result before the exit`);
      t.same({ status: r.status, signal: r.signal }, { status: code, signal: null }, `${when}, round ${round + 1}: exit ${code}, no signal${r.stderr ? ` (stderr: ${r.stderr.trim().split("\n").slice(-3).join(" | ")})` : ""}`);
    }
  }
});

// A rescan's C_Finalize ends a blocked wait (CKR_CRYPTOKI_NOT_INITIALIZED: the simulator answers
// so while its C_Initialize takes 100 ms); the monitor then waits again, and a removal after
// the rescans still arrives as an event (an hour between polls: nothing else would report it).
t.test("a rescan ends the wait and the wait is armed again", async (t) => {
  const saved = { ...process.env };
  Object.assign(process.env, token.env);
  t.teardown(() => {
    for (const k of Object.keys(token.env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  inReader();
  const source = new Pkcs11Source(loadModule(token.modulePath), KEY0, 3_600_000, createLogger("test"), new SlotEventThread(token.modulePath));
  const states: string[] = [];
  let removal: (() => void) | undefined;
  source.start((s) => {
    states.push(`${s.present ? "present" : "absent"}: ${s.detail}`);
    if (!s.present) removal?.();
  });
  t.equal(source.current().present, true, "the token is seen");
  sim.set({ initMs: 100 });
  source.rescan();
  source.rescan();
  sim.set({ initMs: 0 });
  // let the woken waits report and re-arm before the token goes
  await new Promise((resolve) => setTimeout(resolve, 300));
  const gone = new Promise<void>((resolve, reject) => {
    removal = resolve;
    setTimeout(() => reject(new Error(`no removal within 20 s; states: ${states.join("; ")}`)), 20_000).unref();
  });
  sim.remove();
  await gone;
  t.match(states.at(-1), /^absent: .*\(slot event\)$/, `seen through a slot event: ${states.at(-1)}`);
  t.equal(source.eventDriven, true, "still event-driven");
  source.stop();
  const alive = setInterval(() => undefined, 1000);
  await source.stopped();
  clearInterval(alive);
  sim.insert();
});

// Without native/slot-wait (an installation missing dist/native/slot_wait.node): the monitor says
// why in its log, naming the file and what makes it, and polls. Run from a copy of dist/.
t.test("without the slot-wait addon the monitor says so once and polls", async (t) => {
  inReader();
  const dist = new URL("../..", import.meta.url).pathname;
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), "etca-no-slot-wait-"));
  t.teardown(() => fs.rmSync(copy, { recursive: true, force: true }));
  for (const d of ["services", "proto", "native", "test/fixtures"]) fs.cpSync(path.join(dist, d), path.join(copy, "dist", d), { recursive: true });
  fs.rmSync(path.join(copy, "dist/native/slot_wait.node"));
  fs.writeFileSync(path.join(copy, "package.json"), '{ "type": "module" }\n');
  fs.symlinkSync(path.resolve(dist, "../node_modules"), path.join(copy, "node_modules"));
  const child = spawn("/usr/bin/env", ["-u", "NODE_OPTIONS", process.execPath, path.join(copy, "dist/test/fixtures/slot-wait-missing-child.js"), token.modulePath], {
    env: { PATH: "/usr/bin:/bin", ...token.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  let heard = (): void => undefined;
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    out += s;
    heard();
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  /** The child's first line matching `re`, or a failure naming it after 20 s (no timing asserted). */
  const line = (re: RegExp): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line ${re} within 20 s; stdout: ${out}; stderr: ${err}`)), 20_000);
      heard = () => {
        const l = out.split("\n").find((x) => re.test(x));
        if (l === undefined) return;
        clearTimeout(timer);
        resolve(l);
      };
      heard();
    });
  t.equal(await line(/^started /), "started false", "not event-driven");
  sim.remove();
  t.notMatch(await line(/^absent /), /slot event/, "the removal seen by a poll");
  t.equal(await exited, 0);
  sim.insert();
  const said = err.split("\n").filter((l) => /slot events/.test(l));
  t.equal(said.length, 1, `said once: ${said.join(" | ")}`);
  t.match(said[0], /"msg":"slot events failed; polling","detail":"C_WaitForSlotEvent: the slot-event thread cannot start: cannot load the slot-event helper \S*\/dist\/native\/slot_wait\.node \(npm run build makes it; on an installed system, rerun deploy\/install\): /);
});
