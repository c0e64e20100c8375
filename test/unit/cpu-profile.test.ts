// etoken-ca-server --cpu-prof-dir (root's diagnostics for the bench): only a directory that root
// alone can write is accepted, and each service gets a subdirectory of its own.
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checkCpuProfileDir, cpuProfileFlags } from "../../services/kernel/cpu-profile.js";
import { ensureUser } from "../fixtures/users.js";
import { thrown } from "../fixtures/thrown.js";
import { SecurityError } from "../../services/common/errors.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-cpuprof-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
if (process.getuid?.() !== 0) t.fail("run as root (the checks are about owners)");

t.test("refused: relative, missing, a symlink, group- or other-writable, not root's", async (t) => {
  const open = path.join(work, "open");
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o777);
  const group = path.join(work, "group");
  fs.mkdirSync(group);
  fs.chmodSync(group, 0o775);
  const foreign = path.join(work, "foreign");
  fs.mkdirSync(foreign, { mode: 0o755 });
  const u = ensureUser("etca-spool");
  fs.chownSync(foreign, u.uid, u.gid);
  const good = path.join(work, "good");
  fs.mkdirSync(good, { mode: 0o755 });
  const link = path.join(work, "link");
  fs.symlinkSync(good, link);
  for (const [dir, why] of [
    ["relative/dir", /absolute path/],
    [path.join(work, "missing"), /ENOENT/],
    [link, /not a symbolic link/],
    [open, /owned by root and writable by root only/],
    [group, /owned by root and writable by root only/],
    [foreign, /owned by root and writable by root only/],
  ] as const) {
    const e = thrown(SecurityError, () => checkCpuProfileDir(dir));
    t.match(String(e), why, dir);
    t.match(String(e), /--cpu-prof-dir/, "names the option");
  }
  t.equal(checkCpuProfileDir(good), good);
});

t.test("each service writes into DIR/<service>/, its own (0700), through the two fixed flags", async (t) => {
  const dir = path.join(work, "prof");
  fs.mkdirSync(dir, { mode: 0o755 });
  const u = ensureUser("etca-spool");
  const flags = cpuProfileFlags(dir, "spool", u);
  t.same(flags, ["--cpu-prof", `--cpu-prof-dir=${path.join(dir, "spool")}`]);
  const st = fs.lstatSync(path.join(dir, "spool"));
  t.ok(st.isDirectory());
  t.equal(st.uid, u.uid);
  t.equal(st.mode & 0o777, 0o700);
  // a symlink planted at a service's name is refused, not followed
  fs.symlinkSync("/etc", path.join(dir, "signer"));
  t.match(String(thrown(SecurityError, () => cpuProfileFlags(dir, "signer", u))), /not a symbolic link/);
  t.equal(fs.lstatSync("/etc").uid, 0, "/etc untouched");
});
