// USB hot-plug for USB_DEVICE (vendor:product). The `usb` package sits behind UsbBus so tests
// drive attach/detach through the same interface the real adapter implements. Without USB on
// the machine (no /sys/bus/usb, the module fails to load or throws) the source reports itself
// unavailable, once, and the PKCS#11 source carries on alone.
import * as fs from "node:fs";
import type { UsbId } from "../common/config-schema.js";
import type { Logger } from "../common/log.js";
import type { SourceState, TokenSource } from "./source.js";

export interface UsbIds {
  readonly idVendor: number;
  readonly idProduct: number;
}
export type UsbEvent = "attach" | "detach";
export type UsbListener = (device: UsbIds) => void;

/** The tiny slice of the `usb` package the monitor needs. */
export interface UsbBus {
  on(ev: UsbEvent, fn: UsbListener): void;
  off(ev: UsbEvent, fn: UsbListener): void;
  list(): UsbIds[];
}

export function hex4(n: number): string {
  return n.toString(16).padStart(4, "0");
}

interface UsbDevice {
  deviceDescriptor: { idVendor: number; idProduct: number };
}
interface UsbModule {
  usb: { on(ev: string, fn: (d: UsbDevice) => void): void; off(ev: string, fn: (d: UsbDevice) => void): void };
  getDeviceList(): UsbDevice[];
}

/**
 * The real adapter over the `usb` package (2.17). Resolves to a reason string when USB cannot be
 * used here; never throws.
 */
export async function openRealUsbBus(sysBus = "/sys/bus/usb"): Promise<UsbBus | string> {
  if (!fs.existsSync(sysBus)) return `${sysBus} does not exist (no USB on this machine)`;
  let mod: UsbModule;
  try {
    mod = (await import("usb")) as unknown as UsbModule;
  } catch (err) {
    return `the usb module failed to load: ${(err as Error).message}`;
  }
  const wrapped = new Map<UsbListener, (d: UsbDevice) => void>();
  const ids = (d: UsbDevice): UsbIds => ({ idVendor: d.deviceDescriptor.idVendor, idProduct: d.deviceDescriptor.idProduct });
  const bus: UsbBus = {
    on(ev, fn) {
      const w = (d: UsbDevice): void => fn(ids(d));
      wrapped.set(fn, w);
      mod.usb.on(ev, w);
    },
    off(ev, fn) {
      const w = wrapped.get(fn);
      if (w) mod.usb.off(ev, w);
      wrapped.delete(fn);
    },
    list: () => mod.getDeviceList().map(ids),
  };
  try {
    bus.list();
  } catch (err) {
    return `USB device enumeration failed: ${(err as Error).message}`;
  }
  return bus;
}

export class UsbSource implements TokenSource {
  readonly name = "usb" as const;
  private state: SourceState;
  private onChange: ((s: SourceState) => void) | undefined;
  private readonly onAttach: UsbListener = (d) => this.event("attach", d);
  private readonly onDetach: UsbListener = (d) => this.event("detach", d);
  private attached = 0;
  private readonly want: string;

  /** bus: the adapter, or the reason USB is unavailable. */
  constructor(
    private readonly bus: UsbBus | string,
    private readonly device: UsbId,
    private readonly log: Logger,
  ) {
    this.want = `${hex4(device.vendor)}:${hex4(device.product)}`;
    this.state = this.make(false, false, "not looked yet");
  }

  start(onChange: (s: SourceState) => void): void {
    this.onChange = onChange;
    if (typeof this.bus === "string") {
      this.unavailable(this.bus);
      return;
    }
    try {
      this.bus.on("attach", this.onAttach);
      this.bus.on("detach", this.onDetach);
      this.attached = this.bus.list().filter((d) => this.matches(d)).length;
    } catch (err) {
      this.unavailable(`USB hot-plug failed: ${(err as Error).message}`);
      return;
    }
    this.publish(this.attachedState());
  }

  current(): SourceState {
    return this.state;
  }

  /** Hot-plug is event-driven: the fence uses the last event's state (no enumeration). */
  check(): Promise<SourceState> {
    return Promise.resolve(this.state);
  }

  stop(): void {
    if (typeof this.bus !== "string") {
      try {
        this.bus.off("attach", this.onAttach);
        this.bus.off("detach", this.onDetach);
      } catch {
        // going away anyway
      }
    }
    this.onChange = undefined;
  }

  private matches(d: UsbIds): boolean {
    return d.idVendor === this.device.vendor && d.idProduct === this.device.product;
  }

  private event(ev: UsbEvent, d: UsbIds): void {
    if (!this.state.available || !this.matches(d)) return;
    this.attached = ev === "attach" ? this.attached + 1 : Math.max(0, this.attached - 1);
    this.log.info(`USB device ${this.want} ${ev === "attach" ? "attached" : "detached"}`, { attached: this.attached });
    this.publish(this.attachedState());
  }

  private attachedState(): SourceState {
    return this.make(true, this.attached > 0, this.attached > 0 ? `USB device ${this.want} attached` : `USB device ${this.want} not attached`);
  }

  private unavailable(reason: string): void {
    this.log.notice("USB hot-plug unavailable; token presence comes from PKCS#11 alone", { reason });
    this.publish(this.make(false, false, `USB unavailable: ${reason}`));
  }

  private make(available: boolean, present: boolean, detail: string): SourceState {
    return { source: "usb", available, present, serial: "", label: "", pinFlags: 0, slot: 0, detail };
  }

  private publish(s: SourceState): void {
    this.state = s;
    this.onChange?.(s);
  }
}
