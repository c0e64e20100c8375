// etoken-ca check: the decision table for every state and exit code, and the command itself
// (Nagios plugin output and exit codes) on status files written here.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { checkLine, decide, type Facts, type Thresholds } from "../../services/operator/check-rules.js";
import type { StatusSnapshot } from "../../services/common/status-file.js";
import { BIN } from "../fixtures/server.js";

const NOW = Date.parse("2026-12-03T12:00:00Z");
const S = 1000;
const DAY = 86400 * S;
const T: Thresholds = {
  staleWarning: 30 * S, staleCritical: 60 * S, needPinCritical: 3600 * S, crlWarning: 7 * DAY, crlCritical: 7 * DAY + 120 * S,
  restartWindow: 3600 * S, hookWindow: 3600 * S, failedPercentWarning: 10, failedMinimum: 5,
};

function snapshot(over: Partial<StatusSnapshot> = {}): StatusSnapshot {
  return {
    version: 1, kernelPid: 4242, state: "READY", stateSince: NOW - 2 * DAY, updatedAt: NOW - 2 * S,
    token: { present: true, serial: "abc", label: "ca", pinFlags: [], epoch: 1, usbAvailable: false },
    trustedTokenSerial: "abc",
    counters: { issued: 120, failed: 1, rejected: 3, fenceRevoked: 0, undelivered: 0 },
    queueDepth: 2,
    crl: { number: 7, thisUpdate: NOW - DAY, nextUpdate: NOW + 29 * DAY, entries: 4, path: "/x/crl.pem" },
    lastHookFailure: null,
    services: ["spool", "signer", "monitor", "notifier"].map((name) => ({ name, user: `etca-${name}`, uid: 1, pid: 10, up: true, startedAt: NOW - 2 * DAY, restarts: 0, lastError: null })),
    ...over,
  };
}
const facts = (over: Partial<StatusSnapshot> = {}, kernelAlive = true): Facts => ({ snap: snapshot(over), now: NOW, kernelAlive });
/** the kernel's token before the monitor's first report (epoch 0): nobody has looked yet */
const NOT_CHECKED: StatusSnapshot["token"] = { present: false, serial: "", label: "", pinFlags: [], epoch: 0, usbAvailable: false };
const restarted = (name: string, ago: number, restarts = 1) => snapshot().services.map((s) => (s.name === name ? { ...s, startedAt: NOW - ago, restarts } : s));

