// The benchmark runner: `npm run bench -- [--quick] [--only NAME[,NAME]] [--write-results]`.
// Starts real installations (as root: real users, SoftHSM2 token, the kernel and its four
// services), measures from the outside where the goals say so, and prints one table of figures
// with the goals and PASS/MISS. It never asserts and always exits 0 unless it cannot run at all.
//
// Sections (names for --only):
//   sign        (a) raw C_Sign rate of the token key through pkcs11js (the signer's Token class)
//   latency     (b) request file -> result file, p50/p99, sequential; per-stage breakdown from the
//               services' log timestamps; fence cost; RSS of every process
//   throughput  (c) sustained certificates/s with many writers injecting into the spool
//   client      (d) the whole etoken-ca-client process (as CLIENT_USER) vs `node -e ''`
//   index1m     (e) (b) again with an index.txt of 1,000,000 entries
//   crl         CRL generation at 1,000 and 100,000 revoked entries vs `openssl ca -gencrl`
//   detect      token removal -> SUSPENDED (kernel state change on its log)
//   fsync       what one flush costs on this disk (explains (b))
//   h2h         (h1) per-certificate latency p50/p99, native vs openssl backend vs raw C_Sign,
//               empty database; (h2) the same at 100,000 and 1,000,000 index.txt entries;
//               (h3) sustained certificates/s with 1, 8 and 32 concurrent clients, both backends;
//               (h5) peak RSS of each of our processes during those throughput runs.
//               One installation and one SoftHSM2 token for all of it (alias: backend)
//   myproxy     (h4) myproxy-logon -Q latency: MyProxy's built-in CA (pkcs11 engine on a byte
//               copy of the same token) vs certificate_issuer_program = etoken-ca-client, and
//               `node -e ''` in the same run (ETCA_BENCH_KEEP=1 keeps its directory, for debugging)
//
// Requests are injected exactly as etoken-ca-client does it (services/common/spool-protocol.ts):
// request file (O_EXCL, 0644, not fsynced, owned by CLIENT_USER), then the `request` symlink (the lock,
// retried while taken); the result file is awaited with fs.watch (inotify) plus a 20 ms poll.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import type * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Channel } from "../services/common/channel.js";
import { parseConfig } from "../services/common/config.js";
import { formatRequestFile, randomName, REQUEST_LINK, resultName } from "../services/common/spool-protocol.js";
import { CaDatabase } from "../services/signer/cadb.js";
import { loadCaCertificate } from "../services/signer/certificate.js";
import { CrlPublisher } from "../services/signer/crl-publisher.js";
import { GENESIS } from "../services/common/audit/trail.js";
import { Token } from "../services/signer/token.js";
import { lookupUser } from "../services/common/identity.js";
import { calloutInput, makeCsr } from "../test/fixtures/pki.js";
import {
  BIN,
  CLEAN_PATH,
  createInstallation,
  makeBaseDir,
  processTree,
  startServer,
  countPrompts,
  typePin,
  waitForState,
  waitFor,
  readStatus,
  TEST_DN_FORMAT,
  type Installation,
  type RunningServer,
} from "../test/fixtures/server.js";
import { createSoftToken, reinsertToken, removeToken, type SoftToken } from "../test/fixtures/softhsm.js";
import { addTrustedCa, createTrustAndHost, MYPROXY_LOGON, MYPROXY_SERVER, MYPROXY_USER, myproxyLogon, startMyProxy, writeIssuerWrapper, type MyProxyServer } from "../test/fixtures/myproxy.js";
import { useNativeBackend, useOpensslBackend } from "../test/fixtures/openssl-ca.js";
import { copyTokenFor } from "./myproxy-ca.js";
import { ensureUser } from "../test/fixtures/users.js";

// ---------------------------------------------------------------------------------------------
// arguments, results table

const argv = process.argv.slice(2);
const QUICK = argv.includes("--quick");
const WRITE = argv.includes("--write-results");
const onlyArg = argv.find((a) => a.startsWith("--only"));
const ONLY = onlyArg ? (onlyArg.includes("=") ? onlyArg.split("=")[1]! : argv[argv.indexOf(onlyArg) + 1] ?? "").split(",") : undefined;
const want = (name: string): boolean => !ONLY || ONLY.includes(name) || (name === "h2h" && ONLY.includes("backend"));
const N_LAT = QUICK ? 60 : 300;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC_BENCH = path.resolve(HERE, "../../bench");

interface Figure {
  id: string;
  what: string;
  value: string;
  goal?: string;
  verdict?: "PASS" | "MISS" | "n/a";
}
const figures: Figure[] = [];
const notes: string[] = [];
function fig(id: string, what: string, value: string, goal?: string, pass?: boolean): void {
  const f: Figure = { id, what, value, goal, verdict: pass === undefined ? (goal ? "n/a" : undefined) : pass ? "PASS" : "MISS" };
  figures.push(f);
  console.log(`  ${id.padEnd(6)} ${what.padEnd(58)} ${value.padEnd(34)} ${goal ? `goal ${goal}` : ""}${f.verdict ? `  ${f.verdict}` : ""}`);
}
function note(s: string): void {
  notes.push(s);
  console.log(`  note: ${s}`);
}
const q = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : NaN;
};
const ms = (x: number, d = 2): string => `${x.toFixed(d)} ms`;
const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const sleep = (t: number): Promise<void> => new Promise((r) => setTimeout(r, t));

// ---------------------------------------------------------------------------------------------
// the spool driver: writes requests like the client, waits for results with inotify

class SpoolDriver {
  private readonly waiters = new Map<string, () => void>();
  private readonly lockWaiters: (() => void)[] = [];
  private readonly watcher: fs.FSWatcher;
  private readonly timer: NodeJS.Timeout;
  readonly dir: string;
  /** CLIENT_USER of the configuration (the spool accepts requests owned by it only) */
  private readonly client: { uid: number; gid: number };

  constructor(private readonly inst: Installation) {
    this.dir = inst.config.SPOOL_DIR;
    this.client = lookupUser(inst.config.CLIENT_USER);
    this.watcher = fs.watch(this.dir, (_e, f) => {
      if (f === REQUEST_LINK) this.wakeLock();
      else if (f && this.waiters.has(f)) this.check(f);
    });
    this.timer = setInterval(() => {
      for (const f of this.waiters.keys()) this.check(f);
      this.wakeLock();
    }, 20);
  }
  private check(f: string): void {
    if (fs.existsSync(path.join(this.dir, f))) {
      const w = this.waiters.get(f);
      this.waiters.delete(f);
      w?.();
    }
  }
  /** One writer at a time tries the lock (all of them would only collide on EEXIST). */
  private wakeLock(): void {
    this.lockWaiters.shift()?.();
  }
  close(): void {
    this.watcher.close();
    clearInterval(this.timer);
  }

  /** One request; times: start (before the request file), linked (symlink made), done (result seen). */
  async issue(username: string, csrPem: string): Promise<{ t0: number; linked: number; done: number; ok: boolean; text: string; id: string }> {
    const u = this.client;
    const id = `req.${randomName(16, randomBytes)}`;
    const file = path.join(this.dir, id);
    const t0 = now();
    const deadline = Date.now() + this.inst.config.CLIENT_TIMEOUT;
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    fs.fchmodSync(fd, 0o644);
    fs.writeSync(fd, formatRequestFile({ username, proxyLifetime: 43200, maxCertLifetime: 0, deadline, csrPem }));
    fs.fchownSync(fd, u.uid, u.gid);
    fs.closeSync(fd);
    const res = resultName(id);
    const seen = new Promise<void>((r) => this.waiters.set(res, r));
    let tries = 0;
    for (;;) {
      try {
        fs.symlinkSync(id, path.join(this.dir, REQUEST_LINK));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        // first in line again: the writers of this process take the lock in turn
        await new Promise<void>((r) => (tries++ === 0 ? this.lockWaiters.push(r) : this.lockWaiters.unshift(r)));
      }
    }
    const linked = now();
    this.check(res);
    await seen;
    const done = now();
    const text = fs.readFileSync(path.join(this.dir, res), "utf8");
    fs.rmSync(path.join(this.dir, res), { force: true });
    fs.rmSync(file, { force: true });
    return { t0, linked, done, ok: text.startsWith("-----BEGIN CERTIFICATE-----"), text, id };
  }
}

