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
//   backend     SIGNER_BACKEND=openssl vs native: p50/p99 and 1/8/32 writers (when it exists)
//
// Requests are injected exactly as etoken-ca-client does it (services/common/spool-protocol.ts):
// request file (O_EXCL, 0644, fsynced, owned by CLIENT_USER), then the `request` symlink (the lock,
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
import { Token } from "../services/signer/token.js";
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
  type Installation,
  type RunningServer,
} from "../test/fixtures/server.js";
import { createSoftToken, reinsertToken, removeToken } from "../test/fixtures/softhsm.js";
import { ensureUser } from "../test/fixtures/users.js";

// ---------------------------------------------------------------------------------------------
// arguments, results table

const argv = process.argv.slice(2);
const QUICK = argv.includes("--quick");
const WRITE = argv.includes("--write-results");
const onlyArg = argv.find((a) => a.startsWith("--only"));
const ONLY = onlyArg ? (onlyArg.includes("=") ? onlyArg.split("=")[1]! : argv[argv.indexOf(onlyArg) + 1] ?? "").split(",") : undefined;
const want = (name: string): boolean => !ONLY || ONLY.includes(name);
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

  constructor(private readonly inst: Installation) {
    this.dir = inst.config.SPOOL_DIR;
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
  private wakeLock(): void {
    for (const w of this.lockWaiters.splice(0)) w();
  }
  close(): void {
    this.watcher.close();
    clearInterval(this.timer);
  }

  /** One request; times: start (before the request file), linked (symlink made), done (result seen). */
  async issue(username: string, csrPem: string): Promise<{ t0: number; linked: number; done: number; ok: boolean; text: string; id: string }> {
    const u = this.inst.users.CLIENT_USER;
    const id = `req.${randomName(16, randomBytes)}`;
    const file = path.join(this.dir, id);
    const t0 = now();
    const deadline = Date.now() + this.inst.config.CLIENT_TIMEOUT;
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    fs.fchmodSync(fd, 0o644);
    fs.writeSync(fd, formatRequestFile({ username, proxyLifetime: 43200, maxCertLifetime: 0, deadline, csrPem }));
    fs.fsyncSync(fd);
    fs.fchownSync(fd, u.uid, u.gid);
    fs.closeSync(fd);
    const res = resultName(id);
    const seen = new Promise<void>((r) => this.waiters.set(res, r));
    for (;;) {
      try {
        fs.symlinkSync(id, path.join(this.dir, REQUEST_LINK));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        await new Promise<void>((r) => this.lockWaiters.push(r));
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

async function start(prefix: string, extra: Record<string, string> = {}, prepare?: (inst: Installation) => void): Promise<Running> {
  const inst = createInstallation({ prefix, extraConfig: { CLIENT_TIMEOUT: "60", ...extra } });
  prepare?.(inst);
  const server = startServer(inst);
  try {
    await waitForState(inst, "NEED_PIN", 120_000);
    await typePin(inst, inst.token.userPin, countPrompts(inst) + (inst.consoleText().endsWith(": ") ? 0 : 1));
    await waitForState(inst, "READY", 60_000);
  } catch (err) {
    const tail = server.logs().slice(-6).join(" / ").slice(0, 1500);
    await server.stop();
    inst.cleanup();
    throw new Error(`${(err as Error).message}; server log: ${tail}`);
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

const ctx: { signRate?: number; b50?: number; fenceRtt?: number } = {};

async function secSign(): Promise<void> {
  console.log("[sign] raw C_Sign through pkcs11js (signer's Token, RSA-2048, CKM_SHA256_RSA_PKCS)");
  const base = makeBaseDir("etca-bench-sign");
  try {
    const st = createSoftToken({ dir: path.join(base, "t") });
    const KEY = { slot: 0, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
    const tok = Token.open(st.modulePath, { env: st.env });
    tok.select(KEY);
    tok.login(Buffer.from(st.userPin), st.serial);
    tok.findKey(KEY);
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
    fig("(b')", "incl. writing+fsyncing the request file", `p50 ${ms(q(s.full, 0.5))} p99 ${ms(q(s.full, 0.99))}`);
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
    const run = (args: string[], stdin?: string): { wall: number; code: number | null } => {
      const a = now();
      const p = spawnSync(process.execPath, args, { uid: u.uid, gid: u.gid, cwd: "/", input: stdin ?? "", env: { PATH: CLEAN_PATH }, stdio: ["pipe", "ignore", "pipe"] });
      return { wall: now() - a, code: p.status };
    };
    const base: number[] = [];
    const cli: number[] = [];
    let bad = 0;
    run(["-e", ""]);
    run([BIN.client, "--config", r.inst.configPath], input);
    for (let i = 0; i < runs; i++) {
      base.push(run(["-e", ""]).wall);
      const c = run([BIN.client, "--config", r.inst.configPath], input);
      if (c.code !== 0) bad++;
      cli.push(c.wall);
    }
    if (bad) note(`client: ${bad} runs failed`);
    const b = q(base, 0.5);
    const c = q(cli, 0.5);
    fig("(d0)", "node -e '' (bare start-up), median", ms(b, 1));
    fig("(d)", "etoken-ca-client, whole logon callout, median", `${ms(c, 1)} (+${ms(c - b, 1)})`, "<= node + 15 ms", c - b <= 15);
    if (ctx.b50 !== undefined) note(`client overhead beyond server-side (b) p50: ${(c - b - ctx.b50).toFixed(1)} ms (start-up, config, stdin, request write+fsync, inotify wait, exit)`);
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
    const KEY = { slot: 0, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
    const tok = Token.open(st.modulePath, { env: st.env });
    tok.select(KEY);
    tok.login(Buffer.from(st.userPin), st.serial);
    tok.findKey(KEY);
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
        pub.publish(db, 30 * 86400_000, (tbs) => tok.sign(tbs));
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
  const config = parseConfig(`DN_FORMAT=/CN=%s\nPKCS11_MODULE=${tok.modulePath}\nCA_CERT=${tok.caCertPath}\nMONITOR_USER=etca-mon\nTOKEN_POLL_INTERVAL=1h\n`, "bench");
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

async function secBackend(): Promise<void> {
  console.log("[backend] SIGNER_BACKEND=openssl vs native");
  const has = fs.existsSync(path.resolve(HERE, "../services/signer/openssl-backend.js"));
  if (!has) {
    fig("h2h", "openssl backend", "not built yet (services/signer/openssl-backend.js)", undefined);
    return;
  }
  const results: Record<string, number> = {};
  for (const backend of ["pkcs11", "openssl"]) {
    let r: Running;
    try {
      r = await start(`etca-bench-${backend}`, { SIGNER_BACKEND: backend });
    } catch (err) {
      note(`backend ${backend}: cannot start: ${(err as Error).message.slice(0, 200)}`);
      continue;
    }
    try {
      const s = await sequential(r, QUICK ? 30 : 100, 3);
      if (s.bad) note(`backend ${backend}: ${s.bad} failures, e.g. ${s.firstText.trim().slice(0, 160)}`);
      results[backend] = q(s.lat, 0.5);
      fig("h2h", `${backend}: request -> result, empty database`, `p50 ${ms(q(s.lat, 0.5))} p99 ${ms(q(s.lat, 0.99))}`);
      for (const writers of [1, 8, 32]) {
        const per = QUICK ? 3 : 8;
        const t0 = now();
        let ok = 0;
        await Promise.all(Array.from({ length: writers }, async (_, w) => {
          for (let i = 0; i < per; i++) if ((await r.driver.issue(`c${w}.${i}`, r.csrPem)).ok) ok++;
        }));
        fig("h2h", `${backend}: ${writers} concurrent writers`, `${(ok / ((now() - t0) / 1000)).toFixed(0)} certs/s`);
      }
    } finally {
      await stop(r);
    }
  }
  if (results["pkcs11"] && results["openssl"]) {
    fig("h2h", "native p50 / openssl p50, empty database", `${(results["pkcs11"] / results["openssl"]).toFixed(3)}`, "<= 1/3", results["pkcs11"] <= results["openssl"] / 3);
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
    ["backend", secBackend],
  ];
  for (const [name, f] of sections) {
    if (!want(name)) continue;
    try {
      await f();
    } catch (err) {
      note(`section ${name} failed: ${(err as Error).stack?.split("\n").slice(0, 3).join(" / ")}`);
    }
  }
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
