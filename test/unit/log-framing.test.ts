import t from "tap";
import { createLogger, LOG_LEVELS, setLogLevel, setLogSink } from "../../services/common/log.js";
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from "../../services/common/framing.js";
import { ProtocolError } from "../../services/common/errors.js";
import { thrown } from "../fixtures/thrown.js";

t.test("the logger refuses secret-like fields and raw bytes", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  setLogLevel("debug");
  const log = createLogger("test");
  log.info("login", { pin: "123456", userPin: "654321", passphrase: "hunter22", password: "pw", buf: Buffer.from("secret-bytes"), serial: "ABC" });
  const rec = JSON.parse(lines[0]!);
  t.equal(rec.msg, "login");
  t.equal(rec.serial, "ABC", "ordinary fields pass");
  for (const k of ["pin", "userPin", "passphrase", "password"]) t.equal(rec[k], "[refused: secret-like field]", `${k} refused`);
  t.equal(rec.buf, "[refused: 12 raw bytes]");
  t.notMatch(lines[0]!, /123456|654321|hunter22|secret-bytes/);
  setLogLevel("warning");
  log.info("hidden");
  t.equal(lines.length, 1, "below the level: not written");
  setLogLevel("info");
});

t.test("log lines carry no control, bidi, line-separator or invisible format characters", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  const log = createLogger("test");
  // what refused usernames carried in: C0, DEL, C1 (CSI, NEL), bidi overrides and isolates,
  // U+2028/2029, zero-width and other format characters, a BOM, a tag character
  const hostile = "a\x00\x1b[31m\x7f\x85\x9b\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029\u200b\u200e\u200f\u00ad\u061c\ufeff\u{e0041}z";
  log.warning(`refused username ${hostile}`, { username: hostile, nested: { list: [hostile] } });
  const line = lines[0]!;
  t.equal(line.split("\n").length, 2, "one line, ending in a newline");
  t.notMatch(line.slice(0, -1), /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u, "no such character left raw");
  const rec = JSON.parse(line);
  t.equal(rec.username, hostile, "the JSON still decodes to the exact value");
  t.equal(rec.nested.list[0], hostile, "in nested values too");
  t.equal(rec.msg, `refused username ${hostile}`, "and in the message");
  t.match(line, /\\u202e/, "escaped as \\u");
  t.match(line, /\\udb40\\udc41/, "astral format characters as their surrogate pair");
});

t.test("long values are cut short in log lines", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  const oid = `1.2.${"9".repeat(126_000)}`;
  createLogger("test").warning(`unknown ${oid}`, { oid });
  const rec = JSON.parse(lines[0]!);
  t.ok(lines[0]!.length < 2_500, `one short line (${lines[0]!.length} characters)`);
  t.match(rec.oid, /^1\.2\.9{100,}\.\.\. \(\d+ more characters\)$/, "the field says how much was cut");
  t.match(rec.msg, /^unknown 1\.2\.9+\.\.\. \(\d+ more characters\)$/, "so does the message");
});

t.test("enabled(level) says whether a line at that level would be written, as the level changes", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => {
    setLogSink(process.stderr);
    setLogLevel("info");
  });
  const log = createLogger("test");
  const child = log.child("part");
  for (const level of LOG_LEVELS) {
    setLogLevel(level);
    for (const asked of LOG_LEVELS) {
      const before = lines.length;
      log[asked]("a line");
      const written = lines.length > before;
      t.equal(log.enabled(asked), written, `level ${level}: enabled("${asked}") is ${written}, as a ${asked} line is ${written ? "" : "not "}written`);
      t.equal(child.enabled(asked), written, `level ${level}: a child logger agrees on ${asked}`);
    }
  }
  setLogLevel("info");
  t.equal(log.enabled("debug"), false, "the default level hides debug");
});

t.test("framing: round trip, split chunks, several frames in one chunk", async (t) => {
  const a = encodeFrame(1, 0, "ping", { nonce: 7 });
  const b = encodeFrame(2, 1, "failure", { code: "x", message: "y".repeat(300) });
  const d = new FrameDecoder();
  const all = Buffer.concat([a, b]);
  const frames = [...d.push(all.subarray(0, 3)), ...d.push(all.subarray(3, 200)), ...d.push(all.subarray(200))];
  t.equal(frames.length, 2);
  t.equal(frames[0]!.type, "ping");
  t.equal((frames[0]!.message as { nonce: number }).nonce, 7);
  t.equal(frames[1]!.type, "failure");
  t.equal(frames[1]!.replyTo, 1);
  t.equal(d.buffered, 0);
});

t.test("framing: garbage, over-size, empty body and id 0 are protocol errors", async (t) => {
  t.throws(() => new FrameDecoder().push(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), ProtocolError);
  t.throws(() => new FrameDecoder().push(Buffer.from([0x05, 0xff, 0xff, 0xff, 0xff, 0xff])), { code: "protocol.undecodable" });
  const big = MAX_FRAME_BYTES + 1;
  const prefix = [(big & 0x7f) | 0x80, ((big >> 7) & 0x7f) | 0x80, big >> 14];
  t.throws(() => new FrameDecoder().push(Buffer.from(prefix)), { code: "protocol.frame_too_large" });
  t.throws(() => new FrameDecoder().push(Buffer.from([0x02, 0x08, 0x01])), { code: "protocol.empty" }, "a frame without a body");
  t.throws(() => new FrameDecoder().push(encodeFrame(0, 0, "ack", {})), { code: "protocol.bad_id" });
  const partial = new FrameDecoder();
  t.same(partial.push(encodeFrame(1, 0, "ack", {}).subarray(0, 1)), []);
  t.equal(partial.buffered, 1, "a truncated frame waits for more (the channel reports it on close)");
});

t.test("framing: a secret frame decodes like any other, and a PIN of the maximum length fits", async (t) => {
  for (const length of [1, 6, 128]) {
    const pin = Buffer.alloc(length, 0x37);
    const frame = encodeFrame(9, 0, "login", { pin, expectedSerial: "0123456789abcdef" }, true);
    const [decoded] = new FrameDecoder().push(frame);
    const login = (decoded as { message: { pin: Uint8Array; expectedSerial: string } }).message;
    t.equal(Buffer.from(login.pin).toString("latin1"), "7".repeat(length), `a PIN of ${length} bytes arrives whole`);
    t.equal(login.expectedSerial, "0123456789abcdef");
    t.equal(decoded!.id, 9);
    t.same(pin, Buffer.alloc(length, 0x37), "the caller's PIN Buffer is left to the caller");
  }  const huge = Buffer.alloc(5000, 0x37);
  const e = thrown(ProtocolError, () => encodeFrame(10, 0, "login", { pin: huge, expectedSerial: "x" }, true));
  t.match(e.message, /outgoing secret login frame exceeds 4096 bytes/, "a secret frame that would outgrow its own buffer is refused, not copied");
});
