// Every program: --help and -h print the usage on stdout with exit 0, --version exits 0, a usage
// error exits 64 (and only a usage error does); revoke-cert's --reason ignores case.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { BIN } from "../fixtures/server.js";

const PROGRAMS: Record<string, string[]> = {
  "etoken-ca-server": [BIN.server],
  "etoken-ca": [BIN.ca],
  "etoken-ca status": [BIN.ca, "status"],
  "etoken-ca check-config": [BIN.ca, "check-config"],
  "etoken-ca check-db": [BIN.ca, "check-db"],
  "etoken-ca trust-files": [BIN.ca, "trust-files"],
  "revoke-cert": [BIN.revoke],
  "etoken-ca-client": [BIN.client],
};

function run(args: string[]) {
  const r = spawnSync(process.execPath, args, { encoding: "utf8", env: { PATH: "/usr/bin:/bin" }, input: "" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

for (const [name, cmd] of Object.entries(PROGRAMS)) {
  t.test(name, async (t) => {
    for (const flag of ["--help", "-h"]) {
      const r = run([...cmd, flag]);
      t.equal(r.code, 0, `${flag}: exit 0 (${r.stderr})`);
      t.match(r.stdout, /^usage: /, `${flag}: the usage on stdout`);
      t.equal(r.stderr, "", `${flag}: nothing on stderr`);
    }
    const bad = run([...cmd, "--no-such-option"]);
    t.equal(bad.code, 64, `an unknown option is a usage error (${bad.stderr.trim()})`);
  });
}

t.test("etoken-ca check: --help is the usage; every other mistake is the probe's UNKNOWN (3)", async (t) => {
  for (const flag of ["--help", "-h"]) {
    const r = run([BIN.ca, "check", flag]);
    t.equal(r.code, 0, `${flag}: exit 0 (${r.stdout})`);
    t.match(r.stdout, /^usage: etoken-ca check /, `${flag}: the usage on stdout`);
  }
  const bad = run([BIN.ca, "check", "--no-such-option"]);
  t.equal(bad.code, 3);
  t.match(bad.stdout, /^ETOKEN-CA UNKNOWN - unknown option --no-such-option$/m);
});

t.test("--version", async (t) => {
  for (const cmd of [[BIN.server], [BIN.ca], [BIN.revoke], [BIN.client]]) {
    const r = run([...cmd, "--version"]);
    t.equal(r.code, 0, path.basename(cmd[0]!));
    t.match(r.stdout, /^[a-z-]+ \d+\.\d+\.\d+\n$/);
  }
});

t.test("errors that are not usage errors do not exit 64", async (t) => {
  const r = run([BIN.ca, "check-db", "--config", "/nonexistent/etoken-ca.conf"]);
  t.equal(r.code, 1, r.stderr);
});

t.test("revoke-cert --reason in any case", async (t) => {
  const wrongCase = run([BIN.revoke, "--serial", "0B", "--reason", "KEYCOMPROMISE", "--config", "/nonexistent/etoken-ca.conf"]);
  t.notMatch(wrongCase.stderr, /reason/, "KEYCOMPROMISE is keyCompromise");
  t.not(wrongCase.code, 64);
  const unknown = run([BIN.revoke, "--serial", "0B", "--reason", "bogus"]);
  t.equal(unknown.code, 64);
  t.match(unknown.stderr, /unknown reason "bogus"/);
});
