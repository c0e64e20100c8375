// The monitor service: watches the CA token (PKCS#11 presence, USB hot-plug) and reports every
// change to the kernel as a tokenEvent; answers the kernel's presence fence.
import { fatal, runService, unhandled } from "../common/service.js";
import { loadModule, Pkcs11Source } from "./pkcs11-source.js";
import { TokenMonitor } from "./monitor.js";
import { SlotEventThread } from "./slot-events.js";
import { openRealUsbBus, UsbSource } from "./usb-source.js";

let monitor: TokenMonitor | undefined;
let pkcs11: Pkcs11Source | undefined;

await runService("monitor", {
  async start(ctx) {
    const { config, channel, log } = ctx;
    const module = loadModule(config.PKCS11_MODULE);
    pkcs11 = new Pkcs11Source(module, config.KEY, config.TOKEN_POLL_INTERVAL, log.child("pkcs11"), new SlotEventThread(config.PKCS11_MODULE));
    const usb = config.USB_DEVICE ? new UsbSource(await openRealUsbBus(), config.USB_DEVICE, log.child("usb")) : undefined;
    monitor = new TokenMonitor(pkcs11, usb, (ev) => channel.send("tokenEvent", ev), log);
    monitor.start();
  },
  accepts: ["presenceCheck"],
  async dispatch(frame, ctx) {
    switch (frame.type) {
      case "presenceCheck": {
        if (!monitor) fatal(ctx.log, "invalid message from kernel: presenceCheck before start: fatal");
        const answer = await monitor.presenceCheck();
        const asked = Number(frame.message.epoch);
        if (asked !== answer.epoch) ctx.log.info("presence fence: epoch moved", { asked, epoch: answer.epoch, present: answer.present });
        ctx.channel.reply(frame, "presence", answer);
        return;
      }
      default:
        unhandled(frame.type);
    }
  },
  async stop() {
    monitor?.stop();
    await pkcs11?.stopped(); // the process exits next: nothing may still be inside the module
  },
});
