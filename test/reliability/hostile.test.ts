// The hostile-input corpus (test/reliability/corpus, see generate.mjs there) against one whole
// installation in READY: request files written straight into the spool as CLIENT_USER, CSRs,
// MyProxy stdin through the real client, filesystem attacks in the spool, and revoke-queue
// junk. Each case: a clear error (or, where DESIGN §5 says the value is data, a safe
// certificate), nothing else signed, the kernel and every service still running, same pids.
import t, { type Test } from "tap";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { makeCsr, mustOpenssl, publicKeyOfCsr, verifyCert } from "../fixtures/pki.js";
import { createInstallation, startReady, waitFor } from "../fixtures/server.js";
import {
  aliveSnapshot, awaitResult, certFacts, CORPUS, indexLines, indexRows, randomId, runClient, sameProcesses, sleep, status,
  submitRequestFile, substitute, takeLock, waitAlive, writeAs, type Alive,
} from "./lib.js";

interface Case {
  id: string;
  kind: "request" | "csr" | "stdin" | "revoke" | "fs";
  file?: string;
  outcome: "refuse" | "issue-safe" | "not-applied" | "either";
  error?: string;
  check?: { cn?: string; rdns?: number; maxLifetimeS?: number; caFalse?: boolean; noKeyCertSign?: boolean; noSan?: boolean };
  name?: string;
  owner?: "spool" | "client";
  special?: "symlink" | "fifo" | "directory" | "hardlink";
  target?: string;
  attack?: string;
  description?: string;
}

