// The audit trail through the real server: the signer writes one line per issuance, revocation,
// CRL, login/logout and token event; every CRL the token signs commits to the trail's head;
// `etoken-ca audit verify` and `audit show`, `check-db` cross-checks it against index.txt; a
// restart continues the chain.
import t from "tap";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, createInstallation, nextCrl, pinAgain, runCommand, startReady, waitFor, waitForState } from "../fixtures/server.js";
import { openssl } from "../fixtures/pki.js";
import { readyServer } from "../fixtures/ready-server.js";
import { reinsertToken, removeToken } from "../fixtures/softhsm.js";
import { AUDIT_CHECKPOINT_OID } from "../../services/common/audit/checkpoint.js";

const inst = createInstallation({ prefix: "etca-audit", extraConfig: { CRL_LIFETIME: "7d", CRL_REISSUE_BEFORE: "1d" } });
const ready = await readyServer(t, inst);

const logPath = inst.config.AUDIT_LOG;
const ca = (...args: string[]) => runCommand(process.execPath, [BIN.ca, ...args, "--config", inst.configPath]);
const records = (): Record<string, unknown>[] => fs.readFileSync(logPath, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

const issue = (name: string) => ready.issue(name, { username: `${name} email=${name}@example.org`, passphrase: "a-passphrase-not-to-log" });


let alice: { pem: string; serial: string };

t.test("issuance, revocation and CRLs are in the trail, and every CRL commits to it", async (t) => {
  const first = await nextCrl(inst, 0, 30_000);
  alice = await issue("alice");
  await issue("bob");
  const r = runCommand(process.execPath, [BIN.revoke, "--serial", alice.serial, "--reason", "keyCompromise", "--config", inst.configPath]);
  t.equal(r.code, 0, r.stderr);
  const n = await nextCrl(inst, first);
  await waitFor("the crl line", () => (records().some((x) => x.event === "crl" && x.number === n) ? true : undefined), 10_000);

  const st = fs.statSync(path.dirname(logPath));
  t.equal(st.mode & 0o777, 0o700, "AUDIT_LOG's directory is 0700");
  t.equal(st.uid, inst.users.SIGNER_USER.uid, "and the signer's");
  t.equal(fs.statSync(logPath).mode & 0o777, 0o600);

  const all = records();
  t.match(all[0], { seq: 1, event: "trail-begin", indexLines: 0 });
  t.ok(all.some((x) => x.event === "signer-start"));
  const login = all.find((x) => x.event === "login");
  t.match(login, { tokenSerial: inst.token.serial, keyMatch: /verified with CA_CERT's public key/ });
  const issued = all.find((x) => x.event === "issued" && x.serial === alice.serial);
  const spki = new crypto.X509Certificate(alice.pem).publicKey.export({ type: "spki", format: "der" });
  t.match(issued, {
    subject: /\/CN=alice$/,
    emails: ["alice@example.org"],
    lifetime: Number,
    username: "alice email=alice@example.org",
    clientUid: inst.users.CLIENT_USER.uid,
    requestId: String,
    requestedAt: String,
    keySha256: crypto.createHash("sha256").update(spki).digest("hex"),
  });
  t.match(all.find((x) => x.event === "revoked" && x.serial === alice.serial), { reason: "keyCompromise", by: /^revoke-cert \(revoke queue entry\): rev\./ });
  const text = fs.readFileSync(logPath, "utf8");
  t.notOk(text.includes(inst.token.userPin), "no PIN in the trail");
  t.notOk(text.includes("a-passphrase-not-to-log"), "no passphrase in the trail");

  // the CRL carries the checkpoint (openssl shows the unknown non-critical extension) and still verifies
  const crlText = openssl(["crl", "-in", path.join(inst.config.CRL_DIR, "crl.pem"), "-noout", "-text"]).stdout;
  t.match(crlText, AUDIT_CHECKPOINT_OID);
  const v = openssl(["crl", "-in", path.join(inst.config.CRL_DIR, "crl.pem"), "-noout", "-verify", "-CAfile", inst.token.caCertPath]);
  t.match(v.stdout + v.stderr, /verify OK/);
});

t.test("etoken-ca audit verify, audit show and check-db", async (t) => {
  const v = ca("audit", "verify");
  t.equal(v.code, 0, v.stdout + v.stderr);
  t.match(v.stdout, /^OK\n/);
  t.match(v.stdout, /chain intact/);
  t.match(v.stdout, /checkpoints: [2-9] CRLs signed by the CA key match the trail/);
  const show = ca("audit", "show", "--serial", alice.serial);
  t.equal(show.code, 0, show.stderr);
  const kinds = show.stdout.trim().split("\n").map((l) => l.split(/\s+/)[3]);
  t.same(kinds, ["issued", "revoked", "crl"], "issued, revoked, and the CRL that first carries it");
  t.match(show.stdout, /issued +\/DC=org.*\/CN=alice, lifetime \d+ s until .*, e-mail alice@example.org/);
  const unknown = ca("audit", "show", "--serial", "0123ABCD");
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /serial 0123ABCD is not in the audit trail/);
  const db = ca("check-db");
  t.equal(db.code, 0, db.stdout);
  t.match(db.stdout, /the audit trail's \d+ lines cross-checked/);
  // a changed copy is refused, naming the line
  const copy = path.join(ready.work, "audit-copy.log");
  const lines = fs.readFileSync(logPath, "utf8").split("\n");
  const i = lines.findIndex((l) => l.includes(`"serial":"${alice.serial}"`) && l.includes('"event":"issued"'));
  lines[i] = lines[i]!.replace("alice@example.org", "mallory@example.org");
  fs.writeFileSync(copy, lines.join("\n"));
  const bad = ca("audit", "verify", "--log", copy);
  t.equal(bad.code, 1);
  t.match(bad.stdout, new RegExp(`^BROKEN: 1 problem\\n${copy.replace(/[.]/g, "\\.")}:${i + 2}: line ${i + 2}'s prev .* line ${i + 1} was changed`));
});

t.test("token removal and re-insertion are in the trail; a restart continues the chain", async (t) => {
  removeToken(inst.token);
  await waitForState(inst, "SUSPENDED", 20_000);
  await waitFor("token removed line", () => (records().some((x) => x.event === "token" && x.token === "removed") ? true : undefined), 10_000);
  reinsertToken(inst.token);
  await pinAgain(inst);
  await waitFor("token inserted line", () => (records().some((x) => x.event === "token" && x.token === "inserted") ? true : undefined), 10_000);
  t.ok(records().some((x) => x.event === "logout"), "the logout on removal");
  const before = records().length;
  await ready.server.stop();
  t.match(records().at(-1), { event: "logout", reason: /stop/ }, "the signer's logout at stop");
  ready.server = await startReady(inst);
  await waitFor("login after restart", () => (records().slice(before).some((x) => x.event === "login") ? true : undefined), 20_000);
  const after = records();
  after.forEach((x, i) => t.equal(x.seq, i + 1, `line ${i + 1}: seq continues`));
  t.ok(after.slice(before).some((x) => x.event === "signer-start"));
  const v = ca("audit", "verify");
  t.equal(v.code, 0, v.stdout);
});
