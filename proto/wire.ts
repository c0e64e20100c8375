// Typed view of the wire contract in etoken_ca.proto.
import { etokenca } from "./generated/etoken_ca.js";

export { etokenca };
export const Envelope = etokenca.Envelope;

/** Every message type: the names of the Envelope's oneof body. */
export type MessageType = NonNullable<etokenca.Envelope["body"]>;

/** The decoded message class for a type ("issueRequest" -> etokenca.IssueRequest). */
export type Message<T extends MessageType> = InstanceType<(typeof etokenca)[Capitalize<T>]>;
/** What may be given when sending a type. */
export type Payload<T extends MessageType> = NonNullable<etokenca.Envelope.$Properties[T]>;

/**
 * A received frame. Without a type argument, the union of every message type's frame: a
 * `switch (frame.type)` narrows `frame.message`, and a `never` default lists the types a
 * dispatcher does not handle.
 */
export type Frame<T extends MessageType = MessageType> = {
  readonly [K in T]: { readonly id: number; readonly replyTo: number; readonly type: K; readonly message: Message<K> };
}[T];

export const PinFlag = etokenca.PinFlag;
export const TokenPresence = etokenca.TokenPresence;
