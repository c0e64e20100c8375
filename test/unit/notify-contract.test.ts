// Notify's grammar is the contract's (proto/contract.ts; the notifier's channel checks it on
// receipt): event names, detail keys, sizes and NUL bytes. Every notification the kernel sends
// meets it; each rule refuses what breaks it.
import t from "tap";
import { contractProblem, MAX_NOTIFY_DETAIL_VALUE, MAX_NOTIFY_DETAILS, MAX_NOTIFY_MESSAGE } from "../../proto/contract.js";
import type { Message } from "../../proto/wire.js";

const notify = (event: string, message: string, details: Record<string, string> = {}): string | undefined =>
  contractProblem("notify", { event, message, details } as Message<"notify">);

t.test("what the kernel sends passes", async (t) => {
  t.equal(notify("crl-updated", "CRL #3 with 2 entries", { path: "/var/lib/etoken-ca/crl/3.pem", crl_urls: "http://x/crl", number: "3", next_update: "2026-12-04T00:00:00.000Z" }), undefined);
  t.equal(notify("service-restarted", "service spool was restarted", { service: "spool" }), undefined);
  t.equal(notify("ready", "x".repeat(MAX_NOTIFY_MESSAGE), { serial: "y".repeat(MAX_NOTIFY_DETAIL_VALUE) }), undefined, "at the bounds");
  t.equal(notify("crl-expiring", "line one\nSubject: injected", { hours: "12\r\nBcc: e@x" }), undefined, "control characters are the notifier's to replace, not a violation");
});

t.test("each rule refuses what breaks it", async (t) => {
  const cases: [string, string | undefined][] = [
    ["event name", notify("../../etc/passwd", "x")],
    ["upper-case event", notify("Ready", "x")],
    ["long message", notify("ready", "x".repeat(MAX_NOTIFY_MESSAGE + 1))],
    ["NUL in message", notify("ready", "nul\0byte")],
    ["bad key", notify("ready", "x", { LD_PRELOAD: "/tmp/x.so" })],
    ["reserved key", notify("ready", "x", { message: "override" })],
    ["long detail", notify("ready", "x", { serial: "y".repeat(MAX_NOTIFY_DETAIL_VALUE + 1) })],
    ["NUL in detail", notify("ready", "x", { serial: "a\0b" })],
    ["too many details", notify("ready", "x", Object.fromEntries(Array.from({ length: MAX_NOTIFY_DETAILS + 1 }, (_, i) => [`k${i}`, "v"])))],
  ];
  for (const [what, problem] of cases) t.match(problem ?? "", /^notify failed validation: /, what);
  t.match(cases[0]![1], /event name "..\/..\/etc\/passwd" does not match/);
  t.match(cases[4]![1], /detail key "LD_PRELOAD" does not match .* or is reserved/);
});
