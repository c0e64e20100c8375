// How long the kernel waits for its services' answers.
export const SIGNER_TIMEOUT_MS = 30_000;
export const FENCE_TIMEOUT_MS = 10_000;
export const CRL_TIMEOUT_MS = 300_000;
