// The one framing module: length-delimited protobuf Envelopes (varint length prefix, as
// protobufjs encodeDelimited writes it) with a hard maximum frame size.
import protobuf from "protobufjs/minimal.js";
import { VALIDATORS } from "../../proto/contract.js";
import { Envelope, etokenca, type Frame, type MessageType, type Payload } from "../../proto/wire.js";
import { ProtocolError } from "./errors.js";
import { secretBuffer } from "./secret-buffer.js";

export const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * A secret frame (the PIN) is encoded into a zeroed buffer of its own, this large, so that
 * protobufjs' writer never grows it: growing copies the bytes written so far into a new buffer
 * and leaves the old one, PIN included, to the garbage collector unwiped. A PIN is at most 128
 * bytes.
 */
const SECRET_WRITER_BYTES = 4096;

/**
 * The writer of every frame that is not secret, reused (one thread; encoding calls no other
 * code): no writer and no growing of its buffer per frame. One that grew past this for a large
 * frame (a CRL's answer) is not kept.
 */
let plainWriter = protobuf.Writer.create();
const KEEP_WRITER_BYTES = 64 * 1024;

type Writer = protobuf.Writer;
type Reader = protobuf.Reader;
/** A message type's place in the Envelope: its field's tag and its generated encoder and decoder. */
interface BodyField {
  readonly type: MessageType;
  /** (field number << 3) | 2, as the Envelope's own encoder writes it */
  readonly tag: number;
  readonly encode: (message: unknown, writer: Writer, depth: number) => Writer;
  readonly decode: (reader: Reader, length: number, end: undefined, depth: number) => Record<string, unknown>;
}

/**
 * The Envelope's oneof, by type and by tag. protobufjs' Envelope.encode tests every one of its
 * 32 fields on every frame and Envelope.decode deletes 31 of them from every frame it decodes;
 * here one lookup finds the field. Each tag is read from protobufjs' own encoding of an empty
 * body of that type (no second copy of the field numbers in etoken_ca.proto);
 * test/unit/framing-bytes.test.ts compares the bytes of both encoders for every type.
 */
function bodyFields(): { byType: ReadonlyMap<MessageType, BodyField>; byTag: ReadonlyMap<number, BodyField> } {
  const byType = new Map<MessageType, BodyField>();
  const byTag = new Map<number, BodyField>();
  const classes = etokenca as unknown as Record<string, BodyField>;
  for (const type of Object.keys(VALIDATORS) as MessageType[]) {
    const generated = classes[type[0]!.toUpperCase() + type.slice(1)];
    const probe = Envelope.encode({ [type]: {} } as never).finish();
    const tag = readVarint(Buffer.from(probe.buffer, probe.byteOffset, probe.length));
    if (!generated || tag === undefined || (tag[0] & 7) !== 2 || probe.length !== tag[1] + 1 || probe[tag[1]] !== 0) {
      throw new Error(`proto/generated does not encode ${type} as a length-delimited field of the Envelope`);
    }
    const field: BodyField = { type, tag: tag[0], encode: generated.encode, decode: generated.decode };
    byType.set(type, field);
    byTag.set(field.tag, field);
  }
  return { byType, byTag };
}
const BODY = bodyFields();

/** What Envelope.encodeDelimited writes for { id, replyTo, [type]: payload }, without looking at the 31 other fields. */
function encodeEnvelopeDelimited(id: number, replyTo: number, type: MessageType, payload: unknown, writer: Writer): Writer {
  const field = BODY.byType.get(type);
  if (field === undefined) throw new ProtocolError("unknown_type", `no message type ${String(type)} in the contract`);
  writer.fork();
  if (id !== 0) writer.uint32(8).uint32(id); // field 1, varint
  if (replyTo !== 0) writer.uint32(16).uint32(replyTo); // field 2, varint
  field.encode(payload, writer.uint32(field.tag).fork(), 1).ldelim();
  return writer.ldelim();
}

/**
 * One frame, length prefix and body in one buffer. With `secret`, nothing the encoding went
 * through keeps a copy: the frame is a view of the writer's own buffer (no copy), and the
 * caller zeroes it once written (all the writer wrote is in the view).
 */
