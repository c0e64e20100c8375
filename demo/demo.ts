// The one-command demo (driven by demo/run, which installs packages and builds first).
//
// A whole etoken-ca on this machine, everything under one throwaway directory: a SoftHSM2 token
// with a fresh CA key and CA certificate, the service users, etoken-ca-server as root with its
// console on a pseudo-terminal, a MyProxy server in CA mode on 127.0.0.1 whose
// certificate_issuer_program is etoken-ca-client, then one myproxy-logon, a revocation, the CRL,
// `etoken-ca status` and `etoken-ca audit verify`. It reuses the test fixtures (test/fixtures/*), so the demo runs the
// same code paths as the test suite.
//
//   node dist/demo/demo.js [--keep] [--interactive] [--ready-file FILE] [--log-file FILE]
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { myproxyLogon, startMyProxy, writeIssuerWrapper, MYPROXY_USER, type MyProxyServer } from "../test/fixtures/myproxy.js";
import { BIN, CLEAN_PATH, ROOT, countPrompts, createInstallation, readStatus, startServer, waitFor, waitForState, type Installation, type RunningServer } from "../test/fixtures/server.js";
import { TEST_USERS } from "../test/fixtures/users.js";
import { lookupUser } from "../services/common/identity.js";

/** DEMO ONLY. A real CA's PIN is typed by a person on the console and stored nowhere. */
const DEMO_PIN = "demo-only-1234";
const DEMO_USER = "alice email=alice@example.org";
const DEMO_PASSWORD = "demo-password";
const DEMO_DN_FORMAT = "/DC=org/DC=example/O=etoken-ca demo/CN=%s";
/** The second run: %s between RDNs, the user name is a DN suffix (the original etoken-ca's convention). */
const DEMO_SUFFIX_DN_FORMAT = "/DC=org/DC=example%s";
const DEMO_SUFFIX_USER = "/O=etoken-ca demo/CN=Jane Doe email=jane@example.org";
const DEMO_CA_SUBJECT = "/DC=org/DC=example/CN=etoken-ca DEMO CA (not for real use)";
const DEMO_POLICY_OID = "1.3.6.1.4.1.99999.1.1";
const DEMO_CRL_URL = "http://localhost/etoken-ca-demo/crl.der"; // a CRL behind http is DER (RFC 5280 4.2.1.13)

const args = process.argv.slice(2);
const KEEP = args.includes("--keep");
const INTERACTIVE = args.includes("--interactive");
const readyIdx = args.indexOf("--ready-file");
const READY_FILE = readyIdx >= 0 ? args[readyIdx + 1] : undefined;
/** demo/run's log of a --keep demo in the background: removed with everything else at the end. */
const logIdx = args.indexOf("--log-file");
const LOG_FILE = logIdx >= 0 ? args[logIdx + 1] : undefined;

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
function step(title: string): void {
  process.stdout.write(`\n${bold(`== ${title}`)}\n`);
}
function say(s: string): void {
  process.stdout.write(`${s}\n`);
}
function indent(text: string, prefix = "   "): string {
  return text.trimEnd().split("\n").map((l) => prefix + l).join("\n");
}

