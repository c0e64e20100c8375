// etoken-ca check against a real running server, as an unprivileged user: OK while READY,
// CRITICAL once the token is pulled (SUSPENDED), CRITICAL after the server stopped.
import t from "tap";
import { spawnSync } from "node:child_process";
import { BIN, createInstallation, startReady, waitForState, type RunningServer } from "../fixtures/server.js";
import { removeToken } from "../fixtures/softhsm.js";

const inst = createInstallation({ prefix: "etca-check" });
let server: RunningServer | undefined;
t.teardown(async () => {
  await server?.stop();
  inst.cleanup();
});
const nobody = Number(spawnSync("id", ["-u", "nobody"], { encoding: "utf8" }).stdout.trim());

function check(): { code: number | null; out: string } {
  const r = spawnSync("/usr/bin/env", ["-i", "PATH=/usr/bin:/bin", process.execPath, BIN.ca, "check", "--config", inst.configPath], { encoding: "utf8", uid: nobody, gid: nobody });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

server = await startReady(inst);

t.test("READY: OK with perfdata, as user nobody", async (t) => {
  const r = check();
  t.comment(r.out.trim());
  t.equal(r.code, 0, r.out);
  t.match(r.out, /^ETOKEN-CA OK - READY, token present, CRL #\d+ \| 'issued'=0c;;;0 'failed'=0c;;;0 'rejected'=0c;;;0 'fence_revoked'=0c;;;0 'queue_depth'=0;;;0 'status_age'=\d+s;30;60;0 'crl_age'=\d+s;;;0 'crl_next_update'=\d+s;\d+:;\d+:( 'sign_time'=[\d.]+ms;;;0 'sign_time_max'=[\d.]+ms;;;0)?\n$/);
});

t.test("token pulled: CRITICAL, SUSPENDED", async (t) => {
  removeToken(inst.token);
  await waitForState(inst, "SUSPENDED");
  const r = check();
  t.comment(r.out.trim());
  t.equal(r.code, 2, r.out);
  t.match(r.out, /^ETOKEN-CA CRITICAL - SUSPENDED since .*token absent/);
});

t.test("server stopped: CRITICAL, not running", async (t) => {
  await server!.stop();
  server = undefined;
  const r = check();
  t.equal(r.code, 2, r.out);
  t.match(r.out, /^ETOKEN-CA CRITICAL - (server not running|server stopping|no status file)/);
});
