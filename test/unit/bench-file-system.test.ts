// Where the bench's installations live (bench/lib/file-system.ts): a fresh journaled ext4 image,
// loop-mounted for the run, unmounted and deleted at the end, at process exit too; when none can
// be had (not root, no mkfs.ext4, no loop device), the reason in one line and nothing left over.
import t, { type Test } from "tap";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { fallbackLine, fileSystemNote, makeImageFs } from "../../bench/lib/file-system.js";
import { NO_TAP_HOOKS } from "../fixtures/spool-harness.js";

const FILE_SYSTEM_JS = fileURLToPath(new URL("../../bench/lib/file-system.js", import.meta.url));

const mounts = (): string => fs.readFileSync("/proc/self/mounts", "utf8");

function scratch(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-fs-test-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A command runner that fails as `fails` says and runs nothing. */
function failing(fails: string, err: Partial<NodeJS.ErrnoException & { stderr: string; status: number }>) {
  const calls: string[] = [];
  return {
    calls,
    run: (file: string, args: string[]) => {
      calls.push([file, ...args].join(" "));
      if (file === fails) throw Object.assign(new Error(`${file} failed`), err);
    },
  };
}

t.test("no image: the reason in one line, and nothing left under the parent", async (t) => {
  const parent = scratch(t);
  const notRoot = makeImageFs(parent, failing("none", {}).run, 1000);
  t.same(notRoot, { reason: "not root (mount needs it)" }, "not root: said, nothing run");

  const noMkfs = failing("mkfs.ext4", { code: "ENOENT" });
  t.same(makeImageFs(parent, noMkfs.run, 0), { reason: "mkfs.ext4 not found (Debian: apt-get install e2fsprogs)" }, "no mkfs.ext4: the package named");
  t.match(noMkfs.calls[0], /^mkfs\.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 \S+\/ext4\.img$/, "mkfs.ext4 -q on the image");

  const noLoop = failing("mount", { status: 32, stderr: "mount: /x/mnt: failed to setup loop device for /x/ext4.img.\n       dmesg(1) may have more information.\n" });
  t.same(makeImageFs(parent, noLoop.run, 0), { reason: "mount -o loop failed: mount: /x/mnt: failed to setup loop device for /x/ext4.img." }, "no loop device: mount's first line");
  t.equal(noLoop.calls.length, 2, "mkfs.ext4, then mount");
  t.same(fs.readdirSync(parent), [], "each failure removed its image and mount point");

  const line = fallbackLine("/tmp", "mkfs.ext4 not found (Debian: apt-get install e2fsprogs)");
  t.match(line, /^bench: no journaled ext4 image for the installations \(mkfs\.ext4 not found \(Debian: apt-get install e2fsprogs\)\): they go to \/tmp instead \(.+\)$/, `the fallback line (${line})`);
  t.notMatch(line, /\n/, "one line");
});

t.test("a journaled ext4 mounted, then unmounted and deleted by release() and at process exit; where none can be made, the reason and nothing left", async (t) => {
  const parent = scratch(t);
  const image = makeImageFs(parent);
  if ("reason" in image) {
    // not root, or a machine without loop devices (a container): the bench says why and runs on
    // the temporary directory; a skip here would count as a failure (.ci/count-tests)
    t.match(image.reason, /^(not root \(mount needs it\)|(mkfs\.ext4|mount -o loop) (not found|failed).*|cannot make .+)$/, `a reason the bench can print (${image.reason})`);
    t.notMatch(image.reason, /\n/, "one line");
    t.same(fs.readdirSync(parent), [], "no image or mount point left behind");
    return;
  }
  t.teardown(() => image.release()); // on a failed assertion too
  t.ok(mounts().split("\n").some((l) => l.split(" ")[1] === image.dir && l.split(" ")[2] === "ext4"), "mounted, ext4");
  t.equal(fileSystemNote(image.dir), `ext4 with a journal at ${image.dir}`, "with a journal");
  t.match(image.describe, /^ext4 with a journal \(a fresh 8 GiB sparse image, /, "described as such");
  t.equal(fs.statSync(image.dir).mode & 0o7777, 0o1777, "open to the installations' own directories, as /tmp");
  t.equal(fs.statSync(path.dirname(image.dir)).mode & 0o777, 0o711, "its parent searchable: the service users reach their CA_DIR through it");
  fs.writeFileSync(path.join(image.dir, "x"), "y");
  image.release();
  t.notOk(mounts().includes(image.dir), "unmounted");
  t.same(fs.readdirSync(parent), [], "the image and its mount point deleted");
  t.doesNotThrow(() => image.release(), "a second release does nothing");

  // a process that exits without release() (the bench's fail(), an uncaught error, a signal's exit)
  const r = spawnSync("/usr/bin/env", [...NO_TAP_HOOKS, process.execPath, "--input-type=module", "-e", `const m = await import(${JSON.stringify(FILE_SYSTEM_JS)}); const i = m.makeImageFs(${JSON.stringify(parent)}); console.log("reason" in i ? "NO " + i.reason : i.dir); process.exit(3);`], { encoding: "utf8" });
  const dir = r.stdout.trim();
  t.equal(r.status, 3, `the child exited as it said (${r.stderr.trim()})`);
  t.match(dir, new RegExp(`^${parent}/etca-bench-fs-\\w+/mnt$`), "it had mounted an image");
  t.notOk(mounts().includes(parent), "its exit unmounted it");
  t.same(fs.readdirSync(parent), [], "and deleted it");
  t.notMatch(execFileSync("losetup", ["-a"], { encoding: "utf8" }), parent, "no loop device left on it");
});