/** Runs a command, shows it and its output. */
function show(cmd: string[], opts: { env?: Record<string, string>; allowFail?: boolean } = {}): { code: number | null; out: string } {
  say(`   $ ${cmd.map((c) => (/^[A-Za-z0-9_./:=@,+-]+$/.test(c) ? c : `'${c.replace(/'/g, `'\\''`)}'`)).join(" ")}`);
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", env: opts.env ?? { PATH: CLEAN_PATH, LANG: "C" }, timeout: 120_000 });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (out.trim()) say(indent(out));
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd[0]} exited with ${r.status}`);
  return { code: r.status, out };
}

/** The uid and gid of `nobody`: a user in no group of ours, standing in for service users not created yet. */
const NOBODY = "65534";

/** Can `user` (a name, or NOBODY) read `file` (and traverse its parents)? */
function readableBy(user: string, file: string): boolean {
  const groups = user === NOBODY ? "--clear-groups" : "--init-groups";
  return spawnSync("setpriv", ["--reuid", user, "--regid", user, groups, "test", "-r", file], { stdio: "ignore" }).status === 0;
}

interface Running {
  inst?: Installation;
  server?: RunningServer;
  mp?: MyProxyServer;
  logStream?: fs.WriteStream;
  stdinRelay?: () => void;
}
const running: Running = {};
let cleaningUp = false;
/** The server is being restarted on purpose (a new DN_FORMAT): its exit is expected. */
let restarting = false;

async function cleanup(): Promise<void> {
  if (cleaningUp) return;
  cleaningUp = true;
  running.stdinRelay?.();
  step("Cleaning up");
  if (running.mp) {
    say(`   stopping myproxy-server (pid ${running.mp.pid})`);
    await running.mp.stop();
  }
  if (running.server) {
    say(`   stopping etoken-ca-server (pid ${running.server.pid}) and its services`);
    await running.server.stop();
  }
  running.logStream?.end();
  if (running.inst) {
    say(`   removing ${running.inst.dir} (token, CA database, CRLs, MyProxy files)`);
    running.inst.cleanup();
  }
  if (READY_FILE) fs.rmSync(READY_FILE, { force: true });
  if (LOG_FILE) {
    say(`   removing this demo's log ${LOG_FILE}`);
    fs.rmSync(LOG_FILE, { force: true });
  }
  const serviceUsers = [TEST_USERS.SIGNER_USER, TEST_USERS.SPOOL_USER, TEST_USERS.MONITOR_USER, TEST_USERS.NOTIFIER_USER];
  say(`   kept: the Debian packages, node_modules/ and dist/, and the service users ${serviceUsers.join(", ")} (remove them with userdel if you like;`);
  say(`   the client ran as ${MYPROXY_USER}, the user of Debian's myproxy-server)`);
}

function preflight(): void {
  if (process.getuid?.() !== 0) throw new Error("the demo must run as root (it creates users, starts the kernel as root and MyProxy as myproxy)");
  try {
    lookupUser(MYPROXY_USER);
  } catch {
    throw new Error("user myproxy is missing: install Debian's myproxy-server (bash demo/run does that)");
  }
  // Every service and the MyProxy callout run under their own users from this checkout. The
  // service users are created later (step 1), so an unrelated user (nobody) stands in for them.
  const probe = [path.join(ROOT, "dist/client/bin/etoken-ca-client.js"), path.join(ROOT, "dist/services/signer/main.js"), path.join(ROOT, "node_modules/pkcs11js/package.json")];
  for (const user of [MYPROXY_USER, NOBODY]) {
    for (const f of probe) {
      if (!readableBy(user, f)) {
        const who = user === NOBODY ? "the service users (tried as nobody)" : `user ${user}`;
        throw new Error(`${f} is not readable by ${who}: the services run from this checkout as their own users.\n` +
          `   Put the checkout where everyone may read it (e.g. cp -a ${ROOT} /opt/etoken-ca) or make its parent directories traversable (chmod o+x).`);
      }
    }
  }
}

/** A whole installation under one directory (test/fixtures/server.ts), with demo names. */
function createDemoInstallation(): Installation {
  return createInstallation({
    prefix: "etoken-ca-demo",
    token: { label: "etoken-ca demo", userPin: DEMO_PIN, subject: DEMO_CA_SUBJECT },
    extraConfig: {
      DN_FORMAT: DEMO_DN_FORMAT,
      CA_OIDS: DEMO_POLICY_OID,
      CRL_URLS: `URI:${DEMO_CRL_URL}`,
      CLIENT_USER: MYPROXY_USER,
      CLIENT_TIMEOUT: "60",
      MAX_LIFETIME: "12h",
      TOKEN_POLL_INTERVAL: "1",
      LOG_LEVEL: "info",
    },
  });
}

/** True while an interactive prompt is on the screen without its newline. */
let promptOpen = false;

/** Shows what the kernel writes on its console, as it comes. */
function relayConsole(inst: Installation): void {
  let pending = "";
  inst.term.onData((d) => {
    pending += d.replace(/\r/g, "");
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const l of lines) {
      if (!l.trim()) continue;
      if (promptOpen) process.stdout.write("\n");
      promptOpen = false;
      say(`   console| ${l}`);
    }
    // A prompt has no newline: show it at once (interactively, the cursor stays after it).
    if (/: $/.test(pending)) {
      if (promptOpen) process.stdout.write("\n");
      process.stdout.write(`   console| ${pending}${INTERACTIVE ? "" : "\n"}`);
      promptOpen = INTERACTIVE;
      pending = "";
    }
  });
}

