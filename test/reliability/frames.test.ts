// Protocol frames (test/reliability/corpus/frames.json) sent by rogue services through the real
// supervisor and kernel, four at a time (one per service). Each case: the sender is killed and
// restarted and comes back up, the kernel logs a security event naming the problem and keeps its
// state, the well-behaved services are left alone, and nothing reaches a signer.
import t, { type Test } from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pty from "node-pty";
import { parseConfig } from "../../services/common/config.js";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { SERVICE_NAMES, type ServiceName } from "../../services/common/service-table.js";
import type { UserInfo } from "../../services/common/identity.js";
import { OperatorConsole } from "../../services/kernel/console.js";
import { Kernel } from "../../services/kernel/kernel.js";
import { Supervisor } from "../../services/kernel/supervisor.js";
import { DIST, makeBaseDir, waitFor, writeConfig } from "../fixtures/server.js";
import { ensureTestUsers, TEST_USERS } from "../fixtures/users.js";
import { CORPUS } from "./lib.js";

interface FrameCase {
  id: string;
  sender: ServiceName;
  send: unknown;
  expect: string;
}

const ROGUE = path.join(DIST, "test/reliability/rogue-frames.js");
const cases = (JSON.parse(fs.readFileSync(path.join(CORPUS, "frames.json"), "utf8")) as { cases: FrameCase[] }).cases;

// rounds: at most one case per service
const rounds: Partial<Record<ServiceName, FrameCase>>[] = [];
for (const c of cases) {
  let r = rounds.find((x) => !x[c.sender]);
  if (!r) rounds.push((r = {}));
  r[c.sender] = c;
}

const u = ensureTestUsers();
const users: Record<ServiceName, UserInfo> = { spool: u.SPOOL_USER, signer: u.SIGNER_USER, monitor: u.MONITOR_USER, notifier: u.NOTIFIER_USER };
const dir = makeBaseDir("etca-frames");
fs.mkdirSync(path.join(dir, "run"), { mode: 0o777 });
fs.chmodSync(path.join(dir, "run"), 0o777);
const term = pty.spawn("sleep", ["3600"], { name: "xterm", cols: 100, rows: 30, env: { PATH: "/usr/bin:/bin" } });
const configPath = path.join(dir, "conf");
writeConfig(configPath, { DN_FORMAT: "/CN=%s", CA_OIDS: "1.3.6.1.4.1.99999.1.1", CRL_URLS: "URI:http://ca.example.org/crl.der", PKCS11_MODULE: "/dev/null", CA_CERT: "/dev/null", STATUS_FILE: path.join(dir, "run/status.json"), ...TEST_USERS });
const config = parseConfig(fs.readFileSync(configPath, "utf8"), configPath);
const lines: string[] = [];
setLogSink({ write: (l: string) => lines.push(l) });
t.teardown(() => {
  term.kill();
  setLogSink(process.stderr);
  fs.rmSync(dir, { recursive: true, force: true });
});

let tried = 0;
let passed = 0;
async function runRound(t: Test, round: Partial<Record<ServiceName, FrameCase>>, i: number): Promise<void> {
  {
    t.comment(`round ${i + 1}: ${Object.values(round).map((c) => c!.id.replace("frames/", "")).join(", ")}`);
    const scriptArgs: Partial<Record<ServiceName, string[]>> = {};
    for (const n of SERVICE_NAMES) {
      const c = round[n];
      if (!c) {
        scriptArgs[n] = [];
        continue;
      }
      const f = path.join(dir, "run", `case-${i}-${n}.json`);
      fs.writeFileSync(f, JSON.stringify(c), { mode: 0o644 });
      scriptArgs[n] = [f];
    }
    const tag = `"svc":"kernel-r${i}"`;
    const log = createLogger(`kernel-r${i}`);
    const supervisor = new Supervisor(config, users, log, { startScript: ROGUE, scriptArgs });
    const console = OperatorConsole.open((term as unknown as { ptsName: string }).ptsName, true, configPath);
    const kernel = new Kernel(config, supervisor, console, log, Object.fromEntries(SERVICE_NAMES.map((n) => [n, users[n].name])) as Record<ServiceName, string>);
    kernel.start();
    try {
      const bad = SERVICE_NAMES.filter((n) => round[n]);
      await waitFor(
        "every rogue killed, restarted and up again",
        () => bad.every((n) => {
          const r = supervisor.all().find((x) => x.name === n)!;
          return r.restarts >= 1 && r.up;
        }) || undefined,
        20_000,
      ).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300)); // a second life must not be killed again
      const all = lines.filter((l) => l.includes(tag)).join("");
      for (const n of bad) {
        const c = round[n]!;
        const r = supervisor.all().find((x) => x.name === n)!;
        tried++;
        const ok = r.restarts === 1 && r.up && new RegExp(c.expect).test(all);
        if (ok) passed++;
        t.equal(r.restarts, 1, `${c.id}: ${n} killed and restarted once (${r.lastError})`);
        t.ok(r.up, `${c.id}: ${n} is up again`);
        t.match(all, new RegExp(c.expect), `${c.id}: the log names the problem (${c.expect})`);
      }
      for (const n of SERVICE_NAMES.filter((x) => !round[x])) t.equal(supervisor.all().find((x) => x.name === n)!.restarts, 0, `round ${i + 1}: well-behaved ${n} left alone`);
      t.equal(kernel.currentState, "NEED_PIN", `round ${i + 1}: the kernel keeps its state machine`);
      t.match(all, /security event/, `round ${i + 1}: logged as a security event`);
      t.notMatch(all, /"msg":"issued"|certificate delivered/, `round ${i + 1}: nothing signed`);
    } finally {
      await kernel.stop();
      console.close();
    }
  }
}

// two kernels at a time (each with its own four rogue services): the rounds are mostly waiting
t.test("rogue frames through the real supervisor and kernel", async (t) => {
  for (let i = 0; i < rounds.length; i += 2) await Promise.all([i, i + 1].filter((k) => k < rounds.length).map((k) => runRound(t, rounds[k]!, k)));
});

t.test("summary", async (t) => {
  t.comment(`PROTOCOL FRAMES: ${tried} cases in ${rounds.length} rounds; ${passed} ended with the sender killed, restarted and up, the kernel unchanged`);
  t.equal(tried, cases.length, "every frame case was tried");
});
