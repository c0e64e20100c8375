// The signer's timeline line for each frame it takes up (never its content): the kernel's
// watchdog cannot see it. On every certificate's path, so nothing is built when debug is off.
import type { Frame } from "../../proto/wire.js";
import type { Logger } from "../common/log.js";

export function logFrameTaken(log: Logger, frame: Frame): void {
  if (log.enabled("debug")) log.debug("frame taken", { type: frame.type, id: frame.id, request: frame.type === "issueRequest" ? frame.message.requestId : undefined });
}
