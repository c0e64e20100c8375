import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { lookupUser } from "../../services/common/identity.js";
import { BIN, CLEAN_PATH, makeBaseDir, TEST_DN_FORMAT } from "../../test/fixtures/server.js";
import { addTrustedCa, createTrustAndHost, MYPROXY_LOGON, MYPROXY_SERVER, MYPROXY_USER, myproxyLogon, startMyProxy, writeIssuerWrapper, type MyProxyServer } from "../../test/fixtures/myproxy.js";
import { copyTokenFor } from "../lib/myproxy-ca.js";
import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now, pp } from "../lib/stats.js";
import { hasUser, sharedInstallation, sharedDown, sharedUp } from "../lib/shared-installation.js";

/** The pkcs11 engine of the openssl binary (ENGINESDIR/pkcs11.so). */
function enginePath(): string {
  const out = execFileSync("openssl", ["version", "-e"], { encoding: "utf8" });
  return path.join(/ENGINESDIR: "([^"]+)"/.exec(out)?.[1] ?? "/usr/lib/x86_64-linux-gnu/engines-3", "pkcs11.so");
}

async function secMyProxy(): Promise<void> {
  const N = QUICK ? 15 : 50;
  console.log(`[myproxy] myproxy-logon -Q: MyProxy's built-in CA (pkcs11 engine) vs certificate_issuer_program = etoken-ca-client, ${N} logons each, interleaved with node -e ''`);
  const missing = [MYPROXY_SERVER, MYPROXY_LOGON, enginePath()].filter((f) => !fs.existsSync(f));
  if (missing.length || !hasUser(MYPROXY_USER)) {
    fig("(h4)", "MyProxy logon latency", `not measured: missing ${[...missing, ...(hasUser(MYPROXY_USER) ? [] : [`user ${MYPROXY_USER}`])].join(", ")}`);
    return;
  }
  const s = sharedInstallation();
  if (s.inst.config.CLIENT_USER !== MYPROXY_USER) throw new Error(`CLIENT_USER is ${s.inst.config.CLIENT_USER}, not ${MYPROXY_USER}`);
  await sharedUp(s, "pkcs11", 0);
  const inst = s.inst;
  const mpUser = lookupUser(MYPROXY_USER);
  const base = makeBaseDir("etca-bench-mp");
  const servers: MyProxyServer[] = [];
  try {
    fs.mkdirSync(path.join(base, "pki"), { mode: 0o755 }); // the trust directory below must be reachable for myproxy
    fs.chmodSync(path.join(base, "pki"), 0o755);
    const trust = createTrustAndHost(path.join(base, "pki"));
    addTrustedCa(trust.trustDir, inst.token.caCertPath, "/DC=org/DC=example");
    const user = { name: "bench", password: "bench-Pass-4711" };
    // built-in CA: the token copy, the mapfile and the serial file belong to myproxy
    const hsm = copyTokenFor(inst.token, path.join(base, "hsm"), mpUser);
    const caDir = path.join(base, "builtin-ca");
    fs.mkdirSync(caDir, { mode: 0o700 });
    fs.writeFileSync(path.join(caDir, "grid-mapfile"), `"${TEST_DN_FORMAT.replace("%s", user.name)}" ${user.name}\n`);
    fs.copyFileSync(inst.token.caCertPath, path.join(caDir, "ca.pem"));
    for (const p of [caDir, path.join(caDir, "grid-mapfile"), path.join(caDir, "ca.pem")]) fs.chownSync(p, mpUser.uid, mpUser.gid);
    const keyUri = `pkcs11:serial=${inst.token.serial};id=${inst.token.caKeyId.match(/../g)!.map((b) => `%${b}`).join("")};type=private`;
    const builtin = await startMyProxy({
      dir: path.join(base, "mp-builtin"),
      trust,
      users: [user],
      requestTimeoutSeconds: 60,
      extraEnv: { SOFTHSM2_CONF: hsm.confPath },
      caLines: [
        `certificate_issuer_cert ${path.join(caDir, "ca.pem")}`,
        `certificate_issuer_key "${keyUri}"`,
        `certificate_openssl_engine_id "dynamic"`,
        `certificate_openssl_engine_pre "SO_PATH:${enginePath()}" "ID:pkcs11" "LIST_ADD:1" "LOAD" "MODULE_PATH:${inst.token.modulePath}"`,
        `certificate_openssl_engine_post "PIN:${inst.token.userPin}"`,
        `certificate_mapfile ${path.join(caDir, "grid-mapfile")}`,
        `certificate_serialfile ${path.join(caDir, "serial")}`,
      ],
    });
    servers.push(builtin);
    const issuer = writeIssuerWrapper(path.join(base, "etoken-ca-issuer"), [process.execPath, BIN.client, "--config", inst.configPath]);
    const ours = await startMyProxy({ dir: path.join(base, "mp-etoken-ca"), trust, users: [user], requestTimeoutSeconds: 60, issuerProgram: issuer });
    servers.push(ours);

    const client = path.join(base, "client");
    fs.mkdirSync(client, { mode: 0o700 });
    const logon = async (server: MyProxyServer, out: string): Promise<{ wall: number; code: number; stderr: string }> => {
      fs.rmSync(out, { force: true });
      const a = now();
      const r = await myproxyLogon({ server, username: user.name, password: user.password, hours: 12, csrPath: s.csrPath, outPath: out, trustDir: trust.trustDir, killAfterMs: 60_000 });
      return { wall: now() - a, code: r.code, stderr: r.stderr };
    };
    const nodeBare = (): number => {
      const a = now();
      spawnSync(process.execPath, ["-e", ""], { uid: mpUser.uid, gid: mpUser.gid, cwd: "/", env: { PATH: CLEAN_PATH }, stdio: "ignore" });
      return now() - a;
    };
    const outB = path.join(client, "builtin.pem");
    const outO = path.join(client, "ours.pem");
    // warm-up, and a look at what each CA returned
    for (let i = 0; i < 2; i++) {
      nodeBare();
      const b = await logon(builtin, outB);
      const o = await logon(ours, outO);
      if (i > 0) continue;
      for (const [name, r, file] of [["built-in CA", b, outB], ["etoken-ca", o, outO]] as const) {
        if (r.code !== 0) {
          note(`(h4) ${name}: myproxy-logon failed: ${r.stderr.trim().replace(/\s+/g, " ").slice(0, 300)}`);
          continue;
        }
        const v = spawnSync("openssl", ["verify", "-CAfile", inst.token.caCertPath, file], { encoding: "utf8" });
        const subj = spawnSync("openssl", ["x509", "-noout", "-subject", "-nameopt", "compat", "-in", file], { encoding: "utf8" }).stdout.trim();
        note(`(h4) ${name}: ${subj}, openssl verify with the token's CA certificate: ${v.status === 0 ? "OK" : v.stdout.trim() + v.stderr.trim()}`);
      }
    }
    const tn: number[] = [];
    const tb: number[] = [];
    const to: number[] = [];
    let badB = 0;
    let badO = 0;
    for (let i = 0; i < N; i++) {
      tn.push(nodeBare());
      const pair = i % 2 === 0 ? ([builtin, ours] as const) : ([ours, builtin] as const);
      for (const srv of pair) {
        const r = await logon(srv, srv === builtin ? outB : outO);
        if (srv === builtin) r.code === 0 ? tb.push(r.wall) : badB++;
        else r.code === 0 ? to.push(r.wall) : badO++;
      }
    }
    if (badB || badO) note(`(h4) failed logons: built-in CA ${badB}, etoken-ca ${badO}`);
    const node50 = q(tn, 0.5);
    const b50 = q(tb, 0.5);
    const o50 = q(to, 0.5);
    const limit = b50 + node50 + 10;
    fig("(h4)", `node -e '' as ${MYPROXY_USER} (bare start-up), interleaved, n=${tn.length}`, pp(tn));
    fig("(h4)", `MyProxy built-in CA, pkcs11 engine, same token (copy): myproxy-logon -Q, n=${tb.length}`, tb.length ? pp(tb) : "no logon");
    fig("(h4)", `MyProxy + certificate_issuer_program = etoken-ca-client, n=${to.length}`, to.length ? pp(to) : "no logon", tb.length ? `<= built-in + node + 10 ms = ${ms(limit, 1)}` : "<= built-in + node + 10 ms", tb.length && to.length ? o50 <= limit : undefined);
    if (tb.length && to.length) {
      fig("(h4)", "etoken-ca / built-in p50; (etoken-ca - built-in) / node p50", `${(o50 / b50).toFixed(2)}x; ${((o50 - b50) / node50).toFixed(2)} (+${ms(o50 - b50, 1)} vs node ${ms(node50, 1)}; margin ${ms(limit - o50, 1)})`);
    }
    note(
      "(h4) BENCHMARK ONLY: MyProxy's built-in CA gets the token PIN from myproxy-server.config (certificate_openssl_engine_post \"PIN:...\"), a secret in a configuration file; " +
        "certificate_issuer_key_passphrase did not reach the engine's PIN prompt here (libp11: UI_process failed, key not loaded). The built-in CA logs in once at server start and signs in the forked per-connection child; " +
        "both servers use the same PAM checker (pam_exec) and host credentials, logons alternate between them",
    );
  } finally {
    for (const srv of servers) await srv.stop();
    await sharedDown(s);
    if (process.env.ETCA_BENCH_KEEP) console.log(`  kept ${base}`);
    else fs.rmSync(base, { recursive: true, force: true });
  }
}

export const section: Section = { name: "myproxy", title: "(h4) myproxy-logon -Q latency: MyProxy's built-in CA (pkcs11 engine on a byte copy of the same token) vs certificate_issuer_program = etoken-ca-client, and `node -e ''` in the same run (ETCA_BENCH_KEEP=1 keeps its directory, for debugging)", run: secMyProxy };
