// The file system the bench's installations live on. By default a fresh journaled ext4 (a sparse
// image, mkfs.ext4 with Debian's defaults, loop-mounted; TMPDIR points at it, and every
// installation, CA_DIR included, is made under os.tmpdir()), because that is what a CA host's
// CA_DIR sits on, and because this project's test VM's root (which holds /tmp) is ext4 without a
// journal, where a create costs what was deleted near it lately (fileSystemNote). `--fs tmp`
// keeps the temporary directory as it is.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/**
 * Sparse: only what is written takes space. Room for the biggest section (h2h: index files of
 * 100,000 and 1,000,000 lines cached and copied, openssl's index.txt.old; index1m; throughput's
 * certificates), with ext4's default inode ratio (one per 16 KiB: 524,288 inodes).
 */
export const IMAGE_BYTES = 8 * 1024 ** 3;

/** Set by --compare's parent for each child run: TMPDIR is already prepared, and this says on what. */
export const PREPARED_ENV = "ETCA_BENCH_FS";

/** Set wherever TMPDIR is pointed at an image: the temporary directory it was made under. */
export const KEEP_ENV = "ETCA_BENCH_KEEP";

/** Where what must outlive the run goes (the --cpu-prof profiles): never the image, which is deleted at the end. */
export function keepDir(): string {
  return process.env[KEEP_ENV] || os.tmpdir();
}

export interface ImageFs {
  /** the mount point: the installations' base (TMPDIR) */
  dir: string;
  /** one line: what the installations are measured on */
  describe: string;
  /** unmounts and deletes the image; idempotent; synchronous (also runs at process exit) */
  release(): void;
}

