// What a wake-up costs on this machine, and what the five processes would cost per certificate
// if each of their wake-ups did nothing but that: the design's floor. A bare node, started like
// the services (same binary, same V8 flags, NODE_OPTIONS unset), echoes a frame-sized message
// over a socketpair after 0, 1, 3 and 8 ms idle; its CPU per echo comes from the scheduler's
// counters of every thread (as (cpu)), read while it waits, so start-up is left out.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type * as net from "node:net";
import { INSPECT_PORT_NOWHERE, KERNEL_NODE_FLAGS, MALLOC_ENV } from "../../services/common/service-table.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { now } from "../lib/stats.js";
import { schedOf, type Sched } from "../lib/processes.js";
import { measured, type CertWindow } from "../lib/measured.js";
import { fileSystemNote } from "../lib/file-system.js";

/** Idle gaps before each echo, ms, and echoes measured at each per round (a few seconds in all). */
export const GAPS: readonly { gapMs: number; n: number }[] = [
  { gapMs: 0, n: 600 },
  { gapMs: 1, n: 200 },
  { gapMs: 3, n: 100 },
  { gapMs: 8, n: 40 }, // about a certificate's time: a process that wakes once per certificate
];
/** Rounds of every gap, interleaved so that the machine's load drifts hit all gaps alike; the median round counts. */
const ROUNDS = 3;
/** About one frame of the kernel's (a Sign request's CSR is larger, a Signed smaller). */
const MESSAGE_BYTES = 200;
const WARMUP = 300;

/** The echoing child: what a service's channel does with fd 3 (services/common/service.ts), and nothing else. */
const NODE_ECHO = 'const s = new (require("node:net").Socket)({ fd: 3, readable: true, writable: true }); s.on("data", (b) => s.write(b)); s.on("end", () => process.exit(0));';
/** The same in C: one poll, one read, one write per message (only when a C compiler is there). */
const C_ECHO = `#include <poll.h>
#include <unistd.h>
int main(void) { char b[4096]; struct pollfd p = { 3, POLLIN, 0 };
  for (;;) { if (poll(&p, 1, -1) < 0) return 1; ssize_t n = read(3, b, sizeof b); if (n <= 0) return 0; if (write(3, b, n) != n) return 1; } }
`;

export interface EchoCost {
  gapMs: number;
  n: number;
  /** CPU µs of the child per echo, every thread */
  us: number;
  /** wake-ups of the child per echo (voluntary context switches, every thread: 1 when each echo is one wake-up) */
  wakeups: number;
  /** preemptions of the child per echo (a woken thread put off the CPU before it sleeps again) */
  preempted: number;
  /** the idle the child actually saw before each message, mean ms */
  idleMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sends one message and resolves when all of it came back. */
function roundTrip(sock: net.Socket, msg: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const done = (err?: Error): void => {
      sock.off("data", onData);
      sock.off("close", onClose);
      sock.off("error", done);
      if (err) reject(err);
      else resolve();
    };
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got >= msg.length) done();
    };
    const onClose = (): void => done(new Error("the echoing child closed its socket"));
    sock.on("data", onData);
    sock.once("close", onClose);
    sock.once("error", done);
    sock.write(msg);
  });
}

/** The per-echo CPU of the child `cmd` at each gap (after a warm-up), from its schedstat counters. */
export async function echoCosts(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<EchoCost[]> {
  const child: ChildProcess = spawn(cmd, args, { env, stdio: ["ignore", "ignore", "inherit", "pipe"] });
  const sock = child.stdio[3] as net.Socket;
  sock.on("error", () => {}); // each round trip reports its own; one after the last must not crash the bench
  let failed: Error | undefined;
  const exited = new Promise<void>((r) => {
    child.once("error", (err) => {
      failed = err;
      r();
    });
    child.once("close", () => r());
  });
  try {
    const msg = Buffer.alloc(MESSAGE_BYTES, 0x5a);
    for (let i = 0; i < WARMUP; i++) await roundTrip(sock, msg).catch((err: Error) => Promise.reject(failed ?? err));
    for (let i = 0; i < 30; i++) {
      await sleep(1);
      await roundTrip(sock, msg);
    }
    const rounds: EchoCost[][] = GAPS.map(() => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [g, { gapMs, n }] of GAPS.entries()) {
        let idle = 0;
        const s0: Sched = schedOf(child.pid!);
        for (let i = 0; i < n; i++) {
          const t = now();
          if (gapMs) await sleep(gapMs);
          idle += now() - t;
          await roundTrip(sock, msg);
        }
        const s1 = schedOf(child.pid!);
        rounds[g]!.push({ gapMs, n, us: (s1.cpuNs - s0.cpuNs) / 1000 / n, wakeups: (s1.wakeups - s0.wakeups) / n, preempted: (s1.preempted - s0.preempted) / n, idleMs: idle / n });
      }
    }
    return rounds.map((rs) => ({ ...[...rs].sort((a, b) => a.us - b.us)[Math.floor(rs.length / 2)]!, n: rs.reduce((a, r) => a + r.n, 0) }));
  } finally {
    sock.end();
    const t = setTimeout(() => child.kill("SIGKILL"), 2000);
    await exited;
    clearTimeout(t);
  }
}

