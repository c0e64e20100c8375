// The monitoring probe's decision table: each rule looks at the status file's facts and the
// thresholds and may raise a level. The worst level wins; its exit code is the Nagios one.
import { type StatusSnapshot, tokenPresence } from "../common/status-file.js";

export const LEVELS = ["OK", "WARNING", "CRITICAL", "UNKNOWN"] as const;
export type Level = (typeof LEVELS)[number];
/** Nagios plugin exit codes: the index in LEVELS. */
export const exitCodeOf = (l: Level): number => LEVELS.indexOf(l);
const SEVERITY: Record<Level, number> = { OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3 };
export const worse = (a: Level, b: Level): Level => (SEVERITY[b] > SEVERITY[a] ? b : a);

/** All in milliseconds, except the failure ratio (percent) and count. */
export interface Thresholds {
  staleWarning: number;
  staleCritical: number;
  needPinCritical: number;
  crlCritical: number;
  crlWarning: number;
  restartWindow: number;
  hookWindow: number;
  failedPercentWarning: number;
  failedMinimum: number;
}

export interface Facts {
  snap: StatusSnapshot;
  now: number;
  kernelAlive: boolean;
}

interface Rule {
  level: Exclude<Level, "OK" | "UNKNOWN">;
  /** when it fires, the status file describes a server that is gone: the other rules are not asked */
  final?: boolean;
  check(f: Facts, t: Thresholds): string | undefined;
}

const secs = (ms: number): string => `${Math.round(ms / 1000)}s`;
const crlLeft = (f: Facts): number | undefined => (f.snap.crl ? f.snap.crl.nextUpdate - f.now : undefined);
const hookFailedAt = (s: string | null): number => (s ? Date.parse(s.split(" ")[0]!) : NaN);

/**
 * States in which the CA cannot issue until something happens (expected for a while after each
 * start): WARNING, and CRITICAL once they last longer than --need-pin-critical.
 */
const NOT_ISSUING = new Map<string, (lasted: string) => string>([
  ["NEED_PIN", (lasted) => `waiting for the PIN for ${lasted}`],
  ["STARTING", (lasted) => `not up for ${lasted}: still STARTING (not every service has come up)`],
]);

export const RULES: readonly Rule[] = [
  { level: "CRITICAL", final: true, check: (f) => (f.kernelAlive ? undefined : `server not running (pid ${f.snap.kernelPid} gone, last state ${f.snap.state})`) },
  { level: "CRITICAL", check: (f) => (f.snap.state === "STOPPING" ? "server stopping" : undefined) },
  { level: "CRITICAL", check: (f, t) => (f.now - f.snap.updatedAt > t.staleCritical ? `status not updated for ${secs(f.now - f.snap.updatedAt)}` : undefined) },
  { level: "WARNING", check: (f, t) => (f.now - f.snap.updatedAt > t.staleWarning ? `status not updated for ${secs(f.now - f.snap.updatedAt)}` : undefined) },
  { level: "CRITICAL", check: (f) => (f.snap.state === "SUSPENDED" ? `SUSPENDED since ${new Date(f.snap.stateSince).toISOString()} (token ${f.snap.token.present ? "refused or failing" : tokenPresence(f.snap.token)})` : undefined) },
  { level: "CRITICAL", check: (f, t) => { const says = NOT_ISSUING.get(f.snap.state); return says && f.now - f.snap.stateSince > t.needPinCritical ? says(secs(f.now - f.snap.stateSince)) : undefined; } },
  { level: "WARNING", check: (f) => (NOT_ISSUING.has(f.snap.state) ? `${f.snap.state} for ${secs(f.now - f.snap.stateSince)}` : undefined) },
  // Not UNKNOWN: the probe read a fresh status, and UNKNOWN is for a probe that cannot tell (the
  // plugin guidelines); not OK: the CA cannot issue before the token is seen; not CRITICAL: it lasts
  // seconds after each start (a monitor that never reports keeps NEED_PIN or STARTING, CRITICAL in time).
  { level: "WARNING", check: (f) => (tokenPresence(f.snap.token) === "not checked yet" ? "token not checked yet (the monitor has not reported since the server started)" : undefined) },
  { level: "CRITICAL", check: (f) => { const l = crlLeft(f); return l !== undefined && l <= 0 ? `CRL #${f.snap.crl!.number} expired ${secs(-l)} ago` : undefined; } },
  { level: "CRITICAL", check: (f, t) => { const l = crlLeft(f); return l !== undefined && l > 0 && l < t.crlCritical && f.snap.state !== "READY" ? `CRL #${f.snap.crl!.number} expires in ${secs(l)} and no PIN to reissue it` : undefined; } },
  { level: "WARNING", check: (f, t) => { const l = crlLeft(f); return l !== undefined && l > 0 && l < t.crlWarning ? `CRL #${f.snap.crl!.number} expires in ${secs(l)}` : undefined; } },
  { level: "WARNING", check: (f) => (f.snap.crl === null && f.snap.state === "READY" ? "no CRL yet" : undefined) },
  {
    level: "WARNING",
    check: (f, t) => {
      const bad = f.snap.services.filter((s) => !s.up || (s.restarts > 0 && s.startedAt !== null && f.now - s.startedAt < t.restartWindow));
      return bad.length ? `service ${bad.map((s) => (s.up ? `${s.name} restarted (${s.restarts})` : `${s.name} down`)).join(", ")}` : undefined;
    },
  },
  { level: "WARNING", check: (f, t) => (f.now - hookFailedAt(f.snap.lastHookFailure) < t.hookWindow ? `hook failing: ${f.snap.lastHookFailure}` : undefined) },
  {
    level: "WARNING",
    check: (f, t) => {
      const { issued, failed } = f.snap.counters;
      const pct = issued + failed === 0 ? 0 : (100 * failed) / (issued + failed);
      return failed >= t.failedMinimum && pct > t.failedPercentWarning ? `${failed} of ${issued + failed} requests failed (${pct.toFixed(0)}%)` : undefined;
    },
  },
];