type Run = (file: string, args: string[]) => void;
const runQuiet: Run = (file, args) => {
  execFileSync(file, args, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
};

const mounted = new Set<ImageFs>();
let exitHook = false;

/** The first line a failed command wrote on stderr, or why it could not start. */
function why(err: unknown, what: string): string {
  const e = err as NodeJS.ErrnoException & { stderr?: string; status?: number };
  if (e.code === "ENOENT") return `${what} not found${what === "mkfs.ext4" ? " (Debian: apt-get install e2fsprogs)" : ""}`;
  const line = e.stderr?.trim().split("\n")[0];
  return `${what} failed${line ? `: ${line}` : e.status !== undefined ? ` (exit ${e.status})` : `: ${e.message}`}`;
}

const sleepSync = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** /proc/self/mounts, one entry per mount (spaces in paths unescaped); empty when it cannot be read. */
export function mountTable(): { device: string; point: string; type: string }[] {
  let text: string;
  try {
    text = fs.readFileSync("/proc/self/mounts", "utf8");
  } catch {
    return [];
  }
  const table: { device: string; point: string; type: string }[] = [];
  for (const l of text.split("\n")) {
    const [device, point, type] = l.split(" ");
    if (device && point && type) table.push({ device, point: point.replace(/\\040/g, " "), type });
  }
  return table;
}

function isMountPoint(dir: string): boolean {
  return mountTable().some((m) => m.point === dir);
}

/**
 * A fresh journaled ext4 of IMAGE_BYTES under `parent` (the image and its mount point in one
 * mktemp directory), or the reason it cannot be had (not root, no mkfs.ext4, no loop device):
 * one line, for the fallback's message. Whatever was made is undone on failure, and at process
 * exit if release() has not run (fail(), an uncaught error, the signal handlers' exit).
 */
export function makeImageFs(parent: string, run: Run = runQuiet, uid = process.getuid?.()): ImageFs | { reason: string } {
  if (uid !== 0) return { reason: "not root (mount needs it)" };
  let base: string;
  try {
    base = fs.mkdtempSync(path.join(parent, "etca-bench-fs-"));
  } catch (err) {
    return { reason: `cannot make a directory under ${parent}: ${(err as Error).message}` };
  }
  const image = path.join(base, "ext4.img");
  const dir = path.join(base, "mnt");
  const removeBase = (): void => {
    if (isMountPoint(dir)) return; // never delete through a mount that is still there
    fs.rmSync(base, { recursive: true, force: true });
  };
  try {
    fs.chmodSync(base, 0o711); // the services' users reach their CA_DIR through it; the image stays 0600
    fs.mkdirSync(dir);
    fs.closeSync(fs.openSync(image, "w", 0o600));
    fs.truncateSync(image, IMAGE_BYTES);
  } catch (err) {
    removeBase();
    return { reason: `cannot make the image under ${parent}: ${(err as Error).message}` };
  }
  // Debian's defaults (/etc/mke2fs.conf: a journal, 4 KiB blocks); the inode tables and the
  // journal zeroed now (holes in the image: cheap), not by ext4lazyinit during the measurements
  try {
    run("mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image]);
  } catch (err) {
    removeBase();
    return { reason: why(err, "mkfs.ext4") };
  }
  try {
    run("mount", ["-o", "loop", image, dir]);
  } catch (err) {
    removeBase();
    return { reason: why(err, "mount -o loop") };
  }
  let released = false;
  const self: ImageFs = {
    dir,
    describe: "",
    release: () => {
      if (released) return;
      released = true;
      mounted.delete(self);
      unmount(dir, run);
      removeBase();
    },
  };
  mounted.add(self);
  if (!exitHook) {
    exitHook = true;
    process.on("exit", () => {
      for (const m of [...mounted]) m.release();
    });
  }
  fs.chmodSync(dir, 0o1777); // as /tmp: the installations' own directories set their modes
  // what the mount turned out to be (a journal unless /etc/mke2fs.conf says otherwise), then how it was made
  const note = fileSystemNote(dir);
  self.describe = `${note.startsWith(`ext4 with a journal at ${dir}`) ? "ext4 with a journal" : note} (a fresh ${IMAGE_BYTES / 1024 ** 3} GiB sparse image, mkfs.ext4 -q with Debian's defaults, loop-mounted for the run)`;
  return self;
}

/**
 * Unmounts `dir`: busy (a process of a stopped installation still exiting) is retried for 5 s,
 * then detached lazily (`umount -l`: gone from the mount table at once, freed with its last user).
 */
function unmount(dir: string, run: Run): void {
  for (let i = 0; i < 25 && isMountPoint(dir); i++) {
    try {
      run("umount", [dir]);
      return;
    } catch {
      sleepSync(200);
    }
  }
  if (!isMountPoint(dir)) return;
  try {
    run("umount", ["-l", dir]);
    process.stderr.write(`bench: ${dir} was busy: detached lazily (umount -l)\n`);
  } catch (err) {
    process.stderr.write(`bench: ${dir} is still mounted (${why(err, "umount -l")}): unmount it by hand\n`);
  }
}

/** The fallback's one line: the bench runs on `tmp` instead of an image, and why. */
export function fallbackLine(tmp: string, reason: string): string {
  return `bench: no journaled ext4 image for the installations (${reason}): they go to ${tmp} instead (${fileSystemNote(tmp).split(":")[0]})`;
}

/**
 * Whether `dir` is on ext4 without a journal, and what that costs a create. Such an ext4 (this
 * project's test VM's root) skips, at every new inode, each free inode of the group that was
 * deleted in the last 60 s (360 s while its inode table block is dirty) (fs/ext4/ialloc.c,
 * find_inode_bit -> recently_deleted, checked only without a journal), so a create costs ~30 µs
 * in a quiet group and up to ~1 ms in one where thousands of files were just removed (test runs,
 * the bench's own installations and spool files). A journaled ext4, the default, does not.
 */
export function fileSystemNote(dir: string): string {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    return "file system not known";
  }
  let mount: { point: string; type: string; device: string } | undefined;
  for (const m of mountTable()) {
    if ((real === m.point || real.startsWith(m.point === "/" ? "/" : `${m.point}/`)) && (!mount || m.point.length >= mount.point.length)) mount = m;
  }
  if (!mount) return "file system not known";
  if (mount.type !== "ext4") return `${mount.type} at ${mount.point}`;
  let journal: boolean | undefined;
  try {
    const dev = path.basename(fs.realpathSync(mount.device));
    journal = fs.readdirSync("/proc/fs/jbd2").some((d) => d.startsWith(`${dev}-`));
  } catch {
    journal = undefined;
  }
  if (journal === undefined) return `ext4 at ${mount.point}`;
  return journal
    ? `ext4 with a journal at ${mount.point}`
    : `ext4 WITHOUT a journal at ${mount.point}: each create skips the inodes its group freed in the last minutes (find_inode_bit -> recently_deleted), so the create's CPU follows what was deleted there lately, not the signer`;
}
