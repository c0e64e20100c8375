// The wire contract's grammar (proto/contract.ts): one set of value rules for every process, one
// validator per message run by the channel on receipt, no import-order-dependent global.
import t from "tap";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { contractProblem, MAX_USERNAME_BYTES, REFUSAL_WATCH_MS, VALIDATORS } from "../../proto/contract.js";
import { Channel } from "../../services/common/channel.js";
import { splitUsername } from "../../services/common/x509/dn.js";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { encodeFrame } from "../../services/common/framing.js";
import { formatRevokeEntry, parseMyproxyInput, parseRevokeEntry, REVOKE_REJECTED_PREFIX } from "../../services/common/spool-protocol.js";
import { RECENT_MS } from "../../services/kernel/handouts.js";
import { readRevokeQueue } from "../../services/kernel/revoke-queue.js";
import { DIST } from "../fixtures/server.js";
import { socketPair } from "../fixtures/socket-pair.js";

const HOSTILE_SERIALS = ["A", "ABC", "0a1b", "0A1B ", "", "../x", "G0", "AB".repeat(33)];
const GOOD_SERIALS = ["00", "0A1B", "FF".repeat(32)];

t.test("a revoke queue entry with a serial outside the grammar is refused once, kept aside, never forwarded", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-queue-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const entry = (serial: string): string => `version=1\nserial=${serial}\nreason=keyCompromise\nqueued_at=1700000000000\nend\n`;
  const names = HOSTILE_SERIALS.map((_, i) => `rev.1700000000000.Hostile${String(i).padStart(4, "0")}`);
  HOSTILE_SERIALS.forEach((s, i) => fs.writeFileSync(path.join(dir, names[i]!), entry(s), { mode: 0o600 }));
  const good = "rev.1700000000001.GoodEntry001";
  fs.writeFileSync(path.join(dir, good), entry("0A1B"), { mode: 0o600 });
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  const log = createLogger("kernel");
  const owner = process.getuid!();

  const q = await readRevokeQueue(dir, log, owner);
  t.same(q.entries.map((e) => e.queueFile), [good], "only the entry inside the grammar is applied");
  for (const [i, s] of HOSTILE_SERIALS.entries()) {
    t.match(q.rejected.find((r) => r.startsWith(names[i]!)) ?? "", /serial .* is not upper-case hex of 1 to 32 whole bytes/, `serial ${JSON.stringify(s)}: refused with what was expected`);
    t.ok(fs.existsSync(path.join(dir, REVOKE_REJECTED_PREFIX + names[i]!)), `serial ${JSON.stringify(s)}: kept aside for the operator`);
  }
  // what the kernel forwards passes the signer's check of the same message (no kill, no loop)
  const forwarded = q.entries.map((e) => ({ queueFile: e.queueFile, serial: e.serial, reason: e.reason, queuedAt: Date.now(), origin: "revoke-queue" }));
  t.equal(VALIDATORS.revoke({ entries: forwarded } as never), undefined, "the revoke the kernel sends is inside the contract");
  const again = await readRevokeQueue(dir, log, owner);
  t.same(again.rejected, [], "reported once: the next pass (SIGUSR1) does not see it again");
  t.same(again.entries.map((e) => e.queueFile), [good]);
});

t.test("one serial grammar: the queue, revoke-cert's format and the Revoke validator agree", async (t) => {
  for (const s of GOOD_SERIALS) {
    t.equal(parseRevokeEntry(formatRevokeEntry({ serial: s, reason: "superseded", queuedAt: 1700000000000 })).serial, s, `${s} queued`);
    t.equal(contractProblem("revoke", { entries: [{ queueFile: "", serial: s, reason: "superseded", queuedAt: 1, origin: "revoke-queue" }] } as never), undefined, `${s} passes the contract`);
  }
  for (const s of HOSTILE_SERIALS) {
    t.throws(() => parseRevokeEntry(formatRevokeEntry({ serial: s, reason: "superseded", queuedAt: 1700000000000 })), `${JSON.stringify(s)} refused by the queue`);
    t.match(contractProblem("revoke", { entries: [{ queueFile: "", serial: s, reason: "superseded", queuedAt: 1, origin: "revoke-queue" }] } as never) ?? "", /^revoke failed validation: serial/, `${JSON.stringify(s)} refused by the contract`);
    t.match(contractProblem("undelivered", { requestId: "req.AAAAAAAAAAAA", serial: s, reason: "x" } as never) ?? "", /serial/, `${JSON.stringify(s)} in undelivered`);
  }
});

t.test("one username limit, applied by the client, the kernel and the signer alike", async (t) => {
  const csr = "-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n";
  const input = (u: string): Buffer => Buffer.from(`username=${u}\n\n${csr}`);
  const issue = (u: string): string | undefined =>
    contractProblem("issueRequest", { requestId: "req.AAAAAAAAAAAA", username: u, proxyLifetime: 0, maxCertLifetime: 0, publicKey: Buffer.alloc(10), csr: Buffer.alloc(0), deadline: 1, clientUid: 0, fenceEpoch: 0 } as never);
  const atLimit = "a".repeat(MAX_USERNAME_BYTES);
  const over = "é".repeat(MAX_USERNAME_BYTES / 2) + "x"; // one byte over, in two-byte characters
  t.doesNotThrow(() => parseMyproxyInput(input(atLimit)), "client: at the limit");
  t.equal(issue(atLimit), undefined, "kernel: at the limit");
  t.doesNotThrow(() => splitUsername(atLimit), "signer: at the limit");
  t.throws(() => parseMyproxyInput(input(over)), new RegExp(`longer than ${MAX_USERNAME_BYTES} bytes`), "client: one byte over");
  t.match(issue(over), new RegExp(`longer than ${MAX_USERNAME_BYTES} bytes`), "kernel: one byte over");
  t.throws(() => splitUsername(over), new RegExp(`longer than ${MAX_USERNAME_BYTES}`), "signer: one byte over");
  for (const bad of ["a\u0001b", "a\u007fb", "", "NULL", "a\uFFFDb"]) {
    t.throws(() => parseMyproxyInput(input(bad)), `client refuses ${JSON.stringify(bad)}`);
    t.ok(issue(bad), `kernel refuses ${JSON.stringify(bad)} (not only the signer)`);
  }
});