/**
 * The echo's CPU µs after an idle time (ms): linear between the two measured gaps around it, the
 * shortest's or longest's cost outside them (the nearest gap alone would make a process's share
 * jump by half when its mean idle crosses the midpoint between two gaps).
 */
export function costAt(costs: readonly EchoCost[], idleMs: number): number {
  const c = [...costs].sort((a, b) => a.gapMs - b.gapMs);
  if (!(idleMs > c[0]!.gapMs)) return c[0]!.us;
  for (let i = 1; i < c.length; i++) {
    const [lo, hi] = [c[i - 1]!, c[i]!];
    if (idleMs <= hi.gapMs) return lo.us + ((hi.us - lo.us) * (idleMs - lo.gapMs)) / (hi.gapMs - lo.gapMs);
  }
  return c[c.length - 1]!.us;
}

export interface DesignFloor {
  /** ms per certificate: every process's wake-ups at the echo's cost, plus C_Sign's CPU */
  total: number;
  /** ms per certificate of each process */
  byProcess: Record<string, number>;
  /** the mean idle before a wake-up of each process (ms) and the echo's cost used for it (µs) */
  idle: Record<string, { idleMs: number; us: number }>;
}

/**
 * What the processes of a certificate window would cost if each wake-up were a bare echo: per
 * process its wake-ups per certificate × the echo's CPU after its mean idle before a wake-up
 * ((wall time − its CPU) / its wake-ups, per certificate; costAt), plus C_Sign's CPU.
 */
export function designFloor(w: CertWindow, costs: readonly EchoCost[], signCpuMs: number): DesignFloor {
  const byProcess: Record<string, number> = {};
  const idle: DesignFloor["idle"] = {};
  for (const [name, wakeups] of Object.entries(w.wakeups)) {
    const idleMs = wakeups > 0 ? Math.max(0, w.wallMs - (w.cpuMs[name] ?? 0)) / wakeups : Infinity;
    const us = costAt(costs, idleMs);
    byProcess[name] = (wakeups * us) / 1000;
    idle[name] = { idleMs, us };
  }
  return { total: Object.values(byProcess).reduce((a, b) => a + b, 0) + signCpuMs, byProcess, idle };
}

/**
 * Per process the CPU per certificate above its share of the design's floor (its wake-ups as
 * bare echoes; the signer's C_Sign too): the work done inside the wake-ups, what a cut in that
 * process's code can win without waking less. Negative: the process costs less than the echoes.
 */
export function aboveFloor(w: CertWindow, floor: DesignFloor, signCpuMs: number, signer = "signer"): { total: number; byProcess: Record<string, number> } {
  const byProcess: Record<string, number> = {};
  for (const [name, cpu] of Object.entries(w.cpuMs)) byProcess[name] = cpu - (floor.byProcess[name] ?? 0) - (name === signer ? signCpuMs : 0);
  return { total: Object.values(byProcess).reduce((a, b) => a + b, 0), byProcess };
}

/** How many wake-ups in all a CPU budget per certificate leaves room for at each gap's cost, after C_Sign. */
export function wakeupBudget(budgetMs: number, signCpuMs: number, costs: readonly EchoCost[]): string {
  return costs.map((c) => `${Math.max(0, ((budgetMs - signCpuMs) * 1000) / c.us).toFixed(0)} at ${c.gapMs} ms idle`).join(", ");
}

const costValue = (c: EchoCost): string => `${c.us.toFixed(0)} µs (per echo ${c.wakeups.toFixed(2)} wake-ups, ${c.preempted.toFixed(2)} preemptions; idle ${c.idleMs.toFixed(2)} ms; median of ${ROUNDS} rounds, n=${c.n})`;

/** CPU ms per certificate (this process, user + system) of the signer's writes before hand-out, by part. */
export interface DurableWritesCpu {
  /** newcerts/<SERIAL>.pem created O_EXCL, written, closed */
  createMs: number;
  /** the index line appended and fdatasynced */
  lineMs: number;
}

/**
 * The writes the design requires per certificate before hand-out, on the file system the
 * installations use (services/signer/cadb.ts), each part timed on its own: the create's cost
 * depends on the file system's state (fileSystemNote), the line's on its flush.
 */
