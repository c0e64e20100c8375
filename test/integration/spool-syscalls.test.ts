// The spool's file-system calls per request, counted with strace on the real spool service (the
// test as the kernel): every check of the protocol is made once per request (docs/design.md
// section 5: the link read and removed, the request opened O_NOFOLLOW, the result published with
// link(2)), and nothing is repeated: issue 20 found the lock read three or four times per request
// (once per inotify hint, the spool's own removal of the link included, each an exception for
// ENOENT).
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import t from "tap";
import { formatRequestFile, randomName, REQUEST_LINK, resultName } from "../../services/common/spool-protocol.js";
import { makeCsr, SpoolHarness } from "../fixtures/spool-harness.js";
import { randomBytes } from "node:crypto";
import { IN_CREATE, IN_MOVED_TO, inotifyMasks, NAME_EVENTS } from "../fixtures/inotify.js";

const REQUESTS = 20;
const WATCH_EVENTS = IN_CREATE | IN_MOVED_TO;
const UNWANTED_EVENTS = NAME_EVENTS & ~WATCH_EVENTS;

if (spawnSync("strace", ["-V"]).status !== 0) {
  t.fail("strace is needed (apt-get install strace)");
} else {
  const h = new SpoolHarness();
  t.teardown(async () => {
    await h.stop();
    h.cleanup();
  });
  await h.start();
  const { csrPem } = makeCsr(h.root, "syscalls");
  let cert: { der: Buffer; serial: string } | undefined;
  h.onIssue = (f, ch) => {
    const m = f.message;
    cert ??= h.makeCertificate(m.publicKey, m.username);
    ch.reply(f, "issued", { requestId: m.requestId, serial: cert.serial, certificate: cert.der, notAfter: Date.now() + 3600_000, subject: `/CN=${m.username}` });
  };
  const dir = h.spoolDir;

  /** The permission bits of every result read. */
  const modes = new Set<string>();
  /** One request as the client makes it; resolves with the result's text. */
  const issue = async (): Promise<string> => {
    const id = `req.${randomName(16, randomBytes)}`;
    const file = path.join(dir, id);
    fs.writeFileSync(file, formatRequestFile({ username: "jdoe", proxyLifetime: 3600, maxCertLifetime: 0, deadline: Date.now() + 30_000, csrPem }));
    fs.chownSync(file, h.users.CLIENT_USER.uid, h.users.CLIENT_USER.gid);
    fs.chmodSync(file, 0o644);
    fs.symlinkSync(id, path.join(dir, REQUEST_LINK));
    const result = path.join(dir, resultName(id));
    await h.until(() => fs.existsSync(result), 10_000, `the result of ${id}`);
    const text = fs.readFileSync(result, "utf8");
    modes.add((fs.statSync(result).mode & 0o7777).toString(8));
    fs.rmSync(result);
    fs.rmSync(file, { force: true });
    return text;
  };
  await issue(); // the certificate is made, the spool warmed up

  const trace = path.join(h.root, "strace.out");
  const strace = spawn("strace", ["-f", "-qq", "-e", "trace=%file,fchmod,umask", "-o", trace, "-p", String(h.child!.pid)], { stdio: "ignore" });
  const exited = new Promise((r) => strace.on("exit", r));
  // attached once a request link it reads shows in its output (a bad target: refused at once)
  let bad = 0;
  await h.until(
    () => {
      if (fs.existsSync(trace) && fs.readFileSync(trace, "utf8").includes("req.attach")) return true;
      try {
        fs.symlinkSync(`req.attach${bad++}`, path.join(dir, REQUEST_LINK));
      } catch {
        // the last one not taken yet
      }
      return false;
    },
    20_000,
    "strace attached",
  );
  const locked = (): boolean => fs.lstatSync(path.join(dir, REQUEST_LINK), { throwIfNoEntry: false }) !== undefined;
  /** A link to a name the spool refuses at once: it shows in the trace, and marks a place in it. */
  const mark = async (name: string): Promise<void> => {
    await h.until(() => !locked(), 10_000, "the lock free");
    fs.symlinkSync(name, path.join(dir, REQUEST_LINK));
    await h.until(() => !locked(), 10_000, `${name} taken`);
  };
  await mark("req.begin");
  let certificates = 0;
  for (let i = 0; i < REQUESTS; i++) if ((await issue()).startsWith("-----BEGIN CERTIFICATE-----")) certificates++;
  await mark("req.end");
  strace.kill("SIGINT");
  await exited;
  const all = fs.readFileSync(trace, "utf8").split("\n");
  const begin = all.findIndex((l) => l.includes('"req.begin"'));
  const afterBegin = all.findIndex((l, i) => i > begin && /\sunlink(at)?\(.*\/request"/.test(l)); // the marker's own removal
  const lines = all.slice(afterBegin + 1, all.findIndex((l) => l.includes('"req.end"')));
  const count = (re: RegExp): number => lines.filter((l) => re.test(l)).length;
  const q = dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  t.equal(certificates, REQUESTS, "every request got its certificate");
  // What wakes the spool: inotify asked for names appearing only (IN_CREATE, IN_MOVED_TO): the
  // `request` link and `.abandoned` markers. Not the client's writes, mode changes and removals
  // of its files, nor the spool's own publication steps (IN_MODIFY, IN_ATTRIB, IN_DELETE, ...).
  const masks = inotifyMasks(h.child!.pid!);
  t.equal(masks.length, 1, "one inotify watch (the spool directory)");
  t.equal(masks[0]! & WATCH_EVENTS, IN_CREATE | IN_MOVED_TO, "it reports names created or renamed into the directory");
  t.equal(masks[0]! & UNWANTED_EVENTS, 0, `and not writes, mode changes, removals or closes (mask 0x${(masks[0] ?? 0).toString(16)})`);
  t.equal(count(new RegExp(`\\sreadlink(at)?\\(.*"${q}/request"`)), REQUESTS, "the lock's link is read once per request");
  t.equal(count(new RegExp(`\\sunlink(at)?\\(.*"${q}/request"`)), REQUESTS, "and removed once per request");
  t.equal(count(new RegExp(`\\sopen(at)?\\(.*"${q}/req\\.[A-Za-z0-9]{16}", [^)]*O_NOFOLLOW`)), REQUESTS, "each request file opened once, with O_NOFOLLOW");
  // written unnamed (O_TMPFILE) and named by linkat(2) in one step: the only event a result makes
  // in SPOOL_DIR is its name's IN_CREATE (a named temporary file woke every waiting client for its
  // creation, and cost an unlink after)
  t.equal(count(new RegExp(`\\sopen(at)?\\(.*"${q}", [^)]*O_TMPFILE[^)]*, 0640\\)`)), REQUESTS, "each result created unnamed (O_TMPFILE) in the spool directory, 0640");
  t.equal(count(new RegExp(`\\slinkat\\(AT_FDCWD, "/proc/self/fd/[0-9]+", AT_FDCWD, "${q}/req\\.[A-Za-z0-9]{16}\\.result", AT_SYMLINK_FOLLOW\\)`)), REQUESTS, "each result published with linkat(2)");
  t.equal(count(/\.result\.tmp/), 0, "no temporary result name is ever made (nor removed) in the spool directory");
  // created 0640 through the umask: no fchmod, whose IN_ATTRIB would wake every waiting client
  t.same([...modes], ["640"], "every result is 0640 (the client reads it through the group)");
  t.equal(count(/\sfchmod\(/), 0, "no fchmod: the result is created with its mode");
}
