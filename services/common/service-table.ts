// The service table: every process the kernel may start, as data. A child started with a name
// that is not here exits at once.
import type { ConfigKey } from "./config-schema.js";

export const SERVICES = {
  spool: { userKey: "SPOOL_USER", entry: "services/spool/main.js", title: "etoken-ca: spool", pkcs11Env: false },
  signer: { userKey: "SIGNER_USER", entry: "services/signer/main.js", title: "etoken-ca: signer", pkcs11Env: true },
  monitor: { userKey: "MONITOR_USER", entry: "services/monitor/main.js", title: "etoken-ca: monitor", pkcs11Env: true },
  notifier: { userKey: "NOTIFIER_USER", entry: "services/notifier/main.js", title: "etoken-ca: notifier", pkcs11Env: false },
} as const satisfies Record<string, { userKey: ConfigKey; entry: string; title: string; pkcs11Env: boolean }>;

export type ServiceName = keyof typeof SERVICES;
export const SERVICE_NAMES = Object.keys(SERVICES) as ServiceName[];

export function isServiceName(s: string): s is ServiceName {
  return Object.prototype.hasOwnProperty.call(SERVICES, s);
}

/** Environment variables the kernel gives a service (and nothing else but PATH/LANG and PKCS11_ENV). */
export const SERVICE_ENV = {
  name: "ETOKEN_CA_SERVICE",
  config: "ETOKEN_CA_CONFIG",
  uid: "ETOKEN_CA_UID",
  gid: "ETOKEN_CA_GID",
} as const;
