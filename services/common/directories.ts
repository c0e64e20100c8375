// The directories of DESIGN §4 with their owners and modes, as data. At start-up the kernel
// creates what is missing (parents root 0755), refuses to start when an existing one would let
// the wrong user in, and checks that every service user can reach the directories it works in.
import * as fs from "node:fs";
import * as path from "node:path";
import type { Config, ConfigKey } from "./config-schema.js";
import { SecurityError } from "./errors.js";
import type { UserInfo } from "./identity.js";

export interface Users {
  signer: UserInfo;
  spool: UserInfo;
  monitor: UserInfo;
  notifier: UserInfo;
  client: UserInfo;
}

export interface DirectoryRule {
  readonly key: ConfigKey;
  readonly owner: (u: Users) => number;
  readonly group: (u: Users) => number;
  readonly mode: number;
  /** Permission bits an existing directory may not have. */
  readonly forbidden: number;
  readonly why: string;
  /** the directory that holds this file, not the path itself */
  readonly parentOf?: boolean;
  /** the users that work in it (and so must be able to search every parent) */
  readonly usedBy: readonly (keyof Users)[];
}

/** The configuration key that names each user, for messages. */
const USER_KEYS: Record<keyof Users, ConfigKey> = {
  signer: "SIGNER_USER",
  spool: "SPOOL_USER",
  monitor: "MONITOR_USER",
  notifier: "NOTIFIER_USER",
  client: "CLIENT_USER",
};

export const DIRECTORY_RULES: readonly DirectoryRule[] = [
  { key: "CA_DIR", owner: (u) => u.signer.uid, group: (u) => u.signer.gid, mode: 0o700, forbidden: 0o077, why: "the CA database belongs to the signer alone", usedBy: ["signer"] },
  { key: "CRL_DIR", owner: (u) => u.signer.uid, group: (u) => u.signer.gid, mode: 0o755, forbidden: 0o022, why: "CRLs are written by the signer and public to read", usedBy: ["signer", "notifier"] },
  { key: "AUDIT_LOG", owner: (u) => u.signer.uid, group: (u) => u.signer.gid, mode: 0o700, forbidden: 0o077, why: "the audit trail is written by the signer alone and names the certificates' holders", parentOf: true, usedBy: ["signer"] },
  { key: "SPOOL_DIR", owner: (u) => u.spool.uid, group: (u) => u.client.gid, mode: 0o2770, forbidden: 0o007, why: "the spool is shared by the client and the spool service only", usedBy: ["spool", "client"] },
  { key: "REVOKE_DIR", owner: () => 0, group: () => 0, mode: 0o700, forbidden: 0o077, why: "the revoke queue is root's: written by revoke-cert, read by the kernel", usedBy: [] },
  { key: "PIDFILE", owner: () => 0, group: () => 0, mode: 0o755, forbidden: 0o022, why: "the pid file is root's", parentOf: true, usedBy: [] },
  { key: "STATUS_FILE", owner: () => 0, group: () => 0, mode: 0o755, forbidden: 0o022, why: "the status file is root's", parentOf: true, usedBy: [] },
];

function describeMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * Creates or checks every directory; throws SecurityError naming the path and the problem.
 * With create false (check-config) a missing directory is left alone: the server makes it.
 * With onProblem (check-config) every directory's problem is handed over, not only the first.
 */
export function prepareDirectories(config: Config, users: Users, opts: { create: boolean; onProblem?: (err: unknown) => void } = { create: true }): void {
  const broken = new Set<DirectoryRule>();
  const each = (fn: (rule: DirectoryRule) => void): void => {
    for (const rule of DIRECTORY_RULES) {
      if (broken.has(rule)) continue;
      try {
        fn(rule);
      } catch (err) {
        if (!opts.onProblem) throw err;
        broken.add(rule);
        opts.onProblem(err);
      }
    }
  };
  each((rule) => prepareDirectory(rule, config, users, opts.create));
  each((rule) => checkReachable(rule, config, users));
}

function prepareDirectory(rule: DirectoryRule, config: Config, users: Users, create: boolean): void {
  const value = config[rule.key] as string;
  const dir = rule.parentOf ? path.dirname(value) : value;
  const owner = rule.owner(users);
  const group = rule.group(users);
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (!st) {
    if (!create) return;
    makeParents(path.dirname(dir));
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chownSync(dir, owner, group);
    fs.chmodSync(dir, rule.mode);
    return;
  }
  const where = `${rule.key}=${dir}`;
  if (st.isSymbolicLink()) throw new SecurityError("dir_symlink", `${where}: is a symbolic link; refusing to start (${rule.why})`);
  if (!st.isDirectory()) throw new SecurityError("dir_not_dir", `${where}: exists but is not a directory`);
  if (st.uid !== owner) {
    throw new SecurityError("dir_owner", `${where}: owned by uid ${st.uid}, expected uid ${owner}; refusing to start (${rule.why})`);
  }
  if ((st.mode & rule.forbidden) !== 0) {
    throw new SecurityError("dir_mode", `${where}: mode ${describeMode(st.mode)} lets the wrong users in (expected ${describeMode(rule.mode)}); refusing to start (${rule.why})`);
  }
  if ((rule.mode & 0o070) !== 0 && st.gid !== group) {
    throw new SecurityError("dir_group", `${where}: group ${st.gid}, expected gid ${group}; refusing to start (${rule.why})`);
  }
  if ((rule.mode & 0o2000) !== 0 && (st.mode & 0o2000) === 0) {
    throw new SecurityError("dir_setgid", `${where}: mode ${describeMode(st.mode)} lacks the setgid bit (expected ${describeMode(rule.mode)})`);
  }
}

function checkReachable(rule: DirectoryRule, config: Config, users: Users): void {
  const value = config[rule.key] as string;
  const dir = rule.parentOf ? path.dirname(value) : value;
  for (const who of rule.usedBy) {
    const user = users[who];
    const blocking = firstUnsearchable(path.dirname(dir), user);
    if (blocking) {
      throw new SecurityError(
        "dir_unreachable",
        `${rule.key}=${value}: ${USER_KEYS[who]}=${user.name} cannot reach it: ${blocking.dir} (mode ${describeMode(blocking.mode)}, uid ${blocking.uid}, gid ${blocking.gid}) is not searchable for that user; refusing to start`,
      );
    }
  }
}

/**
 * Creates the missing directories of `dir` from the top down, each root's and mode 0755 (the
 * kernel's umask is 077: mkdir alone would make them 0700, and no service could enter).
 */
function makeParents(dir: string): void {
  const missing: string[] = [];
  for (let d = dir; !fs.existsSync(d); d = path.dirname(d)) missing.unshift(d);
  for (const d of missing) {
    fs.mkdirSync(d, { mode: 0o755 });
    fs.chmodSync(d, 0o755);
  }
}

/**
 * The first directory from / down to `dir` that `user` cannot search (x for its owner, group or
 * others, as the user's uid and primary gid meet it: services run without supplementary groups).
 */
function firstUnsearchable(dir: string, user: UserInfo): { dir: string; mode: number; uid: number; gid: number } | undefined {
  const chain: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    chain.unshift(d);
    if (d === path.dirname(d)) break;
  }
  for (const d of chain) {
    // missing from here down: the server makes them, root's and 0755 (check-config creates nothing)
    if (!fs.existsSync(d)) return undefined;
    const st = fs.statSync(d);
    const bit = st.uid === user.uid ? 0o100 : st.gid === user.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) return { dir: d, mode: st.mode, uid: st.uid, gid: st.gid };
  }
  return undefined;
}
