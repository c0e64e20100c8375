// `etoken-ca status`, `check-config` and `check-db`: read-only views for the operator.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "../common/cli.js";
import { configWarnings, DEFAULT_CONFIG_FILE, loadConfig } from "../common/config.js";
import type { Config } from "../common/config-schema.js";
import { describeError, UsageError } from "../common/errors.js";
import { isRoot, type UserInfo } from "../common/identity.js";
import { configFor, SERVICE_ENV } from "../common/service-table.js";
import { oneLine } from "../common/spool-protocol.js";
import { checkStartConfiguration } from "../common/start-checks.js";
import { kernelAlive, type StatusSnapshot, tokenPresence } from "../common/status-file.js";

const USAGE = `usage: etoken-ca status [--json] [--config FILE]
       etoken-ca check-config [--config FILE]
       etoken-ca check-db [--config FILE]
       etoken-ca check [-w S] [-c S] [thresholds, see etoken-ca(8)] [--status-file FILE | --config FILE]
       etoken-ca trust-files --out DIR [--alias NAME] [--url URL] [--email ADDR] [--status STATUS] [--config FILE]
       etoken-ca audit verify [--from N] [--crl-dir DIR] [--log FILE] [--config FILE]
       etoken-ca audit show --serial SERIAL [--json] [--log FILE] [--config FILE]`;
const KEY_PROBE = fileURLToPath(new URL("../signer/key-probe.js", import.meta.url));
const PROBE_TIMEOUT_MS = 60_000;
const MAX_PROBE_LINES = 20;

export async function runOperatorCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "status":
      return status(rest);
    case "check-config":
      return checkConfig(rest);
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

/** "1 certificate", "2 certificates". */
function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
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

/** LSB status codes: 0 running, 3 not running, 4 unknown (the status file cannot be read). */
const STATUS_RUNNING = 0;
const STATUS_NOT_RUNNING = 3;
const STATUS_UNKNOWN = 4;

async function status(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { json: "flag", config: "value" }, USAGE);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  let snap: StatusSnapshot;
  try {
    snap = JSON.parse(fs.readFileSync(config.STATUS_FILE, "utf8")) as StatusSnapshot;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const [exit, why] =
      code === "ENOENT"
        ? [STATUS_NOT_RUNNING, "no status file: the server is not running"]
        : code === "EACCES" || code === "EPERM"
          ? [STATUS_UNKNOWN, "permission denied: cannot tell whether the server runs (the server writes it readable by all; run as root or check the modes of the file and its directory)"]
          : err instanceof SyntaxError
            ? [STATUS_UNKNOWN, "not a status file the server wrote (unreadable JSON)"]
            : [STATUS_UNKNOWN, `cannot read the status file (${code ?? describeError(err)})`];
    if (args.json) process.stdout.write(JSON.stringify({ running: exit === STATUS_NOT_RUNNING ? false : null, statusFile: config.STATUS_FILE, error: why }, null, 2) + "\n");
    else process.stderr.write(`etoken-ca: ${config.STATUS_FILE}: ${why}\n`);
    return exit;
  }
  const running = kernelAlive(snap.kernelPid) && snap.state !== "STOPPING";
  const queuedRevocations = countQueued(config.REVOKE_DIR);
  if (args.json) {
    process.stdout.write(JSON.stringify({ ...snap, running, queuedRevocations }, null, 2) + "\n");
    return running ? STATUS_RUNNING : STATUS_NOT_RUNNING;
  }
  const now = Date.now();
  const lines: string[] = [];
  lines.push(`state:        ${running ? snap.state : `NOT RUNNING (last state ${snap.state})`} since ${new Date(snap.stateSince).toISOString()} (${duration(now - snap.stateSince)})`);
  lines.push(`kernel pid:   ${snap.kernelPid}`);
  const t = snap.token;
  const presence = tokenPresence(t);
  const tokenNow = presence === "present" ? `present, label "${t.label}", serial ${t.serial}` : presence;
  const tokenLine =
    presence === "not checked yet"
      ? running ? "not checked yet (the monitor has not reported since the server started)" : "unknown: the server is not running (it had not checked the token yet)"
      : running ? `${tokenNow}${t.pinFlags.length ? ` (PIN: ${t.pinFlags.join(", ")})` : ""}` : `unknown: the server is not running (it last saw: ${tokenNow})`;
  lines.push(`token:        ${tokenLine}`);
  const c = snap.counters;
  lines.push(`issued:       ${plural(c.issued, "certificate")}, ${plural(c.failed, "request")} failed, ${c.rejected} rejected by the spool, ${c.fenceRevoked} revoked by the presence fence`);
  lines.push(`queue depth:  ${plural(snap.queueDepth, "request")} waiting for the token or being signed`);
  const sm = snap.signMs;
  lines.push(`sign time:    ${sm ? `p50 ${sm.p50} ms, max ${sm.max} ms (C_Sign, last ${Math.min(sm.count, 1000)} of ${sm.count} signatures)` : "not measured yet (no signature since the server started)"}`);
  const waiting = snap.revokedSinceCrl ? `, ${snap.revokedSinceCrl} recorded and waiting for a CRL${snap.state === "READY" ? "" : " (made when the PIN is typed)"}` : "";
  lines.push(`revocations:  ${queuedRevocations === null ? "unknown (cannot read REVOKE_DIR)" : `${queuedRevocations} queued`}${waiting}`);
  lines.push(
    `CRL:          ${snap.crl ? `#${snap.crl.number}, ${snap.crl.entries} entries, thisUpdate ${new Date(snap.crl.thisUpdate).toISOString()}, nextUpdate ${new Date(snap.crl.nextUpdate).toISOString()}` : "none yet"}`,
  );
  if (snap.lastHookFailure) lines.push(`last hook failure: ${snap.lastHookFailure}`);
  if (snap.logWritesDropped) lines.push(`log:          ${snap.logWritesDropped} line(s) dropped: nothing reads the server's stderr`);
  lines.push("");
  const rows = [["SERVICE", "USER", "PID", "UPTIME", "RESTARTS", "LAST ERROR"]];
  for (const s of snap.services) {
    rows.push([s.name, s.user, s.pid === null ? "-" : String(s.pid), s.up && s.startedAt ? duration(now - s.startedAt) : "down", String(s.restarts), s.lastError ?? ""]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) lines.push(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
  process.stdout.write(lines.join("\n") + "\n");
  return running ? STATUS_RUNNING : STATUS_NOT_RUNNING;
}

async function checkDb(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { config: "value" }, USAGE);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  const { checkDatabase } = await import("../common/ca-dir/check-db.js");
  const report = checkDatabase(config.CA_DIR, config.AUDIT_LOG);
  for (const p of report.problems) process.stdout.write(`${p}\n`);
  const n = report.counts;
  const trail = report.auditLines === undefined ? `; no audit trail at ${config.AUDIT_LOG} yet` : `; the audit trail's ${plural(report.auditLines, "line")} cross-checked`;
  const summary = `${plural(n.lines, "line")} in ${config.CA_DIR}/index.txt (${n.valid} valid, ${n.revoked} revoked, ${n.expired} expired) and ${plural(n.certificateFiles, "certificate file")} in newcerts/${trail}`;
  process.stdout.write(report.problems.length === 0 ? `OK: ${summary}.\n` : `${plural(report.problems.length, "problem")} found; ${summary}.\n`);
  return report.problems.length === 0 ? 0 : 1;
}

