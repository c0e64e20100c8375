// The DER encoder (checked by `openssl asn1parse`), the strict reader, and PEM.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import {
  DerSequence, TAG, bitString, boolean, children, decodeBoolean, decodeOid, decodeTime, decodeUnsigned, explicit, ia5String,
  implicit, integer, MAX_OID_ARC_BYTES, MAX_OID_BYTES, nul, octetString, oid, parseDer, printableString, seq, set, time, tlv,
  utf8String, walk,
} from "../../services/common/x509/der.js";
import { pemDecode, pemEncode } from "../../services/common/x509/pem.js";
import { RequestError } from "../../services/common/errors.js";
import { thrown } from "../fixtures/thrown.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-der-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
/** `openssl asn1parse` of DER bytes: one line per TLV, "depth:kind:value" */
function asn1(der: Buffer): string[] {
  const f = path.join(dir, `x${++n}.der`);
  fs.writeFileSync(f, der);
  const out = execFileSync("openssl", ["asn1parse", "-inform", "DER", "-in", f], { encoding: "utf8" });
  return out.trim().split("\n").map((l) => {
    const m = /d=(\d+)\s+hl=\d+\s+l=\s*\d+\s+(?:prim|cons):\s+(.*?)\s*$/.exec(l)!;
    return `${m[1]}:${m[2]!.replace(/\s+:/, ":")}`;
  });
}
const fail = (m: string): Error => new RequestError("bad_der", m);
const refusal = (fn: () => unknown): RequestError => thrown(RequestError, fn);

t.test("encoder output as OpenSSL reads it", async (t) => {
  const der = seq(
    integer(0), integer(127), integer(128), integer(-1), integer(-128), integer(-129), integer(Buffer.from([0, 0, 0xff])),
    integer(2n ** 64n), integer(Buffer.from([0x80, 0x01])), boolean(true), boolean(false), nul(),
    oid("1.2.840.113549.1.1.11"), oid("2.999.3"), oid("2.25.329800735698586629295641978511506172918"),
    bitString(Buffer.from([0xa0]), 5), octetString(Buffer.from("hi")),
    time(new Date("2049-12-31T23:59:59.999Z")), time(new Date("2050-01-01T00:00:00Z")), time(new Date("1950-01-01T00:00:00Z")),
    printableString("Example (grid) CA"), utf8String("Jürgen"), ia5String("a@b.org"),
    explicit(0, integer(2)), implicit(6, Buffer.from("http://x"), false), set(integer(2), integer(1)),
  );
  t.same(asn1(der), [
    "0:SEQUENCE",
    "1:INTEGER:00", "1:INTEGER:7F", "1:INTEGER:80", "1:INTEGER:-01", "1:INTEGER:-80", "1:INTEGER:-81", "1:INTEGER:FF",
    "1:INTEGER:010000000000000000", "1:INTEGER:8001", "1:BOOLEAN:255", "1:BOOLEAN:0", "1:NULL",
    "1:OBJECT:sha256WithRSAEncryption", "1:OBJECT:2.999.3", "1:OBJECT:2.25.329800735698586629295641978511506172918",
    "1:BIT STRING", "1:OCTET STRING:hi",
    "1:UTCTIME:491231235959Z", "1:GENERALIZEDTIME:20500101000000Z", "1:UTCTIME:500101000000Z",
    "1:PRINTABLESTRING:Example (grid) CA", "1:UTF8STRING:Jürgen", "1:IA5STRING:a@b.org",
    "1:cont [ 0 ]", "2:INTEGER:02", "1:cont [ 6 ]", "1:SET", "2:INTEGER:01", "2:INTEGER:02",
  ]);
  // lengths in long form (over 127 and over 255 bytes)
  t.same(asn1(seq(octetString(Buffer.alloc(200)), octetString(Buffer.alloc(70000)))).map((l) => l.slice(0, 14)), ["0:SEQUENCE", "1:OCTET STRING", "1:OCTET STRING"]);
});

t.test("encoder refusals", async (t) => {
  t.throws(() => oid("1.40.1"), RangeError);
  t.throws(() => oid("3.1"), RangeError);
  t.throws(() => oid("1.2.03"), RangeError);
  t.throws(() => oid("1"), RangeError);
  t.equal(oid("1.3.6.1.5.5.7.3.2"), oid("1.3.6.1.5.5.7.3.2"), "cached");
  t.throws(() => printableString("a@b"), RangeError);
  t.throws(() => ia5String("é"), RangeError);
  t.throws(() => time(new Date("1949-12-31T23:59:59Z")), RangeError);
  t.throws(() => time(new Date(Number.NaN)), RangeError);
  t.throws(() => integer(2 ** 60), RangeError);
});

