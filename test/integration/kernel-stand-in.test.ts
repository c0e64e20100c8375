// The kernel with stand-in services (test/fixtures/stand-in-kernel.ts), where the order and
// content of what services say is fixed.
//
// No token at start: the monitor's first report ("no token") may come before all services are up
// or after. Either way nothing was removed: the kernel is in NEED_PIN, and the console says
// "insert the CA token" once (it is the PIN prompt's to say, services/kernel/pin.ts; the
// services coming up and the signer's first answer each look at the prompt again). The stand-ins
// come up in the order the test says (after-go), without timing. Before the fixes the console
// said it twice (the report first, the signer last) and the state was SUSPENDED when the report
// came after the services were up (NEED_PIN took it for a removal).
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { contractProblem } from "../../proto/contract.js";
import type { Message } from "../../proto/wire.js";
import { waitFor, waitForLine } from "../fixtures/server.js";
import { standInKernel } from "../fixtures/stand-in-kernel.js";
import { ISSUED_SERIAL, OVERCLAIMED_BATCH } from "../fixtures/stand-in-values.js";

for (const reportFirst of [true, false]) {
  const order = reportFirst ? "before the services are all up (the signer last)" : "after the services are all up (the monitor last)";
  t.test(`no token at start, reported ${order}: NEED_PIN, and the console asks for the token once`, async (t) => {
    const { kernel, supervisor, lines, shared, consoleText } = standInKernel(
      t,
      reportFirst ? { monitor: "token-absent", signer: "late-signer+after-go" } : { monitor: "token-absent+after-go", signer: "late-signer" },
    );
    const go = (name: string): void => fs.writeFileSync(path.join(shared, `go-${name}`), "");
    if (reportFirst) {
      await waitFor("the monitor's report handled", () => kernel.token.epoch === 1 || undefined, 20_000);
      t.equal(kernel.state, "STARTING", "reported while the services come up");
      go("signer");
    } else {
      await waitFor("the other services up", () => (["spool", "signer", "notifier"] as const).every((n) => supervisor.isUp(n)) || undefined, 20_000);
      t.equal(kernel.state, "STARTING", "the monitor is the last one up");
      go("monitor");
      await waitFor("the monitor's report handled", () => kernel.token.epoch === 1 || undefined, 20_000);
    }
    await waitFor("the signer's first answer", () => kernel.signerReady || undefined, 20_000);
    await waitFor("the console asking for the token", () => consoleText().includes("insert the CA token") || undefined, 20_000);
    // the console writes through a pseudo-terminal: let what was said reach it
    await new Promise((r) => setTimeout(r, 300));
    t.equal(kernel.state, "NEED_PIN", "nothing was removed: waiting for the token and its PIN");
    t.ok(lines.some((l) => l.includes('"msg":"token event"')), "the monitor's report was handled");
    t.equal(consoleText().split("insert the CA token").length - 1, 1, `asked once:\n${consoleText()}`);
  });
}

// The services are all up (NEED_PIN) before the monitor's first report: the state line must not
// claim there is no token, since nobody has looked yet. Before the fix it said "no token" (the
// demo's second start showed `state NEED_PIN | no token` and then a prompt naming the token).
t.test("the state line before the monitor's first report says the token is not checked yet, not that there is none", async (t) => {
  const { kernel, shared, consoleText } = standInKernel(t, { monitor: "token-absent+report-after-go", signer: "late-signer" });
  const before = await waitForLine("the NEED_PIN state line", consoleText, /state NEED_PIN \|/, 20_000);
  t.equal(kernel.token.epoch, 0, "the monitor has not reported yet");
  t.match(before, /^\[[^\]]+\] state NEED_PIN \| token not checked yet \| issued 0 \| no CRL yet$/, "says the token is not checked yet");
  t.notMatch(before, /no token/, "does not claim there is no token");
  fs.writeFileSync(path.join(shared, "go-report"), "");
  await waitFor("the monitor's report handled", () => kernel.token.epoch === 1 || undefined, 20_000);
  const shownBefore = consoleText().length;
  kernel.showState();
  const after = await waitForLine("the state line after the report", consoleText, /state NEED_PIN \|/, 20_000, shownBefore);
  t.match(after, /state NEED_PIN \| no token \| issued 0/, "once the monitor said so, there is no token");
});

// A notification may carry text from elsewhere (a signer's login message, an error): the kernel
// cuts it to the contract's bounds (proto/contract.ts), and does not send one that still breaks
// it (a kernel bug), since the notifier's channel would close on it. Before the fix the kernel
// sent both as they were.
t.test("notifications fit the contract: long texts are cut, a malformed one is not sent", async (t) => {
  const { kernel, supervisor, lines, shared } = standInKernel(t, { notifier: "recorder" });
  await waitFor("the notifier up", () => supervisor.isUp("notifier") || undefined, 20_000);
  kernel.notify("login-failed", `login failed: ${"x".repeat(5000)}\0`, { code: "token.pin_incorrect", serial: "y".repeat(10_000) });
  kernel.notify("Bad Event", "a kernel bug", {});
  kernel.notify("ready", "the last one", {});
  const file = path.join(shared, "notify.jsonl");
  const got = await waitFor("the last notification", () => {
    const all = fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Message<"notify">) : [];
    return all.some((m) => m.event === "ready") ? all : undefined;
  }, 20_000);
  t.same(got.map((m) => m.event), ["login-failed", "ready"], "the malformed one was not sent");
  const long = got[0]!;
  t.equal(contractProblem("notify", long), undefined, "what was sent meets the contract");
  t.equal(long.message.length, 1000, "the message cut to its bound");
  t.match(long.message, /^login failed: x+…$/, "cut visibly, NUL gone");
  t.equal(long.details["serial"]!.length, 4096, "a detail cut to its bound");
  t.equal(long.details["code"], "token.pin_incorrect", "short texts untouched");
  t.ok(lines.some((l) => l.includes("notification not sent: it breaks the contract") && l.includes("Bad Event")), "the kernel logs what it did not send");
  t.equal(supervisor.all().find((r) => r.name === "notifier")!.restarts, 0, "the notifier never restarted");
});

