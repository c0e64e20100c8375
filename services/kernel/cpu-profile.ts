// Diagnostics for the benchmark (bench/README.md): `etoken-ca-server --cpu-prof-dir DIR` makes
// each service write one V8 CPU profile (node --cpu-prof) into DIR/<service>/ when it exits.
// Only the root operator can ask for it: the option exists on the kernel's command line only
// (not in the configuration file, the environment of a service or any message), and the flags
// a service gets are the two fixed ones below. DIR must be root's and writable by root alone;
// each service's subdirectory is made here (0700, owned by that service's user), so a service
// writes its own profile and cannot reach another's.
import * as fs from "node:fs";
import * as path from "node:path";
import { SecurityError } from "../common/errors.js";
import type { UserInfo } from "../common/identity.js";

/** DIR checked: absolute, a real directory, owned by root, no group or other write. */
export function checkCpuProfileDir(dir: string): string {
  if (!path.isAbsolute(dir)) throw new SecurityError("cpu_prof_dir", `--cpu-prof-dir ${dir}: expected an absolute path`);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    throw new SecurityError("cpu_prof_dir", `--cpu-prof-dir ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (!st.isDirectory()) throw new SecurityError("cpu_prof_dir", `--cpu-prof-dir ${dir}: expected a directory (not a symbolic link)`);
  if (st.uid !== 0 || (st.mode & 0o022) !== 0) throw new SecurityError("cpu_prof_dir", `--cpu-prof-dir ${dir}: expected a directory owned by root and writable by root only`);
  return dir;
}

/** The node flags that make `service` (running as `user`) write its profile into DIR/<service>/. */
export function cpuProfileFlags(dir: string, service: string, user: UserInfo): string[] {
  const own = path.join(dir, service);
  try {
    fs.mkdirSync(own, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const st = fs.lstatSync(own);
  if (!st.isDirectory()) throw new SecurityError("cpu_prof_dir", `${own}: expected a directory (not a symbolic link)`);
  fs.chownSync(own, user.uid, user.gid);
  fs.chmodSync(own, 0o700);
  return ["--cpu-prof", `--cpu-prof-dir=${own}`];
}
