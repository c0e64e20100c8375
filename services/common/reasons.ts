// RFC 5280 CRLReason names as revoke-cert accepts them and openssl ca writes them in index.txt.
//
// Only the reasons `openssl ca` knows: CA_DIR keeps openssl ca's format so that the operator's
// openssl tools (and SIGNER_BACKEND=openssl) keep working on it, and `openssl ca -gencrl`
// refuses an index.txt holding any other name ("invalid reason code"). RFC 5280's
// privilegeWithdrawn (9) and AACompromise (10) are therefore not accepted for new revocations;
// lines that already hold them are still read (INDEX_ONLY_REASONS). removeFromCRL (8) is refused
// too: it only means something in a delta CRL (RFC 5280 §5.3.1) and this CA issues full CRLs
// only, where relying parties disagree on it (OpenSSL treats the entry as not revoked, Globus
// as revoked).
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  CACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** RFC 5280 reasons read from an existing index.txt but never written (see above). */
export const INDEX_ONLY_REASONS = {
  removeFromCRL: 8,
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
  if (s === "removeFromCRL") return "removeFromCRL is only meaningful in delta CRLs (RFC 5280 §5.3.1), which this CA does not issue (in a full CRL relying parties disagree on it); use certificateHold to suspend a certificate";
  return Object.prototype.hasOwnProperty.call(INDEX_ONLY_REASONS, s)
    ? `${s} is an RFC 5280 reason that openssl ca does not know (an index.txt holding it breaks openssl ca -gencrl); use one of ${Object.keys(REVOCATION_REASONS).join(", ")}`
    : `unknown reason ${JSON.stringify(s.slice(0, 40))}; one of ${Object.keys(REVOCATION_REASONS).join(", ")}`;
}
