// When the kernel makes a new CRL: early enough that it is in place CRL_REISSUE_BEFORE before the
// current CRL's nextUpdate, although the schedule is only looked at every so often.

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
