// Secrets and permissions on one whole installation.
// Secrets: a run that types a wrong PIN and then the right one, issues, revokes and makes CRLs;
// afterwards the PINs and the MyProxy passphrase are in no file under the configuration, spool,
// revoke queue, CA, CRL and run (status, pid) paths, in no process's argv or environment, in no
// log line and not on the console; in memory, the PIN is only in the kernel, once (the Buffer it
// holds), and no other secret in any of our processes; core dumps are off in the kernel, every
// service and the client.
// Permissions: as CLIENT_USER, SPOOL_USER, MONITOR_USER and NOTIFIER_USER, try to read and write
// what DESIGN §1/§4 gives to others; print the matrix; every forbidden attempt must fail.
import t from "tap";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { findInMemory } from "../fixtures/memory.js";
import { calloutInput, filesContaining, makeCsr } from "../fixtures/pki.js";
import { BIN, CLEAN_PATH, createInstallation, DIST, runCommand, startServer, typePin, waitFor, waitForState } from "../fixtures/server.js";
import { certFacts, runClient, setDistinctivePin, status, waitAlive } from "./lib.js";

const inst = createInstallation({ prefix: "etca-secrets", extraConfig: { LOG_LEVEL: "debug" } });
const PIN = setDistinctivePin(inst);
const WRONG_PIN = `WRONGPIN-${Date.now().toString(36)}`;
const PASSPHRASE = `myproxy-pass-${Date.now().toString(36)}-x9`;
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const server = startServer(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

let serials: string[] = [];

t.test("a run with the PIN, issuing, revoking and CRLs", async (t) => {
  await waitForState(inst, "NEED_PIN", 60_000);
  await typePin(inst, WRONG_PIN, 1);
  await waitFor("the wrong PIN refused", () => inst.consoleText().includes("LOGIN FAILED") || undefined, 20_000);
  await typePin(inst, PIN, 2);
  await waitForState(inst, "READY", 30_000);
  const runs = await Promise.all(
    [0, 1, 2].map((i) => runClient(inst, calloutInput({ username: `secret user ${i}`, passphrase: PASSPHRASE, csrPem: makeCsr(work, `s${i}`).csrPem }))),
  );
  for (const r of runs) t.equal(r.code, 0, r.stderr);
  serials = runs.map((r) => certFacts(r.stdout).serial);
  const crlBefore = status(inst).crl?.number ?? 0;
  const rv = runCommand(process.execPath, [BIN.revoke, "--config", inst.configPath, "--serial", serials[0]!, "--reason", "keyCompromise"], { env: { PATH: CLEAN_PATH } });
  t.equal(rv.code, 0, `revoke-cert: ${rv.stderr}`);
  await waitFor("a CRL with the revocation", () => ((status(inst).crl?.number ?? 0) > crlBefore && (status(inst).crl?.entries ?? 0) >= 1) || undefined, 30_000);
  process.kill(server.pid, "SIGUSR1");
  await waitFor("one more CRL", () => (status(inst).crl?.number ?? 0) > crlBefore + 1 || undefined, 30_000);
  // a refused request too (its error path logs more)
  const weak = await runClient(inst, calloutInput({ username: "weak", passphrase: PASSPHRASE, csrPem: makeCsr(work, "w", { bits: 1024 }).csrPem }));
  t.equal(weak.code, 1);
});

const SECRETS = (): [string, string][] => [
  ["PIN", PIN],
  ["wrong PIN", WRONG_PIN],
  ["MyProxy passphrase", PASSPHRASE],
];

t.test("no secret in any file", async (t) => {
  const c = inst.config;
  const dirs = [inst.configPath, c.SPOOL_DIR, c.REVOKE_DIR, c.CA_DIR, c.CRL_DIR, path.dirname(c.STATUS_FILE), path.dirname(c.PIDFILE), path.join(inst.dir, "var"), path.join(inst.dir, "spool")];
  let files = 0;
  const count = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) count(path.join(p, e));
    else if (st.isFile()) files++;
  };
  for (const d of new Set(dirs)) count(d);
  for (const [what, secret] of SECRETS()) t.same(filesContaining([...new Set(dirs)], secret), [], `the ${what} is in no file (${files} files searched)`);
});

t.test("no secret in any log line or on the console", async (t) => {
  const logs = server.logs();
  t.ok(logs.length > 20, `${logs.length} log lines (debug level)`);
  for (const [what, secret] of SECRETS()) {
    t.same(logs.filter((l) => l.includes(secret)), [], `the ${what} is in no log line`);
    t.notOk(inst.consoleText().includes(secret), `the ${what} is not on the console`);
  }
});

