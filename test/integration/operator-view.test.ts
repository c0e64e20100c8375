// What the operator sees when the CA cannot work: a signer that cannot start says why on the
// console and in `etoken-ca status`, and no PIN prompt is shown while there is no signer to use
// the PIN; a KEY that names another token says which it looked for and which it found; a login
// that fails because of the configuration says that typing the PIN again will not help.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, countPrompts, createInstallation, readStatus, runCommand, startServer, waitFor, waitForLine, waitForState, typePin, type Installation } from "../fixtures/server.js";
import { simOf } from "../fixtures/etoken-sim.js";

const installations: Installation[] = [];
t.teardown(() => {
  for (const i of installations) i.cleanup();
});
function install(prefix: string, extraConfig: Record<string, string> = {}, pkcs11?: "etoken-sim"): Installation {
  const inst = createInstallation({ prefix, extraConfig, ...(pkcs11 ? { token: { pkcs11 } } : {}) });
  installations.push(inst);
  return inst;
}

t.test("a corrupt index.txt: the signer's reason on the console and in status, no PIN prompt", async (t) => {
  const inst = install("etca-view-db");
  const first = startServer(inst);
  await waitForState(inst, "NEED_PIN", 60_000);
  await first.stop();
  const index = path.join(inst.config.CA_DIR, "index.txt");
  const line = "V\t301231235959Z\t\t0A\tunknown\t/CN=someone\n";
  fs.writeFileSync(index, line + line);
  const promptsBefore = countPrompts(inst);
  const consoleBefore = inst.consoleText().length;
  const server = startServer(inst);
  t.teardown(() => server.stop());
  const reason = await waitForLine("the signer's reason on the console", inst.consoleText, /duplicate serial/, 60_000, consoleBefore);
  t.match(reason, new RegExp(`^signer: ${index.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:2: .*duplicate serial 0A.*\\(exited with status 78\\); restarting it$`));
  // the signer keeps failing: by its third start the prompt would long have been shown
  await waitFor("three signer starts", () => ((readStatus(inst)?.services.find((s) => s.name === "signer")?.restarts ?? 0) >= 3 ? true : undefined), 60_000);
  t.equal(countPrompts(inst), promptsBefore, "no PIN prompt while the signer cannot start");
  t.equal(inst.consoleText().slice(consoleBefore).split("duplicate serial").length - 1, 1, "the same reason is said once, not at every restart");
  const r = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.match(r.stdout, /^signer\s.*\s\/\S*\/index\.txt:2: [^\n]*duplicate serial 0A[^\n]*\(exited with status 78\)$/m, "status shows the signer's own reason as its last error");
  t.notMatch(r.stdout, /killed: channel closed/, "not the kernel's view of it");
});

t.test("KEY names a token that is not there: which token it looked for, which it found", async (t) => {
  const inst = install("etca-view-label", { KEY: "pkcs11:token=no-such-token" });
  const server = startServer(inst);
  t.teardown(() => server.stop());
  const complaint = await waitForLine("the token complaint", inst.consoleText, /CA token not found/, 60_000);
  t.equal(complaint, `CA token not found: no token matches KEY (token label "no-such-token"); found: label "${inst.token.label}" serial ${inst.token.serial} (slot index 0); check KEY in ${inst.configPath}`);
  t.notMatch(inst.consoleText(), /insert the CA token/, "not told to insert a token that is there");
  t.equal(countPrompts(inst), 0);
});

t.test("KEY names no key on the token: LOGIN FAILED says retyping the PIN will not help", async (t) => {
  const inst = install("etca-view-key", { KEY: "0:ee" });
  const server = startServer(inst);
  t.teardown(() => server.stop());
  await waitForState(inst, "NEED_PIN", 60_000);
  await typePin(inst, inst.token.userPin, 1);
  const fault = await waitForLine("the configuration fault", inst.consoleText, /configuration fault/, 30_000);
  t.match(inst.consoleText(), /LOGIN FAILED: no private key matching KEY \(slot index 0, key id ee\)/, "said before the fault's line");
  t.match(fault, `this is a configuration fault: typing the PIN again will not help. Fix KEY in ${inst.configPath} `);
  // the status file is rewritten every 5 s: wait for a write after the message, then count
  const after = Date.now();
  await waitFor("a status write", () => ((readStatus(inst)?.updatedAt ?? 0) > after ? true : undefined), 30_000);
  t.equal(countPrompts(inst), 1, "the PIN is not asked for again");
  t.equal(readStatus(inst)?.state, "NEED_PIN");
});

t.test("no token in the reader at start: told once to insert it; inserted, the PIN prompt", async (t) => {
  const inst = install("etca-view-insert", { TOKEN_POLL_INTERVAL: "300ms" }, "etoken-sim");
  const sim = simOf(inst.token);
  sim.remove();
  const server = startServer(inst);
  t.teardown(() => server.stop());
  await waitFor("the console asking for the token", () => inst.consoleText().includes("insert the CA token") || undefined, 60_000);
  t.equal(countPrompts(inst), 0, "no PIN prompt without a token");
  sim.insert();
  // the prompt comes only once the signer has answered: by then everything that could ask for the token again has run
  await waitFor("the PIN prompt", () => countPrompts(inst) >= 1 || undefined, 60_000);
  await typePin(inst, inst.token.userPin, 1);
  await waitForState(inst, "READY", 60_000);
  t.equal(inst.consoleText().split("insert the CA token").length - 1, 1, "asked once (not again when the services came up or the signer answered), whichever came first: the monitor's report or the services");
});
