// bench section `slowtoken` (issue 18, part 4): the token is the bottleneck. The eToken-like test
// module (native/etoken-sim) signs in 250 ms, one signature at a time; real etoken-ca-client
// call-outs (as CLIENT_USER, CLIENT_TIMEOUT 20 s) arrive all at once:
//   - a crowd the token can serve in time (40 × 250 ms = 10 s): utilisation = certificates/s
//     while they queue ÷ (1 / measured sign time), p50/p99 of each call-out's wait, signatures
//     wasted (signed, not delivered);
//   - an overload (1.5 times as many as fit into CLIENT_TIMEOUT): how many are refused early ("CA
//     busy"), how fast that answer comes, and again the signatures wasted.
// Signatures made come from the status file (signMs.count, counted by the kernel from the
// signer's measurement); deliveries from the clients' exit codes; the rate from the signer's
// "issued" log stamps.
import * as fs from "node:fs";
import * as path from "node:path";
import { calloutInput, makeCsr } from "../../test/fixtures/pki.js";
import { createInstallation, readStatus, runClient, startReady, waitFor, type ClientResult, type Installation, type RunningServer } from "../../test/fixtures/server.js";
import { simOf } from "../../test/fixtures/etoken-sim.js";
import { QUICK } from "../lib/options.js";
import { fig, note } from "../lib/report.js";
import { q as quantile } from "../lib/stats.js";
import type { Section } from "./section.js";

const SIGN_MS = 250;
const CLIENT_TIMEOUT_S = 20;

interface Batch {
  results: (ClientResult & { ms: number })[];
  signatures: number;
  /** the signer's "issued" log stamps (ms) */
  issued: number[];
  /** the spool's "request forwarded" stamps (ms) by request id */
  forwarded: Map<string, number>;
  /** the spool's "request failed" stamps (ms) and codes by request id */
  failed: Map<string, { at: number; code: string }>;
  /** the kernel's "CA busy" refusal stamps (ms) by request id */
  busyAt: Map<string, number>;
}

async function freshStatus(inst: Installation) {
  const asked = Date.now();
  return waitFor("a fresh status file", () => {
    const st = readStatus(inst);
    return st && st.updatedAt > asked ? st : undefined;
  }, 15_000);
}

function fromLogs(server: RunningServer, from: number): Pick<Batch, "issued" | "forwarded" | "failed" | "busyAt"> {
  const issued: number[] = [];
  const forwarded = new Map<string, number>();
  const failed = new Map<string, { at: number; code: string }>();
  const busyAt = new Map<string, number>();
  for (const line of server.logs()) {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // not a log record
    }
    const at = Date.parse(String(j["ts"]));
    if (!(at >= from)) continue;
    const id = String(j["requestId"] ?? "");
    if (j["svc"] === "signer" && j["msg"] === "issued") issued.push(at);
    else if (j["svc"] === "spool" && j["msg"] === "request forwarded") forwarded.set(id, at);
    else if (j["svc"] === "spool" && j["msg"] === "request failed") failed.set(id, { at, code: String(j["code"]) });
    else if (j["svc"] === "kernel" && j["msg"] === "request refused: CA busy") busyAt.set(String(j["request"]), at);
  }
  return { issued: issued.sort((a, b) => a - b), forwarded, failed, busyAt };
}

async function batch(inst: Installation, server: RunningServer, csrPem: string, prefix: string, n: number): Promise<Batch> {
  const before = (await freshStatus(inst)).signMs?.count ?? 0;
  const from = Date.now();
  const results = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const t0 = performance.now();
      const r = await runClient(inst, calloutInput({ username: `${prefix}-${i}`, passphrase: "irrelevant-passphrase", csrPem }));
      return { ...r, ms: performance.now() - t0 };
    }),
  );
  const after = (await freshStatus(inst)).signMs?.count ?? 0;
  return { results, signatures: after - before, ...fromLogs(server, from) };
}

