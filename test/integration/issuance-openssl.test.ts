// The issuance suite (issuance.test.ts, unchanged assertions) with SIGNER_BACKEND=openssl:
// certificates from `openssl ca` through the PKCS#11 engine must pass the same profile tests.
process.env.ETCA_SIGNER_BACKEND = "openssl";
await import("./issuance.test.js");