const CASES: [string, Facts, "OK" | "WARNING" | "CRITICAL", RegExp][] = [
  ["READY, everything fine", facts(), "OK", /^READY, token present, CRL #7$/],
  ["kernel gone", facts({}, false), "CRITICAL", /server not running \(pid 4242 gone, last state READY\)/],
  ["STOPPING", facts({ state: "STOPPING" }), "CRITICAL", /server stopping/],
  ["status 45 s old", facts({ updatedAt: NOW - 45 * S }), "WARNING", /status not updated for 45s/],
  ["status 2 min old", facts({ updatedAt: NOW - 120 * S }), "CRITICAL", /status not updated for 120s/],
  ["SUSPENDED, token out", facts({ state: "SUSPENDED", stateSince: NOW - 60 * S, token: { ...snapshot().token, present: false } }), "CRITICAL", /SUSPENDED since .*token absent/],
  ["NEED_PIN for 5 min", facts({ state: "NEED_PIN", stateSince: NOW - 300 * S }), "WARNING", /NEED_PIN for 300s/],
  ["NEED_PIN for 2 h", facts({ state: "NEED_PIN", stateSince: NOW - 7200 * S }), "CRITICAL", /waiting for the PIN for 7200s/],
  ["STARTING", facts({ state: "STARTING", stateSince: NOW - 3 * S }), "WARNING", /STARTING for 3s/],
  // before the fix STARTING stayed WARNING however long it lasted (NEED_PIN turns CRITICAL)
  ["STARTING for 2 h, token not checked", facts({ state: "STARTING", stateSince: NOW - 7200 * S, token: NOT_CHECKED }), "CRITICAL", /^not up for 7200s: still STARTING \(not every service has come up\); STARTING for 7200s; token not checked yet/],
  ["CRL expired", facts({ crl: { ...snapshot().crl!, nextUpdate: NOW - 10 * S } }), "CRITICAL", /CRL #7 expired 10s ago/],
  ["CRL within reissue window, no PIN", facts({ state: "NEED_PIN", stateSince: NOW - 60 * S, crl: { ...snapshot().crl!, nextUpdate: NOW + 5 * DAY } }), "CRITICAL", /CRL #7 expires in 432000s and no PIN to reissue it/],
  ["CRL past the reissue point, READY (the next one is being made)", facts({ crl: { ...snapshot().crl!, nextUpdate: NOW + 7 * DAY + 60 * S } }), "OK", /^READY/],
  ["CRL within CRL_REISSUE_BEFORE, READY (reissue failing)", facts({ crl: { ...snapshot().crl!, nextUpdate: NOW + 2 * DAY } }), "WARNING", /CRL #7 expires in 172800s/],
  ["CRL past the reissue point, no PIN", facts({ state: "SUSPENDED", stateSince: NOW - 60 * S, crl: { ...snapshot().crl!, nextUpdate: NOW + 7 * DAY + 60 * S } }), "CRITICAL", /CRL #7 expires in 604860s and no PIN to reissue it/],
  ["no CRL yet while READY", facts({ crl: null }), "WARNING", /no CRL yet/],
  ["signer restarted 10 min ago", facts({ services: restarted("signer", 600 * S, 2) }), "WARNING", /service signer restarted \(2\)/],
  ["signer restarted 2 h ago", facts({ services: restarted("signer", 7200 * S) }), "OK", /^READY/],
  ["notifier down", facts({ services: snapshot().services.map((s) => (s.name === "notifier" ? { ...s, up: false } : s)) }), "WARNING", /service notifier down/],
  ["hook failed 5 min ago", facts({ lastHookFailure: `${new Date(NOW - 300 * S).toISOString()} /usr/local/bin/hook (crl-updated): exit 1` }), "WARNING", /hook failing: .*exit 1/],
  ["hook failed yesterday", facts({ lastHookFailure: `${new Date(NOW - DAY).toISOString()} /usr/local/bin/hook (crl-updated): exit 1` }), "OK", /^READY/],
  ["20% of requests failed", facts({ counters: { ...snapshot().counters, issued: 40, failed: 10 } }), "WARNING", /10 of 50 requests failed \(20%\)/],
  ["high rate, too few to count", facts({ counters: { ...snapshot().counters, issued: 1, failed: 4 } }), "OK", /^READY/],
  ["NEED_PIN before the monitor's first report", facts({ state: "NEED_PIN", stateSince: NOW - 3 * S, token: NOT_CHECKED }), "WARNING", /^NEED_PIN for 3s; token not checked yet \(the monitor has not reported since the server started\)$/],
  ["SUSPENDED before the monitor's first report", facts({ state: "SUSPENDED", stateSince: NOW - 3 * S, token: NOT_CHECKED }), "CRITICAL", /^SUSPENDED since .* \(token not checked yet\); token not checked yet/],
];

t.test("decision table: level, exit code and text for each state", async (t) => {
  for (const [name, f, level, text] of CASES) {
    const { line, code } = checkLine(f, T);
    t.equal(decide(f, T).level, level, `${name}: ${level}`);
    t.equal(code, { OK: 0, WARNING: 1, CRITICAL: 2 }[level], `${name}: exit ${code}`);
    const [head, perf] = line.split(" | ");
    t.match(head, new RegExp(`^ETOKEN-CA ${level} - `), `${name}: line starts with the level`);
    t.match(head!.replace(/^ETOKEN-CA \w+ - /, ""), text, `${name}: says why`);
    t.match(perf, /^('[a-z_]+'=-?\d+(c|s)?(;[0-9:]*){0,4})( '[a-z_]+'=-?\d+(c|s)?(;[0-9:]*){0,4})*$/, `${name}: perfdata syntax`);
  }
});

// Before the fix the probe said "token absent" (and OK when nothing else was wrong) although no
// one had looked for the token yet. Not yet checked is WARNING: the probe itself read a fresh
// status, so it is not UNKNOWN (that is for a probe that cannot tell, per the plugin guidelines),
// and the CA cannot issue until the token is seen; it is expected for seconds after each start,
// so not CRITICAL (a monitor that never reports leaves NEED_PIN, which turns CRITICAL later).
t.test("before the monitor's first report: WARNING at least, never 'absent', whatever the state", async (t) => {
  for (const state of ["STARTING", "NEED_PIN", "READY", "SUSPENDED"]) {
    const f = facts({ state, stateSince: NOW - 3 * S, token: NOT_CHECKED });
    const { line, code } = checkLine(f, T);
    t.ok(code === 1 || code === 2, `${state}: WARNING or CRITICAL, not OK nor UNKNOWN: ${line}`);
    t.match(line, /token not checked yet/, `${state}: says the token is not checked yet`);
    t.notMatch(line, /absent/, `${state}: does not claim the token is absent`);
  }
  const checked = checkLine(facts({ state: "NEED_PIN", stateSince: NOW - 3 * S, token: { ...NOT_CHECKED, epoch: 1 } }), T).line;
  t.notMatch(checked, /not checked/, "after the monitor's first report it is no longer 'not checked yet'");
});

t.test("a server that is gone is reported alone (its last status says nothing current)", async (t) => {
  const v = decide(facts({ state: "STOPPING", services: snapshot().services.map((s) => ({ ...s, up: false })) }, false), T);
  t.same(v, { level: "CRITICAL", reasons: ["server not running (pid 4242 gone, last state STOPPING)"] });
});

t.test("the worst level wins and every reason is given", async (t) => {
  const f = facts({ state: "SUSPENDED", updatedAt: NOW - 45 * S, services: restarted("spool", 60 * S) });
  const v = decide(f, T);
  t.equal(v.level, "CRITICAL");
  t.equal(v.reasons.length, 3, v.reasons.join("; "));
});

t.test("perfdata: counters, queue depth, CRL age and time to nextUpdate with thresholds", async (t) => {
  const { line } = checkLine(facts(), T);
  t.equal(
    line.split(" | ")[1],
    "'issued'=120c;;;0 'failed'=1c;;;0 'rejected'=3c;;;0 'fence_revoked'=0c;;;0 'queue_depth'=2;;;0 'status_age'=2s;30;60;0 'crl_age'=86400s;;;0 'crl_next_update'=2505600s;604800:;604920:",
  );
});

t.test("perfdata: the signer's measured C_Sign time (median and longest), when it has measured any", async (t) => {
  const withSign = { ...snapshot(), signMs: { p50: 12.4, max: 250.6, count: 40 } } as StatusSnapshot;
  const perf = checkLine({ snap: withSign, now: NOW, kernelAlive: true }, T).line.split(" | ")[1]!;
  t.match(perf, / 'sign_time'=12\.4ms;;;0 'sign_time_max'=250\.6ms;;;0$/, perf);
  t.match(perf, /^('[a-z_]+'=-?[\d.]+(c|s|ms)?(;[0-9:]*){0,4})( '[a-z_]+'=-?[\d.]+(c|s|ms)?(;[0-9:]*){0,4})*$/, "perfdata syntax");
  for (const signMs of [null, { p50: 0, max: 0, count: 0 }]) {
    const none = checkLine({ snap: { ...snapshot(), signMs } as StatusSnapshot, now: NOW, kernelAlive: true }, T).line;
    t.notMatch(none, /sign_time/, `no sign time without measurements (${JSON.stringify(signMs)})`);
  }
});

// --- the command ------------------------------------------------------------------------------

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-check-"));
fs.chmodSync(dir, 0o755);
// a live process whose command line names etoken-ca, standing in for the kernel
const standIn = spawn(process.execPath, ["-e", "setTimeout(() => {}, 600000)", "etoken-ca-server"], { stdio: "ignore" });
t.teardown(() => {
  standIn.kill();
  fs.rmSync(dir, { recursive: true, force: true });
});

function writeStatusFile(name: string, content: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, content, { mode: 0o644 });
  return f;
}
function run(args: string[], program = BIN.ca, uid?: number) {
  const r = spawnSync("/usr/bin/env", ["-i", "PATH=/usr/bin:/bin", process.execPath, program, ...args], { encoding: "utf8", uid, gid: uid });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const live = () => JSON.stringify({ ...snapshot(), kernelPid: standIn.pid, updatedAt: Date.now(), stateSince: Date.now() - DAY, crl: { ...snapshot().crl!, thisUpdate: Date.now() - DAY, nextUpdate: Date.now() + 20 * DAY } });

t.test("etoken-ca check prints one line and exits with the Nagios code", async (t) => {
  const ok = writeStatusFile("ok.json", live());
  const nobody = Number(spawnSync("id", ["-u", "nobody"], { encoding: "utf8" }).stdout.trim());
  const r = run(["check", "--status-file", ok], BIN.ca, nobody);
  t.equal(r.code, 0, `OK as user nobody: ${r.out}${r.err}`);
  t.match(r.out, /^ETOKEN-CA OK - READY, token present, CRL #7 \| 'issued'=120c;;;0 .*'crl_next_update'=\d+s;604800:;604920:\n$/);
  t.equal(r.out.split("\n").length, 2, "exactly one line");

  const gone = run(["check", "--status-file", writeStatusFile("gone.json", JSON.stringify({ ...JSON.parse(live()), kernelPid: 2 ** 22 + 1 }))]);
  t.equal(gone.code, 2, gone.out);
  t.match(gone.out, /^ETOKEN-CA CRITICAL - server not running/);

  const warn = run(["check", "-w", "1", "-c", "3600", "--status-file", writeStatusFile("old.json", JSON.stringify({ ...JSON.parse(live()), updatedAt: Date.now() - 10 * S }))]);
  t.equal(warn.code, 1, warn.out);
  t.match(warn.out, /^ETOKEN-CA WARNING - status not updated for 1\ds/, "10 s old when written (11 s when the machine is slow)");

  const missing = run(["check", "--status-file", path.join(dir, "nonexistent.json")]);
  t.equal(missing.code, 2, missing.out);
  t.match(missing.out, /^ETOKEN-CA CRITICAL - no status file .*: server not running\n$/);

  const garbage = run(["check", "--status-file", writeStatusFile("bad.json", "{not json")]);
  t.equal(garbage.code, 3, garbage.out);
  t.match(garbage.out, /^ETOKEN-CA UNKNOWN - cannot read .*bad\.json: not JSON\n$/);

  const other = run(["check", "--status-file", writeStatusFile("v2.json", JSON.stringify({ version: 2 }))]);
  t.equal(other.code, 3);
  t.match(other.out, /not an etoken-ca status file of version 1/);

  const secret = writeStatusFile("secret.json", live());
  fs.chmodSync(secret, 0o600);
  const denied = run(["check", "--status-file", secret], BIN.ca, nobody);
  t.equal(denied.code, 3, denied.out);
  t.match(denied.out, /^ETOKEN-CA UNKNOWN - cannot read .*: EACCES\n$/);

  const unchecked = run(["check", "--status-file", writeStatusFile("unchecked.json", JSON.stringify({ ...JSON.parse(live()), state: "NEED_PIN", stateSince: Date.now() - 2 * S, token: NOT_CHECKED }))]);
  t.equal(unchecked.code, 1, `not checked yet is WARNING (1): ${unchecked.out}`);
  t.match(unchecked.out, /^ETOKEN-CA WARNING - NEED_PIN for \ds; token not checked yet \(the monitor has not reported since the server started\) \| /);

  const badOption = run(["check", "--frobnicate"]);
  t.equal(badOption.code, 3, "a bad option is UNKNOWN (3), not a usage exit code");
  t.match(badOption.out, /^ETOKEN-CA UNKNOWN - .*frobnicate/);
  const badNumber = run(["check", "-w", "soon", "--status-file", ok]);
  t.equal(badNumber.code, 3);
  t.match(badNumber.out, /-w needs a whole number of seconds/);
});

t.test("run as check_etoken_ca (a symlink to the wrapper) it is the probe", async (t) => {
  const link = path.join(dir, "check_etoken_ca");
  fs.symlinkSync(path.resolve(path.dirname(BIN.ca), "../../bin/etoken-ca"), link);
  const r = spawnSync(link, ["--status-file", writeStatusFile("ok2.json", live())], { encoding: "utf8", env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin` } });
  t.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  t.match(r.stdout, /^ETOKEN-CA OK - /);
});