export interface Verdict {
  level: Level;
  reasons: string[];
}

export function decide(f: Facts, t: Thresholds): Verdict {
  let level: Level = "OK";
  const reasons: string[] = [];
  for (const r of RULES) {
    const why = r.check(f, t);
    if (why === undefined || reasons.includes(why)) continue;
    level = worse(level, r.level);
    reasons.push(why);
    if (r.final) break;
  }
  return { level, reasons };
}

const round1 = (v: number): number => Math.round(v * 10) / 10;

/** 'label'=value[UOM];[warn];[crit];[min];[max] (Nagios plugin guidelines). */
export function perfdata(f: Facts, t: Thresholds): string {
  const s = (ms: number): number => Math.round(ms / 1000);
  const c = f.snap.counters;
  const items = [
    `'issued'=${c.issued}c;;;0`,
    `'failed'=${c.failed}c;;;0`,
    `'rejected'=${c.rejected}c;;;0`,
    `'fence_revoked'=${c.fenceRevoked}c;;;0`,
    `'queue_depth'=${f.snap.queueDepth};;;0`,
    `'status_age'=${s(f.now - f.snap.updatedAt)}s;${s(t.staleWarning)};${s(t.staleCritical)};0`,
  ];
  if (f.snap.crl) {
    items.push(`'crl_age'=${s(f.now - f.snap.crl.thisUpdate)}s;;;0`);
    items.push(`'crl_next_update'=${s(f.snap.crl.nextUpdate - f.now)}s;${s(t.crlWarning)}:;${s(t.crlCritical)}:`);
  }
  const sign = f.snap.signMs;
  if (sign && sign.count > 0) items.push(`'sign_time'=${round1(sign.p50)}ms;;;0`, `'sign_time_max'=${round1(sign.max)}ms;;;0`);
  return items.join(" ");
}

export function checkLine(f: Facts, t: Thresholds): { line: string; code: number } {
  const v = decide(f, t);
  const text = v.reasons.length ? v.reasons.join("; ") : `${f.snap.state}, token ${tokenPresence(f.snap.token)}, CRL #${f.snap.crl?.number ?? "-"}`;
  return { line: `ETOKEN-CA ${v.level} - ${text.replace(/\|/g, "/").replace(/[\r\n]+/g, " ")} | ${perfdata(f, t)}`, code: exitCodeOf(v.level) };
}
