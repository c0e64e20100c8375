// The USB source through the same UsbBus interface the real `usb` adapter implements, combined
// with a real PKCS#11 source (SoftHSM, in this process) in the TokenMonitor.
import { EventEmitter } from "node:events";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import t from "tap";
import { TokenPresence } from "../../proto/wire.js";
import type { KeyRef } from "../../services/common/config-schema.js";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { TokenMonitor, type TokenEventPayload } from "../../services/monitor/monitor.js";
import { loadModule, Pkcs11Source, pollPeriodMs } from "../../services/monitor/pkcs11-source.js";
import { pinFlagsOf } from "../../services/common/pkcs11/flags.js";
import { openRealUsbBus, UsbSource, type UsbBus, type UsbEvent, type UsbIds, type UsbListener } from "../../services/monitor/usb-source.js";
import { createSoftToken, removeToken, reinsertToken, slotIdOfToken } from "../fixtures/softhsm.js";

const logLines: string[] = [];
setLogSink({ write: (l: string) => logLines.push(l) });
const log = createLogger("monitor-test");

/** A bus the test drives; shaped exactly like the adapter over the `usb` package. */
class TestBus implements UsbBus {
  private readonly ee = new EventEmitter();
  devices: UsbIds[] = [];
  on(ev: UsbEvent, fn: UsbListener): void {
    this.ee.on(ev, fn);
  }
  off(ev: UsbEvent, fn: UsbListener): void {
    this.ee.off(ev, fn);
  }
  list(): UsbIds[] {
    return [...this.devices];
  }
  attach(d: UsbIds): void {
    this.devices.push(d);
    this.ee.emit("attach", d);
  }
  detach(d: UsbIds): void {
    this.devices = this.devices.filter((x) => x.idVendor !== d.idVendor || x.idProduct !== d.idProduct);
    this.ee.emit("detach", d);
  }
  listeners(): number {
    return this.ee.listenerCount("attach") + this.ee.listenerCount("detach");
  }
}

const ETOKEN = { idVendor: 0x0529, idProduct: 0x0620 };
const MOUSE = { idVendor: 0x046d, idProduct: 0xc077 };
const KEY0: KeyRef = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-usb-"));
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
const token = createSoftToken({ dir: path.join(base, "hsm"), label: "usb test" });
for (const [k, v] of Object.entries(token.env)) process.env[k] = v; // the module reads them at C_Initialize
const module = loadModule(token.modulePath);

function monitorWith(bus: UsbBus | string): { events: TokenEventPayload[]; m: TokenMonitor } {
  const events: TokenEventPayload[] = [];
  const pkcs11 = new Pkcs11Source(module, KEY0, 3_600_000, log);
  const usb = new UsbSource(bus, { vendor: 0x0529, product: 0x0620 }, log);
  const m = new TokenMonitor(pkcs11, usb, (ev) => events.push(ev), log);
  return { events, m };
}

t.test("attach/detach of the configured device drive presence; other devices do nothing", async (t) => {
  const bus = new TestBus();
  bus.devices = [ETOKEN, MOUSE];
  const { events, m } = monitorWith(bus);
  m.start();
  t.equal(events.length, 1, "one initial report");
  t.match(events[0], { epoch: 1, presence: TokenPresence.TOKEN_PRESENT, serial: token.serial, usbAvailable: true });

  bus.detach(MOUSE);
  t.equal(events.length, 1, "detach of another device: nothing");

  bus.detach(ETOKEN);
  t.equal(events.length, 2, "detach of the token's device: an event");
  t.match(events[1], { epoch: 2, presence: TokenPresence.TOKEN_ABSENT, source: "usb", serial: "", usbAvailable: true });
  const p = await m.presenceCheck();
  t.same(p, { present: false, epoch: 2, serial: "", label: "" }, "the fence agrees: PKCS#11 alone is not enough");

  bus.attach(MOUSE);
  t.equal(events.length, 2, "attach of another device: nothing");
  bus.attach(ETOKEN);
  t.match(events[2], { epoch: 3, presence: TokenPresence.TOKEN_PRESENT, source: "usb", serial: token.serial });

  m.stop();
  t.equal(bus.listeners(), 0, "stop removes the listeners");
});

t.test("device attached but token not visible to PKCS#11: absent", async (t) => {
  const bus = new TestBus();
  bus.devices = [ETOKEN];
  const { events, m } = monitorWith(bus);
  m.start();
  removeToken(token);
  try {
    const p = await m.presenceCheck();
    t.equal(p.present, false);
    t.match(events.at(-1), { presence: TokenPresence.TOKEN_ABSENT, source: "pkcs11", usbAvailable: true });
  } finally {
    reinsertToken(token);
  }
  const p = await m.presenceCheck();
  t.equal(p.present, true, "back after re-insertion");
  t.equal(p.epoch, 3);
  m.stop();
});

t.test("device absent at start", async (t) => {
  const bus = new TestBus();
  const { events, m } = monitorWith(bus);
  m.start();
  t.match(events, [{ epoch: 1, presence: TokenPresence.TOKEN_ABSENT, usbAvailable: true }]);
  bus.attach(ETOKEN);
  t.match(events[1], { epoch: 2, presence: TokenPresence.TOKEN_PRESENT, serial: token.serial });
  m.stop();
});

