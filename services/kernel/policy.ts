// The policy table: which service may send which unsolicited message in which kernel state.
// Default deny. Answers to the kernel's own requests are matched by id and expected type in
// the channel (services/common/channel.ts), not here. A message outside this table is a
// security event: the sender is killed and restarted.
import type { MessageType } from "../../proto/wire.js";
import type { ServiceName } from "../common/service-table.js";
import { KERNEL_STATES, type KernelState } from "./states.js";

const RUNNING: readonly KernelState[] = KERNEL_STATES.filter((s) => s !== "STOPPING");

export type PolicyTable = { readonly [S in ServiceName]: Partial<Readonly<Record<MessageType, readonly KernelState[]>>> };

export const POLICY = {
  spool: {
    // accepted in every state: outside READY the kernel answers at once with a clear failure
    issueRequest: RUNNING,
    requestRejected: RUNNING,
    undelivered: RUNNING,
    // checked against the requests the kernel returned to this spool (kernel.ts); any other is a violation
    delivered: RUNNING,
    // the client gave up (its .abandoned marker): the kernel drops the request if still queued
    withdrawn: RUNNING,
  },
  signer: {
    signerFault: ["NEED_PIN", "READY", "SUSPENDED"],
    // a signature can complete just as the token goes away (the state leaves READY)
    signed: ["NEED_PIN", "READY", "SUSPENDED"],
  },
  monitor: {
    tokenEvent: RUNNING,
  },
  notifier: {
    hookFailed: RUNNING,
  },
} as const satisfies PolicyTable;

/** `hello` is permitted exactly once per process, as its first frame; the supervisor checks that. */
export function isPermitted(sender: ServiceName, type: MessageType, state: KernelState): boolean {
  const row = (POLICY as PolicyTable)[sender];
  const states = row[type];
  return states !== undefined && states.includes(state);
}