t.test("no secret in any process's argv or environment", async (t) => {
  let scanned = 0;
  const hits: string[] = [];
  for (const p of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    for (const f of ["cmdline", "environ"]) {
      let data: Buffer;
      try {
        data = fs.readFileSync(`/proc/${p}/${f}`);
      } catch {
        continue;
      }
      scanned++;
      for (const [what, secret] of SECRETS()) if (data.includes(secret)) hits.push(`${what} in /proc/${p}/${f}`);
    }
  }
  t.same(hits, [], `no secret in ${scanned} /proc/*/cmdline and environ files`);
});

// Whole secrets, and their first and last 12 bytes (a copy freed without wiping may have lost its
// first bytes to the allocator's bookkeeping). Searched through /proc/PID/mem.
const pieces = (secret: string): Buffer[] => [secret, secret.slice(0, 12), secret.slice(-12)].map((x) => Buffer.from(x, "latin1"));

t.test("in memory: the PIN once in the kernel, which holds it; nowhere else, nor the wrong PIN or the passphrase", async (t) => {
  const s = status(inst);
  const procs: [string, number][] = [["kernel", s.kernelPid], ...s.services.map((svc): [string, number] => [svc.name, svc.pid!])];
  for (const [name, pid] of procs) {
    for (const [what, secret] of SECRETS()) {
      const hits = pieces(secret).map((needle) => findInMemory(pid, needle));
      const expected = name === "kernel" && what === "PIN" ? 1 : 0;
      t.same(
        hits.map((h) => h.hits),
        [expected, expected, expected],
        `${name}: the ${what} (whole, head, tail) ${expected ? "once: the Buffer the kernel keeps while READY" : "nowhere"} in ${hits[0]!.scannedMiB.toFixed(0)} MiB`,
      );
    }
  }
});

t.test("in memory: the client keeps no copy of the passphrase while it waits for its certificate", async (t) => {
  // A spool nobody serves: the client reads its input, writes its request, takes the lock, waits.
  const idle = path.join(inst.dir, "idle-spool");
  fs.mkdirSync(idle, { mode: 0o700 });
  fs.chownSync(idle, inst.users.CLIENT_USER.uid, inst.users.CLIENT_USER.gid);
  const conf = path.join(inst.dir, "idle-client.conf");
  fs.writeFileSync(conf, fs.readFileSync(inst.configPath, "utf8").replace(/^SPOOL_DIR=.*$/m, `SPOOL_DIR='${idle}'`), { mode: 0o644 });
  const child = spawn("/usr/bin/env", ["-i", `PATH=${CLEAN_PATH}`, process.execPath, BIN.client, "--config", conf], {
    uid: inst.users.CLIENT_USER.uid,
    gid: inst.users.CLIENT_USER.gid,
    stdio: ["pipe", "ignore", "ignore"],
  });
  try {
    child.stdin.end(calloutInput({ username: "memory user", passphrase: PASSPHRASE, csrPem: makeCsr(work, "memory").csrPem }));
    await waitFor("the client holding the lock", () => {
      try {
        return fs.lstatSync(path.join(idle, "request")).isSymbolicLink() || undefined;
      } catch {
        return undefined;
      }
    }, 15_000);
    const hits = pieces(PASSPHRASE).map((needle) => findInMemory(child.pid!, needle));
    t.same(hits.map((h) => h.hits), [0, 0, 0], `the MyProxy passphrase (whole, head, tail) nowhere in the waiting client's ${hits[0]!.scannedMiB.toFixed(0)} MiB`);
  } finally {
    child.kill("SIGKILL");
  }
});

function coreLimit(pid: number): string {
  const line = fs.readFileSync(`/proc/${pid}/limits`, "utf8").split("\n").find((l) => l.startsWith("Max core file size"))!;
  return line.replace(/\s+/g, " ").trim();
}

