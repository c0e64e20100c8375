// Without native/spool-watch (an installation missing dist/native/spool_watch.node): the spool
// falls back to its periodic rescan and to a named temporary result published with link(2), the
// client to fs.watch; a request still gets its certificate, and nothing is left behind. The
// spool and client run from a copy of dist/ without the addon.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import t from "tap";
import { DIST, makeCsr, myproxyInput, runClient, SpoolHarness } from "../fixtures/spool-harness.js";

const copy = fs.mkdtempSync(path.join(os.tmpdir(), "etca-no-watch-"));
fs.chmodSync(copy, 0o755);
const dist = path.join(copy, "dist");
fs.mkdirSync(dist, { mode: 0o755 });
for (const d of ["services", "proto", "native", "client"]) fs.cpSync(path.join(DIST, d), path.join(dist, d), { recursive: true });
fs.rmSync(path.join(dist, "native/spool_watch.node"));
fs.writeFileSync(path.join(copy, "package.json"), '{ "type": "module" }\n', { mode: 0o644 });
fs.symlinkSync(path.resolve(DIST, "../node_modules"), path.join(copy, "node_modules"));

const h = new SpoolHarness({ dist });
t.teardown(async () => {
  await h.stop();
  h.cleanup();
  fs.rmSync(copy, { recursive: true, force: true });
});
await h.start();
h.issueAll();
const { csrPem } = makeCsr(h.root, "nowatch");

t.test("a request gets its certificate through the rescan and a named temporary result", async (t) => {
  const created = new Set<string>();
  const watch = fs.watch(h.spoolDir, (_e, name) => {
    if (name) created.add(name);
  });
  t.teardown(() => watch.close());
  const r = await runClient(h, myproxyInput({}, csrPem), { dist });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^-----BEGIN CERTIFICATE-----\n/, "the client got its certificate");
  t.ok([...created].some((n) => /^req\.[A-Za-z0-9]{16}\.result\.tmp[A-Za-z0-9]+$/.test(n)), `the result was written under a temporary name first (${[...created].join(" ")})`);
  t.match(h.stderr + JSON.stringify(h.received), /cannot load the spool's inotify helper/, "the spool said why it rescans instead of watching");
  await h.until(() => fs.readdirSync(h.spoolDir).length === 0, 10_000, "the spool directory empty");
  t.same(fs.readdirSync(h.spoolDir), [], "nothing left behind (the temporary name removed)");
});

t.test("the kernel is told, for the operator's console, that requests wait for the rescan and what to do", async (t) => {
  const w = await h.next("serviceWarning", 10_000);
  t.equal(w.message.code, "spool.no_watch");
  t.match(w.message.message, /^spool: cannot load the spool's inotify helper \S*spool_watch\.node \(npm run build makes it\): .+: requests are picked up by the rescan, up to 1 s late; on an installed system, rerun deploy\/install$/);
  t.equal(w.message.message.split("npm run build").length - 1, 1, "what to do said once (the loader's message already names the build)");
});