async function run(): Promise<void> {
  const inst = createInstallation({ prefix: "etca-bslow", token: { pkcs11: "etoken-sim" }, extraConfig: { CLIENT_TIMEOUT: String(CLIENT_TIMEOUT_S) } });
  const sim = simOf(inst.token);
  let server: RunningServer | undefined;
  try {
    server = await startReady(inst);
    sim.set({ signMs: SIGN_MS });
    const work = path.join(inst.dir, "work");
    fs.mkdirSync(work, { mode: 0o755 });
    const { csrPem } = makeCsr(work, "bench");
    for (let i = 0; i < 5; i++) await runClient(inst, calloutInput({ username: `warm-${i}`, passphrase: "irrelevant-passphrase", csrPem })); // the kernel measures the token

    const crowd = QUICK ? 20 : 40;
    const a = await batch(inst, server, csrPem, "crowd", crowd);
    const signMs = (await freshStatus(inst)).signMs;
    const okA = a.results.filter((r) => r.code === 0);
    // while requests queue: the signatures after the last request reached the kernel (before
    // that, on a loaded machine, the token may idle for call-outs still starting up)
    const allIn = Math.max(...a.forwarded.values());
    // the signer logs "issued" once the record is synced, which its next C_Sign (synchronous)
    // holds back; the last one is not held: leave it out so that every interval is alike
    const stamps = a.issued.filter((x) => x > allIn).slice(0, -1);
    const rate = stamps.length > 1 ? (stamps.length - 1) / ((stamps[stamps.length - 1]! - stamps[0]!) / 1000) : Number.NaN;
    const p50Sign = signMs?.p50 ?? Number.NaN;
    const util = (rate * p50Sign) / 1000;
    fig("st1", `slow token: ${crowd} call-outs at once, ${SIGN_MS} ms/signature: served`, `${okA.length} of ${crowd}`, `all ${crowd}`, okA.length === crowd);
    fig(
      "st2",
      "slow token: utilisation, certificates/s ÷ 1/(measured sign time), while all queue",
      `${(util * 100).toFixed(1)} % (${rate.toFixed(2)}/s over ${stamps.length} signatures, C_Sign p50 ${p50Sign} ms, max ${signMs?.max} ms)`,
      "≥ 95 %",
      util >= 0.95,
    );
    const waits = okA.map((r) => r.ms);
    fig("st3", "slow token: call-out wait p50 / p99 (whole etoken-ca-client)", `${(quantile(waits, 0.5) / 1000).toFixed(2)} s / ${(quantile(waits, 0.99) / 1000).toFixed(2)} s`, `p99 ≤ ${crowd} × ${SIGN_MS} ms + start-up`);
    const wastedA = a.signatures - okA.length;
    fig("st4", "slow token: signatures wasted (signed, not delivered)", `${wastedA} of ${a.signatures}`, "0", wastedA === 0);

    const over = Math.round((1.5 * CLIENT_TIMEOUT_S * 1000) / SIGN_MS / (QUICK ? 2 : 1));
    const b = await batch(inst, server, csrPem, "over", over);
    const okB = b.results.filter((r) => r.code === 0);
    const busy = b.results.filter((r) => r.code !== 0 && /CA busy/.test(r.stderr));
    // a call-out whose deadline passed before the kernel saw it (start-up and the spool's lock, on a loaded machine)
    const lateIn = b.results.filter((r) => r.code !== 0 && /request expired before it could be signed|spool stayed busy/.test(r.stderr));
    const otherB = b.results.filter((r) => r.code !== 0 && !busy.includes(r) && !lateIn.includes(r));
    fig(
      "st5",
      `slow token: overload, ${over} call-outs (${((over * SIGN_MS) / 1000).toFixed(0)} s of signing, CLIENT_TIMEOUT ${CLIENT_TIMEOUT_S} s)`,
      `${okB.length} served, ${busy.length} refused early ("CA busy"), ${lateIn.length} expired before the CA saw them, ${otherB.length} other failures`,
      "no other failures",
      otherB.length === 0,
    );
    const busyAnswer = [...b.failed].filter(([, f]) => f.code === "ca.busy").map(([id, f]) => f.at - (b.forwarded.get(id) ?? Number.NaN)).filter(Number.isFinite);
    const inKernel = [...b.busyAt].map(([id, at]) => at - (b.forwarded.get(id) ?? Number.NaN)).filter(Number.isFinite);
    if (busyAnswer.length) {
      fig(
        "st6",
        "slow token: CA busy, spool forwarded → kernel refuses / → refusal back at the spool (log stamps) p50, max",
        `${quantile(inKernel, 0.5)} ms, ${Math.max(...inKernel)} ms / ${quantile(busyAnswer, 0.5)} ms, ${Math.max(...busyAnswer)} ms`,
        "at once",
      );
      fig("st6b", "slow token: CA busy, whole call-out p50 / max (start-up and spool lock included)", `${(quantile(busy.map((r) => r.ms), 0.5) / 1000).toFixed(2)} s / ${(Math.max(...busy.map((r) => r.ms)) / 1000).toFixed(2)} s`, `< CLIENT_TIMEOUT (${CLIENT_TIMEOUT_S} s)`);
    }
    const wastedB = b.signatures - okB.length;
    fig("st7", "slow token: overload, signatures wasted", `${wastedB} of ${b.signatures}`, "0", wastedB === 0);
    if (otherB.length) note(`slowtoken overload: other failures, e.g. ${otherB[0]!.stderr.trim().slice(0, 200)}`);
    for (const r of lateIn) note(`slowtoken overload: late after ${(r.ms / 1000).toFixed(1)} s: ${r.stderr.trim().slice(0, 300)}`);
  } finally {
    await server?.stop();
    inst.cleanup();
  }
}

export const section: Section = {
  name: "slowtoken",
  title: "(issue 18) the eToken-like module at 250 ms per signature, 40 call-outs at once and an overload: utilisation, p50/p99 wait, requests refused early, signatures wasted",
  run,
};
