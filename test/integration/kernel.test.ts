// The microkernel with its real services: five processes under five identities, restarts
// after kill -9, status, and a clean stop that leaves no process behind.
import t from "tap";
import * as fs from "node:fs";
import { BIN, createInstallation, processTree, procEnviron, procStatus, readStatus, runCommand, startServer, waitFor, waitForState } from "../fixtures/server.js";
import { SERVICE_NAMES } from "../../services/common/service-table.js";

/** A credential in SMTP_URL: only the notifier (which sends the mail) may see it. */
const SMTP_SECRET = "fake-smtp-secret-4711";
const inst = createInstallation({ prefix: "etca-kernel", extraConfig: { SMTP_URL: `smtp://etoken-ca:${SMTP_SECRET}@127.0.0.1:2525` } });
const server = startServer(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

const ALLOWED_ENV = new Set(["PATH", "LANG", "MALLOC_ARENA_MAX", "ETOKEN_CA_SERVICE", "ETOKEN_CA_CONFIG", "ETOKEN_CA_UID", "ETOKEN_CA_GID"]);
const userOf = { spool: "SPOOL_USER", signer: "SIGNER_USER", monitor: "MONITOR_USER", notifier: "NOTIFIER_USER" } as const;

t.test("five processes under five identities", async (t) => {
  const status = await waitForState(inst, "NEED_PIN", 60_000);
  t.equal(status.services.length, 4);
  const tree = processTree(server.pid);
  t.equal(tree.length, 5, `kernel + 4 services (tree: ${tree.join(",")})`);
  const kernelStatus = procStatus(server.pid);
  t.match(kernelStatus.Uid, /^0\s+0\s+0\s+0$/, "kernel runs as root");
  const uids = new Set<number>();
  for (const name of SERVICE_NAMES) {
    const svc = status.services.find((s) => s.name === name)!;
    t.ok(svc.pid && tree.includes(svc.pid), `${name} is a child of the kernel`);
    const expected = inst.users[userOf[name]];
    const st = procStatus(svc.pid!);
    t.equal(st.Uid, `${expected.uid}\t${expected.uid}\t${expected.uid}\t${expected.uid}`, `${name} uid`);
    t.equal(st.Gid, `${expected.gid}\t${expected.gid}\t${expected.gid}\t${expected.gid}`, `${name} gid`);
    t.equal(st.Groups, "", `${name} has no supplementary groups`);
    t.equal(st.CapEff, "0000000000000000", `${name} has no capabilities`);
    uids.add(expected.uid);
    const env = procEnviron(svc.pid!);
    // PKCS11_ENV (the token's variables: SOFTHSM2_CONF, and ETOKEN_SIM_* on the test module) goes to the signer and the monitor only
    const extra = Object.keys(env).filter((k) => !ALLOWED_ENV.has(k) && !(k in inst.token.env && (name === "signer" || name === "monitor")));
    t.same(extra, [], `${name} environment holds only what it was given`);
    t.equal(env.ETOKEN_CA_SERVICE, name);
    if (name === "signer" || name === "monitor") t.equal(env.SOFTHSM2_CONF, inst.token.env.SOFTHSM2_CONF, `${name} gets the module environment`);
    const limits = fs.readFileSync(`/proc/${svc.pid}/limits`, "utf8");
    t.match(limits, /Max core file size\s+0\s+0\s/, `${name}: core dumps disabled`);
    t.match(fs.readFileSync(`/proc/${svc.pid}/cmdline`, "utf8"), new RegExp(`^etoken-ca: ${name}\\b`), `${name} carries its role in its title`);
  }
  t.equal(uids.size, 4, "four distinct service users");
  const r = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /state:\s+NEED_PIN/);
  for (const name of SERVICE_NAMES) t.match(r.stdout, new RegExp(`^${name}\\s+${inst.users[userOf[name]].name}\\s+\\d+\\s+\\S+\\s+0\\s*$`, "m"), `status row for ${name}`);
  const json = JSON.parse(runCommand(process.execPath, [BIN.ca, "status", "--json", "--config", inst.configPath]).stdout);
  t.equal(json.running, true);
  t.equal(json.state, "NEED_PIN");
});

