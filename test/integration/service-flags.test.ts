// The node flags the supervisor gives each service are the service table's for the configured
// signing backend: with SIGNER_BACKEND=openssl (an `openssl ca` child per certificate) the spool
// and the monitor run without V8's optimising compiler, which with that backend costs ~20 MiB
// and saves nothing measurable (bench (h5): the five processes' peak 316 -> 299 MiB).
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseConfig } from "../../services/common/config.js";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { SERVICE_NAMES, type ServiceName } from "../../services/common/service-table.js";
import type { UserInfo } from "../../services/common/identity.js";
import { Supervisor } from "../../services/kernel/supervisor.js";
import { DIST, makeBaseDir, waitFor, writeConfig } from "../fixtures/server.js";
import { ensureTestUsers, TEST_USERS } from "../fixtures/users.js";

const RECORDER = path.join(DIST, "test/fixtures/exec-argv-recorder.js");

async function flagsUnder(backend: "pkcs11" | "openssl"): Promise<Record<ServiceName, string[]>> {
  const u = ensureTestUsers();
  const users: Record<ServiceName, UserInfo> = { spool: u.SPOOL_USER, signer: u.SIGNER_USER, monitor: u.MONITOR_USER, notifier: u.NOTIFIER_USER };
  const dir = makeBaseDir(`etca-flags-${backend}`);
  const out = path.join(dir, "out");
  fs.mkdirSync(out, { mode: 0o777 });
  fs.chmodSync(out, 0o777);
  const configPath = path.join(dir, "conf");
  writeConfig(configPath, { DN_FORMAT: "/CN=%s", CA_OIDS: "1.3.6.1.4.1.99999.1.1", CRL_URLS: "URI:http://ca.example.org/crl.der", PKCS11_MODULE: "/dev/null", CA_CERT: "/dev/null", SIGNER_BACKEND: backend, ...(backend === "openssl" ? { OPENSSL_CA_CONF: "/dev/null" } : {}), ...TEST_USERS });
  const config = parseConfig(fs.readFileSync(configPath, "utf8"), configPath);
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  const supervisor = new Supervisor(config, users, createLogger("kernel"), {
    startScript: RECORDER,
    scriptArgs: Object.fromEntries(SERVICE_NAMES.map((n) => [n, [out]])),
  });
  supervisor.startAll();
  try {
    await waitFor("every service's flags", () => SERVICE_NAMES.every((n) => fs.existsSync(path.join(out, `${n}.json`))) || undefined, 30_000);
    return Object.fromEntries(SERVICE_NAMES.map((n) => [n, JSON.parse(fs.readFileSync(path.join(out, `${n}.json`), "utf8")) as string[]])) as Record<ServiceName, string[]>;
  } finally {
    await supervisor.stopAll();
    setLogSink(process.stderr);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

t.test("the native backend: the spool, signer and monitor keep the optimising compiler; the notifier runs lite", async (t) => {
  const f = await flagsUnder("pkcs11");
  for (const n of ["spool", "signer", "monitor"] as const) t.notOk(f[n].includes("--lite-mode"), `${n}: ${f[n].join(" ")}`);
  t.ok(f.notifier.includes("--lite-mode"), `notifier: ${f.notifier.join(" ")}`);
  for (const n of SERVICE_NAMES) t.ok(f[n].includes("--max-semi-space-size=2") && f[n].includes("--v8-pool-size=1"), `${n}: the flags every service gets`);
});

t.test("the openssl backend: the spool and monitor run lite too; the signer keeps the compiler (it builds CRLs and reads index.txt)", async (t) => {
  const f = await flagsUnder("openssl");
  for (const n of ["spool", "monitor", "notifier"] as const) t.ok(f[n].includes("--lite-mode"), `${n}: ${f[n].join(" ")}`);
  t.notOk(f.signer.includes("--lite-mode"), `signer: ${f.signer.join(" ")}`);
  for (const n of SERVICE_NAMES) t.ok(f[n].includes("--max-semi-space-size=2") && f[n].includes("--v8-pool-size=1"), `${n}: the flags every service gets`);
});
