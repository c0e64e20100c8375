#!/usr/bin/env node
// revoke-cert: queue a revocation for the running CA (root only).
//   revoke-cert --serial HEX | --cert FILE [--reason NAME] [--config FILE] [--no-signal]
// Looks the serial up in CA_DIR's index.txt (read-only; its bytes are searched, so a database of
// millions of lines answers at once), refuses unknown, already revoked and already queued
// serials, writes REVOKE_DIR/rev.<ms>.<random> atomically (tmp + fsync + rename; root 0600), then
// sends SIGUSR1 to etoken-ca-server, whose kernel reads the queue, has the signer revoke, and a
// new CRL made. Without a running server the entry stays
// queued for the next start.
import "../services/common/no-inspector.js"; // first: before anything else runs (see there)
import { randomBytes, X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs, runCli } from "../services/common/cli.js";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../services/common/config.js";
import { writeFileAtomic } from "../services/common/durable-file.js";
import { SecurityError, UsageError } from "../services/common/errors.js";
import { requireRoot } from "../services/common/identity.js";
import { canonicalReason, isRevocationReason, reasonProblem, REVOCATION_REASONS, type RevocationReason } from "../services/common/reasons.js";
import { safeReadFile } from "../services/common/safe-open.js";
import { INDEX } from "../services/common/ca-dir/index-format.js";
import { findSerialLine } from "../services/common/ca-dir/index-reader.js";
import {
  formatRevokeEntry,
  MAX_REVOKE_BYTES,
  normalizeSerial,
  parseRevokeEntry,
  randomName,
  REVOKE_DIR_MODE,
  REVOKE_FILE_MODE,
  REVOKE_NAME,
} from "../services/common/spool-protocol.js";

const PROGRAM = "revoke-cert";
const USAGE = `usage: ${PROGRAM} --serial HEX | --cert FILE [--reason NAME] [--config FILE] [--no-signal]
  reasons: ${Object.keys(REVOCATION_REASONS).join(", ")}`;

/** Serials already waiting in the queue (valid root-owned entries only). */
async function queuedSerials(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await fs.promises.readdir(dir)) {
    if (!REVOKE_NAME.test(name)) continue;
    try {
      const f = await safeReadFile(dir, name, { owner: 0, maxBytes: MAX_REVOKE_BYTES, what: "revoke queue entry" });
      out.set(normalizeSerial(parseRevokeEntry(f.data.toString("latin1")).serial)!, name);
    } catch {
      // junk: the kernel reports it
    }
  }
  return out;
}

/** REVOKE_DIR: root 0700 (only root writes and reads it). */
function ensureRevokeDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chownSync(dir, 0, 0);
    fs.chmodSync(dir, REVOKE_DIR_MODE);
    return;
  }
  if (!st.isDirectory()) throw new SecurityError("revoke_dir", `REVOKE_DIR ${dir} is not a directory`);
  if (st.uid !== 0) throw new SecurityError("revoke_dir", `REVOKE_DIR ${dir} is owned by uid ${st.uid}, expected root`);
  if ((st.mode & 0o077) !== 0) throw new SecurityError("revoke_dir", `REVOKE_DIR ${dir} is accessible to others (mode ${(st.mode & 0o7777).toString(8)}), expected ${REVOKE_DIR_MODE.toString(8)}`);
}

/** Writes the entry atomically; returns its name. */
export function writeQueueEntry(dir: string, serial: string, reason: RevocationReason, now = Date.now()): string {
  const name = `rev.${now}.${randomName(16, randomBytes)}`;
  writeFileAtomic(path.join(dir, name), formatRevokeEntry({ serial, reason, queuedAt: now }), { mode: REVOKE_FILE_MODE, owner: { uid: 0, gid: 0 } });
  return name;
}

export type SignalOutcome = { sent: true; pid: number } | { sent: false; why: string };

