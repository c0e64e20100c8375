// RFC 5280 CRLReason names as revoke-cert accepts them and openssl ca writes them in index.txt.
//
// Only the reasons `openssl ca` knows: CA_DIR keeps openssl ca's format so that the operator's
// openssl tools (and SIGNER_BACKEND=openssl) keep working on it, and `openssl ca -gencrl`
// refuses an index.txt holding any other name ("invalid reason code"). RFC 5280's
// privilegeWithdrawn (9) and AACompromise (10) are therefore not accepted for new revocations;
// lines that already hold them are still read (INDEX_ONLY_REASONS).
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  CACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** RFC 5280 reasons read from an existing index.txt but never written (see above). */
export const INDEX_ONLY_REASONS = {
  privilegeWithdrawn: 9,
  AACompromise: 10,
} as const;

export function isRevocationReason(s: string): s is RevocationReason {
  return Object.prototype.hasOwnProperty.call(REVOCATION_REASONS, s);
}

/** A reason name as the operator typed it, in any case ("keycompromise"), in its RFC 5280 spelling. */
export function canonicalReason(s: string): string {
  const lower = s.toLowerCase();
  return [...Object.keys(REVOCATION_REASONS), ...Object.keys(INDEX_ONLY_REASONS)].find((r) => r.toLowerCase() === lower) ?? s;
}

/** Why a reason name is refused, for one-line messages. */
export function reasonProblem(s: string): string {
  return Object.prototype.hasOwnProperty.call(INDEX_ONLY_REASONS, s)
    ? `${s} is an RFC 5280 reason that openssl ca does not know (an index.txt holding it breaks openssl ca -gencrl); use one of ${Object.keys(REVOCATION_REASONS).join(", ")}`
    : `unknown reason ${JSON.stringify(s.slice(0, 40))}; one of ${Object.keys(REVOCATION_REASONS).join(", ")}`;
}
