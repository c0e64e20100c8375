// The signer's file-system calls per certificate, counted with strace on the real signer (the
// test as the kernel), and their order (docs/design.md section 6): newcerts/<SERIAL>.pem created
// once (O_CREAT|O_EXCL, never a temporary file and a rename), the index line written, index.txt
// fdatasynced before the Issued frame leaves, and each newcerts file fsynced once, off the
// hand-out path, within DEFERRED_FLUSH_MS (cadb/newcerts.ts), newcerts/ itself after the files.
// Issue 20 measured what each of these costs; this pins that nothing is added to them. And the
// wake-ups they cost (issue 20, fourth round): everything flushed off the hand-out path (the
// `serial` file, the audit trail, the delivery journal, the newcerts files) is flushed in one
// turn of the signer's main thread (one timer, services/signer/deferred-flush.ts), the small
// fdatasyncs on that thread (a trip through the thread pool cost two wake-ups).
import { spawn, spawnSync } from "node:child_process";
import { randomBytes, createPublicKey } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import { prepareDirectories } from "../../services/common/directories.js";
import { spawnService, type FakeKernel } from "../fixtures/fake-kernel.js";
import { makeCsr, mustOpenssl } from "../fixtures/pki.js";
import { createInstallation } from "../fixtures/server.js";

const CERTIFICATES = 20;
/** DEFERRED_FLUSH_MS (1 s) and a margin for a loaded machine */
const FLUSH_WAIT_MS = 3000;

