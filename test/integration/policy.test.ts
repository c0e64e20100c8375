// The real supervisor and kernel, with services that break the contract on purpose: each is
// killed and restarted, the event is logged, and the kernel keeps running.
import t, { type Test } from "tap";
import * as path from "node:path";
import * as fs from "node:fs";
import * as pty from "node-pty";
import { parseConfig } from "../../services/common/config.js";
import { setLogSink } from "../../services/common/log.js";
import { createLogger } from "../../services/common/log.js";
import { SERVICE_NAMES, type ServiceName } from "../../services/common/service-table.js";
import { OperatorConsole } from "../../services/kernel/console.js";
import { Kernel } from "../../services/kernel/kernel.js";
import { Supervisor } from "../../services/kernel/supervisor.js";
import type { UserInfo } from "../../services/common/identity.js";
import { DIST, makeBaseDir, waitFor, writeConfig } from "../fixtures/server.js";
import { ensureTestUsers, TEST_USERS } from "../fixtures/users.js";

const ROGUE = path.join(DIST, "test/fixtures/rogue-service.js");

async function runWith(t: Test, modes: Record<ServiceName, string>) {
  const u = ensureTestUsers();
  const users: Record<ServiceName, UserInfo> = { spool: u.SPOOL_USER, signer: u.SIGNER_USER, monitor: u.MONITOR_USER, notifier: u.NOTIFIER_USER };
  const dir = makeBaseDir("etca-policy");
  const term = pty.spawn("sleep", ["3600"], { name: "xterm", cols: 100, rows: 30, env: { PATH: "/usr/bin:/bin" } });
  const configPath = path.join(dir, "conf");
  fs.mkdirSync(path.join(dir, "run"), { mode: 0o777 });
  fs.chmodSync(path.join(dir, "run"), 0o777);
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
  const supervisor = new Supervisor(config, users, log, {
    startScript: ROGUE,
    scriptArgs: Object.fromEntries(SERVICE_NAMES.map((n) => [n, [modes[n]]])),
  });
  const console = OperatorConsole.open((term as unknown as { ptsName: string }).ptsName, true, configPath);
  const kernel = new Kernel(config, supervisor, console, log, Object.fromEntries(SERVICE_NAMES.map((n) => [n, users[n].name])) as Record<ServiceName, string>);
  kernel.start();
  t.teardown(async () => {
    await kernel.stop();
    console.close();
    term.kill();
    setLogSink(process.stderr);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { supervisor, lines, kernel };
}

const CASES: [string, Record<ServiceName, string>, string[]][] = [
  ["forbidden type, garbage, over-size, reply to an unknown id", { spool: "forbidden", signer: "garbage", monitor: "oversize", notifier: "unknown-reply" }, [
    "message login is not permitted from spool",
    "not a valid varint|undecodable|longer than 5 bytes",
    "exceeds the maximum",
    "unknown request id 4242",
  ]],
  ["truncated frame, second Hello", { spool: "truncated", signer: "second-hello", monitor: "good", notifier: "good" }, ["closed the channel in the middle of a frame", "second Hello"]],
];

for (const [name, modes, expected] of CASES) {
  t.test(name, async (t) => {
    const { supervisor, lines, kernel } = await runWith(t, modes);
    const bad = SERVICE_NAMES.filter((n) => modes[n] !== "good");
    await waitFor("every misbehaving service restarted and up again", () =>
      bad.every((n) => {
        const r = supervisor.all().find((x) => x.name === n)!;
        return r.restarts >= 1 && r.up;
      }),
      20_000,
    );
    const all = lines.join("");
    for (const pattern of expected) t.match(all, new RegExp(pattern), `log names: ${pattern}`);
    for (const n of bad) {
      const r = supervisor.all().find((x) => x.name === n)!;
      t.ok(r.restarts >= 1, `${n} was restarted`);
      t.ok(r.lastError && r.lastError.length > 0, `${n} has a last error: ${r.lastError}`);
    }
    for (const n of SERVICE_NAMES.filter((x) => modes[x] === "good")) {
      t.equal(supervisor.all().find((x) => x.name === n)!.restarts, 0, `well-behaved ${n} was left alone`);
    }
    t.equal(kernel.currentState, "NEED_PIN", "the kernel is still running its state machine");
    t.match(all, /security event/, "a security event was logged");
  });
}