// ---------------------------------------------------------------------------------------------
// installations

interface Running {
  inst: Installation;
  server: RunningServer;
  driver: SpoolDriver;
  csrPem: string;
}

/** Starts the kernel of an installation and types the PIN; resolves when READY. */
async function bringUp(inst: Installation): Promise<RunningServer> {
  fs.rmSync(inst.config.STATUS_FILE, { force: true }); // no stale state from an earlier run
  const server = startServer(inst);
  try {
    await waitForState(inst, "NEED_PIN", 120_000);
    await typePin(inst, inst.token.userPin, countPrompts(inst) + (inst.consoleText().endsWith(": ") ? 0 : 1));
    await waitForState(inst, "READY", 120_000);
  } catch (err) {
    const tail = server.logs().slice(-6).join(" / ").slice(0, 1500);
    await server.stop();
    throw new Error(`${(err as Error).message}; server log: ${tail}`);
  }
  return server;
}

async function start(prefix: string, extra: Record<string, string> = {}, prepare?: (inst: Installation) => void): Promise<Running> {
  const inst = createInstallation({ prefix, extraConfig: { CLIENT_TIMEOUT: "60", ...extra } });
  prepare?.(inst);
  let server: RunningServer;
  try {
    server = await bringUp(inst);
  } catch (err) {
    inst.cleanup();
    throw err;
  }
  const work = path.join(inst.dir, "work");
  fs.mkdirSync(work, { mode: 0o755 });
  const { csrPem } = makeCsr(work, "bench");
  return { inst, server, driver: new SpoolDriver(inst), csrPem };
}
async function stop(r: Running): Promise<void> {
  r.driver.close();
  await r.server.stop();
  r.inst.cleanup();
}

/** Sequential requests; returns link->result and write->result samples (ms) and the ids. */
async function sequential(r: Running, n: number, warm = 10): Promise<{ lat: number[]; full: number[]; bad: number; ids: string[]; firstText: string }> {
  for (let i = 0; i < warm; i++) await r.driver.issue(`warm ${i}`, r.csrPem);
  const lat: number[] = [];
  const full: number[] = [];
  const ids: string[] = [];
  let bad = 0;
  let firstText = "";
  for (let i = 0; i < n; i++) {
    const x = await r.driver.issue(`seq ${i} email=u${i}@example.org`, r.csrPem);
    if (!x.ok) {
      bad++;
      firstText ||= x.text;
      continue;
    }
    lat.push(x.done - x.linked);
    full.push(x.done - x.t0);
    ids.push(x.id);
  }
  return { lat, full, bad, ids, firstText };
}

/** Per-stage mean from the services' JSON log lines (ms timestamps). */
function stages(logs: string[], ids: Set<string>): string | undefined {
  const at = new Map<string, Record<string, number>>();
  let signerIssued: number[] = [];
  for (const line of logs) {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(line.slice(line.indexOf("{")));
    } catch {
      continue;
    }
    const t = Date.parse(String(j["time"] ?? j["ts"] ?? j["timestamp"] ?? ""));
    if (!Number.isFinite(t)) continue;
    const id = String(j["requestId"] ?? "");
    const msg = String(j["msg"] ?? j["message"] ?? "");
    if (msg === "issued" && !id) signerIssued.push(t);
    if (!ids.has(id)) continue;
    const rec = at.get(id) ?? {};
    rec[msg] = t;
    at.set(id, rec);
  }
  const d: Record<string, number[]> = { pickup: [], sign: [], deliver: [] };
  const fwd = [...at.values()].filter((r) => r["request forwarded"] && r["certificate delivered"]).sort((a, b) => a["request forwarded"]! - b["request forwarded"]!);
  signerIssued = signerIssued.sort((a, b) => a - b);
  for (const r of fwd) {
    const f = r["request forwarded"]!;
    const issued = signerIssued.find((t) => t >= f);
    const del = r["certificate delivered"]!;
    if (issued === undefined || issued > del) continue;
    d.sign!.push(issued - f);
    d.deliver!.push(del - issued);
  }
  if (!d.sign!.length) return undefined;
  const mean = (xs: number[]): string => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2);
  return `spool forwarded -> signer issued ${mean(d.sign!)} ms, signer issued -> spool delivered ${mean(d.deliver!)} ms (means of ms log stamps, n=${d.sign!.length})`;
}

function procInfo(pid: number): { name: string; hwmMiB: number; cpuMs: number } | undefined {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    const title = /^etoken-ca: (\w+)/.exec(cmd[0] ?? "")?.[1]; // process titles set by the services
    const js = cmd.findIndex((c) => c.endsWith(".js"));
    if (!title && js < 0) return undefined;
    const name = title ?? (cmd[js]!.endsWith("start.js") ? (cmd[js + 1] ?? "service") : path.basename(cmd[js]!, ".js").replace("etoken-ca-server", "kernel"));
    const st = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const hwmMiB = Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0) / 1024;
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    const cpuMs = ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, USER_HZ 100
    return { name, hwmMiB, cpuMs };
  } catch {
    return undefined;
  }
}

function rssOf(root: number): { total: number; rows: string[] } {
  let total = 0;
  const rows: string[] = [];
  for (const pid of processTree(root)) {
    const p = procInfo(pid);
    if (!p) continue;
    total += p.hwmMiB;
    rows.push(`${p.name} ${p.hwmMiB.toFixed(0)}`);
  }
  return { total, rows };
}

/** CPU ms used so far by each process of the installation, by name. */
function cpuOf(root: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const pid of processTree(root)) {
    const p = procInfo(pid);
    if (p) out[p.name] = (out[p.name] ?? 0) + p.cpuMs;
  }
  return out;
}
function cpuPerCert(before: Record<string, number>, after: Record<string, number>, n: number): string {
  return Object.keys(after)
    .map((k) => `${k} ${((after[k]! - (before[k] ?? 0)) / n).toFixed(2)}`)
    .join(", ");
}

// ---------------------------------------------------------------------------------------------
// sections

/** The signer's Token class on a SoftHSM token: first slot, first key, logged in. */
function loggedInToken(st: SoftToken): Token {
  const KEY = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
  const tok = Token.open(st.modulePath, { env: st.env });
  tok.select(KEY);
  tok.login(Buffer.from(st.userPin), st.serial);
  tok.findKey(KEY);
  return tok;
}

const ctx: { signRate?: number; b50?: number; fenceRtt?: number } = {};

