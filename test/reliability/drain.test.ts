// A dead service's socket may outlive it (a descendant holds it); the supervisor reads it to its
// end (5 s at most) before it handles the death, so that what the service wrote before dying
// counts. Meanwhile the kernel must write nothing more into that socket: the service is not up,
// its channel drains (services/common/channel.ts), a send fails as on a closed channel, and the
// descendant reads nothing. Before the fix the kernel still saw the service up and sent to it.
import t from "tap";
import * as path from "node:path";
import * as fs from "node:fs";
import * as pty from "node-pty";
import { parseConfig } from "../../services/common/config.js";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { ProtocolError } from "../../services/common/errors.js";
import { SERVICE_NAMES, type ServiceName } from "../../services/common/service-table.js";
import type { UserInfo } from "../../services/common/identity.js";
import { OperatorConsole } from "../../services/kernel/console.js";
import { Kernel } from "../../services/kernel/kernel.js";
import { Supervisor } from "../../services/kernel/supervisor.js";
import { DIST, makeBaseDir, waitFor, writeConfig } from "../fixtures/server.js";
import { ensureTestUsers, TEST_USERS } from "../fixtures/users.js";

const LINGERING = path.join(DIST, "test/reliability/lingering-service.js");

t.test("while a dead notifier's socket drains, the kernel sends nothing into it", async (t) => {
  const u = ensureTestUsers();
  const users: Record<ServiceName, UserInfo> = { spool: u.SPOOL_USER, signer: u.SIGNER_USER, monitor: u.MONITOR_USER, notifier: u.NOTIFIER_USER };
  const dir = makeBaseDir("etca-drain");
  const shared = path.join(dir, "linger");
  fs.mkdirSync(shared, { mode: 0o777 });
  fs.chmodSync(shared, 0o777);
  fs.mkdirSync(path.join(dir, "run"), { mode: 0o755 });
  const configPath = path.join(dir, "conf");
  writeConfig(configPath, {
    DN_FORMAT: "/CN=%s",
    CA_OIDS: "1.3.6.1.4.1.99999.1.1",
    CRL_URLS: "URI:http://ca.example.org/crl.der",
    PKCS11_MODULE: "/dev/null",
    CA_CERT: "/dev/null",
    STATUS_FILE: path.join(dir, "run/status.json"),
    AUDIT_LOG: path.join(dir, "var/log/audit.log"),
    ...TEST_USERS,
  });
  const config = parseConfig(fs.readFileSync(configPath, "utf8"), configPath);
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  const log = createLogger("kernel");
  const modes: Record<ServiceName, string> = { spool: "good", signer: "good", monitor: "good", notifier: "linger" };
  const supervisor = new Supervisor(config, users, log, {
    startScript: LINGERING,
    scriptArgs: Object.fromEntries(SERVICE_NAMES.map((n) => [n, [modes[n], shared]])),
  });
  const term = pty.spawn("sleep", ["3600"], { name: "xterm", cols: 100, rows: 30, env: { PATH: "/usr/bin:/bin" } });
  const operatorConsole = OperatorConsole.open((term as unknown as { ptsName: string }).ptsName, true, configPath);
  const kernel = new Kernel(config, supervisor, operatorConsole, log, Object.fromEntries(SERVICE_NAMES.map((n) => [n, users[n].name])) as Record<ServiceName, string>);
  // seen when the descendant's frame arrives, i.e. after the notifier's exit and before its death is handled
  let duringDrain: { up: boolean; record: boolean; sendError: unknown } | undefined;
  supervisor.on("frame", (name, frame) => {
    if (name !== "notifier" || frame.type !== "hookFailed" || duringDrain) return;
    const record = supervisor.all().find((r) => r.name === "notifier")!;
    let sendError: unknown;
    try {
      record.channel!.send("ping", { nonce: 99 });
    } catch (err) {
      sendError = err;
    }
    duringDrain = { up: supervisor.isUp("notifier"), record: record.up, sendError };
    // an event the kernel tells the notifier about, at this very moment
    kernel.notify("drain-test", "an event while the notifier's socket drains", {});
  });
  kernel.start();
  t.teardown(async () => {
    await kernel.stop();
    operatorConsole.close();
    term.kill();
    setLogSink(process.stderr);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  await waitFor("the descendant's frame, written after the notifier exited", () => duringDrain, 20_000);
  await waitFor("the descendant ended the socket", () => fs.readFileSync(path.join(shared, "read"), "utf8").includes("end\n") || undefined, 20_000);
  const notifier = await waitFor("the notifier restarted and up", () => {
    const r = supervisor.all().find((x) => x.name === "notifier")!;
    return r.restarts >= 1 && r.up ? r : undefined;
  }, 20_000);
  const all = lines.join("");
  t.match(all, /"msg":"hook failed".*"hook":"lingering-descendant"/, "what the dead service's socket still carried was read and handled");
  t.equal(duringDrain!.record, true, "its death was not handled yet (the socket was still being read)");
  t.equal(duringDrain!.up, false, "the supervisor no longer offers the dead notifier's channel");
  t.ok(duringDrain!.sendError instanceof ProtocolError, `a send into the draining channel fails: ${String(duringDrain!.sendError)}`);
  t.equal((duringDrain!.sendError as ProtocolError | undefined)?.code, "protocol.closed", "as a send to a closed channel");
  const read = fs.readFileSync(path.join(shared, "read"), "utf8").split("\n").filter((l) => l && l !== "end");
  t.same(read, [], "the descendant holding the dead notifier's socket read nothing the kernel wrote after the exit");
  t.match(notifier.lastError ?? "", /exited with status 0/, `the death was handled as an exit: ${notifier.lastError}`);
  t.ok(SERVICE_NAMES.filter((n) => n !== "notifier").every((n) => supervisor.all().find((r) => r.name === n)!.restarts === 0), "no other service restarted");
});
