// The benchmark's sections, one row each, in the order they run (figures of earlier sections,
// e.g. (a)'s C_Sign rate, are goals of later ones). A new section is a file exporting
// `section: Section` and one row here.
import type { Section } from "./section.js";

export const SECTIONS: readonly Section[] = [
  (await import("./fsync.js")).section,
  (await import("./sign.js")).section,
  (await import("./latency.js")).section,
  (await import("./floor.js")).section,
  (await import("./throughput.js")).section,
  (await import("./client.js")).section,
  (await import("./index1m.js")).section,
  (await import("./crl.js")).section,
  (await import("./detect.js")).section,
  (await import("./events.js")).section,
  (await import("./h2h.js")).section,
  (await import("./myproxy.js")).section,
  (await import("./cpuprof.js")).section,
  (await import("./slowtoken.js")).section,
];
