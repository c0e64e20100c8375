// The framing module encodes and decodes the Envelope by its body's type (services/common/framing.ts)
// instead of protobufjs' Envelope.encode/decode, which test or clear every field of the oneof on
// every frame. Proof that nothing changed on the wire: for every message type of the contract,
// random messages with every field of etoken_ca.proto (read by protobufjs' reflection) and the
// frames corpus encode to exactly the bytes protobufjs writes, and any body, valid or mangled,
// decodes to what protobufjs decodes (or is refused with the same error).
import t, { type Test } from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import protobuf from "protobufjs";
import { VALIDATORS } from "../../proto/contract.js";
import { Envelope, type Frame, type MessageType } from "../../proto/wire.js";
import { ProtocolError } from "../../services/common/errors.js";
import { encodeFrame, FrameDecoder, plainNumbers } from "../../services/common/framing.js";
import { ROOT } from "../fixtures/server.js";

const root = protobuf.loadSync(path.join(ROOT, "proto/etoken_ca.proto"));
const TYPES = Object.keys(VALIDATORS) as MessageType[];

/** A small seeded generator: the same cases on every run, reproducible from the seed in a failure. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

function randomValue(type: string, resolved: protobuf.ReflectionObject | null, rnd: () => number, depth: number): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  if (resolved instanceof protobuf.Enum) return pick(Object.values(resolved.values));
  if (resolved instanceof protobuf.Type) return randomMessage(resolved, rnd, depth + 1);
  switch (type) {
    case "string":
      return pick(["", "a", "req.AAAAAAAAAAAA", "é€😀", "x".repeat(130), "0A1B", "line\nbreak\0nul"]);
    case "bytes":
      return Buffer.from(Array.from({ length: pick([0, 1, 5, 127, 128, 300, 20000]) }, () => Math.floor(rnd() * 256)));
    case "uint32":
      return pick([0, 1, 127, 128, 16383, 16384, 2 ** 31, 2 ** 32 - 1]);
    case "uint64":
      return pick([0, 1, 127, 128, 2 ** 32, 1700000000000, 2 ** 53 - 1]);
    case "int32":
      return pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31)]);
    case "double":
    case "float":
      return pick([0, 0.5, 1.25, 86400000]);
    case "bool":
      return pick([false, true]);
    default:
      throw new Error(`test generator: no values for field type ${type}`);
  }
}

function randomMessage(type: protobuf.Type, rnd: () => number, depth = 0): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    if (rnd() < 0.15) continue; // some fields absent
    f.resolve();
    if (f instanceof protobuf.MapField) {
      m[f.name] = Object.fromEntries(Array.from({ length: Math.floor(rnd() * 4) }, (_, i) => [`k${i}`, randomValue(f.type, f.resolvedType, rnd, depth)]));
    } else if (f.repeated) {
      m[f.name] = depth > 2 ? [] : Array.from({ length: Math.floor(rnd() * 4) }, () => randomValue(f.type, f.resolvedType, rnd, depth));
    } else {
      m[f.name] = randomValue(f.type, f.resolvedType, rnd, depth);
    }
  }
  return m;
}

/** What protobufjs writes for the frame (the framing module's previous encoder). */
function protobufjsFrame(id: number, replyTo: number, type: MessageType, payload: unknown): Buffer {
  return Buffer.from(Envelope.encodeDelimited({ id, replyTo, [type]: payload } as never).finish());
}

function lengthPrefixed(body: Buffer): Buffer {
  const w = protobuf.Writer.create();
  w.uint32(body.length);
  return Buffer.concat([Buffer.from(w.finish()), body]);
}

/** The framing module's previous decoder: protobufjs' Envelope.decode, then the same checks. */
function protobufjsDecode(body: Buffer): Frame {
  let env: ReturnType<typeof Envelope.decode>;
  try {
    env = Envelope.decode(body);
  } catch (err) {
    throw new ProtocolError("undecodable", `undecodable frame: ${(err as Error).message}`);
  }
  const type = env.body as MessageType | undefined;
  if (!type) throw new ProtocolError("empty", "frame without a message body");
  if (!Number.isInteger(env.id) || env.id <= 0) throw new ProtocolError("bad_id", `frame with invalid id ${env.id}`);
  const message = (env as unknown as Record<string, unknown>)[type] as Record<string, unknown>;
  plainNumbers(message);
  return { id: env.id, replyTo: env.replyTo, type, message } as unknown as Frame;
}

type Outcome = { frame: Frame } | { error: string };
function outcome(decode: () => Frame): Outcome {
  try {
    return { frame: decode() };
  } catch (err) {
    return { error: `${(err as ProtocolError).code}: ${(err as Error).message}` };
  }
}

function compareDecoding(t: Test, body: Buffer, what: string): void {
  const ours = outcome(() => {
    const frames = new FrameDecoder().push(lengthPrefixed(body));
    if (frames.length !== 1) throw new Error(`${frames.length} frames`);
    return frames[0]!;
  });
  const theirs = outcome(() => protobufjsDecode(body));
  t.strictSame(ours, theirs, what);
  if ("frame" in ours && "frame" in theirs) {
    t.equal(Object.getPrototypeOf(ours.frame.message), Object.getPrototypeOf(theirs.frame.message), `${what}: the same generated class`);
    t.strictSame(Object.keys(ours.frame.message), Object.keys(theirs.frame.message), `${what}: the same fields present`);
  }
}