async function secSign(): Promise<void> {
  console.log("[sign] raw C_Sign through pkcs11js (signer's Token, RSA-2048, CKM_SHA256_RSA_PKCS)");
  const base = makeBaseDir("etca-bench-sign");
  try {
    const st = createSoftToken({ dir: path.join(base, "t") });
    const tok = loggedInToken(st);
    const data = randomBytes(1000);
    for (let i = 0; i < 50; i++) tok.sign(data);
    const N = QUICK ? 500 : 2000;
    const t: number[] = [];
    const t0 = now();
    for (let i = 0; i < N; i++) {
      const a = now();
      tok.sign(data);
      t.push(now() - a);
    }
    const rate = N / ((now() - t0) / 1000);
    ctx.signRate = rate;
    fig("(a)", "C_Sign rate, one session", `${rate.toFixed(0)} /s (p50 ${ms(q(t, 0.5), 3)})`);
    tok.close();
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

async function secFsync(): Promise<void> {
  console.log("[fsync] what one flush costs on the file system under /tmp");
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bench-fsync-"));
  try {
    const fd = fs.openSync(path.join(d, "a"), "a");
    const app: number[] = [];
    for (let i = 0; i < (QUICK ? 30 : 100); i++) {
      fs.writeSync(fd, "x".repeat(120) + "\n");
      const a = now();
      fs.fdatasyncSync(fd);
      app.push(now() - a);
    }
    fs.closeSync(fd);
    fig("disk", "fdatasync after a 121-byte append", `p50 ${ms(q(app, 0.5))} p99 ${ms(q(app, 0.99))}`);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}

async function secLatency(): Promise<void> {
  console.log(`[latency] request file -> result file, ${N_LAT} sequential requests, empty database`);
  const r = await start("etca-bench-lat");
  try {
    await sequential(r, 0, 10);
    const c0 = cpuOf(r.server.pid);
    const s = await sequential(r, N_LAT, 0);
    note(`CPU ms per certificate during (b) (utime+stime, 10 ms ticks): ${cpuPerCert(c0, cpuOf(r.server.pid), N_LAT)}`);
    if (s.bad) note(`latency: ${s.bad} requests failed, e.g. ${s.firstText.trim().slice(0, 160)}`);
    ctx.b50 = q(s.lat, 0.5);
    fig("(b)", "server-side: symlink made -> result file seen", `p50 ${ms(q(s.lat, 0.5))} p99 ${ms(q(s.lat, 0.99))}`, "p50 <= 3 ms", q(s.lat, 0.5) <= 3);
    fig("(b')", "incl. writing the request file", `p50 ${ms(q(s.full, 0.5))} p99 ${ms(q(s.full, 0.99))}`);
    const br = stages(r.server.logs(), new Set(s.ids));
    if (br) note(`breakdown: ${br}`);
    const rss = rssOf(r.server.pid);
    fig("rss", "peak RSS (VmHWM) after the latency run, MiB", `${rss.total.toFixed(0)} (${rss.rows.join(", ")})`, "< 300 MiB", rss.total < 300);
  } finally {
    await stop(r);
  }
}

async function secThroughput(): Promise<void> {
  const writers = QUICK ? 16 : 32;
  const per = QUICK ? 10 : 30;
  console.log(`[throughput] ${writers} concurrent writers x ${per} requests each`);
  const r = await start("etca-bench-thr");
  try {
    await sequential(r, 0, 10);
    const c0 = cpuOf(r.server.pid);
    const t0 = now();
    let ok = 0;
    const lat: number[] = [];
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < per; i++) {
          const x = await r.driver.issue(`w${w} r${i}`, r.csrPem);
          if (x.ok) ok++;
          lat.push(x.done - x.t0);
        }
      }),
    );
    const secs = (now() - t0) / 1000;
    const rate = ok / secs;
    note(`CPU ms per certificate during (c): ${cpuPerCert(c0, cpuOf(r.server.pid), ok)}`);
    const goal = ctx.signRate ? rate >= ctx.signRate / 2 : undefined;
    fig("(c)", `sustained issuance, ${writers} writers (${ok}/${writers * per} ok)`, `${rate.toFixed(0)} certs/s (latency p50 ${ms(q(lat, 0.5), 1)})`, ctx.signRate ? `>= ${(ctx.signRate / 2).toFixed(0)}/s (half of (a))` : ">= half of (a)", goal);
    const rss = rssOf(r.server.pid);
    fig("rss", "peak RSS (VmHWM) after the throughput run, MiB", `${rss.total.toFixed(0)} (${rss.rows.join(", ")})`, "< 300 MiB", rss.total < 300);
  } finally {
    await stop(r);
  }
}

async function secClient(): Promise<void> {
  const runs = QUICK ? 15 : 40;
  console.log(`[client] etoken-ca-client as CLIENT_USER vs node -e '' (${runs} interleaved runs)`);
  const r = await start("etca-bench-cli");
  try {
    const u = r.inst.users.CLIENT_USER;
    const input = calloutInput({ username: "bench client", passphrase: "x", csrPem: r.csrPem });
    const run = (argv: string[], stdin?: string): { wall: number; code: number | null } => {
      const a = now();
      const p = spawnSync(argv[0]!, argv.slice(1), { uid: u.uid, gid: u.gid, cwd: "/", input: stdin ?? "", env: { PATH: CLEAN_PATH }, stdio: ["pipe", "ignore", "pipe"] });
      return { wall: now() - a, code: p.status };
    };
    // what MyProxy runs: the wrapper deploy/install writes (sh, `ulimit -c 0`, exec node)
    const wrapper = path.join(r.inst.dir, "etoken-ca-client");
    fs.writeFileSync(wrapper, `#!/bin/sh\nulimit -c 0\nexec '${process.execPath}' '${BIN.client}' "$@"\n`, { mode: 0o755 });
    const base: number[] = [];
    const cli: number[] = [];
    let bad = 0;
    run([process.execPath, "-e", ""]);
    run([wrapper, "--config", r.inst.configPath], input);
    for (let i = 0; i < runs; i++) {
      base.push(run([process.execPath, "-e", ""]).wall);
      const c = run([wrapper, "--config", r.inst.configPath], input);
      if (c.code !== 0) bad++;
      cli.push(c.wall);
    }
    if (bad) note(`client: ${bad} runs failed`);
    const b = q(base, 0.5);
    const c = q(cli, 0.5);
    fig("(d0)", "node -e '' (bare start-up), median", ms(b, 1));
    fig("(d)", "etoken-ca-client, whole logon callout, median", `${ms(c, 1)} (+${ms(c - b, 1)})`, "<= node + 15 ms", c - b <= 15);
    if (ctx.b50 !== undefined) note(`client overhead beyond server-side (b) p50: ${(c - b - ctx.b50).toFixed(1)} ms (sh wrapper, start-up, config, stdin, request file and lock, inotify wait, exit)`);
  } finally {
    await stop(r);
  }
}

/** 16-byte serials unique per line, 2% revoked, like a long-lived CA. */
function syntheticIndex(file: string, lines: number, revokedEvery = 50): void {
  const fd = fs.openSync(file, "w");
  const chunk: string[] = [];
  for (let i = 0; i < lines; i++) {
    const serial = (0x80 + (i % 0x7f)).toString(16).toUpperCase() + i.toString(16).toUpperCase().padStart(14, "0") + "A5A5A5A5A5A5A5A5";
    const status = revokedEvery > 0 && i % revokedEvery === 0 ? `R\t310101000000Z\t250101000000Z,superseded` : `V\t310101000000Z\t`;
    chunk.push(`${status}\t${serial}\tunknown\t/DC=org/DC=example/O=etoken-ca tests/CN=user ${i}\n`);
    if (chunk.length === 20000) {
      fs.writeSync(fd, chunk.join(""));
      chunk.length = 0;
    }
  }
  if (chunk.length) fs.writeSync(fd, chunk.join(""));
  fs.closeSync(fd);
}