/**
 * Everything the server checks at start, without starting anything and without a PIN: one line
 * per problem on stdout, exit 0 when there is none. The token is looked at as SIGNER_USER.
 */
async function checkConfig(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { config: "value" }, USAGE);
  let config: Config;
  try {
    config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  } catch (err) {
    process.stdout.write(`${describeError(err)}\n`);
    return 1;
  }
  const problems: string[] = [];
  const ids = checkStartConfiguration(config, { create: false, onProblem: (err) => problems.push(describeError(err)) });
  // warnings (e.g. MAX_LIFETIME above the IGTF ceiling) are what the server logs at start: shown, not failed
  const notes: string[] = configWarnings(config).map((w) => `warning: ${w}`);
  if (!isRoot()) notes.push("note: the token was not checked: run check-config as root (it looks at the token as SIGNER_USER)");
  else if (ids && !problems.some((p) => p.includes("PKCS11_MODULE=") || p.includes("CA_CERT="))) {
    for (const line of probeToken(config, ids.users.signer)) (line.startsWith("note: ") ? notes : problems).push(line);
  }
  for (const p of problems) process.stdout.write(`${p}\n`);
  for (const n of notes) process.stderr.write(`${n}\n`);
  return problems.length === 0 ? 0 : 1;
}

/** Runs the key probe as the signer's user; its output is untrusted (a vendor module ran there). */
function probeToken(config: Config, signer: UserInfo): string[] {
  const r = spawnSync(process.execPath, [KEY_PROBE], {
    uid: signer.uid,
    gid: signer.gid,
    cwd: "/",
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8", [SERVICE_ENV.config]: JSON.stringify(configFor("signer", config)), ...config.PKCS11_ENV },
    encoding: "utf8",
    timeout: PROBE_TIMEOUT_MS,
    maxBuffer: 64 * 1024,
  });
  const lines = (r.stdout ?? "").split("\n").map((l) => oneLine(l)).filter((l) => l !== "").slice(0, MAX_PROBE_LINES);
  if (r.error || r.status === null) lines.push(`the token check as ${signer.name} did not finish: ${r.error?.message ?? `killed by ${r.signal}`}`);
  else if (r.status !== 0 && !lines.some((l) => !l.startsWith("note: "))) lines.push(`the token check as ${signer.name} failed (exit ${r.status}): ${oneLine(r.stderr ?? "") || "no message"}`);
  return lines;
}