/** The JSON lines a stand-in appended to DIR/<file> so far. */
function recorded<T>(dir: string, file: string): T[] {
  const p = path.join(dir, file);
  return fs.existsSync(p) ? fs.readFileSync(p, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as T) : [];
}

// The per-certificate path's debug lines (the sign queue's clocks, the presence fence) must cost
// nothing with debug off: not even the call that builds their fields (Logger.enabled). Before
// the fix every certificate called debug() several times at level info.
t.test("a certificate issued with debug off: no debug call on its path", async (t) => {
  const debugCalls: string[] = [];
  const { kernel, shared, consoleText, typeOnConsole } = standInKernel(t, { monitor: "token-present", signer: "signer", spool: "one-request" }, ({ kernel }) => {
    const real = kernel.log.debug;
    kernel.log.debug = (m, f) => {
      debugCalls.push(m);
      real(m, f);
    };
  });
  t.equal(kernel.log.enabled("debug"), false, "debug is off (the default level)");
  await waitFor("the PIN prompt", () => consoleText().includes("PIN for CA token") || undefined, 20_000);
  typeOnConsole("1234\r");
  await waitFor("READY", () => kernel.state === "READY" || undefined, 20_000);
  fs.writeFileSync(path.join(shared, "go-request"), "");
  const [answer] = await waitFor("the kernel's answer to the spool", () => {
    const a = recorded<{ type: string }>(shared, "spool.jsonl");
    return a.length > 0 ? a : undefined;
  }, 20_000);
  t.equal(answer!.type, "issued", "the certificate went through the queue and the fence");
  t.same(debugCalls, [], "no debug call");
});

// A signer whose Issued breaks the protocol is killed (a security event), and the certificate of
// that answer is not handed out but revoked like any other undeliverable one (docs/design.md,
// section 5): not kept in flight, so the next signer revokes it when it settles.
// - It says it recorded more ConfirmDelivery batches than the kernel sent: it lies about its
//   delivery bookkeeping. Before the fix the certificate went on through the fence to its client.
// - It names another request than the one it answers. Before the fix the request failed but the
//   certificate was not revoked explicitly (only the next signer's settling revoked it).
const BROKEN_ISSUED = [
  { mode: "overclaim", what: "claiming confirmed_through above the batches sent", event: `confirmation batch ${OVERCLAIMED_BATCH}` },
  { mode: "wrong-id", what: "naming another request", event: "issued answer does not match the request" },
] as const;
for (const broken of BROKEN_ISSUED) {
  t.test(`an Issued ${broken.what}: the signer is killed, that certificate is withheld and revoked`, async (t) => {
    const { kernel, lines, shared, consoleText, typeOnConsole } = standInKernel(t, { monitor: "token-present", signer: `signer+${broken.mode}`, spool: "one-request" });
    await waitFor("the PIN prompt", () => consoleText().includes("PIN for CA token") || undefined, 20_000);
    typeOnConsole("1234\r");
    await waitFor("READY", () => kernel.state === "READY" || undefined, 20_000);
    fs.writeFileSync(path.join(shared, "go-request"), "");
    type Answer = { type: string; message: { code?: string; message?: string; serial?: string } };
    const [answer] = await waitFor("the kernel's answer to the spool", () => {
      const a = recorded<Answer>(shared, "spool.jsonl");
      return a.length > 0 ? a : undefined;
    }, 20_000);
    t.equal(answer!.type, "failure", `the request fails (got ${JSON.stringify(answer)})`);
    t.match(answer!.message.message ?? "", /signer gave an invalid answer; nothing was handed out/, "with a clear message");
    t.ok(lines.some((l) => l.includes("security event") && l.includes(broken.event)), "a security event names what was wrong");
    t.ok(lines.some((l) => l.includes("certificate not delivered to its client: revoking") && l.includes(ISSUED_SERIAL)), "its certificate is revoked as undeliverable");
    const settles = await waitFor("the restarted signer settling", () => {
      const s = recorded<string[]>(shared, "settle.jsonl");
      return s.length >= 2 ? s : undefined;
    }, 30_000);
    t.notOk(settles[settles.length - 1]!.includes(ISSUED_SERIAL), "the next signer is not told to keep it valid: it revokes it when it settles");
  });
}

t.test("a service's warning (ServiceWarning) is shown on the console once, as one line without control characters", async (t) => {
  const { consoleText, lines } = standInKernel(t, { spool: "warn-twice" });
  const line = await waitForLine("the console's WARNING line", consoleText, /WARNING:/, 20_000);
  t.equal(line, "WARNING: spool: stand-in warning [2J; do this", "the spool's words, control characters made spaces");
  await waitFor("both warnings logged", () => lines.filter((l) => l.includes("service warning")).length >= 2 || undefined, 20_000);
  t.equal(consoleText().split("WARNING:").length - 1, 1, "shown once, though said twice");
});
