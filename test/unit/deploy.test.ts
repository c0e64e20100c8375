// deploy/ and man/: the example configuration and etoken-ca(5) cover every key of CONFIG_SCHEMA,
// the manual pages render, deploy/install works into a staging root (and is idempotent, never
// overwrites the configuration, changes nothing with --dry-run), systemd-analyze accepts the
// installed unit, and the directories agree with the kernel's own DIRECTORY_RULES.
import { pinFlagNames } from "../../services/kernel/kernel.js";
import t, { type Test } from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { CONFIG_SCHEMA, type ConfigKey } from "../../services/common/config-schema.js";
import { KERNEL_NODE_FLAGS } from "../../services/common/service-table.js";
import { parseConfig } from "../../services/common/config.js";
import { DIRECTORY_RULES, type Users } from "../../services/common/directories.js";
import type { UserInfo } from "../../services/common/identity.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const DEPLOY = path.join(REPO, "deploy");
const MAN = path.join(REPO, "man");
const CI = process.env.CI === "true";
const KEYS = Object.keys(CONFIG_SCHEMA) as ConfigKey[];
const DEFAULT_PREFIX = "/usr/local/lib/etoken-ca";
const PROGRAMS = ["etoken-ca-server", "etoken-ca-client", "revoke-cert", "etoken-ca"];

function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Missing tools fail under CI (the pipeline installs them) and skip elsewhere. */
function requireTools(tt: Test, ...tools: string[]): boolean {
  const missing = tools.filter((c) => !have(c));
  if (missing.length === 0) return true;
  if (CI) tt.fail(`${missing.join(", ")} not installed (CI=true: .ci/run must install it)`);
  else tt.pass(`${missing.join(", ")} not installed`, { skip: true });
  return false;
}

function requireRootUser(tt: Test): boolean {
  if (process.getuid?.() === 0) return true;
  if (CI) tt.fail("deploy/install tests need root");
  else tt.pass("deploy/install tests need root", { skip: true });
  return false;
}

/** Text of a roff source with the escapes our pages use undone, whitespace folded. */
function unroff(s: string): string {
  return s
    .replace(/\\f[BIRP]/g, "")
    .replace(/\\-/g, "-")
    .replace(/\\&/g, "")
    .replace(/\\e/g, "\\")
    .replace(/\s+/g, " ");
}

t.test("deploy/etoken-ca.sysconfig documents every key and parses", async (t) => {
  const file = path.join(DEPLOY, "etoken-ca.sysconfig");
  const text = fs.readFileSync(file, "utf8");
  const lines = text.split("\n");
  for (const key of KEYS) {
    const spec = CONFIG_SCHEMA[key];
    t.ok(lines.includes(`# ${key}: ${spec.doc}`), `${key}: a comment "# ${key}: <doc from CONFIG_SCHEMA>"`);
    if (spec.default === undefined) {
      t.ok(lines.includes("# Required (no default)."), `${key} is marked required`);
      t.ok(lines.some((l) => l.startsWith(`${key}=`)), `${key} (required) is set`);
    } else {
      const shown = spec.default === "" ? "empty" : spec.default;
      const i = lines.indexOf(`# ${key}: ${spec.doc}`);
      t.equal(lines[i + 1], `# Default: ${shown}`, `${key}: its default is shown`);
      const setting = lines[i + 2] ?? "";
      t.match(setting, new RegExp(`^#${key}=`), `${key}: a commented-out ${key}=default line`);
    }
  }
  const config = parseConfig(text, file);
  t.equal(config.DN_FORMAT, "/DC=org/DC=example/CN=%s");
  // Uncommenting every default must give a valid file with the same values.
  const uncommented = lines.map((l) => (KEYS.some((k) => l.startsWith(`#${k}=`)) ? l.slice(1) : l)).join("\n");
  const all = parseConfig(uncommented, file);
  for (const key of KEYS) t.same(all[key], config[key], `${key}: the documented default is the real default`);
});

