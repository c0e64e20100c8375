// Mutation fuzzing of the CSR, DER and DN readers, with OpenSSL as the oracle (issue 14, item 8).
// Valid requests (test/fixtures/fuzz/: one made by `openssl req`, and requests built here and
// signed with the checked-in test key) are mutated by a PRNG from checked-in seeds: bit flips,
// interesting bytes, length fields changed, truncations, insertions, tags swapped. Half of the
// mutants are mutated inside certificationRequestInfo and signed again, so that the signature
// holds and the parsers behind it are reached. For every mutant:
//   - parseCsr, parseDer/walk and parseName throw nothing but the caller's RequestError;
//   - a request parseCsr accepts is one `openssl req -verify` loads and verifies, with the same
//     public key (SPKI DER from `openssl req -pubkey`).
// Where we refuse and OpenSSL accepts is allowed (we are stricter) and counted. A failure names
// the seed and the case; ETCA_FUZZ_CASES raises the number of cases per seed (CI: the default).
import t from "tap";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { children, integer, nul, oid, parseDer, seq, set, TAG, tlv, walk, bitString, contextTag, octetString, boolean, type Tlv } from "../../services/common/x509/der.js";
import { RequestError } from "../../services/common/errors.js";
import { pemDecode } from "../../services/common/x509/pem.js";
import { parseName } from "../../services/common/x509/dn.js";
import { parseCsr } from "../../services/common/x509/csr.js";
import { ROOT } from "../fixtures/server.js";

const SEEDS = [0x5eed0001, 0x5eed0002, 0x5eed0003, 0x5eed0004];
const CASES_PER_SEED = Number(process.env.ETCA_FUZZ_CASES ?? 250);
/** Refusals we also show OpenSSL: one in this many (the count of "we are stricter"). */
const REFUSAL_SAMPLE = 8;

const FIXTURES = path.join(ROOT, "test/fixtures/fuzz");
const key = crypto.createPrivateKey(fs.readFileSync(path.join(FIXTURES, "key-2048.pem")));
const spki = crypto.createPublicKey(key).export({ format: "der", type: "spki" });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-fuzz-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** mulberry32: small, fast, and the same sequence on every machine. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const SHA = { sha1: "1.2.840.113549.1.1.5", sha256: "1.2.840.113549.1.1.11", sha512: "1.2.840.113549.1.1.13" } as const;

function signed(cri: Buffer, hash: keyof typeof SHA): Buffer {
  return seq(cri, seq(oid(SHA[hash]), nul()), bitString(crypto.sign(hash, cri, { key, padding: crypto.constants.RSA_PKCS1_PADDING })));
}

const atv = (type: string, value: Buffer): Buffer => set(seq(oid(type), value));
const str = (tag: number, s: string | Buffer): Buffer => tlv(tag, Buffer.isBuffer(s) ? s : Buffer.from(s, "utf8"));

/** Requests built here: the string types and attributes real clients send, and a few they could. */
function builtSeeds(): { name: string; hash: keyof typeof SHA; cri: Buffer }[] {
  const extReq = seq(
    oid("1.2.840.113549.1.9.14"),
    set(seq(
      seq(oid("1.3.6.1.5.5.7.1.14"), boolean(true), octetString(Buffer.from("300c300a06082b06010505071501", "hex"))),
      seq(oid("2.5.29.19"), boolean(true), octetString(seq(boolean(true)))),
      seq(oid("2.5.29.17"), octetString(seq(tlv(contextTag(1, false), Buffer.from("a@example.org"))))),
    )),
  );
  const subject1 = seq(
    atv("0.9.2342.19200300.100.1.25", str(TAG.IA5_STRING, "org")),
    atv("0.9.2342.19200300.100.1.25", str(TAG.IA5_STRING, "example")),
    atv("2.5.4.10", str(TAG.PRINTABLE_STRING, "Grid (test) CA")),
    atv("2.5.4.3", str(TAG.UTF8_STRING, "Jürgen Ñandú 名前")),
  );
  const subject3 = seq(
    atv("2.5.4.6", str(TAG.PRINTABLE_STRING, "DE")),
    atv("2.5.4.3", str(TAG.BMP_STRING, Buffer.from("00420065006e", "hex"))),
    atv("2.5.4.11", str(TAG.UNIVERSAL_STRING, Buffer.from("0000004f00000055", "hex"))),
    atv("2.5.4.7", str(TAG.T61_STRING, "Z\xfcrich")),
    set(seq(oid("2.5.4.3"), str(TAG.UTF8_STRING, "a")), seq(oid("2.5.4.5"), str(TAG.PRINTABLE_STRING, "1"))),
  );
  const attrs3 = [
    seq(oid("1.2.840.113549.1.9.7"), set(str(TAG.PRINTABLE_STRING, "challenge"))),
    seq(oid("1.2.840.113549.1.9.2"), set(str(TAG.UTF8_STRING, "unstructured"))),
  ];
  return [
    { name: "built: DC/O/CN, extensionRequest", hash: "sha256", cri: seq(integer(0), subject1, spki, tlv(contextTag(0, true), extReq)) },
    { name: "built: empty subject, no attributes", hash: "sha1", cri: seq(integer(0), seq(), spki) },
    { name: "built: BMP/Universal/T61, multi-valued RDN, two attributes", hash: "sha512", cri: seq(integer(0), subject3, spki, tlv(contextTag(0, true), ...attrs3)) },
  ];
}

