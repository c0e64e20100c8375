// native/spool-watch's handles under AddressSanitizer: queueFlock's turn (a detached thread
// blocked in flock(2), a socketpair, the poll handle and the JavaScript handle share it, counted)
// and watch's handle, through every way their lifetimes can end: release() twice, from its own
// callback, while queued; the handle collected while queued, or while only its method is kept;
// exit and a worker's end while the thread is blocked; no thread to be had (RLIMIT_NPROC); the
// thread's report lost (its send(2) made to fail by test/fixtures/send-fails.c, preloaded). And a
// program started while queued inherits none of the addon's descriptors. Each scenario runs in a
// child process (test/fixtures/queue-flock-child.ts) with the addon built here with
// -fsanitize=address and libasan preloaded into node; the child checks the lock free, and no
// thread and none of the addon's descriptors left.
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import t from "tap";
import { DIST, NO_TAP_HOOKS } from "../fixtures/spool-harness.js";
import { ensureTestUsers } from "../fixtures/users.js";

const SOURCE = path.resolve(DIST, "../native/spool-watch/spool_watch.c");
const CHILD = path.join(DIST, "test/fixtures/queue-flock-child.js");
const SEND_FAILS = path.resolve(DIST, "../test/fixtures/send-fails.c");
/** node's own headers, next to the node that runs the tests (node-gyp builds against the same) */
const NODE_INCLUDE = path.resolve(path.dirname(process.execPath), "../include/node");

const SCENARIOS = [
  "release-twice",
  "collected-while-queued",
  "turn-then-release",
  "release-in-its-callback",
  "release-kept-after-the-handle-was-collected",
  "close-kept-after-the-watch-was-collected",
  "the-thread-cannot-report",
  "no-thread-for-the-queue",
  "no-descriptor-in-a-child",
  "exit-while-queued",
  "worker-ends-while-queued",
];

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-queue-asan-"));
fs.chmodSync(work, 0o755); // no-thread-for-the-queue runs as CLIENT_USER
/** scenarios run as CLIENT_USER: RLIMIT_NPROC does not hold root back */
const AS_CLIENT_USER = new Set(["no-thread-for-the-queue"]);
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
const addon = path.join(work, "spool_watch_asan.node");
const sendFails = path.join(work, "send-fails.so");
const libasan = execFileSync("cc", ["-print-file-name=libasan.so"], { encoding: "utf8" }).trim();

t.test("the AddressSanitizer build of native/spool-watch", async (t) => {
  t.ok(fs.existsSync(path.join(NODE_INCLUDE, "node_api.h")), `node's headers in ${NODE_INCLUDE}`);
  t.ok(path.isAbsolute(libasan) && fs.existsSync(libasan), `cc's libasan (${libasan})`);
  const cc = spawnSync("cc", ["-shared", "-fPIC", "-g", "-O1", "-fsanitize=address", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror", "-I", NODE_INCLUDE, "-o", addon, SOURCE, "-lpthread"], { encoding: "utf8" });
  t.equal(cc.status, 0, `cc: ${cc.stderr}`);
  const shim = spawnSync("cc", ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", sendFails, SEND_FAILS, "-ldl"], { encoding: "utf8" });
  t.equal(shim.status, 0, `cc send-fails.c: ${shim.stderr}`);
});

for (const scenario of SCENARIOS) {
  t.test(scenario, async (t) => {
    const dir = fs.mkdtempSync(path.join(work, "spool-"));
    const user = AS_CLIENT_USER.has(scenario) ? ensureTestUsers().CLIENT_USER : undefined;
    if (user) fs.chownSync(dir, user.uid, user.gid);
    const r = spawnSync(
      "env",
      [...NO_TAP_HOOKS, `LD_PRELOAD=${libasan}${scenario === "the-thread-cannot-report" ? ` ${sendFails}` : ""}`, "ASAN_OPTIONS=detect_leaks=0:exitcode=66", process.execPath, "--expose-gc", CHILD, addon, dir, scenario],
      { encoding: "utf8", timeout: 60_000, ...(user ? { uid: user.uid, gid: user.gid } : {}) },
    );
    t.equal(r.stderr, "", "no AddressSanitizer report, no error");
    t.equal(r.stdout, "ok\n", "the lock free, no descriptor and no thread left behind");
    t.equal(r.status, 0);
  });
}
