// "insert the CA token" is the PIN prompt's to say (services/kernel/pin.ts), once while the token
// is missing: the monitor's first report may come before the services are all up or after, and
// the signer's first answer may come after both; each of them looks at the prompt again. With
// stand-in services the order is fixed: the monitor reports "no token" at once, the signer is
// the last one up and answers after that. Before the fix the console said it twice.
import t from "tap";
import { waitFor } from "../fixtures/server.js";
import { standInKernel } from "../fixtures/stand-in-kernel.js";

t.test("no token at start: the console asks for it once, not again when the signer answers", async (t) => {
  const { kernel, lines, consoleText } = standInKernel(t, { monitor: "token-absent", signer: "late-signer" });
  await waitFor("the signer's first answer", () => kernel.signerReady || undefined, 20_000);
  await waitFor("the console asking for the token", () => consoleText().includes("insert the CA token") || undefined, 20_000);
  // the console writes through a pseudo-terminal: let what was said reach it
  await new Promise((r) => setTimeout(r, 300));
  t.equal(kernel.state, "NEED_PIN");
  t.ok(lines.some((l) => l.includes('"msg":"token event"')), "the monitor's report was handled");
  t.equal(consoleText().split("insert the CA token").length - 1, 1, `asked once:\n${consoleText()}`);
});