t.test("man/etoken-ca.5 documents every key with its default", async (t) => {
  const src = fs.readFileSync(path.join(MAN, "etoken-ca.5"), "utf8");
  const text = unroff(src);
  for (const key of KEYS) {
    const spec = CONFIG_SCHEMA[key];
    const m = new RegExp(`^\\.BI ${key}= .*\\n([\\s\\S]*?)(?=^\\.(TP|SS|SH)\\b)`, "m").exec(src);
    t.ok(m, `${key} has an entry (.TP / .BI ${key}= type)`);
    if (!m) continue;
    const body = unroff(m[1]!);
    t.ok(body.includes(spec.doc.replace(/\s+/g, " ")), `${key}: the doc text of CONFIG_SCHEMA`);
    t.ok(body.includes(spec.default === undefined ? "Required." : spec.default === "" ? "Default: empty." : `Default: ${spec.default}.`), `${key}: its default`);
  }
  t.ok(text.includes("/etc/sysconfig/etoken-ca"));
});

t.test("manual pages: dated with the release, the console's words for the PIN flags", async (t) => {
  const version = (JSON.parse(fs.readFileSync(path.join(REPO, "package.json"), "utf8")) as { version: string }).version;
  const dates = new Set<string>();
  for (const page of fs.readdirSync(MAN)) {
    const text = fs.readFileSync(path.join(MAN, page), "utf8");
    const th = /^\.TH \S+ [58] "([^"]*)" "etoken-ca ([^"]*)"/m.exec(text);
    t.ok(th, `${page}: a .TH line`);
    if (!th) continue;
    t.match(th[1], /^\d{4}-\d{2}-\d{2}$/, `${page}: an ISO date, not a year`);
    t.equal(th[2], version, `${page}: the version in package.json`);
    dates.add(th[1]!);
    t.notMatch(text, /count low|final try/i, `${page}: the console's words (count-low, final-try)`);
  }
  t.equal(dates.size, 1, "one release date on every page");
  const flags = pinFlagNames(0xff);
  const page = fs.readFileSync(path.join(MAN, "etoken-ca.8"), "utf8");
  for (const f of flags) t.match(page, f, `etoken-ca(8) names the PIN flag ${f}`);
});

t.test("manual pages render without warnings", async (t) => {
  if (!requireTools(t, "groff", "man")) return;
  const pages = fs.readdirSync(MAN).filter((f) => /\.[58]$/.test(f)).sort();
  t.same(pages, ["etoken-ca-client.8", "etoken-ca-server.8", "etoken-ca.5", "etoken-ca.8", "revoke-cert.8"]);
  for (const page of pages) {
    const file = path.join(MAN, page);
    const g = spawnSync("groff", ["-man", "-Tutf8", "-ww", "-z", file], { encoding: "utf8" });
    t.equal(g.status, 0, `${page}: groff exits 0`);
    t.equal(g.stderr, "", `${page}: no groff warnings`);
    const m = spawnSync("man", ["-l", file], { encoding: "utf8", env: { ...process.env, MANPAGER: "cat", PAGER: "cat", MANWIDTH: "80" } });
    t.equal(m.status, 0, `${page}: man -l renders it`);
    t.match(m.stdout, /^NAME$/m, `${page}: has a NAME section`);
    t.match(m.stdout, /^SEE ALSO$/m, `${page}: has a SEE ALSO section`);
  }
});

interface TmpfilesLine { type: string; path: string; mode: string; user: string; group: string }

function tmpfilesLines(): TmpfilesLine[] {
  return fs
    .readFileSync(path.join(DEPLOY, "tmpfiles.d/etoken-ca.conf"), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("#"))
    .map((l) => {
      const [type, p, mode, user, group] = l.trim().split(/\s+/);
      return { type: type!, path: p!, mode: mode!, user: user!, group: group! };
    });
}

