// The status file: what `etoken-ca status` shows. JSON, no secrets, replaced atomically.
import * as fs from "node:fs";
import { writeFileAtomic } from "./durable-file.js";

export interface ServiceStatus {
  name: string;
  user: string;
  uid: number;
  pid: number | null;
  up: boolean;
  startedAt: number | null;
  restarts: number;
  lastError: string | null;
}

export interface StatusSnapshot {
  version: 1;
  kernelPid: number;
  state: string;
  stateSince: number;
  updatedAt: number;
  token: { present: boolean; serial: string; label: string; pinFlags: string[]; epoch: number; usbAvailable: boolean };
  trustedTokenSerial: string | null;
  counters: { issued: number; failed: number; rejected: number; fenceRevoked: number; undelivered: number };
  queueDepth: number;
  /** the token's measured signature time (ms, C_Sign as the signer timed it) over recent signatures; null before the first */
  signMs?: { p50: number; max: number; count: number } | null;
  crl: { number: number; thisUpdate: number; nextUpdate: number; entries: number; path: string } | null;
  lastHookFailure: string | null;
  /** log lines dropped because stdout/stderr could not be written (their reader went away) */
  logWritesDropped?: number;
  /** revocations recorded in the CA database that no published CRL carries yet */
  revokedSinceCrl?: number;
  services: ServiceStatus[];
}

/**
 * Readable by everyone (0644 whatever the umask): it holds no secret, and whoever may watch the
 * CA (monitoring, an operator without root) runs `etoken-ca status`.
 */
export const STATUS_FILE_MODE = 0o644;

/**
 * Counter changes reach the status file at most this often (the kernel's Throttle); state
 * changes, the token, services coming and going and the stop are written at once.
 */
export const STATUS_COUNTER_INTERVAL_MS = 1000;

/** Whole or not at all for its readers; not fsynced: the kernel rewrites it at every start. */
export function writeStatus(file: string, snapshot: StatusSnapshot): void {
  writeFileAtomic(file, JSON.stringify(snapshot, null, 1) + "\n", { mode: STATUS_FILE_MODE, durable: false });
}

/** Until the monitor's first report (token epoch 0) nobody has looked for the token: not "absent". */
export function tokenPresence(token: Pick<StatusSnapshot["token"], "present" | "epoch">): "present" | "absent" | "not checked yet" {
  return token.present ? "present" : token.epoch === 0 ? "not checked yet" : "absent";
}

/** Whether the kernel that wrote a status file still runs (its pid names etoken-ca). */
export function kernelAlive(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("etoken-ca");
  } catch {
    return false;
  }
}
