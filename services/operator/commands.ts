// `etoken-ca trust-files` and `etoken-ca check` (also run as check_etoken_ca).
import * as fs from "node:fs";
import { isHelpRequest, parseArgs } from "../common/cli.js";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../common/config.js";
import { describeError, UsageError } from "../common/errors.js";
import { kernelAlive, type StatusSnapshot } from "../common/status-file.js";
import { crlReissueAt } from "../common/crl-schedule.js";
import { checkLine, exitCodeOf, type Thresholds } from "./check-rules.js";
import { buildTrustFiles, writeTrustFiles } from "./trust-files.js";

export const TRUST_FILES_USAGE = "usage: etoken-ca trust-files --out DIR [--alias NAME] [--url URL] [--email ADDR] [--status STATUS] [--config FILE]";
export const CHECK_USAGE =
  "usage: etoken-ca check [-w SECONDS] [-c SECONDS] [--need-pin-critical S] [--crl-warning S] [--crl-critical S]\n" +
  "                       [--restart-window S] [--hook-window S] [--failed-percent P] [--failed-minimum N]\n" +
  "                       [--status-file FILE | --config FILE]";

export async function trustFilesCommand(argv: string[]): Promise<number> {
  const o = parseArgs(argv, { out: "value", alias: "value", url: "value", email: "value", status: "value", config: "value" }, TRUST_FILES_USAGE);
  if (!o.out) throw new UsageError(`--out DIR is required\n${TRUST_FILES_USAGE}`);
  const config = loadConfig(o.config ?? DEFAULT_CONFIG_FILE);
  const { loadCaCertificate } = await import("../common/x509/certificate.js");
  const ca = loadCaCertificate(fs.readFileSync(config.CA_CERT), config.CA_CERT);
  const t = buildTrustFiles(ca, config.DN_FORMAT, config.CRL_URLS, { alias: o.alias, url: o.url, email: o.email, status: o.status });
  writeTrustFiles(o.out, t);
  process.stdout.write(`${[...t.files.keys(), ...t.links.keys()].map((n) => `${o.out}/${n}`).join("\n")}\n`);
  if (t.unfilled.length) process.stderr.write(`etoken-ca: fill in ${t.unfilled.join(", ")} in ${o.out}/${t.hash}.info (or give ${t.unfilled.filter((f) => f !== "crl_url").map((f) => `--${f}`).join(" ")})\n`);
  return 0;
}

const SECOND = 1000;

/** How long before nextUpdate the kernel's reissue point lies. */
const reissueLead = (reissueBefore: number): number => -crlReissueAt(0, reissueBefore);

function seconds(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]{1,9}$/.test(v)) throw new UsageError(`${name} needs a whole number of seconds, not ${JSON.stringify(v.slice(0, 20))}\n${CHECK_USAGE}`);
  return Number(v) * SECOND;
}

/** Nagios plugin: one line on stdout, exit 0/1/2/3; every failure of the probe itself is UNKNOWN. */
export async function checkCommand(argv: string[]): Promise<number> {
  try {
    return await check(argv);
  } catch (err) {
    if (isHelpRequest(err)) throw err;
    process.stdout.write(`ETOKEN-CA UNKNOWN - ${describeError(err).split("\n")[0]}\n`);
    return exitCodeOf("UNKNOWN");
  }
}

async function check(argv: string[]): Promise<number> {
  const o = parseArgs(argv, {
    warning: { kind: "value", short: "w" }, critical: { kind: "value", short: "c" },
    "need-pin-critical": "value", "crl-warning": "value", "crl-critical": "value",
    "restart-window": "value", "hook-window": "value", "failed-percent": "value", "failed-minimum": "value",
    "status-file": "value", config: "value",
  }, CHECK_USAGE);
  let statusFile = o["status-file"];
  let reissueBefore = 7 * 86400 * SECOND;
  if (statusFile === undefined) {
    const config = loadConfig(o.config ?? DEFAULT_CONFIG_FILE);
    statusFile = config.STATUS_FILE;
    reissueBefore = config.CRL_REISSUE_BEFORE;
  }
  // READY: a new CRL is in place CRL_REISSUE_BEFORE before nextUpdate; without a PIN the kernel
  // warns from the reissue point on (crl-schedule.ts), and so does the probe, as CRITICAL.
  const crlWarn = reissueBefore;
  const crlCrit = reissueLead(reissueBefore);
  const t: Thresholds = {
    staleWarning: seconds("-w", o.warning, 30 * SECOND),
    staleCritical: seconds("-c", o.critical, 60 * SECOND),
    needPinCritical: seconds("--need-pin-critical", o["need-pin-critical"], 3600 * SECOND),
    crlWarning: seconds("--crl-warning", o["crl-warning"], crlWarn),
    crlCritical: seconds("--crl-critical", o["crl-critical"], crlCrit),
    restartWindow: seconds("--restart-window", o["restart-window"], 3600 * SECOND),
    hookWindow: seconds("--hook-window", o["hook-window"], 3600 * SECOND),
    failedPercentWarning: Number(o["failed-percent"] ?? 10),
    failedMinimum: Number(o["failed-minimum"] ?? 5),
  };
  if (!(t.failedPercentWarning >= 0 && t.failedPercentWarning <= 100) || !Number.isInteger(t.failedMinimum) || t.failedMinimum < 0) {
    throw new UsageError(`--failed-percent needs 0..100 and --failed-minimum a whole number\n${CHECK_USAGE}`);
  }
  let snap: StatusSnapshot;
  try {
    snap = JSON.parse(fs.readFileSync(statusFile, "utf8")) as StatusSnapshot;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      process.stdout.write(`ETOKEN-CA CRITICAL - no status file ${statusFile}: server not running\n`);
      return exitCodeOf("CRITICAL");
    }
    process.stdout.write(`ETOKEN-CA UNKNOWN - cannot read ${statusFile}: ${code ?? "not JSON"}\n`);
    return exitCodeOf("UNKNOWN");
  }
  if (snap?.version !== 1 || typeof snap.updatedAt !== "number" || !snap.counters || !Array.isArray(snap.services)) {
    process.stdout.write(`ETOKEN-CA UNKNOWN - ${statusFile} is not an etoken-ca status file of version 1\n`);
    return exitCodeOf("UNKNOWN");
  }
  const { line, code } = checkLine({ snap, now: Date.now(), kernelAlive: kernelAlive(snap.kernelPid) }, t);
  process.stdout.write(`${line}\n`);
  return code;
}
