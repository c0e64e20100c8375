// MyProxy for the benchmark: a myproxy-server (Debian's, as user myproxy, daemonized, loopback,
// port picked by the server) with any CA lines, so that the same harness runs MyProxy's own
// built-in CA (certificate_issuer_cert + the pkcs11 engine) and MyProxy with
// certificate_issuer_program = etoken-ca-client. test/fixtures/myproxy.ts always writes a
// certificate_issuer_program line (and MyProxy prefers the program when both are set), so the
// start-up is repeated here with the CA lines left to the caller; trust directory, host
// credentials, logon and the PAM checker are the fixture's (same PAM cost for both servers).
//
// A SoftHSM2 token for MyProxy's built-in CA: a byte copy of the installation's token directory
// (same serial, same key, same PIN) owned by myproxy, with its own softhsm2.conf.
import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { lookupUser } from "../services/common/identity.js";
import { MYPROXY_SERVER, MYPROXY_USER, processAlive, type MyProxyServer, type MyProxyUser, type TrustAndHost } from "../test/fixtures/myproxy.js";
import type { SoftToken } from "../test/fixtures/softhsm.js";

const SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Same checker as the fixture: pam_exec expose_authtok, SHA-256 of the password.
const CHECKER = `#!/bin/sh
pw=$(tr -d '\\000')
want=$(awk -F: '$1 == ENVIRON["PAM_USER"] { print $2; exit }' "$(dirname "$0")/passwd")
got=$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)
[ -n "$want" ] && [ "$got" = "$want" ]
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function readNumber(file: string): number | undefined {
  try {
    const t = fs.readFileSync(file, "utf8").trim();
    return /^\d+$/.test(t) ? Number(t) : undefined;
  } catch {
    return undefined;
  }
}

function pgidOf(pid: number): number | undefined {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return undefined;
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export interface BenchMyProxyOptions {
  /** this server's own directory (made here, 0755) */
  dir: string;
  trust: TrustAndHost;
  users: MyProxyUser[];
  /** CA lines: certificate_issuer_program ... or certificate_issuer_cert ... */
  caLines: string[];
  extraEnv?: Record<string, string>;
}

/** Starts myproxy-server as myproxy with the common lines plus opts.caLines. */
export async function startBenchMyProxy(opts: BenchMyProxyOptions): Promise<MyProxyServer & { serverDir: string }> {
  const dir = path.resolve(opts.dir);
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o755);
  const mp = lookupUser(MYPROXY_USER);
  const pamDir = path.join(dir, "pam");
  fs.mkdirSync(pamDir, { mode: 0o755 });
  fs.chmodSync(pamDir, 0o755);
  const checker = path.join(pamDir, "check-password");
  fs.writeFileSync(checker, CHECKER, { mode: 0o755 });
  fs.chmodSync(checker, 0o755);
  const passwd = path.join(pamDir, "passwd");
  fs.writeFileSync(passwd, opts.users.map((u) => `${u.name}:${crypto.createHash("sha256").update(u.password, "utf8").digest("hex")}\n`).join(""), { mode: 0o640 });
  fs.chownSync(passwd, 0, mp.gid);
  const pamService = `etca-bench-${crypto.randomBytes(6).toString("hex")}`;
  const pamFile = path.join("/etc/pam.d", pamService);
  fs.writeFileSync(pamFile, `# etoken-ca bench (${dir}); removed when the bench's server stops\nauth    required pam_exec.so quiet expose_authtok ${checker}\naccount required pam_permit.so\n`, { mode: 0o644, flag: "wx" });

  let serverPid: number | undefined;
  let pgid: number | undefined;
  const kill = (sig: NodeJS.Signals): void => {
    try {
      if (serverPid !== undefined && processAlive(serverPid)) process.kill(serverPid, sig);
    } catch {
      // gone
    }
    try {
      if (pgid !== undefined && pgid > 1 && pgid !== pgidOf(process.pid)) process.kill(-pgid, sig);
    } catch {
      // gone
    }
  };
  let stopped = false;
  const onExit = (): void => {
    kill("SIGKILL");
    fs.rmSync(pamFile, { force: true });
  };
  process.on("exit", onExit);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    kill("SIGTERM");
    for (let i = 0; i < 100 && serverPid !== undefined && processAlive(serverPid); i++) await sleep(50);
    kill("SIGKILL");
    fs.rmSync(pamFile, { force: true });
    process.off("exit", onExit);
  };

  try {
    const serverDir = path.join(dir, "server");
    const storeDir = path.join(dir, "store");
    for (const d of [serverDir, storeDir]) {
      fs.mkdirSync(d, { recursive: true, mode: 0o700 });
      fs.chownSync(d, mp.uid, mp.gid);
      fs.chmodSync(d, 0o700);
    }
    const hostCert = path.join(serverDir, "hostcert.pem");
    const hostKey = path.join(serverDir, "hostkey.pem");
    fs.copyFileSync(opts.trust.hostCert, hostCert);
    fs.copyFileSync(opts.trust.hostKey, hostKey);
    fs.chownSync(hostCert, mp.uid, mp.gid);
    fs.chownSync(hostKey, mp.uid, mp.gid);
    fs.chmodSync(hostKey, 0o600);
    const configPath = path.join(serverDir, "myproxy-server.config");
    fs.writeFileSync(
      configPath,
      [`authorized_retrievers "*"`, `default_retrievers "*"`, `pam "sufficient"`, `pam_id "${pamService}"`, `max_cert_lifetime 12`, `request_timeout 60`, ...opts.caLines, ""].join("\n"),
      { mode: 0o600 },
    );
    fs.chownSync(configPath, mp.uid, mp.gid);
    const pidFile = path.join(serverDir, "myproxy.pid");
    const portFile = path.join(serverDir, "myproxy.port");
    const env = { PATH: SAFE_PATH, HOME: serverDir, LANG: "C", X509_USER_CERT: hostCert, X509_USER_KEY: hostKey, X509_CERT_DIR: opts.trust.trustDir, ...(opts.extraEnv ?? {}) };
    const launcher = spawn(MYPROXY_SERVER, ["-l", "127.0.0.1", "-p", "0", "-z", portFile, "-c", configPath, "-s", storeDir, "-P", pidFile], {
      uid: mp.uid,
      gid: mp.gid,
      env,
      cwd: "/",
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    launcher.stdout.on("data", (d: Buffer) => (out += d.toString()));
    launcher.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      launcher.once("error", reject);
      launcher.once("close", resolve);
    });
    if (code !== 0) throw new Error(`myproxy-server exited with ${code}: ${out.trim()}`);
    let port: number | undefined;
    for (let i = 0; i < 400; i++) {
      serverPid ??= readNumber(pidFile);
      if (serverPid !== undefined) {
        pgid ??= pgidOf(serverPid);
        if (!processAlive(serverPid)) throw new Error(`myproxy-server (pid ${serverPid}) died after starting (it logs to syslog only): ${out.trim()}`);
      }
      port ??= readNumber(portFile);
      if (serverPid !== undefined && port !== undefined && port > 0 && (await canConnect(port))) break;
      await sleep(50);
    }
    if (serverPid === undefined || port === undefined || !(await canConnect(port))) throw new Error(`myproxy-server did not come up: ${out.trim()}`);
    return { port, pid: serverPid, trustDir: opts.trust.trustDir, configPath, pamService, stop, serverDir };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * A byte copy of `token`'s SoftHSM token directory under `dir` (same serial, key and PIN),
 * owned by myproxy (dirs 0700, files 0600), with a softhsm2.conf pointing at it.
 */
export function copyTokenFor(token: SoftToken, dir: string, owner: { uid: number; gid: number }): { confPath: string; tokenDir: string } {
  const base = path.resolve(dir);
  fs.mkdirSync(base, { recursive: true, mode: 0o755 });
  fs.chmodSync(base, 0o755);
  const tokenDir = path.join(base, "tokens");
  fs.cpSync(token.tokenDir, tokenDir, { recursive: true });
  const walk = (p: string): void => {
    const st = fs.statSync(p);
    fs.chownSync(p, owner.uid, owner.gid);
    fs.chmodSync(p, st.isDirectory() ? 0o700 : 0o600);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(tokenDir);
  const confPath = path.join(base, "softhsm2.conf");
  fs.writeFileSync(confPath, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = true\nlibrary.reset_on_fork = false\n`, { mode: 0o644 });
  return { confPath, tokenDir };
}
