// PKCS#11 figures on SoftHSM2: synchronous C_Sign rate (RSA-2048, CKM_SHA256_RSA_PKCS) through
// the signer's Token, and the cost of one monitor-style poll round
// (C_Finalize + C_Initialize + C_GetSlotList + C_GetTokenInfo). Prints figures only.
// Run: node dist/bench/token.js
import pkcs11js from "pkcs11js";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Token } from "../services/signer/token.js";
import { createSoftToken } from "../test/fixtures/softhsm.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bench-token-"));
try {
  const st = createSoftToken({ dir: path.join(base, "t") });
  const KEY = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
  const tok = Token.open(st.modulePath, { env: st.env });
  tok.select(KEY);
  tok.login(Buffer.from(st.userPin), st.serial);
  tok.findKey(KEY);
  const data = randomBytes(1000); // about a TBSCertificate
  for (let i = 0; i < 50; i++) tok.sign(data); // warm-up
  const N = Number(process.env.BENCH_SIGNS ?? 2000);
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) tok.sign(data);
  let s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`C_SignInit+C_Sign (RSA-2048, SHA256-RSA-PKCS, SoftHSM): ${(N / s).toFixed(0)} signatures/s, ${((s / N) * 1e3).toFixed(3)} ms each (${N} signatures)`);
  tok.close();

  // A separate module instance, as the monitor has.
  const p = new pkcs11js.PKCS11();
  p.load(st.modulePath);
  p.C_Initialize();
  const R = Number(process.env.BENCH_ROUNDS ?? 500);
  t0 = process.hrtime.bigint();
  let found = 0;
  for (let i = 0; i < R; i++) {
    p.C_Finalize();
    p.C_Initialize();
    for (const slot of p.C_GetSlotList(true)) if (p.C_GetTokenInfo(slot).serialNumber.trim() === st.serial) found++;
  }
  s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`C_Finalize+C_Initialize+C_GetSlotList+C_GetTokenInfo (SoftHSM, 1 token): ${((s / R) * 1e3).toFixed(3)} ms per round (${R} rounds, token seen ${found}x)`);
  const slot = p.C_GetSlotList(true)[0]!;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < R; i++) p.C_GetTokenInfo(slot);
  s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`C_GetTokenInfo alone on an initialised module: ${((s / R) * 1e3).toFixed(3)} ms`);
  p.C_Finalize();
  p.close();
} finally {
  fs.rmSync(base, { recursive: true, force: true });
}