async function secIndex1m(): Promise<void> {
  const lines = QUICK ? 200_000 : 1_000_000;
  console.log(`[index1m] (b) with ${lines} index.txt lines`);
  let prepMs = 0;
  const r = await start("etca-bench-1m", {}, (inst) => {
    const a = now();
    const dir = inst.config.CA_DIR;
    fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true, mode: 0o700 });
    syntheticIndex(path.join(dir, "index.txt"), lines);
    fs.writeFileSync(path.join(dir, "serial"), "01\n");
    fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
    for (const p of [dir, path.join(dir, "newcerts"), path.join(dir, "index.txt"), path.join(dir, "serial"), path.join(dir, "crlnumber")]) fs.chownSync(p, inst.users.SIGNER_USER.uid, inst.users.SIGNER_USER.gid);
    fs.chmodSync(dir, 0o700);
    prepMs = now() - a;
  });
  try {
    const s = await sequential(r, N_LAT);
    const p50 = q(s.lat, 0.5);
    fig("(e)", `(b) at ${lines} index lines`, `p50 ${ms(p50)} p99 ${ms(q(s.lat, 0.99))}`, ctx.b50 ? `<= 1.2 x (b) = ${ms(1.2 * ctx.b50)}` : "<= 1.2 x (b)", ctx.b50 ? p50 <= 1.2 * ctx.b50 : undefined);
    const rss = rssOf(r.server.pid);
    fig("rss", `peak RSS at ${lines} index lines, MiB`, `${rss.total.toFixed(0)} (${rss.rows.join(", ")})`);
    note(`index generation ${prepMs.toFixed(0)} ms (not timed in (e))`);
  } finally {
    await stop(r);
  }
}

async function secCrl(): Promise<void> {
  console.log("[crl] CrlPublisher.publish (entries, TBS, C_Sign, verify, files, latest link) vs openssl ca -gencrl (pkcs11 engine, same token)");
  const base = makeBaseDir("etca-bench-crl");
  try {
    const st = createSoftToken({ dir: path.join(base, "t") });
    const tok = loggedInToken(st);
    const ca = loadCaCertificate(fs.readFileSync(st.caCertPath), st.caCertPath);
    const sizes = QUICK ? [1_000, 20_000] : [1_000, 100_000];
    for (const n of sizes) {
      const dir = path.join(base, `db${n}`);
      fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
      syntheticIndex(path.join(dir, "index.txt"), n, 1);
      fs.writeFileSync(path.join(dir, "serial"), "01\n");
      fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
      const copy = path.join(base, `ossl${n}`);
      fs.cpSync(dir, copy, { recursive: true });
      const db = CaDatabase.open(dir);
      const crlDir = path.join(base, `crl${n}`);
      fs.mkdirSync(crlDir);
      const pub = new CrlPublisher(crlDir, ca);
      const ours: number[] = [];
      for (let i = 0; i < (n > 10_000 ? 5 : 15); i++) {
        const a = now();
        pub.publish(db, 30 * 86400_000, (tbs) => tok.sign(tbs), { seq: 0, hash: GENESIS });
        ours.push(now() - a);
      }
      db.close();
      // openssl ca -gencrl with the key on the same token
      fs.writeFileSync(
        path.join(copy, "ca.cnf"),
        `openssl_conf = oc\n[oc]\nengines = es\n[es]\npkcs11 = p11\n[p11]\nengine_id = pkcs11\nMODULE_PATH = ${st.modulePath}\nPIN = ${st.userPin}\ninit = 0\n` +
          `[ca]\ndefault_ca = d\n[d]\ndir = ${copy}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/newcerts\ncertificate = ${st.caCertPath}\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\npolicy = p\n[p]\n`,
      );
      const oss: number[] = [];
      let err = "";
      for (let i = 0; i < 3; i++) {
        const a = now();
        const p = spawnSync("openssl", ["ca", "-batch", "-config", path.join(copy, "ca.cnf"), "-gencrl", "-engine", "pkcs11", "-keyform", "engine", "-keyfile", `pkcs11:id=%${st.caKeyId.match(/../g)!.join("%")};type=private`, "-out", path.join(copy, `crl${i}.pem`)], {
          env: { ...process.env, ...st.env },
          encoding: "utf8",
        });
        if (p.status !== 0) {
          err = (p.stderr || "").trim().split("\n").slice(-2).join(" | ");
          break;
        }
        oss.push(now() - a);
      }
      const o = oss.length ? q(oss, 0.5) : NaN;
      const m = q(ours, 0.5);
      const label = n >= 100_000 ? "(crl)" : "crl";
      if (err) note(`openssl ca -gencrl at ${n} failed: ${err}`);
      fig(label, `CRL with ${n} revoked: ours vs openssl ca -gencrl`, `${ms(m, 1)} vs ${Number.isNaN(o) ? "n/a" : ms(o, 0)} (${Number.isNaN(o) ? "?" : (m / o).toFixed(3)}x)`, n >= 100_000 ? "<= 0.2x openssl" : undefined, n >= 100_000 && !Number.isNaN(o) ? m <= 0.2 * o : undefined);
    }
    tok.close();
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

/** The fence as the kernel does it: presenceCheck to a real monitor process, round trip. */
async function fenceRtt(): Promise<number[]> {
  const base = makeBaseDir("etca-bench-fence");
  const mon = ensureUser("etca-mon");
  const tok = createSoftToken({ dir: path.join(base, "hsm"), readerGid: mon.gid });
  const config = parseConfig(`DN_FORMAT=/CN=%s\nCA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\nPKCS11_MODULE=${tok.modulePath}\nCA_CERT=${tok.caCertPath}\nMONITOR_USER=etca-mon\nTOKEN_POLL_INTERVAL=1h\n`, "bench");
  const child = spawn(process.execPath, [fileURLToPath(new URL("../services/common/start.js", import.meta.url)), "monitor"], {
    uid: mon.uid,
    gid: mon.gid,
    cwd: "/",
    stdio: ["ignore", "ignore", "ignore", "pipe"],
    env: { PATH: "/usr/bin:/bin", ETOKEN_CA_SERVICE: "monitor", ETOKEN_CA_CONFIG: JSON.stringify(config), ETOKEN_CA_UID: String(mon.uid), ETOKEN_CA_GID: String(mon.gid), SOFTHSM2_CONF: tok.confPath },
  });
  try {
    const ch = new Channel(child.stdio[3] as net.Socket, "monitor");
    await new Promise<void>((resolve) => ch.onFrame((f) => (f.type === "tokenEvent" ? resolve() : undefined)));
    const rtt: number[] = [];
    for (let i = 0; i < (QUICK ? 200 : 1000); i++) {
      const a = now();
      await ch.request("presenceCheck", { epoch: 1 }, "presence", 10_000);
      rtt.push(now() - a);
    }
    ch.send("shutdown", { reason: "bench done" });
    await Promise.race([new Promise((r) => child.once("exit", r)), sleep(5000)]);
    return rtt;
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    fs.rmSync(base, { recursive: true, force: true });
  }
}

async function secDetect(): Promise<void> {
  const poll = 300;
  console.log(`[detect] presence fence cost; token removal -> SUSPENDED (TOKEN_POLL_INTERVAL=${poll}ms)`);
  const rtt = await fenceRtt();
  ctx.fenceRtt = q(rtt, 0.5);
  fig("fence", "fence round trip kernel<->monitor (presenceCheck)", `p50 ${ms(q(rtt, 0.5), 3)} p99 ${ms(q(rtt, 0.99), 3)}`, "adds <= 1 ms p50", q(rtt, 0.5) <= 1);
  if (ctx.b50 !== undefined) note(`(b) p50 with the fence ${ms(ctx.b50)}, without it about ${ms(ctx.b50 - ctx.fenceRtt)} (the fence runs after signing, in series; the kernel has no switch to turn it off)`);
  const r = await start("etca-bench-det", { TOKEN_POLL_INTERVAL: `${poll}ms` });
  try {
    const det: number[] = [];
    const rounds = QUICK ? 3 : 8;
    for (let i = 0; i < rounds; i++) {
      await sleep(Math.random() * poll);
      const mark = r.server.logs().length;
      const a = now();
      removeToken(r.inst.token);
      let seen = NaN;
      while (now() - a < 10_000) {
        const l = r.server.logs();
        if (l.slice(mark).some((x) => x.includes("state change") && x.includes("SUSPENDED"))) {
          seen = now() - a;
          break;
        }
        await sleep(1);
      }
      det.push(seen);
      reinsertToken(r.inst.token);
      await waitForState(r.inst, "NEED_PIN");
      await typePin(r.inst, r.inst.token.userPin, countPrompts(r.inst) + (r.inst.consoleText().endsWith(": ") ? 0 : 1));
      await waitForState(r.inst, "READY");
    }
    fig("detect", `removal -> SUSPENDED on the kernel log (${rounds} rounds)`, `p50 ${ms(q(det, 0.5), 0)} max ${ms(Math.max(...det), 0)}`, `<= ${poll} ms (one poll)`, Math.max(...det) <= poll);
  } finally {
    await stop(r);
  }
}

// ---------------------------------------------------------------------------------------------
// head to head (h1-h5): ONE installation and ONE SoftHSM2 token for everything below. The
// native and the openssl backend take turns on it (configuration switched, kernel restarted,
// CA_DIR reset to the database size under test); raw C_Sign is measured on the same token with
// the kernel stopped; MyProxy's built-in CA signs with a byte copy of that token (same serial,
// key and PIN) owned by myproxy. CLIENT_USER is myproxy, so MyProxy's callout can use the
// same installation (the spool driver writes its requests as CLIENT_USER too).

type BackendName = "pkcs11" | "openssl";
const BACKEND_LABEL: Record<BackendName, string> = { pkcs11: "native", openssl: "openssl" };

interface Shared {
  inst: Installation;
  /** root-only directory of cached synthetic index files */
  cache: string;
  indexFiles: Map<number, string>;
  csrPem: string;
  csrPath: string;
  server?: RunningServer;
  driver?: SpoolDriver;
  /** kernel left READY under load and the PIN was typed again (see recover()) */
  trips: { count: number; ms: number; during: string[] };
  recovering?: Promise<void>;
}
let shared: Shared | undefined;

function hasUser(name: string): boolean {
  try {
    lookupUser(name);
    return true;
  } catch {
    return false;
  }
}

function sharedInstallation(): Shared {
  if (shared) return shared;
  // TOKEN_POLL_INTERVAL: the product's default (the fixture's 300 ms is for the tests)
  const inst = createInstallation({ prefix: "etca-bench-h2h", extraConfig: { CLIENT_TIMEOUT: "60", TOKEN_POLL_INTERVAL: "2", ...(hasUser(MYPROXY_USER) ? { CLIENT_USER: MYPROXY_USER } : {}) } });
  const work = path.join(inst.dir, "work");
  fs.mkdirSync(work, { mode: 0o755 });
  const csr = makeCsr(work, "bench");
  shared = { inst, cache: makeBaseDir("etca-bench-idx"), indexFiles: new Map(), csrPem: csr.csrPem, csrPath: csr.csrPath, trips: { count: 0, ms: 0, during: [] } };
  fs.chmodSync(shared.cache, 0o700);
  return shared;
}

async function sharedDown(s: Shared): Promise<void> {
  s.driver?.close();
  s.driver = undefined;
  if (s.server) await s.server.stop();
  s.server = undefined;
}

async function sharedCleanup(): Promise<void> {
  if (!shared) return;
  const s = shared;
  shared = undefined;
  await sharedDown(s);
  s.inst.cleanup();
  fs.rmSync(s.cache, { recursive: true, force: true });
}

/** CA_DIR with `lines` synthetic index lines (none: the directory goes, the server makes it); CRL_DIR emptied. */
function resetDatabase(s: Shared, lines: number): void {
  const { CA_DIR: dir, CRL_DIR: crl } = s.inst.config;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(crl, { recursive: true, force: true });
  if (lines === 0) return;
  let cached = s.indexFiles.get(lines);
  if (!cached) {
    cached = path.join(s.cache, `index-${lines}.txt`);
    syntheticIndex(cached, lines);
    s.indexFiles.set(lines, cached);
  }
  const signer = s.inst.users.SIGNER_USER;
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true, mode: 0o700 });
  fs.copyFileSync(cached, path.join(dir, "index.txt"));
  fs.writeFileSync(path.join(dir, "serial"), "01\n");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
  for (const p of [dir, path.join(dir, "newcerts"), path.join(dir, "index.txt"), path.join(dir, "serial"), path.join(dir, "crlnumber")]) fs.chownSync(p, signer.uid, signer.gid);
  fs.chmodSync(dir, 0o700);
}