t.test("every message type: the same bytes as protobufjs' Envelope.encodeDelimited", async (t) => {
  let compared = 0;
  for (const type of TYPES) {
    const reflected = root.lookupType(`etokenca.${type[0]!.toUpperCase()}${type.slice(1)}`);
    const rnd = prng(TYPES.indexOf(type) + 1);
    for (let i = 0; i < 40; i++) {
      const payload = i === 0 ? {} : randomMessage(reflected, rnd);
      const [id, replyTo] = [[1, 0], [127, 0], [128, 5], [2 ** 32 - 1, 2 ** 31], [300, 16384]][i % 5]!;
      const ours = encodeFrame(id!, replyTo!, type, payload as never);
      const theirs = protobufjsFrame(id!, replyTo!, type, payload);
      if (!ours.equals(theirs)) {
        t.fail(`${type} #${i}: bytes differ`, { ours: ours.toString("hex").slice(0, 200), theirs: theirs.toString("hex").slice(0, 200) });
        continue;
      }
      compared++;
    }
  }
  t.equal(compared, TYPES.length * 40, `all ${TYPES.length} types, 40 messages each`);
  // the secret path (a PIN in a zeroed buffer of its own) writes the same bytes too
  const login = { pin: Buffer.from("123456"), expectedSerial: "0123456789abcdef" };
  t.strictSame(encodeFrame(3, 0, "login", login, true), protobufjsFrame(3, 0, "login", login), "login, secret");
});

t.test("the frames corpus: the same bytes as protobufjs", async (t) => {
  const cases = (JSON.parse(fs.readFileSync(path.join(ROOT, "test/reliability/corpus/frames.json"), "utf8")) as { cases: { id: string; send: { frame?: { type: MessageType; payload: unknown; id?: number; replyTo?: number } } }[] }).cases;
  const withHex = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(withHex) : v && typeof v === "object" ? ("$hex" in v ? Buffer.from(String((v as { $hex: string }).$hex), "hex") : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withHex(x)]))) : v;
  let n = 0;
  for (const c of cases) {
    const f = c.send.frame;
    if (!f) continue;
    const payload = withHex(f.payload);
    t.strictSame(encodeFrame(f.id ?? 1, f.replyTo ?? 0, f.type, payload as never), protobufjsFrame(f.id ?? 1, f.replyTo ?? 0, f.type, payload), c.id);
    n++;
  }
  t.ok(n >= 10, `${n} frames of the corpus compared`);
});

t.test("decoding: every type, valid and mangled bodies, as protobufjs decodes them", async (t) => {
  const rnd = prng(20);
  const bodies: [string, Buffer][] = [];
  for (const type of TYPES) {
    const reflected = root.lookupType(`etokenca.${type[0]!.toUpperCase()}${type.slice(1)}`);
    for (let i = 0; i < 8; i++) {
      const payload = randomMessage(reflected, rnd);
      const [id, replyTo] = [[1, 0], [0, 0], [9, 3], [2 ** 32 - 1, 1]][i % 4]!;
      const body = Buffer.from(Envelope.encode({ id, replyTo, [type]: payload } as never).finish());
      bodies.push([`${type} #${i}`, body]);
      // mangled: truncated, a byte changed, garbage after it, the body field twice or after
      // another type's, an unknown field, the fields out of order, id repeated
      bodies.push([`${type} #${i} truncated`, body.subarray(0, Math.floor(rnd() * body.length))]);
      const flipped = Buffer.from(body);
      const at = Math.floor(rnd() * flipped.length);
      if (flipped.length > 0) flipped[at] = flipped[at]! ^ (1 << Math.floor(rnd() * 8));
      bodies.push([`${type} #${i} one bit flipped`, flipped]);
      bodies.push([`${type} #${i} trailing garbage`, Buffer.concat([body, Buffer.from([Math.floor(rnd() * 256), 1])])]);
      const other = TYPES[Math.floor(rnd() * TYPES.length)]!;
      const otherBody = Buffer.from(Envelope.encode({ [other]: {} } as never).finish());
      bodies.push([`${type} #${i} after a ${other}`, Buffer.concat([otherBody, body])]);
      bodies.push([`${type} #${i} then a ${other}`, Buffer.concat([body, otherBody])]);
      bodies.push([`${type} #${i} twice`, Buffer.concat([body, body])]);
      bodies.push([`${type} #${i} unknown field`, Buffer.concat([body, Buffer.from([0xf8, 0x07, 0x01])])]);
      bodies.push([`${type} #${i} reply_to first`, Buffer.concat([Buffer.from([0x10, 0x02]), body])]);
      bodies.push([`${type} #${i} id repeated`, Buffer.concat([Buffer.from([0x08, 0x05]), body])]);
    }
  }
  for (const hex of ["", "00", "08", "0801", "080110", "0801a201", "0801a20105", "ffffffff", "a2010008", "0800a20100"]) bodies.push([`hex ${hex || "(empty)"}`, Buffer.from(hex, "hex")]);
  for (const [what, body] of bodies) compareDecoding(t, body, what);
});