t.test("tmpfiles.d, sysusers.d and the unit agree with the schema and the kernel's directory rules", async (t) => {
  const lines = tmpfilesLines();
  const byPath = new Map(lines.map((l) => [l.path, l]));
  const defaults = Object.fromEntries(KEYS.map((k) => [k, CONFIG_SCHEMA[k].default])) as Record<ConfigKey, string>;
  // Fake users whose uids map back to the default names.
  const names = new Map<number, string>([[0, "root"]]);
  const user = (uid: number, name: string): UserInfo => {
    names.set(uid, name);
    return { name, uid, gid: uid, home: "/" };
  };
  const users: Users = {
    signer: user(1001, defaults.SIGNER_USER),
    spool: user(1002, defaults.SPOOL_USER),
    monitor: user(1003, defaults.MONITOR_USER),
    notifier: user(1004, defaults.NOTIFIER_USER),
    client: user(1005, defaults.CLIENT_USER),
  };
  for (const rule of DIRECTORY_RULES) {
    const value = defaults[rule.key];
    const dir = rule.parentOf ? path.dirname(value) : value;
    const line = byPath.get(dir);
    t.ok(line, `${rule.key}: tmpfiles.d creates ${dir}`);
    if (!line) continue;
    t.equal(line.type, "d");
    t.equal(line.mode, rule.mode.toString(8).padStart(4, "0"), `${dir}: mode as the kernel wants it`);
    t.equal(line.user, names.get(rule.owner(users)), `${dir}: owner as the kernel wants it`);
    t.equal(line.group, names.get(rule.group(users)), `${dir}: group as the kernel wants it`);
  }
  const sysusers = fs.readFileSync(path.join(DEPLOY, "sysusers.d/etoken-ca.conf"), "utf8");
  const declared = sysusers.split("\n").filter((l) => l.startsWith("u ")).map((l) => l.split(/\s+/)[1]);
  t.same(declared.sort(), [defaults.SIGNER_USER, defaults.SPOOL_USER, defaults.MONITOR_USER, defaults.NOTIFIER_USER].sort(), "sysusers.d declares the four service users");

  const unit = fs.readFileSync(path.join(DEPLOY, "systemd/etoken-ca-server.service"), "utf8");
  const setting = (name: string): string[] => [...unit.matchAll(new RegExp(`^${name}=(.*)$`, "gm"))].map((m) => m[1]!);
  t.same(setting("ExecStart"), [`${DEFAULT_PREFIX}/bin/etoken-ca-server --config /etc/sysconfig/etoken-ca`]);
  t.same(setting("Restart"), ["on-failure"]);
  t.same(setting("LimitCORE"), ["0"]);
  t.same(setting("StandardInput"), ["null"], "systemd leaves the console to the kernel");
  t.same(setting("TTYPath"), [], "no TTYPath=");
  const writable = setting("ReadWritePaths").join(" ").split(/\s+/).map((p) => p.replace(/^-/, ""));
  for (const key of ["CA_DIR", "CRL_DIR", "SPOOL_DIR", "REVOKE_DIR", "AUDIT_LOG"] as const) {
    t.ok(writable.some((w) => defaults[key].startsWith(w + "/")), `${key} (${defaults[key]}) is below a ReadWritePaths= entry`);
  }
  for (const key of ["PIDFILE", "STATUS_FILE"] as const) {
    t.equal(path.dirname(defaults[key]), `/run/${setting("RuntimeDirectory")[0]}`, `${key} is in the RuntimeDirectory=`);
  }
  const caps = setting("CapabilityBoundingSet")[0]!.split(/\s+/);
  for (const cap of ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL"]) t.ok(caps.includes(cap), `the kernel keeps ${cap}`);
  t.notOk(caps.includes("CAP_SYS_ADMIN"), "no CAP_SYS_ADMIN");
  t.same(setting("SecureBits"), [], "no SecureBits=noroot (it would leave the root kernel without capabilities)");

  const snippet = fs.readFileSync(path.join(DEPLOY, "myproxy-server.config.snippet"), "utf8");
  t.match(snippet, new RegExp(`^certificate_issuer_program ${DEFAULT_PREFIX}/bin/etoken-ca-client$`, "m"));
  t.notMatch(snippet, /^certificate_issuer_cert\b/m, "MyProxy must not sign by itself");
});

/** Where the build puts each program (the client is compiled on its own, as CommonJS). */
const entryOf = (p: string): string => (p === "etoken-ca-client" ? `dist/client/bin/${p}.js` : `dist/bin/${p}.js`);

/** A minimal built project: the real deploy/ and man/, stand-in dist/ and node_modules/. */
function fakeSource(dir: string): string {
  const src = path.join(dir, "src");
  fs.mkdirSync(path.join(src, "dist/bin"), { recursive: true });
  fs.mkdirSync(path.join(src, "dist/client/bin"), { recursive: true });
  fs.mkdirSync(path.join(src, "dist/services/common"), { recursive: true });
  fs.mkdirSync(path.join(src, "dist/native"), { recursive: true });
  fs.mkdirSync(path.join(src, "dist/test"), { recursive: true });
  fs.mkdirSync(path.join(src, "node_modules/devthing"), { recursive: true });
  fs.cpSync(DEPLOY, path.join(src, "deploy"), { recursive: true });
  fs.cpSync(MAN, path.join(src, "man"), { recursive: true });
  for (const p of PROGRAMS) fs.writeFileSync(path.join(src, entryOf(p)), `console.log(${JSON.stringify(p)});\n`);
  fs.writeFileSync(path.join(src, "dist/services/common/x.js"), "export {};\n");
  fs.writeFileSync(path.join(src, "dist/native/pin_login.node"), "stand-in\n");
  fs.writeFileSync(path.join(src, "dist/test/never-installed.test.js"), "\n");
  fs.writeFileSync(path.join(src, "package.json"), JSON.stringify({ name: "etoken-ca", version: "0.0.0", private: true, dependencies: {} }));
  fs.writeFileSync(
    path.join(src, "package-lock.json"),
    JSON.stringify({ name: "etoken-ca", version: "0.0.0", lockfileVersion: 3, requires: true, packages: { "": { name: "etoken-ca", version: "0.0.0" } } }),
  );
  fs.writeFileSync(path.join(src, "node_modules/devthing/package.json"), JSON.stringify({ name: "devthing", version: "1.0.0" }));
  return src;
}

function stagingRoot(dir: string, name: string): string {
  const root = path.join(dir, name);
  fs.mkdirSync(path.join(root, "etc"), { recursive: true });
  // the host's users, myproxy among them (the spool directory's group)
  for (const f of ["passwd", "group"]) fs.copyFileSync(`/etc/${f}`, path.join(root, "etc", f));
  return root;
}

function install(args: string[]): { status: number | null; out: string } {
  const r = spawnSync("bash", [path.join(DEPLOY, "install"), ...args], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

function idsOf(root: string, file: "passwd" | "group"): Map<number, string> {
  const m = new Map<number, string>();
  for (const l of fs.readFileSync(path.join(root, "etc", file), "utf8").split("\n")) {
    const f = l.split(":");
    if (f.length > 3) m.set(Number(f[2]), f[0]!);
  }
  return m;
}

t.test("deploy/install into a staging root", async (t) => {
  if (!requireRootUser(t) || !requireTools(t, "systemd-sysusers", "systemd-tmpfiles", "npm", "node")) return;
  const dir = fs.mkdtempSync("/tmp/etca-install-");
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = fakeSource(dir);
  const root = stagingRoot(dir, "root");
  const node = process.execPath;

  const first = install(["--source", src, "--root", root, "--node", node]);
  t.equal(first.status, 0, "install succeeds", { output: first.out });
  t.match(first.out, /installed the example configuration as \/etc\/sysconfig\/etoken-ca/);
  const P = path.join(root, DEFAULT_PREFIX);
  for (const p of PROGRAMS) {
    const wrapper = path.join(P, "bin", p);
    const lines = fs.readFileSync(wrapper, "utf8").split("\n");
    t.equal(lines[4], "unset NODE_OPTIONS", `${p}: no NODE_OPTIONS (it could ask for an inspector)`);
    const flags = p === "etoken-ca-server" ? ` ${KERNEL_NODE_FLAGS.join(" ")}` : "";
    t.equal(lines[5], `exec '${node}' '--inspect-port=[ff02::1]:9229'${flags} '${DEFAULT_PREFIX}/${entryOf(p)}' "$@"`, `${p}: wrapper with absolute paths, an inspector port no socket can bind`);
    const line2 = p === "etoken-ca-client" ? "ulimit -c 0" : p === "etoken-ca" ? 'export ETOKEN_CA_INVOKED_AS="${0##*/}"' : "";
    t.equal(lines[2], line2, `${p}: core dumps off in the client's wrapper only (the passphrase is on its stdin); etoken-ca knows the name it was called by`);
    t.equal(fs.statSync(wrapper).mode & 0o7777, 0o755);
    t.ok(fs.existsSync(path.join(P, entryOf(p))));
  }
  for (const p of ["etoken-ca-server", "etoken-ca", "revoke-cert"]) {
    t.equal(fs.readlinkSync(path.join(root, "usr/local/sbin", p)), `${DEFAULT_PREFIX}/bin/${p}`, `${p} on the operator's PATH`);
  }
  t.notOk(fs.existsSync(path.join(root, "usr/local/sbin/etoken-ca-client")), "the client is for MyProxy only");
  t.equal(
    fs.readlinkSync(path.join(root, "usr/local/sbin/check_etoken_ca")),
    `${DEFAULT_PREFIX}/bin/etoken-ca`,
    "check_etoken_ca: the monitoring probe (etoken-ca's wrapper passes the name it was called by)",
  );
  t.ok(fs.existsSync(path.join(P, "dist/services/common/x.js")), "services installed");
  t.ok(fs.existsSync(path.join(P, "dist/native/pin_login.node")), "the PIN login addon installed");
  t.notOk(fs.existsSync(path.join(P, "dist/test")), "tests are not installed");
  t.notOk(fs.existsSync(path.join(P, "node_modules/devthing")), "packages outside the production dependencies are pruned");
  if (fs.existsSync(path.join(DEPLOY, "hooks"))) {
    for (const h of fs.readdirSync(path.join(DEPLOY, "hooks"))) {
      t.equal(fs.statSync(path.join(P, "hooks", h)).mode & 0o111, 0o111, `hook ${h} installed, executable`);
    }
  }
  t.ok(fs.existsSync(path.join(P, "share/etoken-ca.sysconfig.example")));
  t.ok(fs.existsSync(path.join(P, "share/myproxy-server.config.snippet")));
  t.equal(fs.statSync(path.join(P, "dist")).uid, 0, "program files belong to root");
  for (const m of ["man5/etoken-ca.5", "man8/etoken-ca.8", "man8/etoken-ca-server.8", "man8/etoken-ca-client.8", "man8/revoke-cert.8"]) {
    t.ok(fs.existsSync(path.join(root, "usr/local/share/man", m)), `${m} installed`);
  }
  const unitFile = path.join(root, "usr/local/lib/systemd/system/etoken-ca-server.service");
  t.equal(fs.readFileSync(unitFile, "utf8"), fs.readFileSync(path.join(DEPLOY, "systemd/etoken-ca-server.service"), "utf8"), "unit installed as is with the default prefix");
  t.ok(fs.existsSync(path.join(root, "usr/local/lib/sysusers.d/etoken-ca.conf")));
  t.ok(fs.existsSync(path.join(root, "usr/local/lib/tmpfiles.d/etoken-ca.conf")));

  // users and directories, made with systemd-sysusers/systemd-tmpfiles --root
  const uids = idsOf(root, "passwd");
  const gids = idsOf(root, "group");
  const userNames = new Set(uids.values());
  for (const u of ["causer", "etoken-spool", "etoken-mon", "etoken-notify"]) t.ok(userNames.has(u), `user ${u} created in the staging root`);
  for (const line of tmpfilesLines()) {
    const st = fs.statSync(path.join(root, line.path));
    t.ok(st.isDirectory(), `${line.path} exists`);
    t.equal((st.mode & 0o7777).toString(8).padStart(4, "0"), line.mode, `${line.path} mode ${line.mode}`);
    t.equal(uids.get(st.uid), line.user, `${line.path} owner ${line.user}`);
    t.equal(gids.get(st.gid), line.group, `${line.path} group ${line.group}`);
  }

  // the configuration: installed when missing, accepted by the parser
  const configFile = path.join(root, "etc/sysconfig/etoken-ca");
  t.equal(fs.readFileSync(configFile, "utf8"), fs.readFileSync(path.join(DEPLOY, "etoken-ca.sysconfig"), "utf8"));
  t.equal(fs.statSync(configFile).mode & 0o777, 0o644, "readable by the MyProxy user");
  parseConfig(fs.readFileSync(configFile, "utf8"), configFile);

  // systemd accepts the installed unit (ExecStart pointed into the staging root so it exists)
  await t.test("systemd-analyze verify accepts the unit", async (t) => {
    if (!requireTools(t, "systemd-analyze")) return;
    const copy = path.join(dir, "etoken-ca-server.service");
    fs.writeFileSync(copy, fs.readFileSync(unitFile, "utf8").replaceAll(DEFAULT_PREFIX, path.join(root, DEFAULT_PREFIX)));
    const r = spawnSync("systemd-analyze", ["verify", "--man=no", copy], { encoding: "utf8" });
    t.equal(r.status, 0, "systemd-analyze verify exits 0");
    t.equal((r.stdout + r.stderr).trim(), "", "and reports nothing (a warning means a setting is ignored)");
    // and the check is real: a broken setting is reported
    const broken = path.join(dir, "broken.service");
    fs.writeFileSync(broken, fs.readFileSync(copy, "utf8").replace("ProtectHome=yes", "ProtectHome=perhaps"));
    const b = spawnSync("systemd-analyze", ["verify", "--man=no", broken], { encoding: "utf8" });
    t.match(b.stdout + b.stderr, /ProtectHome|protect home/i, "a bad value is reported");
  });

  // again: idempotent, and the operator's configuration is kept
  fs.appendFileSync(configFile, "LOG_LEVEL=debug\n");
  const edited = fs.readFileSync(configFile, "utf8");
  const second = install(["--source", src, "--root", root, "--node", node]);
  t.equal(second.status, 0, "second install succeeds", { output: second.out });
  t.match(second.out, /kept the existing \/etc\/sysconfig\/etoken-ca \(never overwritten\)/);
  t.equal(fs.readFileSync(configFile, "utf8"), edited, "the configuration is not overwritten");
  t.notOk(fs.existsSync(path.join(P, "dist.old")) || fs.existsSync(path.join(P, "dist.new")), "no leftovers of the swap");
  t.ok(fs.existsSync(path.join(P, "dist/bin/etoken-ca-server.js")));
});

t.test("deploy/install --prefix rewrites every installed path; --dry-run changes nothing", async (t) => {
  if (!requireRootUser(t) || !requireTools(t, "systemd-sysusers", "systemd-tmpfiles", "node")) return;
  const dir = fs.mkdtempSync("/tmp/etca-install-");
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = fakeSource(dir);

  const dry = stagingRoot(dir, "dry");
  const before = fs.readdirSync(dry, { recursive: true }).sort();
  const d = install(["--source", src, "--root", dry, "--node", process.execPath, "--dry-run"]);
  t.equal(d.status, 0, "dry run succeeds", { output: d.out });
  t.match(d.out, /dry run: nothing is changed/);
  t.match(d.out, /would install the example configuration as \/etc\/sysconfig\/etoken-ca/);
  t.notMatch(d.out, /installed the example|install: done/, "a dry run does not claim to have installed");
  t.match(d.out, /^\+ .*systemd-tmpfiles/m, "it shows the commands");
  t.same(fs.readdirSync(dry, { recursive: true }).sort(), before, "nothing was created");

  const root = stagingRoot(dir, "root");
  const r = install(["--source", src, "--root", root, "--node", process.execPath, "--prefix", "/opt/etoken-ca", "--no-prune"]);
  t.equal(r.status, 0, "install --prefix succeeds", { output: r.out });
  const unit = fs.readFileSync(path.join(root, "usr/local/lib/systemd/system/etoken-ca-server.service"), "utf8");
  t.match(unit, /^ExecStart=\/opt\/etoken-ca\/bin\/etoken-ca-server --config \/etc\/sysconfig\/etoken-ca$/m);
  t.notMatch(unit, /\/usr\/local\/lib\/etoken-ca/);
  const snippet = fs.readFileSync(path.join(root, "opt/etoken-ca/share/myproxy-server.config.snippet"), "utf8");
  t.match(snippet, /^certificate_issuer_program \/opt\/etoken-ca\/bin\/etoken-ca-client$/m);
  t.match(fs.readFileSync(path.join(root, "opt/etoken-ca/bin/etoken-ca-client"), "utf8"), /'\/opt\/etoken-ca\/dist\/client\/bin\/etoken-ca-client\.js'/);
  t.ok(fs.existsSync(path.join(root, "opt/etoken-ca/node_modules/devthing")), "--no-prune keeps node_modules as is");

  const bad = install(["--source", src, "--root", root, "--prefix", "relative/path"]);
  t.not(bad.status, 0);
  t.match(bad.out, /must be an absolute path/);
  const unbuilt = install(["--source", dir, "--root", root]);
  t.not(unbuilt.status, 0);
  t.match(unbuilt.out, /build first/);
});

t.test("deploy/install without the MyProxy group: refused before anything is written", async (t) => {
  if (!requireRootUser(t) || !requireTools(t, "systemd-sysusers", "systemd-tmpfiles", "npm", "node")) return;
  const dir = fs.mkdtempSync("/tmp/etca-install-");
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = fakeSource(dir);
  const root = stagingRoot(dir, "nogroup");
  const group = path.join(root, "etc/group");
  fs.writeFileSync(group, fs.readFileSync(group, "utf8").split("\n").filter((l) => !l.startsWith("myproxy:")).join("\n"));
  const before = fs.readdirSync(root, { recursive: true }).sort();
  const r = install(["--source", src, "--root", root, "--node", process.execPath]);
  t.not(r.status, 0);
  t.match(r.out, `group myproxy (the MyProxy server's) does not exist in ${group}: install myproxy-server first, then run this again; nothing was installed`);
  t.same(fs.readdirSync(root, { recursive: true }).sort(), before, "nothing was written");
});

// The client runs at every logon from V8's code cache, which fits only the node (V8 version and
// flags) that built it. A node that cannot use it would compile the client at every logon; install
// runs the client's --version with that node and stops before writing anything. The other node
// here is this one with another V8 flag: V8 compares both.
t.test("deploy/install --node with a node that cannot use the client's code cache: refused before anything is written", async (t) => {
  if (!requireRootUser(t) || !requireTools(t, "systemd-sysusers", "systemd-tmpfiles", "npm", "node")) return;
  const built = path.join(REPO, "dist/client/bin");
  if (!fs.existsSync(path.join(built, "etoken-ca-client.bundle.cache"))) return t.fail(`${built} has no code cache: npm run build first`);
  const dir = fs.mkdtempSync("/tmp/etca-install-");
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = fakeSource(dir);
  fs.cpSync(built, path.join(src, "dist/client/bin"), { recursive: true });
  const other = path.join(dir, "other-node");
  fs.writeFileSync(other, `#!/bin/sh\nexec '${process.execPath}' --no-opt "$@"\n`, { mode: 0o755 });
  const root = stagingRoot(dir, "root");
  const before = fs.readdirSync(root, { recursive: true }).sort();
  const r = install(["--source", src, "--root", root, "--node", other]);
  t.not(r.status, 0, "refused");
  t.match(r.out, `install: ${other} (${process.version}) cannot use the client's V8 code cache, made by the node that built ${src}/dist: every MyProxy logon would compile the client from source.`);
  t.match(r.out, "nothing was installed");
  t.match(r.out, /etoken-ca-client: warning: V8 rejects code cache .*etoken-ca-client\.bundle\.cache/, "with the client's own words");
  t.same(fs.readdirSync(root, { recursive: true }).sort(), before, "nothing was written");
  const ok = install(["--source", src, "--root", root, "--node", process.execPath]);
  t.equal(ok.status, 0, "the node that built it installs", { output: ok.out });
  t.ok(fs.existsSync(path.join(root, DEFAULT_PREFIX, "dist/client/bin/etoken-ca-client.bundle.cache")), "with the code cache");
});

t.test("one PKCS#11 module name for the eToken in the README, the example configuration and etoken-ca(5)", async (t) => {
  const names = (file: string): string[] => [...fs.readFileSync(file, "utf8").matchAll(/\/usr\/lib\/(?:libeT|libeToken)[A-Za-z0-9]*\.so/g)].map((m) => m[0]);
  const found = [path.join(REPO, "README.md"), path.join(DEPLOY, "etoken-ca.sysconfig"), path.join(MAN, "etoken-ca.5")].map((f) => ({ f, n: names(f) }));
  for (const { f, n } of found) t.ok(n.length > 0, `${path.basename(f)} names the eToken's module`);
  t.same(new Set(found.flatMap((x) => x.n)).size, 1, "the same name everywhere");
});