t.test("reader round trips and refusals", async (t) => {
  const der = seq(integer(Buffer.from([0x80])), oid("1.2.840.113549.1.9.1"), boolean(true), time(new Date("2051-06-07T08:09:10Z")), octetString(Buffer.alloc(300)));
  const top = parseDer(der, fail);
  t.equal(children(top, fail).length, 5);
  const s = new DerSequence(top, fail, "test");
  t.same(decodeUnsigned(s.next(TAG.INTEGER, "i"), "i", fail), Buffer.from([0x80]));
  t.equal(decodeOid(s.next(TAG.OID, "o"), "o", fail), "1.2.840.113549.1.9.1");
  t.equal(decodeBoolean(s.next(TAG.BOOLEAN, "b"), "b", fail), true);
  t.equal(decodeTime(s.next(undefined, "t"), "t", fail).toISOString(), "2051-06-07T08:09:10.000Z");
  t.equal(s.optional(TAG.INTEGER, "x"), undefined);
  t.equal(s.next(TAG.OCTET_STRING, "os").length, 300);
  s.end();
  for (const o of ["2.999.3", "0.9.2342.19200300.100.1.25", "2.25.329800735698586629295641978511506172918"]) {
    t.equal(decodeOid(parseDer(oid(o), fail), "o", fail), o);
  }

  const refused: [string, Buffer, RegExp][] = [
    ["empty", Buffer.alloc(0), /empty input/],
    ["indefinite", Buffer.from("30800201000000", "hex"), /indefinite length/],
    ["non-minimal short", Buffer.from("308103020100", "hex"), /non-minimal length/],
    ["leading zero length", Buffer.from("30820003020100", "hex"), /non-minimal length/],
    ["too long", Buffer.from("3005020100", "hex"), /runs past the end/],
    ["trailing", Buffer.from("30030201000000", "hex"), /2 trailing bytes/],
    ["high tag", Buffer.from("1f0100", "hex"), /high-number tag/],
    ["huge length", Buffer.from("3085000000000001", "hex"), /too large/],
    ["child past parent", Buffer.from("300202050000", "hex"), /runs past the end|trailing/],
  ];
  for (const [what, buf, why] of refused) {
    t.throws(() => walk(parseDer(buf, fail), fail), why, what);
  }
  t.throws(() => parseDer(Buffer.alloc(2000, 0), fail, { maxSize: 1000 }), /more than the limit of 1000/);
  let deep = integer(1);
  for (let i = 0; i < 40; i++) deep = seq(deep);
  t.throws(() => walk(parseDer(deep, fail), fail), /nesting deeper than 32/);
  const err = (() => {
    try {
      parseDer(Buffer.from("3080", "hex"), fail);
    } catch (e) {
      return e;
    }
  })();
  t.type(err, RequestError, "errors come from the caller's factory");

  t.throws(() => decodeUnsigned(parseDer(Buffer.from("0202007f", "hex"), fail), "i", fail), /non-minimal INTEGER/);
  t.throws(() => decodeUnsigned(parseDer(Buffer.from("020180", "hex"), fail), "i", fail), /negative/);
  t.throws(() => decodeBoolean(parseDer(Buffer.from("010101", "hex"), fail), "b", fail), /not DER/);
  t.throws(() => decodeOid(parseDer(Buffer.from("0602802a", "hex"), fail), "o", fail), /non-minimal/);
  t.throws(() => decodeTime(parseDer(Buffer.from("170d3439313333313233353935395a", "hex"), fail), "t", fail), /not a valid time/);
  t.throws(() => decodeTime(parseDer(Buffer.from("170b343931323331323335395a", "hex"), fail), "t", fail), /YYMMDDHHMMSSZ/);
  const longTime = refusal(() => decodeTime(parseDer(tlv(TAG.UTC_TIME, Buffer.alloc(10_000, 0x39)), fail), "t", fail));
  t.equal(longTime.message, `t: UTCTime "${"9".repeat(40)}..." is not YYMMDDHHMMSSZ`, "a long value is cut short in the message");
});