const manifest = JSON.parse(fs.readFileSync(path.join(CORPUS, "manifest.json"), "utf8")) as { cases: Case[] };
const PASSPHRASE = `pass-${Date.now().toString(36)}-hostile`;
const inst = createInstallation({ prefix: "etca-hostile", extraConfig: { MAX_LIFETIME: "12h", CLIENT_TIMEOUT: "15" } });
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const server = await startReady(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

const valid = makeCsr(work, "valid");
const weak = makeCsr(work, "weak1024", { bits: 1024 });
const certPem = mustOpenssl(["req", "-x509", "-key", valid.keyPath, "-subj", "/CN=not a csr", "-days", "1"]);
const keyPem = fs.readFileSync(valid.keyPath, "utf8");
const validPubkey = publicKeyOfCsr(valid.csrPem);
const uid = inst.users.CLIENT_USER.uid;
const gid = inst.users.CLIENT_USER.gid;
const spool = inst.config.SPOOL_DIR;

const placeholders = (): Record<string, string> => {
  const now = Date.now();
  return {
    CSR: valid.csrPem,
    CSR1024: weak.csrPem,
    CERT: certPem,
    KEY: keyPem,
    PASS: PASSPHRASE,
    DEADLINE_PAST: String(now - 60_000),
    DEADLINE_FAR: String(now + 86_400_000),
    DEADLINE: String(now + 15_000),
  };
};

const validRequest = (username: string): Buffer =>
  substitute(Buffer.from(`version=1\nusername=${username}\nproxy_lifetime=3600\nmax_cert_lifetime=0\ndeadline=@DEADLINE@\n\n@CSR@end\n`), placeholders());

const tally = { tried: 0, refused: 0, issuedSafely: 0, notApplied: 0, byKind: {} as Record<string, number> };
let baseline: Alive;
let signedSoFar = indexLines(inst).length;

/** Nothing signed beyond `expectSigned`, every process the same. */
function afterCase(t: Test, id: string, expectSigned: number): void {
  const lines = indexLines(inst).length;
  t.equal(lines, signedSoFar + expectSigned, `${id}: ${expectSigned ? "exactly one certificate" : "nothing"} signed`);
  signedSoFar = lines;
  const dead = sameProcesses(inst, baseline);
  t.notOk(dead, `${id}: kernel and services still running with the same pids${dead ? ` (${dead})` : ""}`);
  if (dead) baseline = aliveSnapshot(inst) ?? baseline;
}

function checkCertificate(t: Test, c: Case, pem: string, pubkey: string | undefined): void {
  const v = verifyCert(inst.token.caCertPath, pem);
  t.ok(v.ok, `${c.id}: the certificate verifies (${v.output.trim()})`);
  const f = certFacts(pem);
  if (pubkey) t.equal(f.pubkey, pubkey, `${c.id}: it certifies the CSR's key`);
  const chk = c.check ?? {};
  if (chk.rdns) t.equal(f.subjectRdns.length, chk.rdns, `${c.id}: subject has ${chk.rdns} RDNs (${f.subjectRdns.join(" | ")})`);
  if (chk.cn) t.equal(f.subjectRdns[0], `CN=${chk.cn.replace(/([,+"\\<>;])/g, "\\$1").replace(/^#/, "\\#")}`, `${c.id}: CN is the username as data`);
  t.match(f.text, /Basic Constraints: critical\n\s+CA:FALSE/, `${c.id}: CA:FALSE whatever the CSR asked`);
  if (chk.noKeyCertSign) t.notMatch(f.text, /Certificate Sign|CRL Sign/, `${c.id}: no keyCertSign/cRLSign`);
  if (chk.noSan) t.notMatch(f.text, /Subject Alternative Name/, `${c.id}: no subjectAltName copied from the CSR`);
  if (chk.maxLifetimeS) t.ok(f.notAfter - Date.now() <= chk.maxLifetimeS * 1000 + 60_000, `${c.id}: lifetime clamped to ${chk.maxLifetimeS} s`);
  t.notMatch(f.text, /Proxy Certificate|1\.3\.6\.1\.5\.5\.7\.1\.14/, `${c.id}: no proxyCertInfo`);
}

function judgeResult(t: Test, c: Case, result: string | undefined, pubkey: string | undefined): void {
  tally.tried++;
  tally.byKind[c.kind] = (tally.byKind[c.kind] ?? 0) + 1;
  if (result === undefined) {
    t.fail(`${c.id}: no result file within 20 s`);
    afterCase(t, c.id, 0);
    return;
  }
  if (c.outcome === "issue-safe" || (c.outcome === "either" && result.startsWith("-----BEGIN CERTIFICATE"))) {
    t.match(result, /^-----BEGIN CERTIFICATE-----\n/, `${c.id}: issued (the value is data)`);
    if (result.startsWith("-----BEGIN CERTIFICATE")) {
      checkCertificate(t, c, result, pubkey);
      tally.issuedSafely++;
    } else t.comment(`${c.id}: got ${JSON.stringify(result.slice(0, 200))}`);
    afterCase(t, c.id, result.startsWith("-----BEGIN CERTIFICATE") ? 1 : 0);
    return;
  }
  const m = /^error=([^\n]*)\n([^\n]*)\n$/.exec(result);
  t.ok(m, `${c.id}: a one-line error result (${JSON.stringify(result.slice(0, 160))})`);
  if (m) {
    t.match(m[1]!, new RegExp(`^(${c.error})$`), `${c.id}: error code ${m[1]} (${m[2]})`);
    t.ok(m[2]!.length > 5 && m[2]!.length <= 300, `${c.id}: a readable message`);
    tally.refused++;
  }
  afterCase(t, c.id, 0);
}

t.before(async () => {
  baseline = await waitAlive(inst);
});

t.test("request files written into the spool", async (t) => {
  for (const c of manifest.cases.filter((x) => x.kind === "request")) {
    const data = substitute(fs.readFileSync(path.join(CORPUS, c.file!)), placeholders());
    const { result } = await submitRequestFile(inst, data);
    judgeResult(t, c, result, validPubkey);
  }
});

t.test("CSRs", async (t) => {
  for (const c of manifest.cases.filter((x) => x.kind === "csr")) {
    const csrText = fs.readFileSync(path.join(CORPUS, c.file!), "utf8");
    const data = substitute(Buffer.from(`version=1\nusername=csr case\nproxy_lifetime=3600\nmax_cert_lifetime=0\ndeadline=@DEADLINE@\n\n${csrText}end\n`), placeholders());
    const { result } = await submitRequestFile(inst, data);
    let pubkey: string | undefined;
    try {
      pubkey = mustOpenssl(["req", "-noout", "-pubkey"], csrText);
    } catch {
      pubkey = undefined;
    }
    judgeResult(t, c, result, pubkey);
  }
});

t.test("MyProxy stdin through the real client", async (t) => {
  const cases = manifest.cases.filter((x) => x.kind === "stdin");
  for (let i = 0; i < cases.length; i += 4) {
    const batch = cases.slice(i, i + 4);
    const runs = await Promise.all(batch.map((c) => runClient(inst, substitute(fs.readFileSync(path.join(CORPUS, c.file!)), placeholders()))));
    const issued = batch.filter((c, j) => c.outcome === "issue-safe" && runs[j]!.code === 0).length;
    batch.forEach((c, j) => {
      const r = runs[j]!;
      tally.tried++;
      tally.byKind[c.kind] = (tally.byKind[c.kind] ?? 0) + 1;
      t.notOk(r.stdout.includes(PASSPHRASE) || r.stderr.includes(PASSPHRASE), `${c.id}: the passphrase is not echoed`);
      if (c.outcome === "issue-safe") {
        t.equal(r.code, 0, `${c.id}: issued (${r.stderr.trim()})`);
        if (r.code === 0) {
          checkCertificate(t, c, r.stdout, validPubkey);
          tally.issuedSafely++;
        }
        return;
      }
      t.equal(r.code, 1, `${c.id}: exit status 1`);
      t.equal(r.stdout, "", `${c.id}: nothing on stdout`);
      t.match(r.stderr, /^etoken-ca-client: [^\n]{5,400}\n$/, `${c.id}: one clear line on stderr`);
      t.match(r.stderr, new RegExp(c.error!), `${c.id}: ${r.stderr.trim()}`);
      if (r.code === 1) tally.refused++;
    });
    afterCase(t, `stdin batch ${i / 4 + 1}`, issued);
  }
});

// ---- filesystem attacks in the spool ------------------------------------------------------------

async function expectNoResultAndLockFreed(t: Test, id: string): Promise<void> {
  await waitFor("the request link to be taken", () => !fs.existsSync(path.join(spool, "request")) || undefined, 10_000).catch(() => undefined);
  t.notOk(fs.existsSync(path.join(spool, "request")), `${id}: the lock was taken away (not left to block every client)`);
}

const rootFile = path.join(inst.dir, "root-owned.txt");
fs.writeFileSync(rootFile, validRequest("root file"), { mode: 0o644 });

async function runAttack(t: Test, c: Case): Promise<string | undefined> {
  const id = randomId();
  const file = path.join(spool, id);
  const extra: string[] = [];
  try {
    switch (c.attack) {
      case "link-to-etc-shadow":
        await takeLock(inst, "/etc/shadow");
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      case "link-dotdot":
        await takeLock(inst, "../../etc/passwd");
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      case "link-to-symlink-to-root-file":
        fs.symlinkSync(rootFile, file);
        break;
      case "link-to-symlink-to-signer-index":
        fs.symlinkSync(path.join(inst.config.CA_DIR, "index.txt"), file);
        break;
      case "hard-link-to-root-file": {
        const copy = path.join(spool, `.root-${id}`);
        fs.copyFileSync(rootFile, copy);
        fs.linkSync(copy, file);
        extra.push(copy);
        break;
      }
      case "hard-link-to-own-request": {
        writeAs(file, validRequest("hard linked"), uid, gid);
        fs.linkSync(file, `${file}.second`);
        extra.push(`${file}.second`);
        break;
      }
      case "fifo":
        spawnSync("mkfifo", ["-m", "0644", file]);
        fs.chownSync(file, uid, gid);
        break;
      case "directory":
        fs.mkdirSync(file, { mode: 0o755 });
        fs.chownSync(file, uid, gid);
        break;
      case "unix-socket": {
        const srv = net.createServer();
        await new Promise<void>((r) => srv.listen(file, r));
        fs.chownSync(file, uid, gid);
        extra.push("");
        await takeLock(inst, id);
        const res = await awaitResult(inst, id);
        srv.close();
        return res;
      }
      case "owned-by-root":
        writeAs(file, validRequest("owned by root"), 0, 0);
        break;
      case "owned-by-spool-user":
        writeAs(file, validRequest("owned by spool"), inst.users.SPOOL_USER.uid, inst.users.SPOOL_USER.gid);
        break;
      case "owned-by-monitor-user":
        writeAs(file, validRequest("owned by monitor"), inst.users.MONITOR_USER.uid, inst.users.MONITOR_USER.gid);
        break;
      case "missing-target":
        break;
      case "request-is-regular-file": {
        // appears whole: the spool may clear it between a write and a chown
        const made = path.join(spool, `.file-${id}`);
        writeAs(made, "req.AAAAAAAAAAAAAAAA", uid, gid);
        fs.renameSync(made, path.join(spool, "request"));
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      }
      case "request-is-directory": {
        const dir = path.join(spool, `.dir-${id}`); // appears whole, as the client would make it
        fs.mkdirSync(dir);
        fs.chownSync(dir, uid, gid);
        fs.renameSync(dir, path.join(spool, "request"));
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      }
      case "request-is-fifo":
        spawnSync("mkfifo", ["-m", "0644", path.join(spool, "request")]);
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      case "link-target-with-newline":
        await takeLock(inst, `${id}\n`);
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      case "link-target-too-long-name":
        await takeLock(inst, `req.${"A".repeat(64)}`);
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      case "link-target-result-file":
        writeAs(`${file}.result`, "-----BEGIN CERTIFICATE-----\n", uid, gid);
        extra.push(`${file}.result`);
        await takeLock(inst, `${id}.result`);
        await expectNoResultAndLockFreed(t, c.id);
        return "none";
      case "swap-race":
      case "swap-to-other-owner-race": {
        const legit = path.join(spool, `.legit-${id}`);
        const evil = path.join(spool, `.evil-${id}`);
        const legitData = validRequest("race legit");
        const evilData = validRequest("race root");
        let stop = false;
        let swaps = 0;
        const swapper = (async () => {
          while (!stop) {
            for (let k = 0; k < 50 && !stop; k++) {
              writeAs(legit, legitData, uid, gid);
              fs.renameSync(legit, file);
              if (c.attack === "swap-race") {
                fs.rmSync(evil, { force: true });
                fs.symlinkSync(rootFile, evil);
              } else writeAs(evil, evilData, 0, 0);
              fs.renameSync(evil, file);
              swaps++;
            }
            await new Promise((r) => setImmediate(r));
          }
        })();
        await takeLock(inst, id);
        const res = await awaitResult(inst, id);
        stop = true;
        await swapper;
        t.comment(`${c.id}: ${swaps} swaps while the spool read the file`);
        if (res?.startsWith("-----BEGIN CERTIFICATE")) {
          const f = certFacts(res);
          t.equal(f.subjectRdns[0], "CN=race legit", `${c.id}: if anything was signed, it is the client's own request`);
          t.equal(f.pubkey, validPubkey, `${c.id}: and the client's own key`);
          return "issued-legit";
        }
        return res;
      }
      case "grow-after-fstat": {
        writeAs(file, validRequest("grower").subarray(0, 200), uid, gid);
        let stop = false;
        const grower = (async () => {
          const fd = fs.openSync(file, "a");
          while (!stop) {
            fs.writeSync(fd, Buffer.alloc(4096, 0x41));
            await new Promise((r) => setImmediate(r));
          }
          fs.closeSync(fd);
        })();
        await sleep(30);
        await takeLock(inst, id);
        const res = await awaitResult(inst, id);
        stop = true;
        await grower;
        return res;
      }
      default:
        t.fail(`unknown attack ${c.attack}`);
        return undefined;
    }
    await takeLock(inst, id);
    return await awaitResult(inst, id);
  } finally {
    fs.rmSync(file, { recursive: true, force: true });
    for (const e of extra) if (e) fs.rmSync(e, { force: true });
  }
}

t.test("filesystem attacks in the spool", async (t) => {
  for (const c of manifest.cases.filter((x) => x.kind === "fs")) {
    const before = status(inst).counters.rejected;
    const res = await runAttack(t, c);
    tally.tried++;
    tally.byKind.fs = (tally.byKind.fs ?? 0) + 1;
    if (res === "none") {
      await waitFor("the refusal counted", () => status(inst).counters.rejected > before || undefined, 5_000).catch(() => undefined);
      t.ok(status(inst).counters.rejected > before, `${c.id}: refused and counted (${c.description ?? ""})`);
      tally.refused++;
      afterCase(t, c.id, 0);
    } else if (res === "issued-legit") {
      tally.issuedSafely++;
      afterCase(t, c.id, 1);
    } else {
      const m = res ? /^error=([^\n]*)\n([^\n]*)\n$/.exec(res) : null;
      t.ok(m, `${c.id}: a one-line error result: ${JSON.stringify(res?.slice(0, 160))}`);
      if (m) {
        t.comment(`${c.id}: ${m[1]}: ${m[2]}`);
        tally.refused++;
      }
      afterCase(t, c.id, 0);
    }
  }
  // after FIFOs, sockets and races the spool must still serve a normal client
  const canary = await runClient(inst, `username=canary\npassphrase=${PASSPHRASE}\nproxy_lifetime=3600\n\n${valid.csrPem}`);
  t.equal(canary.code, 0, `a normal client is still served afterwards (${canary.stderr.trim()})`);
  afterCase(t, "canary", 1);
});

// ---- revoke queue junk -------------------------------------------------------------------------

t.test("revoke queue junk", async (t) => {
  const rows = indexRows(inst).filter((r) => r.status === "V");
  t.ok(rows.length > 0, "there are valid certificates a forged entry could try to revoke");
  const serial = rows[0]!.serial;
  const dir = inst.config.REVOKE_DIR;
  const cases = manifest.cases.filter((x) => x.kind === "revoke");
  const placed: { c: Case; name: string }[] = [];
  let k = 0;
  for (const c of cases) {
    const now = String(Date.now());
    const rand = `${String(k++).padStart(4, "0")}abcdefgh`;
    const name = c.name!.replace("@NOW@", now).replace("@RAND@", rand);
    const file = path.join(dir, name);
    const data = substitute(fs.readFileSync(path.join(CORPUS, c.file!)), { SERIAL: serial, SERIAL_LOWER: serial.toLowerCase(), NOW: now });
    const validEntry = `version=1\nserial=${serial}\nreason=keyCompromise\nqueued_at=${now}\nend\n`;
    switch (c.special) {
      case "symlink":
        fs.symlinkSync(c.target!, file);
        break;
      case "fifo":
        spawnSync("mkfifo", ["-m", "0640", file]);
        break;
      case "directory":
        fs.mkdirSync(file);
        break;
      case "hardlink": {
        const other = path.join(dir, `.${name}.orig`);
        fs.writeFileSync(other, validEntry, { mode: 0o640 });
        fs.linkSync(other, file);
        break;
      }
      default: {
        const owner = c.owner === "spool" ? inst.users.SPOOL_USER : c.owner === "client" ? inst.users.CLIENT_USER : { uid: 0, gid: inst.users.SPOOL_USER.gid };
        writeAs(file, c.owner ? Buffer.from(validEntry) : data, owner.uid, owner.gid, 0o640);
      }
    }
    placed.push({ c, name });
  }
  const crlBefore = status(inst).crl?.number ?? 0;
  process.kill(server.pid, "SIGUSR1");
  await waitFor("the queue processed and a CRL made", () => (status(inst).crl?.number ?? 0) > crlBefore || undefined, 30_000);
  const left = fs.readdirSync(dir);
  for (const { c, name } of placed) {
    tally.tried++;
    tally.byKind.revoke = (tally.byKind.revoke ?? 0) + 1;
    if (c.outcome === "not-applied") {
      t.notOk(left.includes(name), `${c.id}: an unknown serial is reported and dropped from the queue`);
      tally.notApplied++;
    } else {
      t.ok(left.includes(`bad.${name}`) && !left.includes(name), `${c.id}: refused and moved aside as bad.${name}`);
      if (left.includes(`bad.${name}`)) tally.refused++;
    }
  }
  t.ok(fs.readFileSync("/etc/shadow").length > 0 && fs.lstatSync("/etc/shadow").isFile(), "/etc/shadow untouched");
  const revoked = indexRows(inst).filter((r) => r.status === "R");
  t.same(revoked.map((r) => r.serial), [], "no forged entry revoked anything");
  const crl = mustOpenssl(["crl", "-in", path.join(inst.config.CRL_DIR, "crl.pem"), "-noout", "-text"]);
  t.notMatch(crl, new RegExp(serial), "the CRL lists no forged revocation");
  afterCase(t, "revoke queue junk", 0);
});

t.test("a queued revocation takes the kernel's clock as its date, whatever the entry says (issue 14, item 2)", async (t) => {
  const serial = indexRows(inst).find((r) => r.status === "V")!.serial;
  const dir = inst.config.REVOKE_DIR;
  const st = fs.statSync(dir);
  t.same([st.uid, st.mode & 0o777], [0, 0o700], "REVOKE_DIR is root's alone");
  // back-dated to 2001, the way a forged answer to the spool's old revoke-queue read was
  const name = `rev.${Date.now()}.BackDated0000001`;
  writeAs(path.join(dir, name), `version=1\nserial=${serial}\nreason=keyCompromise\nqueued_at=1000000000000\nend\n`, 0, 0, 0o600);
  const started = Date.now();
  const crlBefore = status(inst).crl?.number ?? 0;
  process.kill(server.pid, "SIGUSR1");
  await waitFor("the queue processed and a CRL made", () => (status(inst).crl?.number ?? 0) > crlBefore || undefined, 30_000);
  t.notOk(fs.existsSync(path.join(dir, name)), "the entry was applied and removed by the kernel");
  const crl = mustOpenssl(["crl", "-in", path.join(inst.config.CRL_DIR, "crl.pem"), "-noout", "-text"]);
  const m = new RegExp(`Serial Number: ${serial}\\s+Revocation Date: ([^\\n]+)`).exec(crl);
  t.ok(m, `serial ${serial} is in the CRL`);
  const date = Date.parse(m?.[1] ?? "");
  t.ok(date >= started - 2000, `its revocation date is the kernel's clock (${m?.[1]}), not the entry's 2001`);
  afterCase(t, "back-dated entry", 0);
});

t.test("summary", async (t) => {
  const dataFiles = manifest.cases.filter((c) => c.file).length;
  t.ok(dataFiles >= 100, `${dataFiles} cases are data files under test/reliability/corpus`);
  t.ok(tally.tried >= 200, `${tally.tried} hostile cases tried`);
  const s = status(inst);
  t.comment(`HOSTILE CORPUS: ${tally.tried} cases (${Object.entries(tally.byKind).map(([k, v]) => `${k} ${v}`).join(", ")}); refused ${tally.refused}, issued safely as data ${tally.issuedSafely}, revocations not applied ${tally.notApplied}`);
  t.comment(`kernel ${s.kernelPid} ${s.state}; services ${s.services.map((x) => `${x.name}:${x.pid}(restarts ${x.restarts})`).join(" ")}`);
  t.same(s.services.map((x) => x.restarts), [0, 0, 0, 0], "no service was restarted by any case");
});