/** (Re)starts the shared installation with `backend` on a database of `lines` entries; waits for the first CRL. */
async function sharedUp(s: Shared, backend: BackendName, lines: number): Promise<SpoolDriver> {
  await sharedDown(s);
  resetDatabase(s, lines);
  if (backend === "openssl") useOpensslBackend(s.inst);
  else useNativeBackend(s.inst);
  s.server = await bringUp(s.inst);
  s.driver = new SpoolDriver(s.inst);
  // the kernel makes its first CRL right after READY: not inside the measurements
  try {
    await waitFor("the first CRL", () => readStatus(s.inst)?.crl ?? undefined, 120_000, 100);
  } catch (err) {
    note(`${BACKEND_LABEL[backend]} at ${lines} entries: ${(err as Error).message}`);
  }
  return s.driver;
}

/**
 * After a failed request: when the kernel has left READY (the presence fence or a poll lost
 * the token: on SoftHSM2 every `openssl ca` run's C_Login rewrites token.object, and a
 * C_GetTokenInfo in the monitor at that moment fails), wait for NEED_PIN, type the PIN again
 * and wait for READY. One recovery at a time for all writers; its duration is recorded so
 * throughput can leave it out. Returns after a plain failure (kernel still READY) at once.
 */
async function recover(s: Shared, during: string): Promise<void> {
  if (!s.recovering) {
    const state = (): string | undefined => readStatus(s.inst)?.state;
    // the status file is written a moment after the state changes
    for (let i = 0; i < 10 && state() === "READY"; i++) await sleep(50);
    if (state() === "READY" || s.recovering) {
      await s.recovering;
      return;
    }
    s.recovering = (async () => {
      const a = now();
      try {
        const st = await waitFor("NEED_PIN or READY", () => (state() === "NEED_PIN" || state() === "READY" ? state() : undefined), 60_000, 50);
        if (st === "NEED_PIN") {
          await typePin(s.inst, s.inst.token.userPin, countPrompts(s.inst) + (s.inst.consoleText().endsWith(": ") ? 0 : 1));
          await waitForState(s.inst, "READY", 120_000);
        }
      } finally {
        s.trips.count++;
        s.trips.ms += now() - a;
        s.trips.during.push(during);
        s.recovering = undefined;
      }
    })();
  }
  await s.recovering;
}

/** Sequential requests until maxN samples or budgetMs (at least minN); server-side latency as in (b). */
async function timedSequential(s: Shared, d: SpoolDriver, csrPem: string, maxN: number, budgetMs: number, minN: number, warm: number, during: string): Promise<{ lat: number[]; bad: number; firstText: string }> {
  for (let i = 0; i < warm; i++) if (!(await d.issue(`warm ${i}`, csrPem)).ok) await recover(s, during);
  const lat: number[] = [];
  let bad = 0;
  let firstText = "";
  const t0 = now();
  for (let i = 0; i < maxN && (i < minN || now() - t0 < budgetMs); i++) {
    const x = await d.issue(`h2h ${i}`, csrPem);
    if (x.ok) lat.push(x.done - x.linked);
    else {
      bad++;
      firstText ||= x.text;
      await recover(s, during);
    }
  }
  return { lat, bad, firstText };
}

