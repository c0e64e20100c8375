// `etoken-ca audit verify` and `etoken-ca audit show`: read-only views of the audit trail.
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import { parseArgs } from "../common/cli.js";
import { DEFAULT_CONFIG_FILE, loadConfig } from "../common/config.js";
import { UsageError } from "../common/errors.js";
import { readTrail, type AuditRecord } from "../common/audit/trail.js";
import { formatReport, verifyTrail } from "../common/audit/verify.js";

export const AUDIT_USAGE = `usage: etoken-ca audit verify [--from N] [--crl-dir DIR] [--log FILE] [--config FILE]
       etoken-ca audit show --serial SERIAL [--json] [--log FILE] [--config FILE]`;

export async function auditCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === "verify") return verify(rest);
  if (sub === "show") return show(rest);
  if (sub === "--help" || sub === "help") {
    process.stdout.write(`${AUDIT_USAGE}\n`);
    return 0;
  }
  throw new UsageError(sub ? `unknown audit command ${JSON.stringify(sub)}\n${AUDIT_USAGE}` : AUDIT_USAGE);
}

async function verify(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { from: "value", "crl-dir": "value", log: "value", config: "value" }, AUDIT_USAGE);
  const from = args.from === undefined ? 1 : Number(args.from);
  if (!Number.isSafeInteger(from) || from < 1) throw new UsageError(`--from needs a line number (1 or more), not ${JSON.stringify(String(args.from).slice(0, 20))}\n${AUDIT_USAGE}`);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  const logPath = (args.log as string | undefined) ?? config.AUDIT_LOG;
  const caKey = new X509Certificate(fs.readFileSync(config.CA_CERT)).publicKey;
  const crlDirs = [config.CRL_DIR, ...(args["crl-dir"] ? [args["crl-dir"] as string] : [])];
  if (!fs.existsSync(logPath)) throw new UsageError(`${logPath}: no audit trail there (AUDIT_LOG); the signer writes it from its first start`);
  const report = verifyTrail({ logPath, crlDirs, caKey, from });
  process.stdout.write(`${formatReport(logPath, report).join("\n")}\n`);
  return report.problems.length === 0 ? 0 : 1;
}

function describe(r: AuditRecord): string {
  const f = r as Record<string, unknown>;
  switch (r.event) {
    case "issued": {
      const parts = [`${f.subject}`, `lifetime ${f.lifetime ?? "?"} s until ${f.notAfter}`];
      if (Array.isArray(f.emails) && f.emails.length) parts.push(`e-mail ${(f.emails as string[]).join(" ")}`);
      if (f.info) parts.push(`info: ${f.info}`);
      if (f.username) parts.push(`MyProxy username ${JSON.stringify(f.username)} (uid ${f.clientUid}), request ${f.requestId} of ${f.requestedAt}`);
      if (f.keySha256) parts.push(`key SHA-256 ${f.keySha256}`);
      if (f.recovered) parts.push(`recovered: ${f.recovered}`);
      return parts.join(", ");
    }
    case "revoked":
      return `${f.reason}, by ${f.by}${f.revokedAt ? `, revocation date ${f.revokedAt}` : ""}${f.recovered ? `, recovered: ${f.recovered}` : ""}`;
    case "crl":
      return `CRL #${f.number} (${f.entries} entries, nextUpdate ${f.nextUpdate}) is the first to carry the revocation`;
    default:
      return "";
  }
}

async function show(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { serial: "value", json: "flag", log: "value", config: "value" }, AUDIT_USAGE);
  if (!args.serial) throw new UsageError(`--serial is required\n${AUDIT_USAGE}`);
  const serial = String(args.serial).toUpperCase().replace(/^0X/, "").replace(/:/g, "");
  if (!/^[0-9A-F]{1,64}$/.test(serial)) throw new UsageError(`--serial needs a hexadecimal serial number, not ${JSON.stringify(String(args.serial).slice(0, 70))}`);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  const logPath = (args.log as string | undefined) ?? config.AUDIT_LOG;
  const wanted = serial.replace(/^0+(?=.)/, "");
  const out: string[] = [];
  let revokedAt: number | undefined;
  for (const l of readTrail(logPath)) {
    const r = l.record;
    if (typeof r === "string") continue;
    const mine = typeof r.serial === "string" && r.serial.replace(/^0+(?=.)/, "") === wanted;
    const carrying = r.event === "crl" && revokedAt !== undefined;
    if (!mine && !carrying) continue;
    if (r.event === "revoked") revokedAt = r.seq;
    if (carrying) revokedAt = undefined;
    out.push(args.json ? l.text : `line ${r.seq}  ${r.time}  ${r.event.padEnd(7)}  ${describe(r)}`);
  }
  if (out.length === 0) {
    process.stderr.write(`etoken-ca: serial ${serial} is not in the audit trail ${logPath}\n`);
    return 1;
  }
  process.stdout.write(`${out.join("\n")}\n`);
  return 0;
}
