// `etoken-ca status` on status files written here (the kernel is a stand-in process whose command
// line names etoken-ca): what it says of the token before and after the monitor's first report.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import type { StatusSnapshot } from "../../services/common/status-file.js";
import { BIN } from "../fixtures/server.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-status-"));
const standIn = spawn(process.execPath, ["-e", "setTimeout(() => {}, 600000)", "etoken-ca-server"], { stdio: "ignore" });
t.teardown(() => {
  standIn.kill();
  fs.rmSync(dir, { recursive: true, force: true });
});
const statusFile = path.join(dir, "status.json");
const configFile = path.join(dir, "etoken-ca.conf");
fs.writeFileSync(
  configFile,
  `DN_FORMAT=/DC=org/DC=example/CN=%s\nPKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so\nCA_CERT=/etc/etoken-ca/ca.pem\nCA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\nSTATUS_FILE=${statusFile}\nREVOKE_DIR=${path.join(dir, "revoke")}\n`,
);

function snapshot(token: Partial<StatusSnapshot["token"]>, kernelPid: number): StatusSnapshot {
  const now = Date.now();
  return {
    version: 1, kernelPid, state: "NEED_PIN", stateSince: now - 3000, updatedAt: now,
    token: { present: false, serial: "", label: "", pinFlags: [], epoch: 0, usbAvailable: false, ...token },
    trustedTokenSerial: null,
    counters: { issued: 0, failed: 0, rejected: 0, fenceRevoked: 0, undelivered: 0 },
    queueDepth: 0, signMs: null, crl: null, lastHookFailure: null,
    services: ["spool", "signer", "monitor", "notifier"].map((name) => ({ name, user: `etca-${name}`, uid: 1, pid: 10, up: true, startedAt: now - 3000, restarts: 0, lastError: null })),
  };
}
function status(snap: StatusSnapshot): { code: number | null; out: string } {
  fs.writeFileSync(statusFile, JSON.stringify(snap));
  const r = spawnSync("/usr/bin/env", ["-i", "PATH=/usr/bin:/bin", process.execPath, BIN.ca, "status", "--config", configFile], { encoding: "utf8" });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}
const tokenLine = (out: string): string => out.split("\n").find((l) => l.startsWith("token:")) ?? "(no token line)";

// Before the monitor's first report (token epoch 0) nobody has looked for the token: before the
// fix, status said "absent" there (as the console's state line said "no token").
t.test("before the monitor's first report the token is 'not checked yet', not absent", async (t) => {
  const r = status(snapshot({ epoch: 0 }, standIn.pid!));
  t.equal(r.code, 0, r.out);
  t.match(tokenLine(r.out), /^token:\s+not checked yet \(the monitor has not reported since the server started\)$/, r.out);
  t.notMatch(r.out, /absent/, "does not claim the token is absent");
});

t.test("once the monitor reported: absent, or present with its label", async (t) => {
  t.match(tokenLine(status(snapshot({ epoch: 1 }, standIn.pid!)).out), /^token:\s+absent$/);
  t.match(tokenLine(status(snapshot({ epoch: 2, present: true, label: "ca", serial: "abc" }, standIn.pid!)).out), /^token:\s+present, label "ca", serial abc$/);
});

t.test("a server that stopped before the monitor's first report: unknown, and it never checked", async (t) => {
  const r = status(snapshot({ epoch: 0 }, 2 ** 22 + 1));
  t.equal(r.code, 3, r.out);
  t.match(tokenLine(r.out), /^token:\s+unknown: the server is not running \(it had not checked the token yet\)$/, r.out);
  t.notMatch(r.out, /absent/);
  t.match(tokenLine(status(snapshot({ epoch: 1 }, 2 ** 22 + 1)).out), /^token:\s+unknown: the server is not running \(it last saw: absent\)$/);
});
