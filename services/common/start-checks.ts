// What etoken-ca-server checks before it starts anything, in order: the service users, the
// client user, CA_CERT and PKCS11_MODULE readable, the directories with their owners
// and modes (DN_FORMAT and every other value were checked by the configuration loader). One function for both callers: the server stops at the first problem (and creates
// missing directories); `etoken-ca check-config` collects every problem and creates nothing.
import * as fs from "node:fs";
import type { Config } from "./config-schema.js";
import { ConfigError } from "./errors.js";
import { lookupUser, type UserInfo } from "./identity.js";
import { SERVICE_NAMES, SERVICES, type ServiceName } from "./service-table.js";
import { prepareDirectories } from "./directories.js";

export interface StartIdentities {
  users: Record<ServiceName, UserInfo>;
  client: UserInfo;
}

/**
 * Runs every start-up check. Without `onProblem` the first problem is thrown (the server);
 * with it, each problem is handed over and the checks go on where they still can.
 */
export function checkStartConfiguration(config: Config, opts: { create: boolean; onProblem?: (err: unknown) => void }): StartIdentities | undefined {
  const step = <T>(fn: () => T): T | undefined => {
    if (!opts.onProblem) return fn();
    try {
      return fn();
    } catch (err) {
      opts.onProblem(err);
      return undefined;
    }
  };
  const users = resolveUsers(config, step);
  const client = step(() => lookupUser(config.CLIENT_USER, "CLIENT_USER", config.sourceFile));
  for (const key of ["CA_CERT", "PKCS11_MODULE"] as const) step(() => checkReadable(config, key));
  if (!users || !client) return undefined; // the directories' owners are these users
  step(() => prepareDirectories(config, { signer: users.signer, spool: users.spool, monitor: users.monitor, notifier: users.notifier, client }, { create: opts.create, onProblem: opts.onProblem }));
  return { users, client };
}

function resolveUsers(config: Config, step: <T>(fn: () => T) => T | undefined): Record<ServiceName, UserInfo> | undefined {
  const users = {} as Record<ServiceName, UserInfo>;
  const seen = new Map<number, ServiceName>();
  let complete = true;
  for (const name of SERVICE_NAMES) {
    const key = SERVICES[name].userKey;
    const u = step(() => {
      const found = lookupUser(config[key] as string, key, config.sourceFile);
      if (found.uid === 0 || found.gid === 0) {
        throw new ConfigError("root_user", `${key}=${found.name} has uid ${found.uid} / gid ${found.gid}: services may never run as root or group root`, { file: config.sourceFile, key });
      }
      const other = seen.get(found.uid);
      if (other) {
        throw new ConfigError("shared_user", `${key}=${found.name} has the same uid (${found.uid}) as the ${other} service: every service needs its own user`, { file: config.sourceFile, key });
      }
      return found;
    });
    if (!u) {
      complete = false;
      continue;
    }
    seen.set(u.uid, name);
    users[name] = u;
  }
  return complete ? users : undefined;
}

function checkReadable(config: Config, key: "CA_CERT" | "PKCS11_MODULE"): void {
  try {
    fs.accessSync(config[key], fs.constants.R_OK);
  } catch {
    throw new ConfigError("missing_file", `${key}=${config[key]}: no such file or not readable`, { file: config.sourceFile, key });
  }
}