t.test("OBJECT IDENTIFIERs are bounded before they are decoded", async (t) => {
  const uuidArc = "2.25.340282366920938463463374607431768211455"; // the largest 128-bit UUID arc
  t.equal(decodeOid(parseDer(oid(uuidArc), fail), "o", fail), uuidArc, "a 2.25 UUID OID is read");
  const longest = Buffer.concat([Buffer.from([0x06, MAX_OID_BYTES, 0x2a]), Buffer.alloc(MAX_OID_BYTES - 1, 0x01)]);
  t.equal(decodeOid(parseDer(longest, fail), "o", fail).split(".").length, MAX_OID_BYTES + 1, `${MAX_OID_BYTES} bytes are read`);
  const tooLong = Buffer.concat([Buffer.from([0x06, MAX_OID_BYTES + 1, 0x2a]), Buffer.alloc(MAX_OID_BYTES, 0x01)]);
  t.equal(refusal(() => decodeOid(parseDer(tooLong, fail), "o", fail)).message, `o: OBJECT IDENTIFIER of ${MAX_OID_BYTES + 1} bytes is longer than the limit of ${MAX_OID_BYTES}`);
  // one arc of 47 KB: refused at once, in a message that does not repeat it
  const hugeArc = Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(47_000, 0x81), Buffer.from([0x01])]);
  const huge = refusal(() => decodeOid(parseDer(tlv(TAG.OID, hugeArc), fail), "o", fail));
  t.match(huge.message, /OBJECT IDENTIFIER of 47002 bytes is longer than the limit/);
  t.ok(huge.message.length < 120, `a short message (${huge.message.length} characters)`);
  const arc = Buffer.concat([Buffer.from([0x06, MAX_OID_ARC_BYTES + 2, 0x2a]), Buffer.alloc(MAX_OID_ARC_BYTES, 0x81), Buffer.from([0x01])]);
  t.equal(refusal(() => decodeOid(parseDer(arc, fail), "o", fail)).message, `o: OBJECT IDENTIFIER arc longer than ${MAX_OID_ARC_BYTES} bytes`);
});

t.test("walk accepts what OpenSSL writes", async (t) => {
  const key = path.join(dir, "k.pem");
  const cert = path.join(dir, "c.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=x", "-addext", "subjectAltName=email:a@b.org"], { stdio: "ignore" });
  const der = pemDecode(fs.readFileSync(cert, "latin1"), "CERTIFICATE");
  walk(parseDer(der, fail), fail);
  t.same(execFileSync("openssl", ["x509", "-in", cert, "-outform", "DER"]), der, "pemDecode gives OpenSSL's DER");
  const ours = path.join(dir, "ours.pem");
  fs.writeFileSync(ours, pemEncode(der, "CERTIFICATE"));
  t.same(execFileSync("openssl", ["x509", "-in", ours, "-outform", "DER"]), der, "OpenSSL reads pemEncode's output");
});

t.test("PEM", async (t) => {
  const der = Buffer.from(Array.from({ length: 200 }, (_, i) => i));
  const pem = pemEncode(der, "X509 CRL");
  const lines = pem.split("\n");
  t.equal(lines[0], "-----BEGIN X509 CRL-----");
  t.same(lines.slice(1, -2).map((l) => l.length), [64, 64, 64, 64, 12]);
  t.equal(lines.at(-2), "-----END X509 CRL-----");
  t.same(pemDecode(pem, "X509 CRL"), der);
  t.same(pemDecode("Some text before\n" + pem.replace(/\n/g, "\r\n") + "and after\n", "X509 CRL"), der, "text around, CRLF");

  const body = pem.split("\n").slice(1, -2);
  const refused: [string, string, RegExp][] = [
    ["no block", "hello", /no "-----BEGIN X509 CRL-----"/],
    ["wrong label", pem.replace(/X509 CRL/g, "CRL"), /found a PEM "CRL" block, expected X509 CRL/],
    ["two blocks", pem + pem, /exactly one PEM X509 CRL block, found 2/],
    ["no END", pem.split("\n").slice(0, -2).join("\n"), /END X509 CRL-----" line missing/],
    ["END label", pem.replace("END X509 CRL", "END CERTIFICATE"), /must end with/],
    ["headers", ["-----BEGIN X509 CRL-----", "Proc-Type: 4,ENCRYPTED", ...body, "-----END X509 CRL-----"].join("\n"), /headers/],
    ["junk", ["-----BEGIN X509 CRL-----", body[0], "not base64!", ...body.slice(1), "-----END X509 CRL-----"].join("\n"), /outside the base64 alphabet/],
    ["padding", ["-----BEGIN X509 CRL-----", "QQ==", "QUFB", "-----END X509 CRL-----"].join("\n"), /padding in the middle/],
    ["length", ["-----BEGIN X509 CRL-----", "QUF", "-----END X509 CRL-----"].join("\n"), /multiple of 4/],
    ["non-canonical", ["-----BEGIN X509 CRL-----", "QR==", "-----END X509 CRL-----"].join("\n"), /non-canonical/],
    ["empty", ["-----BEGIN X509 CRL-----", "-----END X509 CRL-----"].join("\n"), /empty block/],
  ];
  for (const [what, text, why] of refused) t.throws(() => pemDecode(text, "X509 CRL"), why, what);
  t.throws(() => pemDecode("x", "X509 CRL"), RequestError, "RequestError by default");
});
