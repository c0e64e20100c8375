// How long the kernel waits for its services' answers.
export const SIGNER_TIMEOUT_MS = 30_000;
export const FENCE_TIMEOUT_MS = 10_000;
/**
 * The watchdog over a CRL (issue 18's SIGN_TIMEOUT, for the CRL's C_Sign): SIGN_TIMEOUT, plus
 * what its size costs beyond a certificate's signature. A whole CRL (entries, TBS, C_Sign,
 * verification, files) measured 150-165 ms per 100,000 entries on the 2-core CI machine (bench
 * "crl", bench/RESULTS.md); 0.04 ms an entry is 25 times that.
 */
export const CRL_MS_PER_ENTRY = 0.04;
export function crlSignTimeoutMs(signTimeoutMs: number, entries: number): number {
  return signTimeoutMs + Math.ceil(Math.max(0, entries) * CRL_MS_PER_ENTRY);
}