export function durableWritesCpu(dir: string = os.tmpdir(), n = 100): DurableWritesCpu {
  const scratch = fs.mkdtempSync(path.join(dir, "etca-floor-disk-"));
  try {
    const index = fs.openSync(path.join(scratch, "index.txt"), "a");
    const pem = Buffer.alloc(1300, 0x41);
    const line = `V\t270101000000Z\t\t${"0".repeat(32)}\tunknown\t/DC=org/DC=example/CN=${"x".repeat(40)}\n`;
    const cpuUs = (u: NodeJS.CpuUsage): number => u.user + u.system;
    let create = 0;
    let sync = 0;
    for (let i = 0; i < n; i++) {
      const u0 = process.cpuUsage();
      const fd = fs.openSync(path.join(scratch, `${i}.pem`), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      fs.writeSync(fd, pem);
      fs.closeSync(fd);
      const u1 = process.cpuUsage();
      fs.writeSync(index, line);
      fs.fdatasyncSync(index);
      const u2 = process.cpuUsage();
      create += cpuUs(u1) - cpuUs(u0);
      sync += cpuUs(u2) - cpuUs(u1);
    }
    fs.closeSync(index);
    return { createMs: create / 1000 / n, lineMs: sync / 1000 / n };
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** The C echo's costs, or why there are none (no compiler is needed: this is a note). */
async function cEcho(): Promise<string> {
  const cc = ["cc", "gcc"].find((c) => {
    try {
      execFileSync(c, ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  });
  if (!cc) return "no C compiler here: the C echo was not measured";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-floor-"));
  try {
    fs.writeFileSync(path.join(dir, "echo.c"), C_ECHO);
    execFileSync(cc, ["-O2", "-o", path.join(dir, "echo"), path.join(dir, "echo.c")], { stdio: "ignore" });
    const costs = await echoCosts(path.join(dir, "echo"), [], {});
    return costs.map((c) => `${c.us.toFixed(0)} µs at ${c.gapMs} ms idle`).join(", ");
  } catch (err) {
    return `not measured: ${(err as Error).message.split("\n")[0]}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function secFloor(): Promise<void> {
  console.log(`[floor] a bare node echoing ${MESSAGE_BYTES} bytes over a socketpair (the services' node and flags), after ${GAPS.map((g) => g.gapMs).join(", ")} ms idle`);
  const env: NodeJS.ProcessEnv = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...MALLOC_ENV };
  const costs = await echoCosts("env", ["-u", "NODE_OPTIONS", process.execPath, "--disable-proto=delete", INSPECT_PORT_NOWHERE, ...KERNEL_NODE_FLAGS, "-e", NODE_ECHO], env);
  for (const c of costs) {
    fig(`(floor ${c.gapMs}ms)`, c.gapMs ? `CPU per wake-up of a bare node echo after ${c.gapMs} ms idle` : "CPU per wake-up of a bare node echo, back to back", costValue(c));
  }
  note(`floor: the same echo in C (poll, read, write): ${await cEcho()}`);
  const sign = measured.signCpuMs;
  if (sign === undefined) return;
  note(`floor: C_Sign ${sign.toFixed(2)} ms CPU; the 2.5 ms goal leaves room for ${wakeupBudget(2.5, sign, costs)} wake-ups in all per certificate at a bare echo's cost`);
  const writes = durableWritesCpu();
  const disk = writes.createMs + writes.lineMs;
  note(`floor: the signer's writes before hand-out under ${os.tmpdir()} cost ${disk.toFixed(2)} ms CPU per certificate (newcerts file O_EXCL ${writes.createMs.toFixed(2)}, index line + fdatasync ${writes.lineMs.toFixed(2)}; ${fileSystemNote(os.tmpdir())}), not in the design's floor; with them the goal leaves room for ${wakeupBudget(2.5, sign + disk, costs)} wake-ups`);
  for (const [label, id, w] of [["during (b)", "(design floor)", measured.windows?.cold], ["warm", "(design floor warm)", measured.windows?.warm]] as const) {
    if (!w) continue;
    const f = designFloor(w, costs, sign);
    const rows = Object.entries(f.byProcess).map(([k, v]) => `${k} ${v.toFixed(2)}`);
    fig(id, `the wake-ups ${label} as bare echoes, + C_Sign's CPU`, `${f.total.toFixed(2)} ms (${[...rows, `C_Sign ${sign.toFixed(2)}`].join(", ")})`, "<= 2.5 ms", f.total <= 2.5);
    const detail = Object.entries(f.idle).map(([k, v]) => `${k} ${w.wakeups[k]!.toFixed(1)} x ${v.us.toFixed(0)} µs (mean idle ${Number.isFinite(v.idleMs) ? v.idleMs.toFixed(2) : "-"} ms)`);
    note(`floor ${label}: ${w.wallMs.toFixed(2)} ms wall per certificate; ${detail.join(", ")}`);
    const above = aboveFloor(w, f, sign);
    fig(id.replace("design floor", "above floor"), `CPU ${label} above the design's floor (work inside the wake-ups; the signer's beyond C_Sign)`, `${above.total.toFixed(2)} ms (${Object.entries(above.byProcess).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")})`);
  }
}

export const section: Section = {
  name: "floor",
  needs: ["latency"],
  title: "CPU per wake-up of a bare node echo over a socketpair after 0, 1, 3, 8 ms idle; the design's floor: latency's wake-ups per certificate at that cost + C_Sign",
  run: secFloor,
};
