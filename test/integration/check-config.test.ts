// `etoken-ca check-config`: everything the server checks at start, with no PIN and nothing
// started or created; exit 0, or one line per problem. The token is looked at without a login.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, configVariant as variant, createInstallation, runCommand } from "../fixtures/server.js";
import { mustOpenssl } from "../fixtures/pki.js";

const inst = createInstallation({ prefix: "etca-check" });
t.teardown(() => inst.cleanup());

function checkConfig(file: string) {
  return runCommand(process.execPath, [BIN.ca, "check-config", "--config", file]);
}

t.test("a good configuration: exit 0, nothing said, nothing created", async (t) => {
  const r = checkConfig(inst.configPath);
  t.equal(r.stdout, "", r.stderr);
  t.equal(r.code, 0);
  t.notOk(fs.existsSync(inst.config.CA_DIR), "CA_DIR not created");
  t.notOk(fs.existsSync(inst.config.SPOOL_DIR), "SPOOL_DIR not created");
});

t.test("several problems: one line each", async (t) => {
  const file = variant("many", inst, { SIGNER_USER: "etca-nosuchuser", CA_CERT: path.join(inst.dir, "missing.pem"), PKCS11_MODULE: "/nonexistent/module.so" });
  const r = checkConfig(file);
  t.equal(r.code, 1);
  const lines = r.stdout.trimEnd().split("\n");
  t.equal(lines.length, 3, r.stdout);
  t.match(lines[0], /user SIGNER_USER=etca-nosuchuser does not exist/);
  t.match(lines[1], `CA_CERT=${path.join(inst.dir, "missing.pem")}: no such file or not readable`);
  t.match(lines[2], "PKCS11_MODULE=/nonexistent/module.so: no such file or not readable");
  t.notMatch(r.stdout + r.stderr, /\n\s+at /, "no stack trace");
});

t.test("a directory that would let the wrong users in", async (t) => {
  const spool = path.join(inst.dir, "spool-open");
  fs.mkdirSync(spool, { mode: 0o777 });
  fs.chmodSync(spool, 0o777);
  const r = checkConfig(variant("dirs", inst, { SPOOL_DIR: spool }));
  t.equal(r.code, 1);
  t.match(r.stdout, new RegExp(`^SPOOL_DIR=${spool}: owned by uid 0, expected uid ${inst.users.SPOOL_USER.uid}`));
  t.equal(r.stdout.trimEnd().split("\n").length, 1);
});

t.test("two broken directories: both named, one line each", async (t) => {
  const spool = path.join(inst.dir, "spool-open2");
  fs.mkdirSync(spool, { mode: 0o777 });
  fs.chmodSync(spool, 0o777);
  const crl = path.join(inst.dir, "crl-is-a-file");
  fs.writeFileSync(crl, "not a directory\n");
  const r = checkConfig(variant("two-dirs", inst, { SPOOL_DIR: spool, CRL_DIR: crl }));
  t.equal(r.code, 1);
  const lines = r.stdout.trimEnd().split("\n");
  t.equal(lines.length, 2, r.stdout);
  t.match(lines[0], `CRL_DIR=${crl}: exists but is not a directory`);
  t.match(lines[1], new RegExp(`^SPOOL_DIR=${spool}: owned by uid 0, expected uid ${inst.users.SPOOL_USER.uid}`));
  t.notMatch(r.stdout + r.stderr, /\n\s+at /, "no stack trace");
});

t.test("directories whose parents do not exist yet are fine (the server makes them), and nothing is created", async (t) => {
  const ca = path.join(inst.dir, "not-yet/deeper/ca");
  const r = checkConfig(variant("parents", inst, { CA_DIR: ca }));
  t.equal(r.stdout, "", r.stderr);
  t.equal(r.code, 0);
  t.notOk(fs.existsSync(path.join(inst.dir, "not-yet")), "nothing created");
});

t.test("a configuration warning is shown, not failed", async (t) => {
  const r = checkConfig(variant("warn", inst, { MAX_LIFETIME: "20d" }));
  t.equal(r.stdout, "", "no problem");
  t.equal(r.code, 0);
  t.match(r.stderr, /^warning: \S+warn.conf: MAX_LIFETIME="1728000s": above 1000000 s, the IGTF ceiling/m);
});

t.test("an unknown key close to a known one", async (t) => {
  const r = checkConfig(variant("typo", inst, {}, "SIGNER_USR=etca-signer\n"));
  t.equal(r.code, 1);
  t.match(r.stdout, /unknown key SIGNER_USR \(did you mean SIGNER_USER\?\)\n$/);
});

t.test("SIGN_TIMEOUT=30d (meaning 'never'): one line with file, line, value and the limit", async (t) => {
  const file = variant("forever", inst, { SIGN_TIMEOUT: "30d" });
  const line = fs.readFileSync(file, "utf8").split("\n").findIndex((l) => l.startsWith("SIGN_TIMEOUT=")) + 1;
  const r = checkConfig(file);
  t.equal(r.code, 1);
  t.equal(r.stdout, `${file}:${line}: SIGN_TIMEOUT="30d": longer than 10m (a signature not finished after this long is a hung token)\n`, r.stderr);
  t.notMatch(r.stdout + r.stderr, /\n\s+at |TimeoutOverflowWarning/, "no stack trace, no timer warning");
});

t.test("KEY names a token that is not there: which it looked for, which are there", async (t) => {
  const r = checkConfig(variant("label", inst, { KEY: "pkcs11:token=no-such-token" }));
  t.equal(r.code, 1);
  t.match(r.stdout, `no token matches KEY (token label "no-such-token"); present: slot index 0`);
  t.match(r.stdout, `label "${inst.token.label}", serial ${inst.token.serial}`);
});

t.test("CA_CERT that is not the token key's certificate, found without a PIN", async (t) => {
  const other = path.join(inst.dir, "other-ca.pem");
  mustOpenssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(inst.dir, "other.key"), "-out", other, "-subj", "/CN=other CA", "-days", "2"]);
  fs.chmodSync(other, 0o644);
  const r = checkConfig(variant("wrongcert", inst, { CA_CERT: other }));
  t.equal(r.code, 1);
  t.match(r.stdout, new RegExp(`^KEY \\(slot index 0\\) on token "${inst.token.label}" serial ${inst.token.serial}: key id [0-9a-f]+ does not match CA_CERT=${other}\\n$`));
});

t.test("KEY names a key id that the token does not have", async (t) => {
  const r = checkConfig(variant("keyid", inst, { KEY: "0:ee" }));
  t.equal(r.code, 1);
  t.match(r.stdout, new RegExp(`^no key matching KEY \\(slot index 0, key id ee\\) on token "${inst.token.label}" serial ${inst.token.serial}; its keys: id [0-9a-f]+ label "[^"]*"\n$`));
});