t.test("no USB on the machine: unavailable, logged once, PKCS#11 carries on", async (t) => {
  const reason = await openRealUsbBus(path.join(base, "no-such-sys-bus-usb"));
  t.type(reason, "string");
  t.match(reason, /does not exist/);
  logLines.length = 0;
  const { events, m } = monitorWith(reason);
  m.start();
  t.match(events, [{ epoch: 1, presence: TokenPresence.TOKEN_PRESENT, serial: token.serial, usbAvailable: false }]);
  await m.presenceCheck();
  await m.presenceCheck();
  t.equal(logLines.filter((l) => l.includes("USB hot-plug unavailable")).length, 1, "logged once");
  t.equal(events.length, 1, "no further events");
  m.stop();
});

t.test("a bus that throws on use counts as unavailable", async (t) => {
  const broken: UsbBus = {
    on() {
      throw new Error("LIBUSB_ERROR_NOT_SUPPORTED");
    },
    off() {},
    list: () => [],
  };
  const { events, m } = monitorWith(broken);
  m.start();
  t.match(events, [{ presence: TokenPresence.TOKEN_PRESENT, usbAvailable: false }]);
  t.match(events[0]!.detail, /LIBUSB_ERROR_NOT_SUPPORTED/);
  m.stop();
});

t.test("KEY as a pkcs11: URI selects the token by label and serial", async (t) => {
  const byLabel = new Pkcs11Source(module, { ...KEY0, slot: undefined, tokenLabel: "usb test" }, 3_600_000, log);
  t.match(byLabel.rescan(), { present: true, serial: token.serial, label: "usb test", slot: 0 });
  const bySerial = new Pkcs11Source(module, { ...KEY0, slot: undefined, tokenSerial: token.serial }, 3_600_000, log);
  t.match(bySerial.rescan(), { present: true, serial: token.serial });
  const other = new Pkcs11Source(module, { ...KEY0, slot: undefined, tokenLabel: "another token" }, 3_600_000, log);
  t.match(other.rescan(), { present: false, detail: /no token matches KEY \(token label "another token"\)/ });
  const index1 = new Pkcs11Source(module, { ...KEY0, slot: 1 }, 3_600_000, log);
  t.match(index1.rescan(), { present: false, detail: /^no token matches KEY \(slot index 1\); found: label "usb test" serial [0-9a-f]+ \(slot index 0\)$/ }, "SoftHSM's free slot does not count");
  const labelAndIndex = new Pkcs11Source(module, { ...KEY0, slot: 1, tokenLabel: "usb test" }, 3_600_000, log);
  t.match(labelAndIndex.rescan(), { present: false }, "every attribute KEY gives must hold (as in the signer)");
});

t.test("KEY's slot-id is the PKCS#11 slot ID, not a position (RFC 7512)", async (t) => {
  const slotId = slotIdOfToken(token);
  t.ok(slotId > 1, `SoftHSM gives the token a large slot ID (${slotId}), so a position would not match`);
  const bySlotId = new Pkcs11Source(module, { ...KEY0, slot: undefined, slotId }, 3_600_000, log);
  t.match(bySlotId.rescan(), { present: true, serial: token.serial, slot: 0 });
  const wrong = new Pkcs11Source(module, { ...KEY0, slot: undefined, slotId: slotId + 1 }, 3_600_000, log);
  t.match(wrong.rescan(), { present: false, detail: new RegExp(`no token matches KEY \\(slot-id ${slotId + 1}\\)`) });
});

t.test("TOKEN_POLL_INTERVAL bounds detection: the looks come sooner by the confirmation pause and an allowance", async (t) => {
  const delays: number[] = [];
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = ((fn: () => void, ms: number) => {
    delays.push(ms);
    return realSetTimeout(fn, 3_600_000);
  }) as typeof setTimeout;
  const sources = [300, 2000, 40].map((interval) => new Pkcs11Source(module, KEY0, interval, log));
  try {
    for (const s of sources) s.start(() => {});
  } finally {
    globalThis.setTimeout = realSetTimeout;
    for (const s of sources) s.stop();
  }
  t.same(delays, [260, 1960, 20], "300 ms -> every 260 ms (a removal just after a look, confirmed 25 ms later, is still seen within 300 ms); never more often than twice per interval");
  t.equal(pollPeriodMs(300), 260);
});

t.test("CKF pin flags map to the proto's PinFlag bits", async (t) => {
  t.equal(pinFlagsOf(0x10000), 1);
  t.equal(pinFlagsOf(0x20000), 2);
  t.equal(pinFlagsOf(0x40000), 4);
  t.equal(pinFlagsOf(0x80000), 8);
  t.equal(pinFlagsOf(0x0042d), 0, "SoftHSM's usual flags carry no PIN warning");
  t.equal(pinFlagsOf(0xf0000 | 0x400), 15);
});

t.teardown(() => {
  try {
    (module as unknown as { close(): void }).close();
  } catch {
    // finalised already
  }
});