t.test("each service gets only its own configuration", async (t) => {
  const status = await waitForState(inst, "NEED_PIN", 60_000);
  /** Keys a service has no business with (SMTP_URL may carry a credential; PKCS11_* are the token's). */
  const foreign = {
    spool: ["SMTP_URL", "NOTIFY_EMAIL", "PKCS11_ENV", "PKCS11_MODULE", "KEY", "CA_DIR", "REVOKE_DIR", "CONSOLE"],
    signer: ["SMTP_URL", "NOTIFY_EMAIL", "NOTIFY_HOOK", "SPOOL_DIR", "REVOKE_DIR", "CONSOLE"],
    monitor: ["SMTP_URL", "NOTIFY_EMAIL", "CA_DIR", "SPOOL_DIR", "CONSOLE"],
    notifier: ["PKCS11_ENV", "PKCS11_MODULE", "KEY", "CA_DIR", "SPOOL_DIR", "CONSOLE"],
  } as const;
  for (const name of SERVICE_NAMES) {
    const pid = status.services.find((s) => s.name === name)!.pid!;
    const raw = fs.readFileSync(`/proc/${pid}/environ`, "utf8");
    const config = JSON.parse(procEnviron(pid).ETOKEN_CA_CONFIG ?? "{}") as Record<string, unknown>;
    t.ok("LOG_LEVEL" in config, `${name} got a configuration`);
    t.same(foreign[name].filter((k) => k in config), [], `${name}'s ETOKEN_CA_CONFIG holds none of ${foreign[name].join(", ")}`);
    if (name === "notifier") t.match(config.SMTP_URL, SMTP_SECRET, "the notifier gets SMTP_URL");
    else t.notOk(raw.includes(SMTP_SECRET), `the SMTP credential is nowhere in the ${name}'s environment`);
    if (name === "notifier" || name === "spool") t.notOk(raw.includes(inst.token.env.SOFTHSM2_CONF!), `the token's environment is nowhere in the ${name}'s`);
  }
});

t.test("kill -9 of any service: back within seconds, restart counted", async (t) => {
  for (const name of SERVICE_NAMES) {
    const before = readStatus(inst)!.services.find((s) => s.name === name)!;
    process.kill(before.pid!, "SIGKILL");
    const after = await waitFor(`${name} restarted`, () => {
      const s = readStatus(inst)?.services.find((x) => x.name === name);
      return s && s.up && s.pid !== before.pid && s.restarts === before.restarts + 1 ? s : undefined;
    }, 20_000);
    t.ok(after.pid, `${name} has a new pid`);
    t.match(after.lastError ?? "", /SIGKILL/, `${name}: last error says how it died`);
  }
  const r = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  for (const name of SERVICE_NAMES) t.match(r.stdout, new RegExp(`^${name}\\s+\\S+\\s+\\d+\\s+\\S+\\s+1\\s`, "m"), `etoken-ca status shows one restart for ${name}`);
  t.ok(server.logs().some((l) => l.includes('"msg":"service died"')), "deaths are logged");
});

t.test("SIGTERM: every process of the tree is gone", async (t) => {
  const tree = processTree(server.pid);
  t.ok(tree.length >= 5);
  process.kill(server.pid, "SIGTERM");
  const exit = await server.exited;
  t.equal(exit.code, 0, "clean exit");
  await waitFor("all processes gone", () => tree.every((p) => !fs.existsSync(`/proc/${p}`)), 10_000);
  t.ok(tree.every((p) => !fs.existsSync(`/proc/${p}`)), "no process left");
  t.notOk(fs.existsSync(inst.config.PIDFILE), "pid file removed");
  const r = runCommand(process.execPath, [BIN.ca, "status", "--config", inst.configPath]);
  t.equal(r.code, 3, "status says not running");
  t.match(r.stdout, /NOT RUNNING/);
});