t.test("core dumps are disabled in every process", async (t) => {
  const s = status(inst);
  t.match(coreLimit(s.kernelPid), /Max core file size 0 0 bytes/, `kernel: ${coreLimit(s.kernelPid)}`);
  for (const svc of s.services) t.match(coreLimit(svc.pid!), /Max core file size 0 0 bytes/, `${svc.name}: ${coreLimit(svc.pid!)}`);
  // The client holds the passphrase while it reads stdin: look at it while it waits for EOF.
  // Started as MyProxy starts it (the wrapper's `ulimit -c 0`, no native addon loaded), and
  // directly with node (then it sets the limits itself through the posix addon).
  const launches: [string, string[]][] = [
    ["through bin/etoken-ca-client", [BIN.clientWrapper]],
    ["as node dist/client/bin/etoken-ca-client.js", [process.execPath, BIN.client]],
  ];
  for (const [how, argv] of launches) {
    const child = spawn("/usr/bin/env", ["-i", `PATH=${path.dirname(process.execPath)}:${CLEAN_PATH}`, ...argv, "--config", inst.configPath], {
      uid: inst.users.CLIENT_USER.uid,
      gid: inst.users.CLIENT_USER.gid,
      stdio: ["pipe", "ignore", "ignore"],
    });
    child.stdin.write(`username=x\npassphrase=${PASSPHRASE}\n`);
    await waitFor("the client running node", () => {
      try {
        return fs.readFileSync(`/proc/${child.pid}/cmdline`, "utf8").includes("etoken-ca-client.js") || undefined;
      } catch {
        return undefined;
      }
    }, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const lim = coreLimit(child.pid!);
    const addon = fs.readFileSync(`/proc/${child.pid}/maps`, "utf8").includes("posix.node");
    child.stdin.end();
    await new Promise((r) => child.on("exit", r));
    t.match(lim, /Max core file size 0 0 bytes/, `etoken-ca-client ${how} (holds the passphrase): ${lim}`);
    t.equal(addon, !argv[0]!.endsWith("/etoken-ca-client"), `etoken-ca-client ${how}: posix addon ${addon ? "loaded" : "not loaded"}`);
  }
});

// ---- permissions matrix ------------------------------------------------------------------------

type Op = "list" | "read" | "append" | "create" | "signal" | "openrw";
interface Target {
  label: string;
  op: Op;
  path: string;
  /** users (by config key) the design lets do this */
  allowed: string[];
  /** skip for these users (their own process) */
  skip?: string[];
}

t.test("permissions matrix", async (t) => {
  const c = inst.config;
  const s = status(inst);
  const pid = (n: string): number => s.services.find((x) => x.name === n)!.pid!;
  const tokenSub = fs.readdirSync(inst.token.tokenDir).map((d) => path.join(inst.token.tokenDir, d)).find((p) => fs.statSync(p).isDirectory())!;
  const tokenFile = fs.readdirSync(tokenSub).map((f) => path.join(tokenSub, f)).find((p) => fs.statSync(p).isFile())!;
  const newcert = path.join(c.CA_DIR, "newcerts", fs.readdirSync(path.join(c.CA_DIR, "newcerts"))[0]!);
  // a queue entry and a result file as the design creates them
  const queued = path.join(c.REVOKE_DIR, `bad.rev.${Date.now()}.probeentry`);
  fs.writeFileSync(queued, "version=1\n", { mode: 0o600 });
  fs.chownSync(queued, 0, 0);
  const result = path.join(c.SPOOL_DIR, "req.PROBEPROBEPROBE1.result");
  fs.writeFileSync(result, "error=x\ny\n", { mode: 0o640 });
  fs.chownSync(result, inst.users.SPOOL_USER.uid, inst.users.CLIENT_USER.gid);
  const kernelSockets = fs
    .readdirSync(`/proc/${s.kernelPid}/fd`)
    .filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${s.kernelPid}/fd/${fd}`).startsWith("socket:");
      } catch {
        return false;
      }
    })
    .map((fd) => `/proc/${s.kernelPid}/fd/${fd}`);
  t.ok(kernelSockets.length >= 4, `the kernel holds ${kernelSockets.length} sockets (one socketpair end per service)`);
  const C = "CLIENT_USER", S = "SPOOL_USER", M = "MONITOR_USER", N = "NOTIFIER_USER";
  const svcOf: Record<string, string> = { spool: S, monitor: M, notifier: N, signer: "SIGNER_USER" };
  const targets: Target[] = [
    { label: "CA_DIR list", op: "list", path: c.CA_DIR, allowed: [] },
    { label: "CA index.txt read", op: "read", path: path.join(c.CA_DIR, "index.txt"), allowed: [] },
    { label: "CA index.txt write", op: "append", path: path.join(c.CA_DIR, "index.txt"), allowed: [] },
    { label: "CA serial write", op: "append", path: path.join(c.CA_DIR, "serial"), allowed: [] },
    { label: "CA newcerts read", op: "read", path: newcert, allowed: [] },
    { label: "CA_DIR create", op: "create", path: c.CA_DIR, allowed: [] },
    { label: "token dir list", op: "list", path: inst.token.tokenDir, allowed: [M] },
    { label: "token object read", op: "read", path: tokenFile, allowed: [M] },
    { label: "token object write", op: "append", path: tokenFile, allowed: [] },
    { label: "token dir create", op: "create", path: tokenSub, allowed: [] },
    // root's queue, read by the kernel itself: no service may list, read, forge or delete (issue 14)
    { label: "revoke queue list", op: "list", path: c.REVOKE_DIR, allowed: [] },
    { label: "revoke entry read", op: "read", path: queued, allowed: [] },
    { label: "revoke entry write", op: "append", path: queued, allowed: [] },
    { label: "revoke queue create", op: "create", path: c.REVOKE_DIR, allowed: [] },
    { label: "spool list", op: "list", path: c.SPOOL_DIR, allowed: [C, S] },
    { label: "spool create", op: "create", path: c.SPOOL_DIR, allowed: [C, S] },
    { label: "spool result read", op: "read", path: result, allowed: [C, S] },
    { label: "spool result write", op: "append", path: result, allowed: [S] },
    { label: "CRL read", op: "read", path: path.join(c.CRL_DIR, "crl.pem"), allowed: [C, S, M, N] },
    { label: "CRL dir create", op: "create", path: c.CRL_DIR, allowed: [] },
    { label: "config write", op: "append", path: inst.configPath, allowed: [] },
    { label: "status write", op: "append", path: c.STATUS_FILE, allowed: [] },
    { label: "pid file write", op: "append", path: c.PIDFILE, allowed: [] },
    { label: "run dir create", op: "create", path: path.dirname(c.STATUS_FILE), allowed: [] },
    { label: "console read", op: "read", path: inst.consolePath, allowed: [] },
    { label: "console write", op: "append", path: inst.consolePath, allowed: [] },
    { label: "kernel fd dir list", op: "list", path: `/proc/${s.kernelPid}/fd`, allowed: [] },
    ...kernelSockets.map((p, i) => ({ label: `kernel socket #${i + 1}`, op: "openrw" as Op, path: p, allowed: [] })),
    { label: "kernel environ", op: "read", path: `/proc/${s.kernelPid}/environ`, allowed: [] },
    { label: "kernel mem", op: "read", path: `/proc/${s.kernelPid}/mem`, allowed: [] },
    { label: "signal kernel", op: "signal", path: String(s.kernelPid), allowed: [] },
    ...["spool", "signer", "monitor", "notifier"].flatMap((n) => [
      { label: `${n} socket (fd 3)`, op: "openrw" as Op, path: `/proc/${pid(n)}/fd/3`, allowed: [], skip: [svcOf[n]!] },
      { label: `${n} environ`, op: "read" as Op, path: `/proc/${pid(n)}/environ`, allowed: [], skip: [svcOf[n]!] },
      { label: `signal ${n}`, op: "signal" as Op, path: String(pid(n)), allowed: [], skip: [svcOf[n]!] },
    ]),
  ];
  const probe = path.join(DIST, "test/reliability/probe.js");
  const users = [C, S, M, N];
  const outcome: Record<string, string[]> = {};
  for (const u of users) {
    const info = inst.users[u as keyof typeof inst.users];
    const r = spawnSync("/usr/bin/env", ["-i", `PATH=${CLEAN_PATH}`, process.execPath, probe, JSON.stringify(targets.map((x) => ({ op: x.op, target: x.path })))], {
      uid: info.uid,
      gid: info.gid,
      cwd: "/",
      encoding: "utf8",
    });
    t.equal(r.status, 0, `probe as ${u}: ${r.stderr}`);
    outcome[u] = JSON.parse(r.stdout || "[]") as string[];
  }
  fs.rmSync(queued, { force: true });
  fs.rmSync(result, { force: true });
  const w = Math.max(...targets.map((x) => x.label.length));
  const cell = (u: string, i: number): string => {
    const x = targets[i]!;
    if (x.skip?.includes(u)) return "(own)".padEnd(13);
    const got = outcome[u]![i]!;
    const want = x.allowed.includes(u);
    const mark = (got === "ok") === want ? " " : "!";
    return `${got === "ok" ? "ALLOWED" : `denied:${got}`}${mark}`.padEnd(13);
  };
  const lines = [`PERMISSIONS MATRIX (ALLOWED / denied:errno; "!" = differs from the design)`, `${"".padEnd(w)}  ${users.map((u) => u.padEnd(13)).join("")}`];
  targets.forEach((x, i) => lines.push(`${x.label.padEnd(w)}  ${users.map((u) => cell(u, i)).join("")}`));
  for (const l of lines) t.comment(l);
  let forbidden = 0;
  targets.forEach((x, i) => {
    for (const u of users) {
      if (x.skip?.includes(u)) continue;
      const got = outcome[u]![i]!;
      if (x.allowed.includes(u)) t.equal(got, "ok", `${u}: ${x.label} is allowed by the design`);
      else {
        forbidden++;
        t.not(got, "ok", `${u}: ${x.label} must fail`);
      }
    }
  });
  t.comment(`${forbidden} forbidden attempts`);
  await waitAlive(inst);
});
