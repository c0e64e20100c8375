// The frames a certificate costs the signer, counted with strace on the real server (issue 20,
// third round): every frame is a wake-up of the process it goes to. The signer's delivery
// confirmation has no answer any more (the next Issued says how far the journal has them), and
// it leaves with the next IssueRequest in one write: per certificate the signer reads one batch
// of frames (IssueRequest, with the previous certificate's ConfirmDelivery) and writes two
// (Signed, Issued), where it read two and wrote three. And the price of the held confirmation
// is not a revoked certificate: a signer killed between a delivery and its recording leaves
// that certificate valid (the kernel keeps it in flight and sends it again to the new signer).
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import { randomBytes } from "node:crypto";
import { formatRequestFile, randomName, REQUEST_LINK, resultName } from "../../services/common/spool-protocol.js";
import { createInstallation, readStatus, startReady, waitFor } from "../fixtures/server.js";
import { certField, makeCsr } from "../fixtures/pki.js";

const CERTIFICATES = 10;

const inst = createInstallation({ prefix: "etca-frames" });
const work = path.join(inst.dir, "work");
fs.mkdirSync(work, { mode: 0o755 });
const csr = makeCsr(work, "frames");
let server = await startReady(inst);
t.teardown(async () => {
  await server.stop();
  inst.cleanup();
});

const journal = path.join(inst.config.CA_DIR, "delivery.journal");
const indexStatus = (serial: string): string | undefined =>
  fs
    .readFileSync(path.join(inst.config.CA_DIR, "index.txt"), "utf8")
    .split("\n")
    .map((l) => l.split("\t"))
    .find((f) => f[3] === serial)?.[0];
const signerPid = (): number | undefined => readStatus(inst)?.services.find((s) => s.name === "signer" && s.up)?.pid ?? undefined;
let n = 0;
/**
 * One request as etoken-ca-client makes it, written here (no node start between requests, so the
 * next request follows a delivery within milliseconds, as under load); the certificate's serial.
 */
async function issue(): Promise<string> {
  const dir = inst.config.SPOOL_DIR;
  const id = `req.${randomName(16, randomBytes)}`;
  const file = path.join(dir, id);
  fs.writeFileSync(file, formatRequestFile({ username: `frames${++n}`, proxyLifetime: 3600, maxCertLifetime: 0, deadline: Date.now() + 30_000, csrPem: csr.csrPem }), { mode: 0o644 });
  fs.chownSync(file, inst.users.CLIENT_USER.uid, inst.users.CLIENT_USER.gid);
  await waitFor("the request lock free", () => !fs.existsSync(path.join(dir, REQUEST_LINK)) || undefined, 30_000, 2);
  fs.symlinkSync(id, path.join(dir, REQUEST_LINK));
  const result = path.join(dir, resultName(id));
  await waitFor(`the result of ${id}`, () => fs.existsSync(result) || undefined, 30_000, 2);
  const text = fs.readFileSync(result, "utf8");
  fs.rmSync(result);
  fs.rmSync(file, { force: true });
  if (!text.startsWith("-----BEGIN CERTIFICATE-----")) throw new Error(`no certificate: ${text.slice(0, 200)}`);
  return certField(text, "serial").toUpperCase();
}

t.test("per certificate the signer reads one batch of frames and writes two", async (t) => {
  if (spawnSync("strace", ["-V"]).status !== 0) return t.fail("strace is needed (apt-get install strace)");
  await issue();
  await issue();
  const pid = signerPid()!;
  const out = path.join(work, "signer.strace");
  const strace = spawn("strace", ["-f", "-qq", "-e", "trace=read,write,writev", "-e", "signal=none", "-o", out, "-p", String(pid)], { stdio: "ignore" });
  const exited = new Promise((r) => strace.on("exit", r));
  await waitFor("strace attached", () => fs.existsSync(out) || undefined, 10_000);
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < CERTIFICATES; i++) await issue();
  strace.kill("SIGINT");
  await exited;
  // fd 3 is the socketpair to the kernel; a read that returns 0 or EAGAIN found no frame
  const lines = fs.readFileSync(out, "utf8").split("\n");
  const reads = lines.filter((l) => /\bread\(3, .* = [1-9][0-9]*$/.test(l)).length;
  const writes = lines.filter((l) => /\bwritev?\(3, .* = [1-9][0-9]*$/.test(l)).length;
  t.comment(`${CERTIFICATES} certificates: the signer read frames ${reads} times and wrote ${writes} times on its channel`);
  // one of each to spare: the kernel's ping (every 15 s) and its pong
  t.ok(reads <= CERTIFICATES + 1, `the signer is woken by the kernel about once per certificate (${reads} reads for ${CERTIFICATES}; it was two: the request, then the confirmation)`);
  t.ok(writes <= 2 * CERTIFICATES + 1, `the signer wakes the kernel twice per certificate, Signed and Issued (${writes} writes for ${CERTIFICATES}; it was three: and the confirmation's ack)`);
  t.ok(reads >= CERTIFICATES && writes >= 2 * CERTIFICATES, "strace saw the frames (it was attached)");
});

t.test("a signer killed between a delivery and its recording: the delivered certificate stays valid", async (t) => {
  const pid = signerPid()!;
  const serial = await issue();
  // stopped at once: the confirmation is held by the kernel (up to a second) or unread
  process.kill(pid, "SIGSTOP");
  const recorded = (): boolean => fs.readFileSync(journal, "utf8").split("\n").includes(`D ${serial}`);
  t.notOk(recorded(), `the delivery of ${serial} is not in the journal yet when the signer is killed`);
  process.kill(pid, "SIGKILL");
  const next = await waitFor("a new signer", () => {
    const p = signerPid();
    return p !== undefined && p !== pid ? p : undefined;
  }, 30_000);
  await waitFor("the delivery recorded by the new signer", () => recorded() || undefined, 30_000);
  t.equal(indexStatus(serial), "V", "the new signer did not revoke it when it settled (the kernel listed it in flight)");
  // a later issue confirms the resent batch in its Issued; then a kill leaves nothing to settle
  const after = await issue();
  process.kill(next, "SIGKILL");
  await waitFor("a third signer", () => {
    const p = signerPid();
    return p !== undefined && p !== next && p !== pid ? p : undefined;
  }, 30_000);
  await issue(); // the third signer is logged in and settled
  t.equal(indexStatus(serial), "V", "still valid after another signer start");
  t.equal(indexStatus(after), "V", "the certificate after it too");
  t.notOk(
    server.logs().some((l) => l.includes("never delivered") && l.includes(serial)),
    "no log line revokes it as never delivered",
  );
});

t.test("a kernel stopped right after a delivery sends the held confirmation first: nothing revoked at the next start", async (t) => {
  const serial = await issue();
  const recorded = (): boolean => fs.readFileSync(journal, "utf8").split("\n").includes(`D ${serial}`);
  t.notOk(recorded(), "the kernel still holds the confirmation when it is stopped");
  await server.stop(); // SIGTERM: the held batch leaves before the signer's Shutdown
  t.ok(recorded(), `the stopping signer recorded the delivery of ${serial}`);
  server = await startReady(inst);
  await issue(); // the new signer settled (SettleUndelivered comes before the re-login)
  t.equal(indexStatus(serial), "V", "not revoked at the next start");
});
