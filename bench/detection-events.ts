// Removal detection by the monitor's PKCS#11 source on the eToken-like test module (a reader's
// module with C_WaitForSlotEvent): removal -> the source reports the token absent, with slot
// events (an hour between polls, so only an event can tell) and by polling alone (no slot-event
// thread) at the same TOKEN_POLL_INTERVAL the `detect` section uses. In-process, no kernel: the
// figure is the monitor's part of a removal. Numbers only, no pass/fail.
// Standalone: node dist/bench/detection-events.js [rounds]; `npm run bench -- --only events` (bench/sections/events.ts).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { KeyRef } from "../services/common/config-schema.js";
import { createLogger, setLogSink } from "../services/common/log.js";
import { loadModule, Pkcs11Source } from "../services/monitor/pkcs11-source.js";
import { SlotEventThread } from "../services/monitor/slot-events.js";
import { simOf } from "../test/fixtures/etoken-sim.js";
import { createSoftToken } from "../test/fixtures/softhsm.js";
import { q, sleep } from "./lib/stats.js";

const KEY0: KeyRef = { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };

export interface DetectionSamples {
  /** removal -> absent reported, ms, one per round */
  events: number[];
  polling: number[];
  pollMs: number;
}


export async function removalDetection(rounds: number, pollMs = 300): Promise<DetectionSamples> {
  setLogSink({ write: () => true });
  const log = createLogger("bench");
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bench-events-"));
  try {
    const token = createSoftToken({ dir: path.join(base, "hsm"), pkcs11: "etoken-sim" });
    for (const [k, v] of Object.entries(token.env)) process.env[k] = v;
    const sim = simOf(token);
    const module = loadModule(token.modulePath);
    const measure = async (eventDriven: boolean): Promise<number[]> => {
      const samples: number[] = [];
      for (let i = 0; i < rounds; i++) {
        let removedAt = 0n;
        let resolve!: (ms: number) => void;
        const seen = new Promise<number>((r) => (resolve = r));
        const events = eventDriven ? new SlotEventThread(token.modulePath) : undefined;
        const s = new Pkcs11Source(module, KEY0, eventDriven ? 3_600_000 : pollMs, log, events);
        s.start((st) => {
          if (removedAt !== 0n && !st.present) resolve(Number(process.hrtime.bigint() - removedAt) / 1e6);
        });
        await sleep(50 + Math.random() * pollMs); // a random phase of the poll (and the wait armed)
        removedAt = process.hrtime.bigint();
        sim.remove();
        samples.push(await Promise.race([seen, sleep(10_000).then(() => NaN)]));
        s.stop();
        await s.stopped();
        sim.insert();
      }
      return samples;
    };
    const events = await measure(true);
    const polling = await measure(false);
    module.close();
    return { events, polling, pollMs };
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await removalDetection(Number(process.argv[2] ?? 20));
  for (const [name, v] of [["slot events", r.events], [`polling (${r.pollMs} ms)`, r.polling]] as const) {
    console.log(`removal -> absent, ${name.padEnd(18)} n=${v.length} p50=${q(v, 0.5).toFixed(1)} ms max=${Math.max(...v).toFixed(1)} ms`);
  }
}