async function enterPin(inst: Installation, prompt = 1): Promise<void> {
  await waitForState(inst, "NEED_PIN", 60_000);
  await waitFor("the PIN prompt", () => inst.consoleText().split("PIN for CA token").length > prompt, 30_000);
  if (!INTERACTIVE) {
    say(bold(`   DEMO ONLY: typing the demo PIN "${DEMO_PIN}" into the console pseudo-terminal.`));
    say(`   (A real CA's PIN is typed by a person on the console (CONSOLE, e.g. /dev/tty8) and is stored nowhere;`);
    say(`    CONSOLE_ALLOW_PTY=yes, which makes this possible, is for tests and this demo only.)`);
    await new Promise((r) => setTimeout(r, 100));
    inst.term.write(`${DEMO_PIN}\r`);
    await waitForState(inst, "READY", 30_000);
    return;
  }
  say("");
  say(bold(`   Type the PIN at the prompt below (DEMO ONLY PIN: ${DEMO_PIN}); a wrong PIN is refused and asked again.`));
  const lastLine = inst.consoleText().replace(/\r/g, "").split("\n").pop() ?? "";
  process.stdout.write(`   console| ${lastLine}`);
  promptOpen = true;
  const stdin = process.stdin;
  if (stdin.isTTY) stdin.setRawMode(true);
  const forward = (d: Buffer): void => {
    if (d.includes(0x03)) {
      // Ctrl-C in raw mode
      process.kill(process.pid, "SIGINT");
      return;
    }
    inst.term.write(d.toString("utf8"));
  };
  stdin.on("data", forward);
  stdin.resume();
  running.stdinRelay = () => {
    stdin.off("data", forward);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    running.stdinRelay = undefined;
  };
  await waitForState(inst, "READY", 3_600_000);
  running.stdinRelay?.();
  if (promptOpen) say("");
  promptOpen = false;
}

/**
 * --keep: after the token is pulled and put back the kernel asks for the PIN again; the demo
 * types it (or, with --interactive, relays it from this terminal) as it did at start.
 */
function keepEnteringPin(inst: Installation): void {
  let answered = countPrompts(inst);
  let busy = false;
  inst.term.onData(() => {
    const prompts = countPrompts(inst);
    if (busy || prompts <= answered || !/: $/.test(inst.consoleText())) return;
    answered = prompts;
    busy = true;
    enterPin(inst)
      .catch((err: unknown) => say(`   (no READY after the PIN: ${err instanceof Error ? err.message : String(err)})`))
      .finally(() => {
        busy = false;
        answered = countPrompts(inst);
      });
  });
}

async function main(): Promise<void> {
  preflight();
  say(bold("etoken-ca demo") + ": an online CA behind MyProxy, its key on a (software) PKCS#11 token.");
  say("Everything below runs on this machine, on loopback, under one throwaway directory.");

  step("1. Users, SoftHSM2 token with a fresh CA key and certificate, configuration");
  const inst = createDemoInstallation();
  running.inst = inst;
  // Prometheus metrics for node_exporter's textfile collector (a directory of its own in a real installation)
  fs.appendFileSync(inst.configPath, `METRICS_FILE='${metricsFileOf(inst)}'\n`);
  say(`   directory:     ${inst.dir}`);
  say(`   configuration: ${inst.configPath}`);
  say(`   token:         SoftHSM2 "${inst.token.label}", serial ${inst.token.serial} (${inst.token.confPath})`);
  say(`   CA cert:       ${inst.token.caCertPath}`);
  say(`   users:         kernel root; signer ${TEST_USERS.SIGNER_USER}, spool ${TEST_USERS.SPOOL_USER}, monitor ${TEST_USERS.MONITOR_USER}, notifier ${TEST_USERS.NOTIFIER_USER}; client ${MYPROXY_USER}`);
  say(`   console:       ${inst.consolePath} (a pseudo-terminal standing in for /dev/tty8)`);

  step("2. etoken-ca-server (root) starts its services and asks for the PIN on its console");
  relayConsole(inst);
  const logFile = await startCa(inst, 1);
  const st = readStatus(inst)!;
  say(`   state ${st.state}; services: ${st.services.map((s) => `${s.name} as ${s.user} (pid ${s.pid})`).join(", ")}`);
  await afterStart(inst, logFile);
}