interface Seed {
  name: string;
  hash: keyof typeof SHA;
  cri: Buffer;
  der: Buffer;
}

const opensslMade = fs.readFileSync(path.join(FIXTURES, "openssl-myproxy.csr.der"));
const seeds: Seed[] = [
  { name: "openssl req: MyProxy-like", hash: "sha256", cri: children(parseDer(opensslMade, (m) => new Error(m)), (m) => new Error(m))[0]!.raw, der: opensslMade },
  ...builtSeeds().map((s) => ({ ...s, der: signed(s.cri, s.hash) })),
];

/** Offsets of every TLV in a valid DER value (where length and tag mutations aim). */
function tlvOffsets(der: Buffer): number[] {
  const out: number[] = [];
  const visit = (x: Tlv): void => {
    out.push(x.start);
    if (x.constructed) for (const c of children(x, (m) => new Error(m))) visit(c);
  };
  visit(parseDer(der, (m) => new Error(m)));
  return out;
}

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff, 0x30, 0x31, 0x0c, 0x13, 0x1e, 0x1c, 0x16, 0x14, 0x06, 0x05, 0xa0];
const STRING_TAGS = [0x0c, 0x12, 0x13, 0x14, 0x16, 0x1a, 0x1c, 0x1e, 0x02, 0x04, 0x05, 0x30, 0x80, 0xa0, 0x1f];

function mutate(input: Buffer, offsets: number[], rnd: () => number): { out: Buffer; how: string } {
  const pick = (n: number): number => Math.floor(rnd() * n);
  const b = Buffer.from(input);
  const at = pick(b.length);
  switch (pick(7)) {
    case 0: {
      const flips = 1 + pick(3);
      for (let i = 0; i < flips; i++) b[pick(b.length)]! ^= 1 << pick(8);
      return { out: b, how: `${flips} bit flips` };
    }
    case 1:
      b[at] = INTERESTING[pick(INTERESTING.length)]!;
      return { out: b, how: `byte ${at} = 0x${b[at]!.toString(16)}` };
    case 2: {
      // a length field: one more, one less, long form, indefinite
      const o = offsets[pick(offsets.length)]! + 1;
      const choices = [(b[o]! + 1) & 0xff, (b[o]! - 1) & 0xff, 0x80, 0x81, 0x82, 0x00, 0x7f];
      b[o] = choices[pick(choices.length)]!;
      return { out: b, how: `length at ${o} = 0x${b[o]!.toString(16)}` };
    }
    case 3:
      return { out: b.subarray(0, at), how: `truncated to ${at}` };
    case 4: {
      const ins = Buffer.from(Array.from({ length: 1 + pick(8) }, () => (rnd() < 0.5 ? INTERESTING[pick(INTERESTING.length)]! : pick(256))));
      return { out: Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]), how: `${ins.length} bytes inserted at ${at}` };
    }
    case 5: {
      const o = offsets[pick(offsets.length)]!;
      b[o] = STRING_TAGS[pick(STRING_TAGS.length)]!;
      return { out: b, how: `tag at ${o} = 0x${b[o]!.toString(16)}` };
    }
    default: {
      // a value byte inside a string: non-UTF-8, odd BMP, controls
      const o = offsets[pick(offsets.length)]!;
      const valueAt = Math.min(b.length - 1, o + 2 + pick(4));
      b[valueAt] = [0xc0, 0xff, 0xed, 0xa0, 0x00, 0x80, 0xd8][pick(7)]!;
      return { out: b, how: `value byte ${valueAt} = 0x${b[valueAt]!.toString(16)}` };
    }
  }
}

