// test/e2e/myproxy-etoken.test.ts once more with the CA key behind the eToken-like test module
// (native/etoken-sim): a removal as a reader reports it, sessions that die with the token, slot
// events, a PIN counter. Issue 18: these suites run on SoftHSM2 and on the module in CI.
process.env.ETCA_TEST_PKCS11 = "etoken-sim";
await import("../e2e/myproxy-etoken.test.js");