/** SIGUSR1 to the server whose pid is in PIDFILE, after checking that it is etoken-ca-server. */
export function signalServer(pidfile: string): SignalOutcome {
  let text: string;
  try {
    text = fs.readFileSync(pidfile, "utf8");
  } catch {
    return { sent: false, why: `no pid file ${pidfile}` };
  }
  const m = /^\s*([1-9][0-9]{0,9})\s*$/.exec(text);
  if (!m) return { sent: false, why: `pid file ${pidfile} does not hold a pid` };
  const pid = Number(m[1]);
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return { sent: false, why: `process ${pid} from ${pidfile} is not running (stale pid file)` };
  }
  if (!/etoken-ca-server|^etoken-ca: (kernel|server)/.test(cmdline)) {
    return { sent: false, why: `process ${pid} from ${pidfile} is not etoken-ca-server (${JSON.stringify(cmdline.trim().slice(0, 80))})` };
  }
  try {
    process.kill(pid, "SIGUSR1");
  } catch (err) {
    return { sent: false, why: `cannot signal process ${pid}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  return { sent: true, pid };
}

/** The kernel state in STATUS_FILE, or undefined when it cannot be read. */
function serverState(statusFile: string): string | undefined {
  try {
    const state = (JSON.parse(fs.readFileSync(statusFile, "utf8")) as { state?: unknown }).state;
    return typeof state === "string" ? state : undefined;
  } catch {
    return undefined;
  }
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { serial: "value", cert: "value", reason: "value", config: "value", "no-signal": "flag", help: "flag" }, USAGE);
  if (args.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  if ((args.serial === undefined) === (args.cert === undefined)) throw new UsageError(`give exactly one of --serial and --cert\n${USAGE}`);
  const reason = canonicalReason(args.reason ?? "unspecified");
  if (!isRevocationReason(reason)) throw new UsageError(reasonProblem(reason));
  requireRoot(PROGRAM);

  let serialIn: string;
  if (typeof args.cert === "string") {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(fs.readFileSync(args.cert));
    } catch (err) {
      throw new UsageError(`${args.cert}: not a readable PEM or DER certificate (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    serialIn = cert.serialNumber;
  } else {
    serialIn = args.serial!;
  }
  const serial = normalizeSerial(serialIn);
  if (!serial) throw new UsageError(`serial ${JSON.stringify(serialIn)} is not hexadecimal`);
  const config = loadConfig(args.config ?? DEFAULT_CONFIG_FILE);

  const found = findSerialLine(path.join(config.CA_DIR, INDEX), serial);
  if (!found) throw new UsageError(`serial ${serial} is not in the CA database ${config.CA_DIR}`);
  if (found.status === "R") throw new UsageError(`serial ${serial} is already revoked`);

  const dir = config.REVOKE_DIR;
  ensureRevokeDir(dir);
  const queued = (await queuedSerials(dir)).get(serial);
  if (queued) throw new UsageError(`serial ${serial} is already queued for revocation (${path.join(dir, queued)})`);
  const name = writeQueueEntry(dir, serial, reason);
  process.stdout.write(`${PROGRAM}: queued serial ${serial} (${reason}) as ${path.join(dir, name)}\n`);
  if (args["no-signal"]) {
    process.stdout.write(`${PROGRAM}: not signalling the server (--no-signal); it is processed at the next SIGUSR1 or start\n`);
    return 0;
  }
  const s = signalServer(config.PIDFILE);
  if (!s.sent) {
    process.stdout.write(`${PROGRAM}: etoken-ca-server is not running (${s.why}); the revocation will be recorded at its next start\n`);
  } else if (serverState(config.STATUS_FILE) === "READY") {
    process.stdout.write(`${PROGRAM}: asked etoken-ca-server (pid ${s.pid}) to record the revocation and publish a new CRL\n`);
  } else {
    process.stdout.write(
      `${PROGRAM}: asked etoken-ca-server (pid ${s.pid}) to record the revocation; no CRL can be signed without the PIN: it goes into the next CRL, made when the PIN is typed on the console\n`,
    );
  }
  return 0;
}

runCli(PROGRAM, main);
