import { fatal, runService } from "../common/service.js";

await runService("notifier", {
  dispatch(frame, ctx) {
    fatal(ctx.log, `invalid message from kernel: ${frame.type}: fatal`);
  },
});
