// Shared helpers of the reliability suite: an installation with a PIN that cannot be confused
// with anything else on disk, the real client, the request-file hand-off done by hand (as
// CLIENT_USER), the CA database as data, and "every process is still running" checks.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Test } from "tap";
import type { StatusSnapshot } from "../../services/common/status-file.js";
import { mustOpenssl } from "../fixtures/pki.js";
import { ROOT, readStatus, waitFor, type Installation } from "../fixtures/server.js";

export const CORPUS = path.join(ROOT, "test/reliability/corpus");

/** Replaces the token's user PIN (1234 by default: far too common a string to search for). */
export function setDistinctivePin(inst: Installation): string {
  const pin = `PIN-${randomBytes(9).toString("hex")}`;
  execFileSync("pkcs11-tool", ["--module", inst.token.modulePath, "--login", "--pin", inst.token.userPin, "--change-pin", "--new-pin", pin], {
    env: { ...process.env, ...inst.token.env },
    stdio: "pipe",
  });
  // pkcs11-tool ran as root: give the token back to the signer (owner) and the monitor (group)
  const walk = (p: string, isDir: boolean): void => {
    fs.chownSync(p, inst.users.SIGNER_USER.uid, inst.users.MONITOR_USER.gid);
    fs.chmodSync(p, isDir ? 0o750 : 0o640);
    if (isDir) for (const d of fs.readdirSync(p, { withFileTypes: true })) walk(path.join(p, d.name), d.isDirectory());
  };
  walk(inst.token.tokenDir, true);
  inst.token.userPin = pin;
  return pin;
}

// the one client runner (test/fixtures/server.ts), for the reliability tests' imports
export { runClient, type ClientResult } from "../fixtures/server.js";

/** Binary-safe replacement of every `@NAME@` placeholder. */
export function substitute(data: Buffer, values: Record<string, string>): Buffer {
  let out = data;
  for (const [k, v] of Object.entries(values)) {
    const needle = Buffer.from(`@${k}@`);
    const rep = Buffer.from(v);
    for (let i = out.indexOf(needle); i >= 0; i = out.indexOf(needle, i + rep.length)) {
      out = Buffer.concat([out.subarray(0, i), rep, out.subarray(i + needle.length)]);
    }
  }
  return out;
}

export const randomId = (): string => `req.${randomBytes(12).toString("base64").replace(/[^A-Za-z0-9]/g, "").padEnd(16, "x").slice(0, 16)}`;

/** Creates `dir/name` with `data`, owned by uid:gid, mode 0644 (as the client would). */
export function writeAs(file: string, data: Buffer | string, uid: number, gid: number, mode = 0o644): void {
  fs.writeFileSync(file, data, { mode });
  fs.chownSync(file, uid, gid);
  fs.chmodSync(file, mode);
}

/** Takes the `request` lock like the client does (symlink, retried while held). */
export async function takeLock(inst: Installation, target: string, timeoutMs = 30_000): Promise<void> {
  const link = path.join(inst.config.SPOOL_DIR, "request");
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.symlinkSync(target, link);
      try {
        fs.lchownSync(link, inst.users.CLIENT_USER.uid, inst.users.CLIENT_USER.gid);
      } catch {
        // already taken by the spool
      }
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    if (Date.now() > end) throw new Error("the request lock stayed held");
    await sleep(20);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits for the spool's result file for `id`, returns its text and removes it. */
export async function awaitResult(inst: Installation, id: string, timeoutMs = 20_000): Promise<string | undefined> {
  const file = path.join(inst.config.SPOOL_DIR, `${id}.result`);
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const text = fs.readFileSync(file, "utf8");
      fs.rmSync(file, { force: true });
      return text;
    } catch {
      await sleep(20);
    }
  }
  return undefined;
}

/** A request file hand-off as CLIENT_USER: write req.<random>, link `request` to it, wait for the result. */
export async function submitRequestFile(inst: Installation, data: Buffer | string): Promise<{ id: string; result: string | undefined }> {
  const id = randomId();
  writeAs(path.join(inst.config.SPOOL_DIR, id), data, inst.users.CLIENT_USER.uid, inst.users.CLIENT_USER.gid);
  await takeLock(inst, id);
  const result = await awaitResult(inst, id);
  fs.rmSync(path.join(inst.config.SPOOL_DIR, id), { force: true });
  return { id, result };
}

/** index.txt as lines (root reads the signer's 0700 directory). */
export function indexLines(inst: Installation): string[] {
  try {
    return fs.readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8").split("\n").filter((l) => l !== "");
  } catch {
    return [];
  }
}

export interface IndexRow {
  status: string;
  serial: string;
  subject: string;
}

export function indexRows(inst: Installation): IndexRow[] {
  return indexLines(inst).map((l) => {
    const c = l.split("\t");
    return { status: c[0]!, serial: c[3]!, subject: c[5]! };
  });
}

export interface Alive {
  kernelPid: number;
  pids: Record<string, number>;
}

/** The kernel and every service up, with their pids (from the status file and /proc). */
export function aliveSnapshot(inst: Installation): Alive | undefined {
  const s = readStatus(inst);
  if (!s || !fs.existsSync(`/proc/${s.kernelPid}`)) return undefined;
  const pids: Record<string, number> = {};
  for (const svc of s.services) {
    if (!svc.up || !svc.pid || !fs.existsSync(`/proc/${svc.pid}`)) return undefined;
    pids[svc.name] = svc.pid;
  }
  return { kernelPid: s.kernelPid, pids };
}

export function waitAlive(inst: Installation, timeoutMs = 30_000): Promise<Alive> {
  return waitFor("the kernel and every service up", () => aliveSnapshot(inst), timeoutMs);
}

/** True when the kernel and each service still run with the same pids as in `before`. */
export function sameProcesses(inst: Installation, before: Alive): string | undefined {
  const now = aliveSnapshot(inst);
  if (!now) return "a process is down";
  if (now.kernelPid !== before.kernelPid) return `kernel pid ${before.kernelPid} -> ${now.kernelPid}`;
  for (const [n, p] of Object.entries(before.pids)) if (now.pids[n] !== p) return `${n} pid ${p} -> ${now.pids[n]}`;
  for (const [n, p] of Object.entries(before.pids)) if (!fs.existsSync(`/proc/${p}`)) return `${n} (${p}) is gone`;
  return undefined;
}

export function status(inst: Installation): StatusSnapshot {
  const s = readStatus(inst);
  if (!s) throw new Error("no status file");
  return s;
}

/** Certificate facts via openssl. */
export function certFacts(pem: string): { subjectRdns: string[]; text: string; notBefore: number; notAfter: number; serial: string; pubkey: string } {
  const subject = mustOpenssl(["x509", "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb,utf8"], pem).trim().replace(/^subject=/, "");
  const rdns = subject.split(/(?<!\\),/);
  const text = mustOpenssl(["x509", "-noout", "-text"], pem);
  const start = mustOpenssl(["x509", "-noout", "-startdate"], pem).trim().split("=")[1]!;
  const end = mustOpenssl(["x509", "-noout", "-enddate"], pem).trim().split("=")[1]!;
  const serial = mustOpenssl(["x509", "-noout", "-serial"], pem).trim().split("=")[1]!.toUpperCase();
  const pubkey = mustOpenssl(["x509", "-noout", "-pubkey"], pem);
  return { subjectRdns: rdns, text, notBefore: Date.parse(start), notAfter: Date.parse(end), serial, pubkey };
}

/** One-line summary table for TAP output. */
export function comment(t: Test, lines: string[]): void {
  for (const l of lines) t.comment(l);
}