/**
 * `clients` writers, each issuing back to back for durMs; certificates per second over the
 * whole run, less the time spent recovering from a lost token (recover()).
 */
async function sustained(s: Shared, d: SpoolDriver, csrPem: string, clients: number, durMs: number, during: string): Promise<{ rate: number; ok: number; bad: number; p50: number; excludedMs: number }> {
  const lost0 = s.trips.ms;
  const t0 = now();
  const end = t0 + durMs;
  let ok = 0;
  let bad = 0;
  const lat: number[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      for (let i = 0; now() < end; i++) {
        const x = await d.issue(`thr${clients} w${w} n${i}`, csrPem);
        if (x.ok) {
          ok++;
          lat.push(x.done - x.t0);
        } else {
          bad++;
          await recover(s, during);
        }
      }
    }),
  );
  const excludedMs = s.trips.ms - lost0;
  return { rate: ok / ((now() - t0 - excludedMs) / 1000), ok, bad, p50: q(lat, 0.5), excludedMs };
}

/** Name of one of our processes (service title, script) or the program (openssl children). */
function procName(pid: number): string | undefined {
  const p = procInfo(pid);
  if (p) return p.name;
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    return cmd.length ? path.basename(cmd[0]!) : undefined;
  } catch {
    return undefined;
  }
}