t.test("the spool's refusal watch ends while the kernel still accepts its report", async (t) => {
  t.ok(REFUSAL_WATCH_MS < RECENT_MS, `REFUSAL_WATCH_MS ${REFUSAL_WATCH_MS} < the kernel's RECENT_MS ${RECENT_MS}`);
});

async function pair(): Promise<[Channel, net.Socket, () => void]> {
  const [raw, server, cleanup] = await socketPair();
  return [new Channel(server, "spool"), raw, cleanup];
}

t.test("the channel treats a frame outside the contract as a violation, like garbage", async (t) => {
  const [kernel, spool, cleanup] = await pair();
  t.teardown(() => {
    spool.destroy();
    cleanup();
  });
  const handled: string[] = [];
  kernel.onFrame((f) => handled.push(f.type));
  const closed = new Promise<string>((resolve) => kernel.onClose((reason, violation) => resolve(violation ? `violation: ${violation.message}` : reason)));
  spool.write(encodeFrame(1, 0, "delivered", { requestId: "req.AAAAAAAAAAAA" }));
  spool.write(encodeFrame(2, 0, "undelivered", { requestId: "req.AAAAAAAAAAAA", serial: "A", reason: "x" }));
  spool.write(encodeFrame(3, 0, "delivered", { requestId: "req.BBBBBBBBBBBB" }));
  const why = await closed;
  t.match(why, /^violation: spool sent undelivered failed validation: serial "A" is not upper-case hex/, "one precise message");
  t.same(handled, ["delivered"], "the bad frame and everything after it never reach the handler");
});

t.test("64-bit fields decode as numbers whatever loaded first, and nothing changes protobufjs' globals", async (t) => {
  // A child that loads the generated code before anything else (the old proto/numbers.ts had to run first).
  const script = `
    const protobuf = (await import("protobufjs/minimal.js")).default;
    await import(${JSON.stringify(path.join(DIST, "proto/generated/etoken_ca.js"))});
    const hadLong = Boolean(protobuf.util.Long);
    const { encodeFrame, FrameDecoder } = await import(${JSON.stringify(path.join(DIST, "services/common/framing.js"))});
    const frames = new FrameDecoder().push(Buffer.concat([
      encodeFrame(1, 0, "issueRequest", { requestId: "req.AAAAAAAAAAAA", username: "u", publicKey: Buffer.alloc(3), deadline: 1700000000000 }),
      encodeFrame(2, 0, "ping", {}),
      encodeFrame(3, 0, "revoke", { entries: [{ queueFile: "", serial: "0A", reason: "superseded", queuedAt: 2 ** 40, origin: "revoke-queue" }] }),
    ]));
    console.log(JSON.stringify({
      hadLong, hasLong: Boolean(protobuf.util.Long),
      deadline: frames[0].message.deadline, fenceEpoch: frames[0].message.fenceEpoch, nonce: frames[1].message.nonce,
      queuedAt: frames[2].message.entries[0].queuedAt,
    }));`;
  const out = JSON.parse(execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: DIST, encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } })) as Record<string, unknown>;
  t.equal(out.hasLong, out.hadLong, "protobufjs' Long setting is left as it was");
  t.same({ deadline: out.deadline, fenceEpoch: out.fenceEpoch, nonce: out.nonce, queuedAt: out.queuedAt }, { deadline: 1700000000000, fenceEpoch: 0, nonce: 0, queuedAt: 2 ** 40 }, "plain numbers, defaults included");
  t.match(contractProblem("issueRequest", { requestId: "req.AAAAAAAAAAAA", username: "u", publicKey: Buffer.alloc(3), csr: Buffer.alloc(0), deadline: 2 ** 53, proxyLifetime: 0, maxCertLifetime: 0, clientUid: 0, fenceEpoch: 0 } as never) ?? "", /deadline .* is not a whole number below 2\^53/);
});

t.test("the audit trail's messages: who revoked and the token events are the contract's", async (t) => {
  const entry = { queueFile: "", serial: "0A", reason: "superseded", queuedAt: 1 };
  t.equal(contractProblem("revoke", { entries: [{ ...entry, origin: "presence-fence" }] } as never), undefined);
  t.match(contractProblem("revoke", { entries: [{ ...entry, origin: "somebody" }] } as never) ?? "", /^revoke failed validation: origin "somebody" is not one of revoke-queue, presence-fence, undelivered/);
  t.match(contractProblem("revoke", { entries: [entry] } as never) ?? "", /origin "" is not one of/, "an origin is required");
  t.equal(contractProblem("tokenAudit", { event: "removed", serial: "0123", label: "CA", detail: "gone" } as never), undefined);
  t.match(contractProblem("tokenAudit", { event: "exploded", serial: "", label: "", detail: "" } as never) ?? "", /token event "exploded" is not one of inserted, removed, refused, replaced/);
  t.match(contractProblem("tokenAudit", { event: "removed", serial: "x".repeat(65), label: "", detail: "" } as never) ?? "", /token serial longer than 64/);
  t.match(contractProblem("tokenAudit", { event: "removed", serial: "", label: "", detail: "d".repeat(301) } as never) ?? "", /detail longer than 300/);
});
