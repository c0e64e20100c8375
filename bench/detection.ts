// Token detection latency of the monitor's PKCS#11 source on SoftHSM (prints numbers only; no
// pass/fail). Run as root after `npm run build`: node dist/bench/detection.js [rounds]
// - fence fast path: C_GetTokenInfo on the known slot (what a presenceCheck costs)
// - full rescan: C_Finalize + C_Initialize + C_GetSlotList + C_GetTokenInfo (every poll)
// - removal seen by the fence: first presenceCheck after the token directory went away
// - removal seen by polling: removal -> absent report, TOKEN_POLL_INTERVAL=100ms
// (the fence round trip through a real monitor process is the runner's: npm run bench -- --only detect)
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { KeyRef } from "../services/common/config-schema.js";
import { createLogger, setLogSink } from "../services/common/log.js";
import { loadModule, Pkcs11Source } from "../services/monitor/pkcs11-source.js";
import { createSoftToken, reinsertToken, removeToken } from "../test/fixtures/softhsm.js";

const rounds = Number(process.argv[2] ?? 2000);
setLogSink({ write: () => true });
const log = createLogger("bench");
const KEY0: KeyRef = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };

function stats(name: string, samplesNs: number[]): void {
  const s = [...samplesNs].sort((a, b) => a - b);
  const q = (p: number): string => (s[Math.min(s.length - 1, Math.floor(p * s.length))]! / 1e6).toFixed(3);
  console.log(`${name.padEnd(44)} n=${String(s.length).padStart(5)}  p50=${q(0.5)} ms  p99=${q(0.99)} ms  max=${q(1)} ms`);
}
function time(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0);
}

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bench-detect-"));
try {
  const token = createSoftToken({ dir: path.join(base, "hsm") });
  process.env.SOFTHSM2_CONF = token.confPath;
  const module = loadModule(token.modulePath);
  const src = new Pkcs11Source(module, KEY0, 3_600_000, log);
  src.rescan();
  if (!src.current().present && !src.fastCheck().present) throw new Error("token not seen");
  src.start(() => {});
  src.stop(); // no timer: the bench drives it
  src.rescan();

  const fast: number[] = [];
  for (let i = 0; i < rounds; i++) fast.push(time(() => src.fastCheck()));
  stats("fence fast path (C_GetTokenInfo)", fast);

  const full: number[] = [];
  for (let i = 0; i < Math.min(rounds, 1000); i++) full.push(time(() => src.rescan()));
  stats("full rescan (Finalize+Initialize+list+info)", full);

  const fenceSeen: number[] = [];
  let seenAbsent = 0;
  for (let i = 0; i < 50; i++) {
    src.rescan();
    removeToken(token);
    let present = true;
    fenceSeen.push(time(() => (present = src.fastCheck().present)));
    if (!present) seenAbsent++;
    reinsertToken(token);
  }
  stats("removal seen by the next fence check", fenceSeen);
  console.log(`removal detected by the first fence check: ${seenAbsent}/50`);

  // polling: the real timer, removal at a random phase of the interval
  const polled: number[] = [];
  for (let i = 0; i < 20; i++) {
    const s = new Pkcs11Source(module, KEY0, 100, log);
    let removedAt = 0n;
    const done = new Promise<void>((resolve) => {
      s.start((st) => {
        if (removedAt !== 0n && !st.present) {
          polled.push(Number(process.hrtime.bigint() - removedAt));
          resolve();
        }
      });
    });
    await new Promise((r) => setTimeout(r, Math.random() * 100));
    removedAt = process.hrtime.bigint();
    removeToken(token);
    await done;
    s.stop();
    reinsertToken(token);
  }
  stats("removal -> absent by polling (100 ms)", polled);
  module.close();

} finally {
  fs.rmSync(base, { recursive: true, force: true });
}
