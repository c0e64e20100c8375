// When the kernel makes a new CRL: early enough that it is in place CRL_REISSUE_BEFORE before the
// current CRL's nextUpdate, although the schedule is only looked at every so often; and, while
// READY, at least every AUDIT_CHECKPOINT_INTERVAL, since each CRL checkpoints the audit trail.

/** How often the kernel looks at the CRL schedule. */
export function crlCheckIntervalMs(reissueBeforeMs: number): number {
  return Math.min(60_000, Math.max(1_000, reissueBeforeMs / 10));
}

/**
 * The reissue point of a CRL: CRL_REISSUE_BEFORE before its nextUpdate, less two check
 * intervals (the check that sees the point may come one interval late, and making the CRL
 * gets the other). From this point on, without a PIN, the operator is warned.
 */
export function crlReissueAt(nextUpdateMs: number, reissueBeforeMs: number): number {
  return nextUpdateMs - reissueBeforeMs - 2 * crlCheckIntervalMs(reissueBeforeMs);
}

/** The operator is warned at most this often while no CRL can be made. */
export const CRL_WARNING_INTERVAL_MS = 3_600_000;

export interface CrlScheduleInput {
  /** the kernel is READY (the token is logged in): it can make a CRL */
  ready: boolean;
  now: number;
  /** the current CRL's nextUpdate; undefined when there is none yet */
  nextUpdate: number | undefined;
  /** the current CRL's thisUpdate */
  thisUpdate: number | undefined;
  /** AUDIT_CHECKPOINT_INTERVAL: a CRL at least this often while READY (it checkpoints the audit trail) */
  checkpointIntervalMs: number;
  /** revocations since the current CRL */
  dirty: boolean;
  reissueBeforeMs: number;
  /** when crl-expiring was last given (0: never) */
  lastWarning: number;
}

/** The audit trail's last checkpoint (the current CRL) is AUDIT_CHECKPOINT_INTERVAL old. */
export function crlCheckpointDue(now: number, thisUpdate: number | undefined, intervalMs: number): boolean {
  return thisUpdate !== undefined && now - thisUpdate >= intervalMs;
}

/** What the periodic check does: make a CRL, warn that none can be made, or nothing. */
export function crlAction(s: CrlScheduleInput): "make" | "warn" | undefined {
  const due = s.nextUpdate === undefined || s.now >= crlReissueAt(s.nextUpdate, s.reissueBeforeMs);
  if (s.ready) return due || s.dirty || crlCheckpointDue(s.now, s.thisUpdate, s.checkpointIntervalMs) ? "make" : undefined;
  if (s.nextUpdate !== undefined && due && s.now - s.lastWarning > CRL_WARNING_INTERVAL_MS) return "warn";
  return undefined;
}