if (spawnSync("strace", ["-V"]).status !== 0) {
  t.fail("strace is needed (apt-get install strace)");
} else {
  const inst = createInstallation({ prefix: "etca-signer-syscalls" });
  const work = path.join(inst.dir, "work");
  fs.mkdirSync(work, { mode: 0o700 });
  const u = inst.users;
  prepareDirectories(inst.config, { signer: u.SIGNER_USER, spool: u.SPOOL_USER, monitor: u.MONITOR_USER, notifier: u.NOTIFIER_USER, client: u.CLIENT_USER });
  let signer: FakeKernel | undefined;
  t.teardown(async () => {
    signer?.kill();
    await signer?.exited;
    inst.cleanup();
  });

  const der = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  const good = makeCsr(work, "good");
  const csr = der(good.csrPem);
  const publicKey = createPublicKey(mustOpenssl(["req", "-noout", "-pubkey"], good.csrPem)).export({ type: "spki", format: "der" });
  let n = 0;
  let delivered: string | undefined;
  /** One certificate as the kernel gets it: IssueRequest (with the previous one's ConfirmDelivery, in one write), Issued. */
  const issue = async (k: FakeKernel): Promise<string> => {
    const requestId = `req.${randomBytes(6).toString("hex")}${++n}`;
    if (delivered) k.channel.post("confirmDelivery", { serials: [delivered], batch: n });
    const r = await k.channel.request("issueRequest", { requestId, username: `user${n}`, proxyLifetime: 3600, maxCertLifetime: 0, publicKey, csr, deadline: Date.now() + 30_000, clientUid: u.CLIENT_USER.uid, fenceEpoch: 1 }, "issued", 30_000);
    delivered = r.message.serial;
    return r.message.serial;
  };

  t.test("per certificate: what the signer writes and syncs, once each, in this order", async (t) => {
    signer = spawnService("signer", u.SIGNER_USER, inst.config, { env: inst.token.env });
    await signer.next("hello");
    const login = await signer.channel.request("login", { pin: Buffer.from(inst.token.userPin), expectedSerial: inst.token.serial }, "loginResult", 30_000, { secret: true });
    t.ok(login.message.ok, "logged in");
    await issue(signer);

    const caDir = inst.config.CA_DIR;
    const trace = path.join(work, "strace.out");
    const strace = spawn("strace", ["-f", "-qq", "-y", "-s", "100", "-e", "trace=%file,%desc", "-o", trace, "-p", String(signer.child.pid)], { stdio: "ignore" });
    const straceExited = new Promise((r) => strace.on("exit", r));
    // attached once a certificate it issues shows in its output
    for (let i = 0; ; i++) {
      const serial = await issue(signer);
      if (fs.existsSync(trace) && fs.readFileSync(trace, "utf8").includes(`newcerts/${serial}.pem`)) break;
      if (i > 200) throw new Error("strace did not attach");
    }
    const serials: string[] = [];
    for (let i = 0; i < CERTIFICATES; i++) serials.push(await issue(signer));
    await new Promise((r) => setTimeout(r, FLUSH_WAIT_MS));
    strace.kill("SIGINT");
    await straceExited;

    const all = fs.readFileSync(trace, "utf8").split("\n");
    const first = all.findIndex((l) => l.includes(`newcerts/${serials[0]}.pem`));
    const lastIssued = all.findIndex((l) => /\swrite\(3<socket:/.test(l) && l.includes(serials[serials.length - 1]!));
    const window = all.slice(first, lastIssued + 1);
    /** calls on the signer's own files (SoftHSM reads its token files, under tokens/, on every C_Sign) */
    const own = window.filter((l) => !l.includes("/tokens/"));
    const count = (lines: string[], re: RegExp): number => lines.filter((l) => re.test(l)).length;
    const lastIndex = (from: number, to: number, re: RegExp): number => {
      for (let i = Math.min(to, all.length) - 1; i > from; i--) if (re.test(all[i]!)) return i;
      return -1;
    };
    const q = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const newcerts = q(path.join(caDir, "newcerts"));
    const index = q(path.join(caDir, "index.txt"));

    t.equal(serials.length, CERTIFICATES, "every request got its certificate");
    t.ok(first !== -1 && lastIssued > first, "the certificates are in the trace");
    t.equal(count(own, /O_CREAT/), CERTIFICATES, "one file created per certificate (newcerts/<SERIAL>.pem), nothing else");
    t.equal(count(own, new RegExp(`open(at)?\\(.*"${newcerts}/[0-9A-F]+\\.pem", O_WRONLY\\|O_CREAT\\|O_EXCL`)), CERTIFICATES, "each with O_CREAT|O_EXCL");
    t.equal(count(own, /\s(rename|renameat2?|link|linkat|unlink|unlinkat)\(/), count(own, new RegExp(`\\srename(at2?)?\\(.*"${q(path.join(caDir, "serial"))}`)), "no rename, link or unlink but the `serial` file's (deferred, at most once a second)");
    t.ok(count(own, new RegExp(`\\sfdatasync\\(\\d+<${index}>`)) <= CERTIFICATES, "at most one fdatasync of index.txt per certificate");
    t.ok(count(own, /\s(statx|newfstatat|stat|lstat)\(/) <= CERTIFICATES + 4, "about one stat per certificate (has index.txt been replaced?)");

    const outOfOrder: string[] = [];
    for (const serial of serials) {
      const created = all.findIndex((l) => new RegExp(`open(at)?\\(.*"${newcerts}/${serial}\\.pem", O_WRONLY\\|O_CREAT\\|O_EXCL`).test(l));
      const line = all.findIndex((l) => new RegExp(`\\swrite\\(\\d+<${index}>, "V\\\\t\\d{12}Z\\\\t\\\\t${serial}\\\\t`).test(l));
      const handedOut = all.findIndex((l) => /\swrite\(3<socket:/.test(l) && l.includes(serial));
      const synced = lastIndex(line, handedOut, new RegExp(`\\sfdatasync\\(\\d+<${index}>`));
      const fileSyncs = all.map((l, i) => (new RegExp(`\\sfsync\\(\\d+<${newcerts}/${serial}\\.pem>`).test(l) ? i : -1)).filter((i) => i !== -1);
      if (!(created !== -1 && created < line && line < synced && synced < handedOut && fileSyncs.length === 1 && fileSyncs[0]! > handedOut)) {
        outOfOrder.push(`${serial}: created ${created}, index line ${line}, index.txt synced ${synced}, handed out ${handedOut}, fsyncs of the file ${fileSyncs.join(",")}`);
      }
    }
    t.same(outOfOrder, [], "each certificate: newcerts file created, then its index line, then fdatasync(index.txt), then the Issued frame, then (off the hand-out path) one fsync of the newcerts file");
    const lastFileSync = lastIndex(-1, all.length, new RegExp(`\\sfsync\\(\\d+<${newcerts}/[0-9A-F]+\\.pem>`));
    const dirSync = lastIndex(-1, all.length, new RegExp(`\\sfsync\\(\\d+<${newcerts}>`));
    t.ok(dirSync > lastFileSync, "newcerts/ fsynced after its files");

    // the deferred flush after the last certificate: one turn of the main thread (between two of
    // its epoll_pwait calls) renames `serial` and fdatasyncs the audit trail and the journal
    const main = String(signer.child.pid);
    const onMain = (i: number): boolean => all[i]!.startsWith(`${main} `);
    const serialRename = all.findIndex((l, i) => i > lastIssued && new RegExp(`\\srename(at2?)?\\(.*"${q(path.join(caDir, "serial"))}"`).test(l));
    const turnStart = lastIndex(-1, serialRename, new RegExp(`^${main} +epoll_pwait\\(`));
    let turnEnd = all.findIndex((l, i) => i > serialRename && new RegExp(`^${main} +epoll_pwait\\(`).test(l));
    if (turnEnd === -1) turnEnd = all.length;
    const inTurn = (re: RegExp): number => all.slice(turnStart + 1, turnEnd).filter((l) => l.startsWith(`${main} `) && re.test(l)).length;
    t.ok(serialRename !== -1 && onMain(serialRename), "`serial` rewritten (deferred) after the last certificate, on the main thread");
    t.equal(inTurn(new RegExp(`\\sfdatasync\\(\\d+<${q(inst.config.AUDIT_LOG)}>`)), 1, "the audit trail fdatasynced in the same turn");
    t.equal(inTurn(new RegExp(`\\sfdatasync\\(\\d+<${q(path.join(caDir, "delivery.journal"))}>`)), 1, "the delivery journal fdatasynced in the same turn, on the main thread");
  });
}
