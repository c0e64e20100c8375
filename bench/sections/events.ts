import { removalDetection } from "../detection-events.js";
import { QUICK } from "../lib/options.js";
import { fig } from "../lib/report.js";
import { ms, q } from "../lib/stats.js";
import type { Section } from "./section.js";

export const section: Section = {
  name: "events",
  title: "removal -> absent in the monitor's PKCS#11 source: slot events vs polling (eToken-like test module)",
  async run() {
    const r = await removalDetection(QUICK ? 10 : 40);
    const row = (v: number[]): string => `p50 ${ms(q(v, 0.5), 1)} max ${ms(Math.max(...v), 1)}`;
    fig("events", `removal -> absent with slot events (C_WaitForSlotEvent, ${r.events.length} rounds)`, row(r.events), "max below polling's max", Math.max(...r.events) < Math.max(...r.polling));
    fig("events", `removal -> absent by polling (TOKEN_POLL_INTERVAL=${r.pollMs}ms, ${r.polling.length} rounds)`, row(r.polling), `<= ${r.pollMs} ms (one poll)`, Math.max(...r.polling) <= r.pollMs);
  },
};
