// The kernel's table (OpenSSH's mon_table): one row per message a service may send on its own,
// with who may send it, in which kernel states, and the kernel's handler for it. Permission and
// handling live in the same row, so a permitted message without a handler does not compile.
// Default deny: a message without a row, or outside its states, is a security event (the sender
// is killed and restarted). Answers to the kernel's own requests are matched by id and expected
// type in the channel (services/common/channel.ts), not here. Every frame was checked against
// the contract's grammar (proto/contract.ts) before it gets here.
//
// A new unsolicited message: its validator in proto/contract.ts, a row here, and the handler
// (KernelHandlers) in the kernel part that owns what it touches.
import type { Frame, MessageType } from "../../proto/wire.js";
import type { ServiceName } from "../common/service-table.js";
import { KERNEL_STATES, type KernelState } from "./states.js";

/** What the kernel does with each permitted message (implemented by the Kernel). */
export interface KernelHandlers {
  readonly onIssueRequest: (frame: Frame<"issueRequest">) => void;
  readonly onRequestRejected: (frame: Frame<"requestRejected">) => void;
  readonly onUndelivered: (frame: Frame<"undelivered">) => void;
  readonly onDelivered: (frame: Frame<"delivered">) => void;
  readonly onWithdrawn: (frame: Frame<"withdrawn">) => void;
  readonly onSigned: (frame: Frame<"signed">) => void;
  readonly onSignerFault: (frame: Frame<"signerFault">) => void;
  readonly onTokenEvent: (frame: Frame<"tokenEvent">) => void;
  readonly onHookFailed: (frame: Frame<"hookFailed">) => void;
  readonly onServiceWarning: (frame: Frame<"serviceWarning">) => void;
}

/** The handlers that take a frame of type T. */
type HandlerFor<T extends MessageType> = { [K in keyof KernelHandlers]: KernelHandlers[K] extends (frame: Frame<T>) => void ? K : never }[keyof KernelHandlers];

interface Row<T extends MessageType> {
  readonly sender: ServiceName;
  readonly type: T;
  readonly states: readonly KernelState[];
  readonly handler: HandlerFor<T>;
}
/** A row for one message type, its handler taking exactly that type's frame. */
export type TableRow = { [T in MessageType]: Row<T> }[MessageType];

const RUNNING: readonly KernelState[] = KERNEL_STATES.filter((s) => s !== "STOPPING");

export const KERNEL_TABLE: readonly TableRow[] = [
  // accepted in every state: outside READY the kernel answers at once with a clear failure
  { sender: "spool", type: "issueRequest", states: RUNNING, handler: "onIssueRequest" },
  { sender: "spool", type: "requestRejected", states: RUNNING, handler: "onRequestRejected" },
  // checked against the requests the kernel returned to this spool; any other is a violation
  { sender: "spool", type: "undelivered", states: RUNNING, handler: "onUndelivered" },
  { sender: "spool", type: "delivered", states: RUNNING, handler: "onDelivered" },
  // the client gave up (its .abandoned marker): a request still queued for the token is dropped
  { sender: "spool", type: "withdrawn", states: RUNNING, handler: "onWithdrawn" },
  { sender: "spool", type: "serviceWarning", states: RUNNING, handler: "onServiceWarning" },
  // a signature can complete just as the token goes away (the state leaves READY)
  { sender: "signer", type: "signed", states: ["NEED_PIN", "READY", "SUSPENDED"], handler: "onSigned" },
  { sender: "signer", type: "signerFault", states: ["NEED_PIN", "READY", "SUSPENDED"], handler: "onSignerFault" },
  { sender: "monitor", type: "tokenEvent", states: RUNNING, handler: "onTokenEvent" },
  { sender: "notifier", type: "hookFailed", states: RUNNING, handler: "onHookFailed" },
];

/**
 * Permitted once per process, as its first frame, from every service: checked by the supervisor
 * (pid, uid, gid, service name), which then reports the service up. Never through the table.
 */
export const ONCE = "hello" satisfies MessageType;

/** The row for a message from a sender, permitted in this state; undefined = not permitted. */
export function permittedRow(sender: ServiceName, type: MessageType, state: KernelState): TableRow | undefined {
  return KERNEL_TABLE.find((r) => r.sender === sender && r.type === type && r.states.includes(state));
}

export function isPermitted(sender: ServiceName, type: MessageType, state: KernelState): boolean {
  return permittedRow(sender, type, state) !== undefined;
}

/** Hands a permitted frame to its row's handler. */
export function runRow(row: TableRow, frame: Frame, handlers: KernelHandlers): void {
  // row.type === frame.type (permittedRow), and the row's handler takes that type's frame
  (handlers[row.handler] as (frame: Frame) => void)(frame);
}
