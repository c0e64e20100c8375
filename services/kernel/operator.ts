// `etoken-ca status` and `etoken-ca check-db`: read-only views for the operator.
import * as fs from "node:fs";
import { parseArgs } from "../common/cli.js";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../common/config.js";
import { UsageError } from "../common/errors.js";
import type { StatusSnapshot } from "./status.js";

const USAGE = `usage: etoken-ca status [--json] [--config FILE]
       etoken-ca check-db [--config FILE]
       etoken-ca check [-w S] [-c S] [thresholds, see etoken-ca(8)] [--status-file FILE | --config FILE]
       etoken-ca trust-files --out DIR [--alias NAME] [--url URL] [--email ADDR] [--status STATUS] [--config FILE]`;

export async function runOperatorCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "status":
      return status(rest);
    case "check-db":
      return checkDb(rest);
    case "--help":
    case "help":
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      throw new UsageError(command ? `unknown command ${JSON.stringify(command)}\n${USAGE}` : USAGE);
  }
}

function isAlive(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("etoken-ca");
  } catch {
    return false;
  }
}

function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}

function countQueued(dir: string): number | null {
  try {
    return fs.readdirSync(dir).filter((n) => n.startsWith("rev.") && !n.includes(".tmp")).length;
  } catch {
    return null;
  }
}

async function status(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { json: "flag", config: "value" }, USAGE);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  let snap: StatusSnapshot;
  try {
    snap = JSON.parse(fs.readFileSync(config.STATUS_FILE, "utf8")) as StatusSnapshot;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    process.stderr.write(`etoken-ca: ${config.STATUS_FILE}: ${code === "ENOENT" ? "no status file: the server is not running" : "unreadable status file"}\n`);
    return 3;
  }
  const running = isAlive(snap.kernelPid) && snap.state !== "STOPPING";
  const queuedRevocations = countQueued(config.REVOKE_DIR);
  if (args.json) {
    process.stdout.write(JSON.stringify({ ...snap, running, queuedRevocations }, null, 2) + "\n");
    return running ? 0 : 3;
  }
  const now = Date.now();
  const lines: string[] = [];
  lines.push(`state:        ${running ? snap.state : `NOT RUNNING (last state ${snap.state})`} since ${new Date(snap.stateSince).toISOString()} (${duration(now - snap.stateSince)})`);
  lines.push(`kernel pid:   ${snap.kernelPid}`);
  const t = snap.token;
  lines.push(`token:        ${t.present ? `present, label "${t.label}", serial ${t.serial}` : "absent"}${t.pinFlags.length ? ` (PIN: ${t.pinFlags.join(", ")})` : ""}`);
  lines.push(`issued:       ${snap.counters.issued} certificates, ${snap.counters.failed} requests failed, ${snap.counters.rejected} rejected by the spool, ${snap.counters.fenceRevoked} revoked by the presence fence`);
  lines.push(`queue depth:  ${snap.queueDepth} request(s) being signed`);
  lines.push(`revocations:  ${queuedRevocations === null ? "unknown (cannot read REVOKE_DIR)" : `${queuedRevocations} queued`}`);
  lines.push(
    `CRL:          ${snap.crl ? `#${snap.crl.number}, ${snap.crl.entries} entries, thisUpdate ${new Date(snap.crl.thisUpdate).toISOString()}, nextUpdate ${new Date(snap.crl.nextUpdate).toISOString()}` : "none yet"}`,
  );
  if (snap.lastHookFailure) lines.push(`last hook failure: ${snap.lastHookFailure}`);
  lines.push("");
  const rows = [["SERVICE", "USER", "PID", "UPTIME", "RESTARTS", "LAST ERROR"]];
  for (const s of snap.services) {
    rows.push([s.name, s.user, s.pid === null ? "-" : String(s.pid), s.up && s.startedAt ? duration(now - s.startedAt) : "down", String(s.restarts), s.lastError ?? ""]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) lines.push(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
  process.stdout.write(lines.join("\n") + "\n");
  return running ? 0 : 3;
}

async function checkDb(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { config: "value" }, USAGE);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  const { checkDatabase } = await import("../signer/check-db.js");
  const report = checkDatabase(config.CA_DIR);
  for (const p of report.problems) process.stdout.write(`${p}\n`);
  process.stdout.write(`${report.problems.length === 0 ? "OK" : `${report.problems.length} problem(s)`}: ${JSON.stringify(report.counts)}\n`);
  return report.problems.length === 0 ? 0 : 1;
}
