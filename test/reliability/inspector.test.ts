// No etoken-ca process opens Node's inspector, whatever signal or environment it gets (issue 14,
// item 1). Node's default: a SIGUSR1 opens an unauthenticated inspector on 127.0.0.1:9229, and
// whoever connects runs code in the process (in the signer: signatures with the logged-in token).
// Each process of a running installation (the kernel and every service) gets SIGUSR1 and SIGUSR2;
// afterwards it owns no listening socket, runs with the same pid, and a certificate still
// issues. The wrappers are run with NODE_OPTIONS asking for an inspector that waits for a
// debugger, and the programs with --inspect on node's own command line.
import t, { type Test } from "tap";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { INSPECT_PORT_NOWHERE } from "../../services/common/service-table.js";
import { calloutInput, makeCsr, verifyCert } from "../fixtures/pki.js";
import { BIN, CLEAN_PATH, createInstallation, ROOT, startReady, waitFor } from "../fixtures/server.js";
import { aliveSnapshot, runClient, sameProcesses, sleep, status, waitAlive } from "./lib.js";

const inst = createInstallation({ prefix: "etca-inspector" });
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const server = await startReady(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

/** Listening TCP sockets (IPv4 and IPv6) owned by `pid`, as "address:port (inode)". */
function listeningSockets(pid: number): string[] {
  const listening = new Map<string, string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "latin1");
    } catch {
      continue; // no IPv6
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === "0A") listening.set(f[9]!, f[1]!); // st 0A = LISTEN
    }
  }
  const owned: string[] = [];
  let fds: string[] = [];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return owned; // gone: the caller checks that it still runs
  }
  for (const fd of fds) {
    let target = "";
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode && listening.has(inode)) owned.push(`${listening.get(inode)} (inode ${inode})`);
  }
  return owned;
}

async function issues(t: Test, name: string): Promise<void> {
  const csr = makeCsr(work, name);
  const r = await runClient(inst, calloutInput({ username: name, passphrase: "inspector-pass", csrPem: csr.csrPem }));
  t.equal(r.code, 0, `a certificate issues: ${r.stderr}`);
  if (r.code === 0) t.ok(verifyCert(inst.token.caCertPath, r.stdout).ok, "and verifies");
}

t.test("SIGUSR1 and SIGUSR2 to the kernel and every service open no inspector", async (t) => {
  const before = await waitAlive(inst);
  const targets: [string, number][] = [["kernel", before.kernelPid], ...Object.entries(before.pids)];
  t.equal(targets.length, 5, "the kernel and four services");
  for (const [name, pid] of targets) t.same(listeningSockets(pid), [], `${name} listens on nothing before`);
  // all the SIGUSR1s first: on today's code a SIGUSR2 ends the kernel, and the services with it
  for (const signal of ["SIGUSR1", "SIGUSR2"] as const) {
    for (const [name, pid] of targets) {
      process.kill(pid, signal);
      // the inspector starts within milliseconds of the signal; look for a while
      let seen: string[] = [];
      for (let i = 0; i < 20 && seen.length === 0; i++) {
        await sleep(50);
        seen = listeningSockets(pid);
      }
      t.same(seen, [], `${name} (pid ${pid}) after ${signal}: no listening socket`);
      t.ok(fs.existsSync(`/proc/${pid}`), `${name} (pid ${pid}) still runs after ${signal}`);
    }
  }
  await sleep(500);
  t.equal(sameProcesses(inst, before), undefined, "the kernel and every service still run with the same pids");
  t.equal(status(inst).state, "READY", "still READY");
  await issues(t, "after-signals");
});

// The supervisor and the wrappers start node with INSPECT_PORT_NOWHERE (process.title hides the
// command line from /proc, so this checks what the flag does).
t.test("the first milliseconds: a SIGUSR1 before no-inspector.ts runs finds no port", async (t) => {
  // a node with that flag and Node's own SIGUSR1 handler (no no-inspector.ts): the signal finds nowhere to listen
  const child = spawn(process.execPath, [INSPECT_PORT_NOWHERE, "-e", "setTimeout(() => {}, 20000)"], { env: { PATH: CLEAN_PATH }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  await sleep(500);
  child.kill("SIGUSR1");
  await waitFor("the inspector's attempt", () => stderr.includes("Starting inspector") || undefined, 10_000);
  t.same(listeningSockets(child.pid!), [], `no listening socket (${stderr.trim().split("\n")[0]})`);
  child.kill("SIGKILL");
});

/** Runs a shell wrapper from bin/ with `env`; a node that waits for a debugger is killed after 20 s. */
function wrapper(program: string, args: string[], env: Record<string, string>, user?: { uid: number; gid: number }) {
  const r = spawnSync(path.join(ROOT, "bin", program), args, { env: { PATH: `${path.dirname(process.execPath)}:${CLEAN_PATH}`, ...env }, encoding: "utf8", timeout: 20_000, ...user });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

t.test("NODE_OPTIONS asking for an inspector is dropped by every wrapper", async (t) => {
  const env = { NODE_OPTIONS: "--inspect-brk=127.0.0.1:0" };
  const status = wrapper("etoken-ca", ["status", "--config", inst.configPath], env);
  t.equal(status.code, 0, `etoken-ca status runs: ${status.stderr}${status.signal ?? ""}`);
  t.match(status.stdout, /READY/);
  t.notMatch(status.stderr, /Debugger listening/, "no inspector");
  for (const program of ["etoken-ca-server", "revoke-cert"]) {
    const r = wrapper(program, ["--help"], env);
    t.equal(r.code, 0, `${program} --help runs: ${r.stderr}${r.signal ?? ""}`);
    t.notMatch(r.stderr, /Debugger listening/, `${program}: no inspector`);
  }
  const csr = makeCsr(work, "wrapped");
  const client = inst.users.CLIENT_USER;
  const input = calloutInput({ username: "wrapped", passphrase: "inspector-pass", csrPem: csr.csrPem });
  const r = spawnSync(path.join(ROOT, "bin/etoken-ca-client"), ["--config", inst.configPath], {
    env: { PATH: `${path.dirname(process.execPath)}:${CLEAN_PATH}`, ...env }, input, encoding: "utf8", timeout: 20_000, uid: client.uid, gid: client.gid, cwd: "/",
  });
  t.equal(r.status, 0, `etoken-ca-client issues: ${r.stderr}${r.signal ?? ""}`);
  t.notMatch(r.stderr, /Debugger listening/, "etoken-ca-client: no inspector");
});

t.test("--inspect on node's command line: the programs refuse to run", async (t) => {
  for (const [what, script, args] of [
    ["etoken-ca", BIN.ca, ["status", "--config", inst.configPath]],
    ["revoke-cert", BIN.revoke, ["--help"]],
    ["etoken-ca-server", BIN.server, ["--help"]],
    ["etoken-ca-client", BIN.client, ["--config", inst.configPath]],
  ] as const) {
    const r = spawnSync(process.execPath, ["--inspect=127.0.0.1:0", script, ...args], { env: { PATH: CLEAN_PATH }, input: "", encoding: "utf8", timeout: 20_000 });
    t.equal(r.status, 78, `${what} exits with 78`);
    t.match(r.stderr, /refusing to run with the Node\.js inspector open/, `${what} says why`);
  }
  await waitFor("the installation still up", () => aliveSnapshot(inst));
  await issues(t, "after-refusals");
});