function onlyRequestErrors(fn: () => unknown): { ok: true } | { ok: false; error: unknown } | { ok: "refused"; message: string } {
  try {
    fn();
    return { ok: true };
  } catch (err) {
    if (err instanceof RequestError) return { ok: "refused", message: err.message };
    return { ok: false, error: err };
  }
}

let fileCounter = 0;
/** OpenSSL's view: loads and verifies, and the public key it reads (SPKI DER). */
function opensslReads(der: Buffer): { verified: boolean; spki: Buffer | undefined; why: string } {
  const f = path.join(dir, `m${++fileCounter}.der`);
  fs.writeFileSync(f, der);
  const r = spawnSync("openssl", ["req", "-inform", "DER", "-in", f, "-verify", "-noout", "-pubkey"], { encoding: "latin1" });
  fs.rmSync(f);
  const verified = r.status === 0 && /verify OK/.test(r.stderr);
  let key: Buffer | undefined;
  try {
    key = r.stdout.includes("BEGIN PUBLIC KEY") ? pemDecode(r.stdout, "PUBLIC KEY") : undefined;
  } catch {
    key = undefined;
  }
  return { verified, spki: key, why: r.stderr.split("\n").filter(Boolean).slice(0, 2).join("; ") };
}

const POLICY = { minKeyBits: 2048 };
const fail = (m: string): Error => new RequestError("bad_der", m);

t.test("every seed is accepted by us and by OpenSSL, with the same key", async (t) => {
  for (const s of seeds) {
    const ours = parseCsr(s.der, POLICY);
    const theirs = opensslReads(s.der);
    t.ok(theirs.verified, `${s.name}: OpenSSL verifies it (${theirs.why})`);
    t.same(ours.publicKey, theirs.spki, `${s.name}: same key`);
  }
});

t.test("mutants: no crash, nothing accepted that OpenSSL refuses, same keys", async (t) => {
  const counts = { cases: 0, weAccept: 0, bothAccept: 0, opensslAsked: 0, weStricter: 0, bothRefuse: 0 };
  const problems: string[] = [];
  for (const seedValue of SEEDS) {
    const rnd = prng(seedValue);
    for (let c = 0; c < CASES_PER_SEED; c++) {
      const s = seeds[Math.floor(rnd() * seeds.length)]!;
      const resign = rnd() < 0.5;
      const base = resign ? s.cri : s.der;
      const m = mutate(base, tlvOffsets(base), rnd);
      const der = resign ? signed(m.out, s.hash) : m.out;
      const where = `seed 0x${seedValue.toString(16)} case ${c} (${s.name}, ${resign ? "inside the signed part, signed again" : "raw"}: ${m.how})`;
      counts.cases++;

      const derResult = onlyRequestErrors(() => walk(parseDer(der, fail), fail));
      if (derResult.ok === false) problems.push(`${where}: parseDer/walk threw ${String(derResult.error)}`);
      if (resign) {
        // the subject as the DN reader sees it, when the mutant still has one
        let subject: Buffer | undefined;
        try {
          subject = children(parseDer(m.out, fail), fail)[1]?.raw;
        } catch {
          subject = undefined;
        }
        if (subject) {
          const dn = onlyRequestErrors(() => parseName(subject!, fail));
          if (dn.ok === false) problems.push(`${where}: parseName threw ${String(dn.error)}`);
        }
      }
      let accepted: Buffer | undefined;
      const csrResult = onlyRequestErrors(() => (accepted = parseCsr(der, POLICY).publicKey));
      if (csrResult.ok === false) {
        problems.push(`${where}: parseCsr threw ${String(csrResult.error)}`);
        continue;
      }
      if (csrResult.ok === true) {
        counts.weAccept++;
        counts.opensslAsked++;
        const theirs = opensslReads(der);
        if (!theirs.verified) problems.push(`${where}: we accept, OpenSSL does not (${theirs.why}); DER ${der.toString("hex")}`);
        else if (!theirs.spki || !theirs.spki.equals(accepted!)) problems.push(`${where}: we accept another key than OpenSSL reads`);
        else counts.bothAccept++;
      } else if (c % REFUSAL_SAMPLE === 0) {
        counts.opensslAsked++;
        if (opensslReads(der).verified) counts.weStricter++;
        else counts.bothRefuse++;
      }
    }
  }
  t.comment(`FUZZ ${JSON.stringify(counts)}`);
  t.same(problems, [], `${counts.cases} mutants: every parser refuses with a RequestError, and what we accept OpenSSL accepts with the same key`);
  t.ok(counts.bothAccept > 0, "some mutants reached acceptance (the re-signed ones): the oracle was asked");
});
