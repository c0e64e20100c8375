// One server per CA: etoken-ca-server holds a lock on each resource two servers must never
// share (CA_DIR, SPOOL_DIR, the console). A lock is a file in LOCK_DIR named by the resource
// (its device and inode), created O_EXCL, holding the owner's pid and configuration file; a
// lock whose pid is no longer an etoken-ca-server is stale and taken over. LOCK_DIR lies in
// /run (root's), not in the world-writable /run/lock, and must be root's alone.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Config } from "../common/config-schema.js";
import { SecurityError } from "../common/errors.js";

export const LOCK_DIR = "/run/etoken-ca-locks";
const LOCKED_KEYS = ["CA_DIR", "SPOOL_DIR", "CONSOLE"] as const;

export interface InstanceLocks {
  release(): void;
}

function lockPathOf(value: string): string {
  // the same directory or terminal by another name (a symlink, /dev/tty8 vs /dev/vc/8) is the same resource
  let id: string;
  try {
    const st = fs.statSync(value);
    id = st.isCharacterDevice() ? `rdev:${st.rdev}` : `inode:${st.dev}:${st.ino}`;
  } catch {
    id = `path:${path.resolve(value)}`;
  }
  return path.join(LOCK_DIR, `${createHash("sha256").update(id).digest("hex").slice(0, 32)}.lock`);
}

/** Whether pid is a running etoken-ca-server (its kernel retitles itself "etoken-ca: kernel"). */
export function isServerProcess(pid: number): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.startsWith("etoken-ca: kernel") || cmdline.includes("etoken-ca-server");
  } catch {
    return false;
  }
}

/** Takes every lock or none; throws naming the running server that holds one. */
export function lockInstance(config: Config): InstanceLocks {
  fs.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o755 });
  const st = fs.lstatSync(LOCK_DIR);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new SecurityError("lock_dir", `${LOCK_DIR}: must be a directory owned by root and writable by root only (remove it and start again)`);
  }
  const held: string[] = [];
  const release = (): void => {
    for (const file of held.splice(0)) {
      try {
        if (fs.readFileSync(file, "utf8").split("\n")[0] === String(process.pid)) fs.unlinkSync(file);
      } catch {
        // already gone
      }
    }
  };
  try {
    for (const key of LOCKED_KEYS) {
      const file = lockPathOf(config[key]);
      for (let attempt = 0; ; attempt++) {
        try {
          const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
          fs.writeSync(fd, `${process.pid}\n${config.sourceFile}\n${key}=${config[key]}\n`);
          fs.closeSync(fd);
          held.push(file);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw err;
        }
        const [pidText, owner] = fs.readFileSync(file, "utf8").split("\n");
        const pid = Number(pidText);
        if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isServerProcess(pid)) {
          throw new SecurityError("already_running", `${key}=${config[key]} is in use by etoken-ca-server pid ${pid} (configuration ${owner}); one server per CA`);
        }
        fs.unlinkSync(file); // stale: its server is gone
      }
    }
  } catch (err) {
    release();
    throw err;
  }
  return { release };
}