/** Starts etoken-ca-server, relays its log to logFile, types the PIN at its `prompt`th prompt. */
async function startCa(inst: Installation, prompt: number): Promise<string> {
  const server = startServer(inst);
  running.server = server;
  const logFile = path.join(inst.dir, "server.log");
  running.logStream?.end();
  running.logStream = fs.createWriteStream(logFile, { mode: 0o600, flags: "a" });
  for (const l of server.logs()) running.logStream.write(`${l}\n`);
  server.proc.stdout?.on("data", (d: Buffer) => running.logStream?.write(d));
  server.proc.stderr?.on("data", (d: Buffer) => running.logStream?.write(d));
  void server.exited.then(({ code, signal }) => {
    if (!cleaningUp && !restarting) {
      say(`\netoken-ca-server exited unexpectedly (code ${code}, signal ${signal}); its log: ${logFile}`);
      void cleanup().then(() => process.exit(1));
    }
  });
  say(`   pid ${server.pid}, log (JSON lines): ${logFile}`);
  await enterPin(inst, prompt);
  return logFile;
}

/** Logs on through MyProxy as `user` and shows the certificate; returns its file. */
async function logonAndShow(mp: MyProxyServer, user: string, work: string, name: string, logFile: string): Promise<string> {
  const credFile = path.join(work, `${name}-credential.pem`);
  say(`   $ echo ${DEMO_PASSWORD} | X509_CERT_DIR=${mp.trustDir} myproxy-logon -s localhost -p ${mp.port} -l '${user}' -S -t 8 -o ${credFile}`);
  const r = await myproxyLogon({ server: mp, username: user, password: DEMO_PASSWORD, hours: 8, outPath: credFile, trustDir: mp.trustDir });
  if (r.stdout.trim() || r.stderr.trim()) say(indent(`${r.stdout}${r.stderr}`));
  if (r.code !== 0) throw new Error(`myproxy-logon failed (exit ${r.code}); the CA's log is ${logFile}`);
  const certFile = path.join(work, `${name}-cert.pem`);
  show(["openssl", "x509", "-in", credFile, "-out", certFile]);
  show(["openssl", "x509", "-in", certFile, "-noout", "-subject", "-issuer", "-serial", "-dates", "-ext", "subjectAltName,basicConstraints,keyUsage,extendedKeyUsage,certificatePolicies,crlDistributionPoints", "-nameopt", "compat"]);
  show(["openssl", "verify", "-x509_strict", "-CAfile", inst().token.caCertPath, certFile]);
  return certFile;
}

const metricsFileOf = (inst: Installation): string => path.join(inst.dir, "run/etoken_ca.prom");

