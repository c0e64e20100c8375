// A bare machine: every configured directory and its parents missing. The kernel creates them
// (parents root 0755, whatever its umask) and every service can work in its own; a parent that
// a service user cannot search stops the start with one line naming the directory and the user.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, createInstallation, makeBaseDir, runClient, runCommand, startReady } from "../fixtures/server.js";
import { calloutInput, makeCsr } from "../fixtures/pki.js";

if (process.getuid?.() !== 0) {
  t.fail("this test needs root (it starts the kernel, which creates directories for the service users)");
} else {
  t.test("every directory and its parents missing: created usable, a certificate is issued", async (t) => {
    const bare = makeBaseDir("etca-bare");
    const srv = path.join(bare, "srv");
    const inst = createInstallation({
      prefix: "etca-dirs",
      extraConfig: {
        CA_DIR: path.join(srv, "x/ca"),
        CRL_DIR: path.join(srv, "x/pub/crl"),
        SPOOL_DIR: path.join(srv, "x/spool/request"),
        REVOKE_DIR: path.join(srv, "x/spool/revoke"),
        PIDFILE: path.join(srv, "run/etoken-ca/pid"),
        STATUS_FILE: path.join(srv, "run/etoken-ca/status.json"),
        AUDIT_LOG: path.join(srv, "log/etoken-ca/audit.log"),
        CLIENT_TIMEOUT: "10",
      },
    });
    let server: Awaited<ReturnType<typeof startReady>> | undefined;
    t.teardown(async () => {
      await server?.stop();
      inst.cleanup();
      fs.rmSync(bare, { recursive: true, force: true });
    });
    t.notOk(fs.existsSync(srv), "nothing exists below the base directory");
    server = await startReady(inst);
    for (const parent of ["srv", "srv/x", "srv/x/pub", "srv/x/spool", "srv/run", "srv/run/etoken-ca"]) {
      const st = fs.statSync(path.join(bare, parent));
      t.equal((st.mode & 0o7777).toString(8), "755", `${parent}: mode 0755`);
      t.equal(st.uid, 0, `${parent}: owned by root`);
    }
    const work = fs.mkdtempSync(path.join(bare, "work-"));
    const r = await runClient(inst, calloutInput({ username: "bare machine", passphrase: "secret words", csrPem: makeCsr(work, "bare").csrPem }), 60_000);
    t.equal(r.code, 0, `the client gets a certificate: spool and signer work in what the kernel made (stderr: ${r.stderr.trim()})`);
    t.match(r.stdout, /-----BEGIN CERTIFICATE-----/);
    t.match(fs.readFileSync(path.join(srv, "x/ca/index.txt"), "utf8"), /\/CN=bare machine\n/, "recorded in the CA database");
  });

  t.test("a parent a service user cannot search: refused, naming the directory and the user", async (t) => {
    const base = makeBaseDir("etca-locked");
    const locked = path.join(base, "locked");
    fs.mkdirSync(locked, { mode: 0o700 });
    fs.chmodSync(locked, 0o700);
    const inst = createInstallation({ prefix: "etca-dirs-locked", extraConfig: { SPOOL_DIR: path.join(locked, "spool/request") } });
    t.teardown(() => {
      inst.cleanup();
      fs.rmSync(base, { recursive: true, force: true });
    });
    const r = runCommand(process.execPath, [BIN.server, "--config", inst.configPath]);
    t.not(r.code, 0, "the server does not start");
    const spoolUser = inst.config.SPOOL_USER;
    t.match(r.stderr, new RegExp(`SPOOL_DIR=${locked}/spool/request: SPOOL_USER=${spoolUser} cannot reach it: ${locked} \\(mode 0700, uid 0, gid 0\\) is not searchable for that user; refusing to start`));
    t.equal(r.stderr.trim().split("\n").length, 1, "one line");
    t.notOk(fs.existsSync(inst.config.PIDFILE), "no pid file: nothing was started");
  });
}