export function encodeFrame<T extends MessageType>(id: number, replyTo: number, type: T, payload: Payload<T>, secret = false): Buffer {
  let frame: Buffer;
  if (secret) {
    const writer = protobuf.Writer.create();
    const writerBuffer = (writer.buf = secretBuffer(SECRET_WRITER_BYTES));
    encodeEnvelopeDelimited(id, replyTo, type, payload, writer);
    if (writer.buf !== writerBuffer) {
      writer.buf.fill(0);
      writerBuffer.fill(0);
      throw new ProtocolError("frame_too_large", `outgoing secret ${type} frame exceeds ${SECRET_WRITER_BYTES} bytes`);
    }
    frame = writer.finish(true) as Buffer;
  } else {
    const writer = plainWriter.reset();
    try {
      frame = encodeEnvelopeDelimited(id, replyTo, type, payload, writer).finish() as Buffer;
    } finally {
      // one that failed half-way may hold a fork: not reused either
      if (writer.buf.length > KEEP_WRITER_BYTES || writer.states?.length) plainWriter = protobuf.Writer.create();
    }
  }
  const bodyLength = frame.length - readVarint(frame)![1];
  if (bodyLength > MAX_FRAME_BYTES) {
    if (secret) frame.fill(0);
    throw new ProtocolError("frame_too_large", `outgoing ${type} frame of ${bodyLength} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  return frame;
}

/** Accumulates bytes and yields whole frames; throws ProtocolError on anything malformed. */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);
  constructor(private readonly maxFrame: number = MAX_FRAME_BYTES) {}

  get buffered(): number {
    return this.pending.length;
  }

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const header = readVarint(this.pending);
      if (header === undefined) {
        if (this.pending.length > 5) throw new ProtocolError("bad_length", "frame length prefix is not a valid varint");
        break;
      }
      const [length, used] = header;
      if (length > this.maxFrame) {
        throw new ProtocolError("frame_too_large", `frame of ${length} bytes exceeds the maximum of ${this.maxFrame}`);
      }
      if (this.pending.length < used + length) break;
      const body = this.pending.subarray(used, used + length);
      this.pending = this.pending.subarray(used + length);
      frames.push(decodeBody(body));
    }
    return frames;
  }
}

function readVarint(buf: Buffer): [number, number] | undefined {
  let value = 0;
  for (let i = 0; i < 5 && i < buf.length; i++) {
    const b = buf[i]!;
    value += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) return [value, i + 1];
  }
  if (buf.length >= 5) throw new ProtocolError("bad_length", "frame length prefix is longer than 5 bytes");
  return undefined;
}

interface DecodedEnvelope {
  readonly id: number;
  readonly replyTo: number;
  readonly type: MessageType | undefined;
  readonly message: Record<string, unknown> | undefined;
}

function decodeBody(body: Buffer): Frame {
  let env: DecodedEnvelope;
  try {
    env = decodeCanonical(body) ?? decodeAnyEnvelope(body);
  } catch (err) {
    throw new ProtocolError("undecodable", `undecodable frame: ${(err as Error).message}`);
  }
  const { id, replyTo, type, message } = env;
  if (!type || !message) throw new ProtocolError("empty", "frame without a message body");
  if (!Number.isInteger(id) || id <= 0) throw new ProtocolError("bad_id", `frame with invalid id ${id}`);
  plainNumbers(message);
  return { id, replyTo, type, message } as unknown as Frame;
}

/** Any Envelope, as protobufjs decodes it (repeated or unknown fields, fields out of order, ...). */
function decodeAnyEnvelope(body: Buffer): DecodedEnvelope {
  const env = Envelope.decode(body);
  const type = env.body as MessageType | undefined;
  return { id: env.id, replyTo: env.replyTo, type, message: type && ((env as unknown as Record<string, unknown>)[type] as Record<string, unknown>) };
}

/**
 * The Envelope every sender writes (encodeFrame): id, reply_to when not 0, then one body field
 * that ends the frame. It decodes to what Envelope.decode makes of it, with the same calls of
 * the reader and of the body's generated decoder; anything else (or an error, for its message)
 * is left to Envelope.decode: undefined.
 */
function decodeCanonical(body: Buffer): DecodedEnvelope | undefined {
  try {
    const reader = protobuf.Reader.create(body);
    let id = 0;
    let replyTo = 0;
    let tag = reader.tag();
    if (tag === 8) {
      id = reader.uint32();
      tag = reader.tag();
    }
    if (tag === 16) {
      replyTo = reader.uint32();
      tag = reader.tag();
    }
    const field = BODY.byTag.get(tag);
    if (field === undefined) return undefined;
    const length = reader.size();
    if (reader.pos + length !== body.length) return undefined;
    return { id, replyTo, type: field.type, message: field.decode(reader, length, undefined, 1) };
  } catch {
    return undefined;
  }
}

/** protobufjs' 64-bit value: a Long when the `long` package is installed, also as a field default. */
interface LongLike {
  readonly low: number;
  readonly high: number;
  readonly unsigned: boolean;
}
const isLong = (v: unknown): v is LongLike =>
  typeof v === "object" && v !== null && typeof (v as LongLike).low === "number" && typeof (v as LongLike).high === "number" && typeof (v as LongLike).unsigned === "boolean";

/**
 * 64-bit fields travel as plain numbers (etoken_ca.proto: milliseconds, epochs, counters, all
 * below 2^53; proto/contract.ts refuses larger ones). protobufjs decodes them as Long objects
 * whenever the `long` package is present, defaults included (inherited from the prototype):
 * every one becomes a number here, with no global setting that depends on import order.
 */
export function plainNumbers(message: Record<string, unknown>): void {
  for (const key in message) {
    const v = message[key];
    if (isLong(v)) {
      message[key] = (v.high >>> 0) * 2 ** 32 + (v.low >>> 0);
    } else if (Array.isArray(v)) {
      for (const item of v as unknown[]) if (typeof item === "object" && item !== null && !ArrayBuffer.isView(item)) plainNumbers(item as Record<string, unknown>);
    } else if (typeof v === "object" && v !== null && !ArrayBuffer.isView(v)) {
      plainNumbers(v as Record<string, unknown>);
    }
  }
}