/** Runs bin/etoken-ca (the operator's command) and shows it. */
function etokenCa(args: string[], opts: { asNobody?: boolean; allowFail?: boolean } = {}): { code: number | null; out: string } {
  const env = { PATH: `${path.dirname(process.execPath)}:${CLEAN_PATH}`, LANG: "C" };
  const cmd = [path.join(ROOT, "bin/etoken-ca"), ...args];
  return show(opts.asNobody ? ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", ...cmd] : cmd, { env, allowFail: opts.allowFail });
}

/** What relying parties install for this CA (<hash>.0, .signing_policy, .namespaces, .crl_url, .info), from etoken-ca trust-files. */
function trustFiles(inst: Installation, dir: string): void {
  etokenCa(["trust-files", "--out", dir, "--config", inst.configPath, "--alias", "etoken-ca-demo", "--url", "http://localhost/etoken-ca-demo/", "--email", "root@localhost", "--status", "experimental"]);
  const policy = fs.readdirSync(dir).find((f) => f.endsWith(".signing_policy") && !fs.lstatSync(path.join(dir, f)).isSymbolicLink() && fs.readFileSync(path.join(dir, f), "utf8").includes("etoken-ca DEMO CA"));
  if (policy) show(["grep", "^cond_subjects", path.join(dir, policy)]);
}

function inst(): Installation {
  return running.inst!;
}

async function afterStart(inst: Installation, logFile: string): Promise<void> {

  step("3. MyProxy server in CA mode on 127.0.0.1, certificate_issuer_program = etoken-ca-client");
  const mpDir = path.join(inst.dir, "myproxy");
  fs.mkdirSync(mpDir, { mode: 0o755 });
  const issuer = writeIssuerWrapper(path.join(mpDir, "etoken-ca-issuer"), [process.execPath, BIN.client, "--config", inst.configPath]);
  const mp = await startMyProxy({ dir: mpDir, issuerProgram: issuer, maxCertLifetimeHours: 12, users: [{ name: DEMO_USER, password: DEMO_PASSWORD }, { name: DEMO_SUFFIX_USER, password: DEMO_PASSWORD }] });
  running.mp = mp;
  say(`   myproxy-server pid ${mp.pid} as ${MYPROXY_USER}, port ${mp.port}, config ${mp.configPath}`);
  say(`   issuer program ${issuer}:`);
  say(indent(fs.readFileSync(issuer, "utf8"), "      "));
  say(`   trust directory (X509_CERT_DIR) ${mp.trustDir}: the host's CA, and ours as relying parties install it:`);
  trustFiles(inst, mp.trustDir);
  say(`   demo MyProxy accounts: "${DEMO_USER}" and "${DEMO_SUFFIX_USER}", password "${DEMO_PASSWORD}" (checked by a PAM service of the demo's own)`);

  step(`4. myproxy-logon fetches a certificate (DN_FORMAT=${DEMO_DN_FORMAT}: the user name is the CN value)`);
  const work = path.join(inst.dir, "user");
  fs.mkdirSync(work, { mode: 0o700 });
  const certFile = await logonAndShow(mp, DEMO_USER, work, "alice", logFile);
  say("   (the credential file also holds the private key myproxy-logon made; the key never left this side)");

  step(`4b. DN_FORMAT=${DEMO_SUFFIX_DN_FORMAT}: the user name is a DN suffix (the original etoken-ca's convention)`);
  say("   %s stands between RDNs, so the user name brings its own RDNs (of USERNAME_RDN_TYPES: DC, O, OU, CN).");
  say("   A new configuration needs a restart of etoken-ca-server, and so the PIN again.");
  restarting = true;
  await running.server!.stop();
  const text = fs.readFileSync(inst.configPath, "utf8").split("\n").map((l) => (l.startsWith("DN_FORMAT=") ? `DN_FORMAT='${DEMO_SUFFIX_DN_FORMAT}'` : l)).join("\n");
  fs.writeFileSync(inst.configPath, text);
  show(["grep", "^DN_FORMAT=", inst.configPath]);
  say("   The namespace relying parties accept for this CA follows DN_FORMAT: the trust files are made again.");
  trustFiles(inst, mp.trustDir);
  await startCa(inst, 2);
  restarting = false;
  await logonAndShow(mp, DEMO_SUFFIX_USER, work, "jane", logFile);

  step("5. The operator revokes it (root): revoke-cert queues it and signals the server, which makes a new CRL");
  const crlBefore = readStatus(inst)?.crl?.number ?? 0;
  show([path.join(ROOT, "bin/revoke-cert"), "--config", inst.configPath, "--cert", certFile, "--reason", "keyCompromise"], { env: { PATH: `${path.dirname(process.execPath)}:${CLEAN_PATH}`, LANG: "C" } });
  await waitFor("a new CRL", () => ((readStatus(inst)?.crl?.number ?? 0) > crlBefore ? true : undefined), 30_000);
  const crl = path.join(inst.config.CRL_DIR, "crl.pem");
  show(["openssl", "crl", "-in", crl, "-noout", "-text"]);
  show(["openssl", "crl", "-in", crl, "-noout", "-verify", "-CAfile", inst.token.caCertPath]);
  show(["openssl", "verify", "-crl_check", "-CAfile", inst.token.caCertPath, "-CRLfile", crl, certFile], { allowFail: true });

  step("6. etoken-ca status, and etoken-ca check: the monitoring probe (Nagios plugin output and exit code)");
  etokenCa(["status", "--config", inst.configPath]);
  say("   As NRPE would run it (user nobody; it reads only STATUS_FILE):");
  const probe = etokenCa(["check", "--config", inst.configPath], { asNobody: true, allowFail: true });
  say(`   exit code ${probe.code} (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)`);
  say("   METRICS_FILE, for node_exporter's textfile collector (some of its lines):");
  // written at most once a second: wait until it shows what the status file shows
  const now = readStatus(inst);
  const caughtUp = (m: string): boolean => m.includes(`etoken_ca_crl_number ${now?.crl?.number}\n`) && m.includes(`etoken_ca_certificates_issued_total ${now?.counters.issued}\n`);
  await waitFor("METRICS_FILE to follow the status", () => (fs.existsSync(metricsFileOf(inst)) && caughtUp(fs.readFileSync(metricsFileOf(inst), "utf8")) ? true : undefined), 10_000);
  show(["grep", "-E", '^etoken_ca_(state\\{state="READY"|token_present|certificates_issued_total|requests_failed_total|request_duration_seconds_count|sign_duration_seconds_count|crl_number|crl_next_update)', metricsFileOf(inst)], { allowFail: true });

  step("7. The audit trail: each line chained to the one before, each CRL the token signs commits to its head");
  const opEnv = { env: { PATH: `${path.dirname(process.execPath)}:${CLEAN_PATH}`, LANG: "C" } };
  show([path.join(ROOT, "bin/etoken-ca"), "audit", "verify", "--config", inst.configPath], opEnv);
  const serial = spawnSync("openssl", ["x509", "-in", certFile, "-noout", "-serial"], { encoding: "utf8" }).stdout.trim().replace(/^serial=/, "");
  show([path.join(ROOT, "bin/etoken-ca"), "audit", "show", "--serial", serial, "--config", inst.configPath], opEnv);
  show([path.join(ROOT, "bin/etoken-ca"), "check-db", "--config", inst.configPath], opEnv);

  if (KEEP) {
    step("Left running (--keep)");
    say(`   configuration:  ${inst.configPath}`);
    say(`   status:         bin/etoken-ca status --config ${inst.configPath}`);
    say(`   another logon:  echo ${DEMO_PASSWORD} | X509_CERT_DIR=${mp.trustDir} myproxy-logon -s localhost -p ${mp.port} -l '${DEMO_SUFFIX_USER}' -S -o /tmp/cred.pem`);
    say(`   revoke:         bin/revoke-cert --config ${inst.configPath} --cert FILE`);
    say(`   CA log:         ${logFile}`);
    const accounts = path.join(mpDir, "pam/passwd");
    say(`   add an account: printf '%s\\t%s\\n' NAME "$(printf %s PASSWORD | sha256sum | cut -d' ' -f1)" >> ${accounts}`);
    say(`                   (the demo's PAM checker reads lines NAME<tab>SHA-256 of the password; passwords of 6 characters or more;`);
    say(`                   with DN_FORMAT=${DEMO_SUFFIX_DN_FORMAT} NAME is a DN suffix, e.g. '/O=etoken-ca demo/CN=Bob')`);
    const parked = path.join(inst.dir, "token/parked");
    say(`   pull the token: mkdir -p ${parked} && mv ${inst.token.tokenDir}/* ${parked}/   (state SUSPENDED; move it back for NEED_PIN)`);
    say(`   the PIN is asked for again after the token comes back: ${INTERACTIVE ? "type it here" : "the demo types it again"}`);
    say(bold(`   stop and clean up: kill ${process.pid}${LOG_FILE ? ` (removes ${LOG_FILE} too)` : ""}`));
    if (READY_FILE) fs.writeFileSync(READY_FILE, `${process.pid}\n`);
    keepEnteringPin(inst);
    await new Promise<void>(() => undefined); // until a signal
  }
}

let exiting = false;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    if (exiting) return;
    exiting = true;
    say(`\n(${sig})`);
    void cleanup().then(() => process.exit(sig === "SIGTERM" ? 0 : 130));
  });
}

main().then(
  async () => {
    exiting = true;
    await cleanup();
    say(`\n${bold("Demo finished.")}`);
    process.exit(0);
  },
  async (err: unknown) => {
    exiting = true;
    process.stderr.write(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    if (running.inst) {
      const tail = running.server?.logs().slice(-15).join("\n");
      if (tail) process.stderr.write(`last lines of the CA's log:\n${indent(tail)}\n`);
    }
    await cleanup();
    process.exit(1);
  },
);