function statusKiB(pid: number, key: string): number {
  try {
    return Number(new RegExp(`${key}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * Peak memory of every process of the installation during a run: VmHWM reset first (clear_refs
 * 5), then sampled every 100 ms (short-lived children: openssl), Pss from smaps_rollup every
 * 250 ms. Per process name the largest value seen (one process per name at a time).
 */
class MemorySampler {
  private readonly hwm = new Map<string, number>();
  private readonly pss = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  constructor(private readonly root: number) {}
  start(): void {
    for (const pid of processTree(this.root)) {
      try {
        fs.writeFileSync(`/proc/${pid}/clear_refs`, "5");
      } catch {
        // gone
      }
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), 100);
  }
  private sample(): void {
    const withPss = this.ticks++ % 3 === 0;
    for (const pid of processTree(this.root)) {
      const name = procName(pid);
      if (!name || name === "env") continue;
      this.hwm.set(name, Math.max(this.hwm.get(name) ?? 0, statusKiB(pid, "VmHWM") / 1024));
      if (withPss) {
        try {
          const kib = Number(/^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
          this.pss.set(name, Math.max(this.pss.get(name) ?? 0, kib / 1024));
        } catch {
          // gone
        }
      }
    }
  }
  stop(): { total: number; rows: string; pssTotal: number; pssRows: string } {
    this.sample();
    clearInterval(this.timer);
    const fmt = (m: Map<string, number>): string => [...m].map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ");
    const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
    return { total: sum(this.hwm), rows: fmt(this.hwm), pssTotal: sum(this.pss), pssRows: fmt(this.pss) };
  }
}

/** Raw C_Sign on the installation's own token (kernel stopped): the floor under both backends. */
function rawSign(s: Shared, n: number): number[] {
  const tok = loggedInToken(s.inst.token);
  try {
    const data = randomBytes(1000); // about a TBSCertificate
    for (let i = 0; i < 50; i++) tok.sign(data);
    const t: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = now();
      tok.sign(data);
      t.push(now() - a);
    }
    return t;
  } finally {
    tok.close();
  }
}

const pp = (xs: number[]): string => `p50 ${ms(q(xs, 0.5))} p99 ${ms(q(xs, 0.99))}`;
const entriesLabel = (n: number): string => (n === 0 ? "empty database" : n >= 1_000_000 && n % 1_000_000 === 0 ? `${n / 1_000_000}M index.txt entries` : `${n / 1000}k index.txt entries`);
const fraction = (r: number): string => `${r.toFixed(3)} (1/${(1 / r).toFixed(1)})`;

async function secH2h(): Promise<void> {
  const sizes = QUICK ? [0, 20_000, 200_000] : [0, 100_000, 1_000_000];
  const DUR = QUICK ? 2000 : 5000;
  const plan: Record<BackendName, { n: number; budget: number; warm: number }[]> = {
    // per size: at most n samples, or until the budget (ms) is spent (at least 3)
    pkcs11: QUICK ? [{ n: 40, budget: 4000, warm: 5 }, { n: 30, budget: 3000, warm: 5 }, { n: 30, budget: 3000, warm: 5 }] : [{ n: 150, budget: 10000, warm: 10 }, { n: 100, budget: 8000, warm: 10 }, { n: 100, budget: 8000, warm: 10 }],
    // (the first CRL, made before measuring, has read the whole index already: little to warm)
    openssl: QUICK ? [{ n: 12, budget: 4000, warm: 2 }, { n: 5, budget: 4000, warm: 1 }, { n: 3, budget: 6000, warm: 0 }] : [{ n: 40, budget: 8000, warm: 3 }, { n: 15, budget: 12000, warm: 1 }, { n: 6, budget: 30000, warm: 0 }],
  };
  console.log(`[h2h] native vs openssl backend vs raw C_Sign on one SoftHSM2 token; sizes ${sizes.join(", ")}; 1/8/32 clients for ${DUR / 1000} s each`);
  const s = sharedInstallation();
  await sharedDown(s);
  const sign = rawSign(s, QUICK ? 500 : 2000);
  const signP50 = q(sign, 0.5);
  const out: Figure[] = [];
  const later = (id: string, what: string, value: string, goal?: string, pass?: boolean): void => {
    out.push({ id, what, value, goal, verdict: pass === undefined ? (goal ? "n/a" : undefined) : pass ? "PASS" : "MISS" });
  };
  later("(h1)", `raw C_Sign, same token, kernel stopped (n=${sign.length})`, pp(sign));
  const thr: Record<string, string[]> = {};
  const thrRate: Record<string, number[]> = {};
  const mem: Record<string, ReturnType<MemorySampler["stop"]>> = {};
  for (const [si, lines] of sizes.entries()) {
    const p50: Partial<Record<BackendName, number>> = {};
    for (const backend of ["pkcs11", "openssl"] as BackendName[]) {
      const label = BACKEND_LABEL[backend];
      const id = si === 0 ? "(h1)" : "(h2)";
      let d: SpoolDriver;
      const t0 = now();
      try {
        d = await sharedUp(s, backend, lines);
      } catch (err) {
        note(`${label} backend at ${lines} entries cannot start: ${(err as Error).message.slice(0, 300)}`);
        later(id, `${label} backend, ${entriesLabel(lines)}`, "did not start");
        continue;
      }
      const plan1 = plan[backend][si]!;
      const r = await timedSequential(s, d, s.csrPem, plan1.n, plan1.budget, 3, plan1.warm, `${label} @ ${lines}`);
      console.log(`  ${label} @ ${lines}: ${r.lat.length} requests ${pp(r.lat)} (start-up + run ${((now() - t0) / 1000).toFixed(1)} s)`);
      if (r.bad) note(`${label} at ${lines} entries: ${r.bad} requests failed, e.g. ${r.firstText.trim().slice(0, 200)}`);
      if (r.lat.length) p50[backend] = q(r.lat, 0.5);
      later(id, `${label} backend, ${entriesLabel(lines)}: request -> certificate (n=${r.lat.length})`, r.lat.length ? pp(r.lat) : "no certificate");
      if (si === 0) {
        const sampler = new MemorySampler(s.server!.pid);
        sampler.start();
        thr[backend] = [];
        thrRate[backend] = [];
        for (const clients of [1, 8, 32]) {
          const x = await sustained(s, d, s.csrPem, clients, DUR, `${label}, ${clients} clients`);
          console.log(`  ${label}: ${clients} clients ${x.rate.toFixed(1)} certs/s (${x.ok} ok, ${x.bad} failed, latency p50 ${ms(x.p50, 1)})`);
          if (x.bad) note(`${label}, ${clients} clients: ${x.bad} requests failed${x.excludedMs ? `; ${ms(x.excludedMs, 0)} of PIN re-entry left out of the rate` : ""}`);
          thr[backend]!.push(`${x.rate.toFixed(0)}`);
          thrRate[backend]!.push(x.rate);
        }
        mem[backend] = sampler.stop();
      }
    }
    const n = p50.pkcs11;
    const o = p50.openssl;
    if (n !== undefined && o !== undefined) {
      const r = n / o;
      const goal = lines === 0 ? 1 / 3 : lines === 1_000_000 ? 1 / 30 : undefined;
      later(si === 0 ? "(h1)" : "(h2)", `native p50 / openssl p50, ${entriesLabel(lines)} (native p50 = ${(n / signP50).toFixed(0)}x C_Sign p50)`, fraction(r), goal ? `<= 1/${Math.round(1 / goal)}` : undefined, goal ? r <= goal : undefined);
    }
  }
  await sharedDown(s);
  if (s.trips.count) {
    note(
      `(h1)-(h3) the kernel left READY ${s.trips.count} time(s) under load and the bench typed the PIN again (${ms(s.trips.ms, 0)} in all; during: ${s.trips.during.join("; ")}). ` +
        "On SoftHSM2 every `openssl ca` run's C_Login rewrites token.object; a C_GetTokenInfo/slot scan in another process at that moment fails (CKR_GENERAL_ERROR or token missing), so the monitor's poll or the presence fence reports the token gone",
    );
  }
  for (const b of ["pkcs11", "openssl"] as BackendName[]) {
    if (thr[b]) later("(h3)", `${BACKEND_LABEL[b]} backend: sustained certs/s, 1 / 8 / 32 clients (${DUR / 1000} s each)`, thr[b]!.join(" / "));
  }
  if (thrRate.pkcs11 && thrRate.openssl) later("(h3)", "native / openssl certs/s at 1 / 8 / 32 clients", thrRate.pkcs11.map((x, i) => `${(x / thrRate.openssl![i]!).toFixed(1)}x`).join(" / "));
  for (const b of ["pkcs11", "openssl"] as BackendName[]) {
    const m = mem[b];
    if (!m) continue;
    later("(h5)", `peak RSS during the ${BACKEND_LABEL[b]} throughput run (VmHWM reset before it), MiB`, `${m.total.toFixed(0)} (${m.rows})`, "< 300 MiB", m.total < 300);
    note(`(h5) ${BACKEND_LABEL[b]}: largest PSS seen during the throughput run (shared pages split between processes), MiB: ${m.pssTotal.toFixed(0)} (${m.pssRows})`);
  }
  note("(h1)-(h3): request -> certificate is the server side as in (b): request symlink made -> result file seen; clients are in-process spool writers doing what etoken-ca-client does");
  for (const f of out) fig(f.id, f.what, f.value, f.goal, f.verdict === "PASS" ? true : f.verdict === "MISS" ? false : undefined);
}

/** The pkcs11 engine of the openssl binary (ENGINESDIR/pkcs11.so). */
function enginePath(): string {
  const out = execFileSync("openssl", ["version", "-e"], { encoding: "utf8" });
  return path.join(/ENGINESDIR: "([^"]+)"/.exec(out)?.[1] ?? "/usr/lib/x86_64-linux-gnu/engines-3", "pkcs11.so");
}

async function secMyProxy(): Promise<void> {
  const N = QUICK ? 15 : 50;
  console.log(`[myproxy] myproxy-logon -Q: MyProxy's built-in CA (pkcs11 engine) vs certificate_issuer_program = etoken-ca-client, ${N} logons each, interleaved with node -e ''`);
  const missing = [MYPROXY_SERVER, MYPROXY_LOGON, enginePath()].filter((f) => !fs.existsSync(f));
  if (missing.length || !hasUser(MYPROXY_USER)) {
    fig("(h4)", "MyProxy logon latency", `not measured: missing ${[...missing, ...(hasUser(MYPROXY_USER) ? [] : [`user ${MYPROXY_USER}`])].join(", ")}`);
    return;
  }
  const s = sharedInstallation();
  if (s.inst.config.CLIENT_USER !== MYPROXY_USER) throw new Error(`CLIENT_USER is ${s.inst.config.CLIENT_USER}, not ${MYPROXY_USER}`);
  await sharedUp(s, "pkcs11", 0);
  const inst = s.inst;
  const mpUser = lookupUser(MYPROXY_USER);
  const base = makeBaseDir("etca-bench-mp");
  const servers: MyProxyServer[] = [];
  try {
    fs.mkdirSync(path.join(base, "pki"), { mode: 0o755 }); // the trust directory below must be reachable for myproxy
    fs.chmodSync(path.join(base, "pki"), 0o755);
    const trust = createTrustAndHost(path.join(base, "pki"));
    addTrustedCa(trust.trustDir, inst.token.caCertPath, "/DC=org/DC=example");
    const user = { name: "bench", password: "bench-Pass-4711" };
    // built-in CA: the token copy, the mapfile and the serial file belong to myproxy
    const hsm = copyTokenFor(inst.token, path.join(base, "hsm"), mpUser);
    const caDir = path.join(base, "builtin-ca");
    fs.mkdirSync(caDir, { mode: 0o700 });
    fs.writeFileSync(path.join(caDir, "grid-mapfile"), `"${TEST_DN_FORMAT.replace("%s", user.name)}" ${user.name}\n`);
    fs.copyFileSync(inst.token.caCertPath, path.join(caDir, "ca.pem"));
    for (const p of [caDir, path.join(caDir, "grid-mapfile"), path.join(caDir, "ca.pem")]) fs.chownSync(p, mpUser.uid, mpUser.gid);
    const keyUri = `pkcs11:serial=${inst.token.serial};id=${inst.token.caKeyId.match(/../g)!.map((b) => `%${b}`).join("")};type=private`;
    const builtin = await startMyProxy({
      dir: path.join(base, "mp-builtin"),
      trust,
      users: [user],
      requestTimeoutSeconds: 60,
      extraEnv: { SOFTHSM2_CONF: hsm.confPath },
      caLines: [
        `certificate_issuer_cert ${path.join(caDir, "ca.pem")}`,
        `certificate_issuer_key "${keyUri}"`,
        `certificate_openssl_engine_id "dynamic"`,
        `certificate_openssl_engine_pre "SO_PATH:${enginePath()}" "ID:pkcs11" "LIST_ADD:1" "LOAD" "MODULE_PATH:${inst.token.modulePath}"`,
        `certificate_openssl_engine_post "PIN:${inst.token.userPin}"`,
        `certificate_mapfile ${path.join(caDir, "grid-mapfile")}`,
        `certificate_serialfile ${path.join(caDir, "serial")}`,
      ],
    });
    servers.push(builtin);
    const issuer = writeIssuerWrapper(path.join(base, "etoken-ca-issuer"), [process.execPath, BIN.client, "--config", inst.configPath]);
    const ours = await startMyProxy({ dir: path.join(base, "mp-etoken-ca"), trust, users: [user], requestTimeoutSeconds: 60, issuerProgram: issuer });
    servers.push(ours);

    const client = path.join(base, "client");
    fs.mkdirSync(client, { mode: 0o700 });
    const logon = async (server: MyProxyServer, out: string): Promise<{ wall: number; code: number; stderr: string }> => {
      fs.rmSync(out, { force: true });
      const a = now();
      const r = await myproxyLogon({ server, username: user.name, password: user.password, hours: 12, csrPath: s.csrPath, outPath: out, trustDir: trust.trustDir, killAfterMs: 60_000 });
      return { wall: now() - a, code: r.code, stderr: r.stderr };
    };
    const nodeBare = (): number => {
      const a = now();
      spawnSync(process.execPath, ["-e", ""], { uid: mpUser.uid, gid: mpUser.gid, cwd: "/", env: { PATH: CLEAN_PATH }, stdio: "ignore" });
      return now() - a;
    };
    const outB = path.join(client, "builtin.pem");
    const outO = path.join(client, "ours.pem");
    // warm-up, and a look at what each CA returned
    for (let i = 0; i < 2; i++) {
      nodeBare();
      const b = await logon(builtin, outB);
      const o = await logon(ours, outO);
      if (i > 0) continue;
      for (const [name, r, file] of [["built-in CA", b, outB], ["etoken-ca", o, outO]] as const) {
        if (r.code !== 0) {
          note(`(h4) ${name}: myproxy-logon failed: ${r.stderr.trim().replace(/\s+/g, " ").slice(0, 300)}`);
          continue;
        }
        const v = spawnSync("openssl", ["verify", "-CAfile", inst.token.caCertPath, file], { encoding: "utf8" });
        const subj = spawnSync("openssl", ["x509", "-noout", "-subject", "-nameopt", "compat", "-in", file], { encoding: "utf8" }).stdout.trim();
        note(`(h4) ${name}: ${subj}, openssl verify with the token's CA certificate: ${v.status === 0 ? "OK" : v.stdout.trim() + v.stderr.trim()}`);
      }
    }
    const tn: number[] = [];
    const tb: number[] = [];
    const to: number[] = [];
    let badB = 0;
    let badO = 0;
    for (let i = 0; i < N; i++) {
      tn.push(nodeBare());
      const pair = i % 2 === 0 ? ([builtin, ours] as const) : ([ours, builtin] as const);
      for (const srv of pair) {
        const r = await logon(srv, srv === builtin ? outB : outO);
        if (srv === builtin) r.code === 0 ? tb.push(r.wall) : badB++;
        else r.code === 0 ? to.push(r.wall) : badO++;
      }
    }
    if (badB || badO) note(`(h4) failed logons: built-in CA ${badB}, etoken-ca ${badO}`);
    const node50 = q(tn, 0.5);
    const b50 = q(tb, 0.5);
    const o50 = q(to, 0.5);
    const limit = b50 + node50 + 10;
    fig("(h4)", `node -e '' as ${MYPROXY_USER} (bare start-up), interleaved, n=${tn.length}`, pp(tn));
    fig("(h4)", `MyProxy built-in CA, pkcs11 engine, same token (copy): myproxy-logon -Q, n=${tb.length}`, tb.length ? pp(tb) : "no logon");
    fig("(h4)", `MyProxy + certificate_issuer_program = etoken-ca-client, n=${to.length}`, to.length ? pp(to) : "no logon", tb.length ? `<= built-in + node + 10 ms = ${ms(limit, 1)}` : "<= built-in + node + 10 ms", tb.length && to.length ? o50 <= limit : undefined);
    if (tb.length && to.length) {
      fig("(h4)", "etoken-ca / built-in p50; (etoken-ca - built-in) / node p50", `${(o50 / b50).toFixed(2)}x; ${((o50 - b50) / node50).toFixed(2)} (+${ms(o50 - b50, 1)} vs node ${ms(node50, 1)}; margin ${ms(limit - o50, 1)})`);
    }
    note(
      "(h4) BENCHMARK ONLY: MyProxy's built-in CA gets the token PIN from myproxy-server.config (certificate_openssl_engine_post \"PIN:...\"), a secret in a configuration file; " +
        "certificate_issuer_key_passphrase did not reach the engine's PIN prompt here (libp11: UI_process failed, key not loaded). The built-in CA logs in once at server start and signs in the forked per-connection child; " +
        "both servers use the same PAM checker (pam_exec) and host credentials, logons alternate between them",
    );
  } finally {
    for (const srv of servers) await srv.stop();
    await sharedDown(s);
    if (process.env.ETCA_BENCH_KEEP) console.log(`  kept ${base}`);
    else fs.rmSync(base, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------

function machine(): string[] {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  let softhsm = "?";
  let openssl = "?";
  try {
    softhsm = execFileSync("dpkg-query", ["-W", "-f", "${Version}", "softhsm2"], { encoding: "utf8" });
  } catch {
    // not Debian
  }
  try {
    openssl = execFileSync("openssl", ["version"], { encoding: "utf8" }).trim();
  } catch {
    // none
  }
  const mem = Number(/MemTotal:\s+(\d+)/.exec(fs.readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) / 1048576;
  const fsType = (() => {
    try {
      return execFileSync("findmnt", ["-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", os.tmpdir()], { encoding: "utf8" }).trim();
    } catch {
      return "?";
    }
  })();
  return [
    `nproc ${os.cpus().length}, CPU ${cpu}, ${mem.toFixed(1)} GiB RAM`,
    `kernel ${os.release()}, node ${process.version}, SoftHSM2 ${softhsm}, ${openssl}`,
    `file system of ${os.tmpdir()}: ${fsType}`,
    `load average at start ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
  ];
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("bench: run as root (it creates users and starts the server with its services)");
    process.exit(2);
  }
  const m = machine();
  console.log(`etoken-ca bench${QUICK ? " (--quick)" : ""}\n${m.map((x) => `  ${x}`).join("\n")}`);
  const started = Date.now();
  const sections: [string, () => Promise<void>][] = [
    ["fsync", secFsync],
    ["sign", secSign],
    ["latency", secLatency],
    ["throughput", secThroughput],
    ["client", secClient],
    ["index1m", secIndex1m],
    ["crl", secCrl],
    ["detect", secDetect],
    ["h2h", secH2h],
    ["myproxy", secMyProxy],
  ];
  for (const [name, f] of sections) {
    if (!want(name)) continue;
    const t0 = Date.now();
    try {
      await f();
    } catch (err) {
      note(`section ${name} failed: ${(err as Error).stack?.split("\n").slice(0, 3).join(" / ")}`);
    }
    console.log(`  (${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  await sharedCleanup();
  const width = (k: keyof Figure): number => Math.max(...figures.map((f) => String(f[k] ?? "").length), 4);
  const table = [
    `| id | figure | value | goal | verdict |`,
    `|---|---|---|---|---|`,
    ...figures.map((f) => `| ${f.id} | ${f.what} | ${f.value} | ${f.goal ?? ""} | ${f.verdict ?? ""} |`),
  ];
  void width;
  console.log(`\n${table.join("\n")}\n`);
  for (const n of notes) console.log(`- ${n}`);
  console.log(`(${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (WRITE) {
    const out = [
      "# etoken-ca performance figures",
      "",
      `Produced by \`npm run bench -- --write-results${QUICK ? " --quick" : ""}${ONLY ? ` --only ${ONLY.join(",")}` : ""}\` on ${new Date().toISOString().slice(0, 10)}. Goals from the issues; PASS/MISS are this run's, not assertions.`,
      "",
      "## Machine",
      "",
      ...m.map((x) => `- ${x}`),
      "",
      "## Figures",
      "",
      ...table,
      "",
      "## Notes",
      "",
      ...notes.map((n) => `- ${n}`),
      "",
    ].join("\n");
    fs.writeFileSync(path.join(SRC_BENCH, "RESULTS.md"), out);
    console.log(`wrote ${path.join(SRC_BENCH, "RESULTS.md")}`);
  }
}

await main();
process.exit(0);
