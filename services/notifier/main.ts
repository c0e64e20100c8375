// The notifier service: validates the kernel's notify frames and hands them to the Notifier
// (hooks and e-mail); failures go back to the kernel as unsolicited hookFailed frames.
import type { Frame } from "../../proto/wire.js";
import { runService, unhandled } from "../common/service.js";
import { Notifier } from "./notifier.js";

let notifier: Notifier | undefined;

function dispatch(frame: Frame<"notify">): void {
  switch (frame.type) {
    case "notify":
      notifier!.handle(frame);
      return;
    default:
      unhandled(frame.type);
  }
}

await runService("notifier", {
  start(ctx) {
    notifier = new Notifier(ctx.config, ctx.log, (hook, event, message) => {
      if (ctx.channel.closed) return;
      ctx.channel.send("hookFailed", { hook, event, message });
    });
  },
  accepts: ["notify"],
  dispatch,
  stop() {
    notifier?.stop();
  },
});
