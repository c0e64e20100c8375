// Every OS-level identity call lives here: user/group lookup, privilege checks, core-dump
// limits. The rest of the code never calls `posix` or process.setuid directly.
import { createRequire } from "node:module";
import { ConfigError, SecurityError } from "./errors.js";

interface PosixModule {
  getpwnam(name: string | number): { name: string; uid: number; gid: number; dir: string; shell: string };
  getgrnam(name: string | number): { name: string; gid: number; members: string[] };
  setrlimit(resource: string, limits: { soft: number | null; hard: number | null }): void;
  getrlimit(resource: string): { soft: number | null; hard: number | null };
}
const posix = createRequire(import.meta.url)("posix") as PosixModule;

export interface UserInfo {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

/** Looks a user up through NSS; a missing user is a configuration error naming the key. */
export function lookupUser(name: string, configKey?: string, configFile?: string): UserInfo {
  try {
    const pw = posix.getpwnam(name);
    return { name: pw.name, uid: pw.uid, gid: pw.gid, home: pw.dir };
  } catch {
    const which = configKey ? `${configKey}=${name}` : name;
    throw new ConfigError("missing_user", `user ${which} does not exist (create it, see deploy/sysusers.d/etoken-ca.conf)`, {
      file: configFile,
      key: configKey,
    });
  }
}

export function userNameOf(uid: number): string | undefined {
  try {
    return posix.getpwnam(uid).name;
  } catch {
    return undefined;
  }
}

export function groupNameOf(gid: number): string | undefined {
  try {
    return posix.getgrnam(gid).name;
  } catch {
    return undefined;
  }
}

export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

export function requireRoot(program: string): void {
  if (!isRoot()) throw new SecurityError("not_root", `${program} must run as root (it reads the PIN and starts the services under their own users)`);
}

export function disableCoreDumps(): void {
  posix.setrlimit("core", { soft: 0, hard: 0 });
}

export function coreDumpLimit(): { soft: number | null; hard: number | null } {
  return posix.getrlimit("core");
}

export interface Identity {
  readonly uid: number;
  readonly euid: number;
  readonly gid: number;
  readonly egid: number;
  readonly groups: readonly number[];
}

export function currentIdentity(): Identity {
  return {
    uid: process.getuid!(),
    euid: process.geteuid!(),
    gid: process.getgid!(),
    egid: process.getegid!(),
    groups: process.getgroups!(),
  };
}

/**
 * A service's first step: prove that the kernel dropped it to exactly the expected uid and gid,
 * with no supplementary groups, and that root cannot be regained.
 */
export function verifyDroppedTo(expectedUid: number, expectedGid: number): Identity {
  const id = currentIdentity();
  if (id.uid !== expectedUid || id.euid !== expectedUid) {
    throw new SecurityError("wrong_uid", `running as uid ${id.uid}/${id.euid}, expected ${expectedUid}`);
  }
  if (id.gid !== expectedGid || id.egid !== expectedGid) {
    throw new SecurityError("wrong_gid", `running as gid ${id.gid}/${id.egid}, expected ${expectedGid}`);
  }
  const extra = id.groups.filter((g) => g !== expectedGid);
  if (extra.length > 0) throw new SecurityError("extra_groups", `supplementary groups ${extra.join(",")} were not dropped`);
  if (expectedUid !== 0) {
    let regained = false;
    try {
      process.setuid!(0);
      regained = true;
    } catch {
      // expected: EPERM
    }
    if (regained) throw new SecurityError("regained_root", "could set uid back to 0: privileges were not dropped");
  }
  return id;
}
