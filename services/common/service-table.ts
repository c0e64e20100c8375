// The service table: every process the kernel may start, as data. A child started with a name
// that is not here exits at once.
import type { Config, ConfigKey } from "./config-schema.js";

// Node/V8 flags. Every service: a small young generation (small messages; five processes share
// the machine). The spool, monitor and notifier run interpreter-only (--lite-mode): their
// JavaScript per request is a few short bursts, and measured here that saves ~6 MiB of memory
// each and the optimizing compiles that competed with the signature for two cores (lower CPU
// per certificate, not higher). Once warm the JIT does pay, but not within the memory goal
// (bench (cpu-warm), alternating runs, medians): 570 certificates in, the JIT (Sparkplug and
// TurboFan) took the spool to 1.59 ms per certificate against 1.75 lite, within the noise;
// 2,310 in (four runs each), to 0.72 against 1.36 and the monitor to 0.29 against 0.44 (the
// unchanged kernel 0.51 against 0.61: some of it is the machine's load). Their peak RSS grows by
// 14-16 and 10-13 MiB, taking the five processes over the 300 MiB goal (321 against 292 MiB; with
// --optimize-for-size 309; the spool's JIT alone, even with the kernel's young generation cut
// to 2 MiB, 304: spool 0.95 against 1.6). Sparkplug alone (--no-opt): 4 MiB each, no CPU saved.
// --no-expose-wasm silences V8's warning that lite mode turns WebAssembly off (nothing here
// uses it). The signer keeps the optimizing compiler: it builds CRLs of 100,000s of entries and
// reads index.txt files of millions of lines in JavaScript.
// --optimize-for-size makes its heap grow less eagerly: with SIGNER_BACKEND=openssl (each
// certificate an `openssl ca` child through execa) its peak RSS over a few hundred
// certificates fell from 91 to 75 MiB; native latency, throughput and CRL times did not move
// beyond the run-to-run noise (bench, before/after in the same session).
/**
 * An `--inspect-port` no socket can bind (link-local multicast without a scope: EINVAL), on the
 * node command line of every etoken-ca process: a SIGUSR1 in the first milliseconds, before
 * no-inspector.ts has replaced Node's handler, cannot open a listening inspector. The shell
 * wrappers in bin/ and deploy/install pass the same flag.
 */
export const INSPECT_PORT_NOWHERE = "--inspect-port=[ff02::1]:9229";
const SIGNER = ["--max-semi-space-size=2", "--optimize-for-size"] as const;
const LITE = ["--max-semi-space-size=2", "--lite-mode", "--no-expose-wasm"] as const;

// Each service's configuration: the keys it reads, and no others (SMTP_URL may carry a
// credential; PKCS11_ENV is the token's). The kernel hands over only these (configFor), and
// LOG_LEVEL to every service.
const SPOOL_KEYS = ["DN_FORMAT", "USERNAME_RDN_TYPES", "SPOOL_DIR", "CLIENT_USER", "CLIENT_TIMEOUT", "MIN_KEY_BITS"] as const;
const SIGNER_KEYS = [
  "DN_FORMAT", "USERNAME_RDN_TYPES", "CA_OIDS", "CRL_URLS", "KEY", "PKCS11_MODULE", "PKCS11_ENV", "CA_CERT", "CA_DIR", "CRL_DIR",
  "MAX_LIFETIME", "MIN_KEY_BITS", "UNDELIVERED_REVOKE_REASON", "CRL_LIFETIME", "SIGNER_BACKEND", "OPENSSL_CA_CONF",
  "CLIENT_TIMEOUT", "AUDIT_LOG", "AUDIT_ROTATE_SIZE",
] as const;
const MONITOR_KEYS = ["KEY", "PKCS11_MODULE", "USB_DEVICE", "TOKEN_POLL_INTERVAL"] as const;
const NOTIFIER_KEYS = ["NOTIFY_HOOK", "POST_CRL_HOOK", "HOOK_TIMEOUT", "NOTIFY_EMAIL", "NOTIFY_FROM", "SMTP_URL", "NOTIFY_RATE_LIMIT"] as const;

export const SERVICES = {
  spool: { userKey: "SPOOL_USER", entry: "services/spool/main.js", title: "etoken-ca: spool", pkcs11Env: false, nodeFlags: LITE, configKeys: SPOOL_KEYS },
  signer: { userKey: "SIGNER_USER", entry: "services/signer/main.js", title: "etoken-ca: signer", pkcs11Env: true, nodeFlags: SIGNER, configKeys: SIGNER_KEYS },
  monitor: { userKey: "MONITOR_USER", entry: "services/monitor/main.js", title: "etoken-ca: monitor", pkcs11Env: true, nodeFlags: LITE, configKeys: MONITOR_KEYS },
  notifier: { userKey: "NOTIFIER_USER", entry: "services/notifier/main.js", title: "etoken-ca: notifier", pkcs11Env: false, nodeFlags: LITE, configKeys: NOTIFIER_KEYS },
} as const satisfies Record<string, { userKey: ConfigKey; entry: string; title: string; pkcs11Env: boolean; nodeFlags: readonly string[]; configKeys: readonly ConfigKey[] }>;

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

/** Keys every service receives besides its own. */
const EVERY_SERVICE_KEYS = ["LOG_LEVEL"] as const;

/** The part of the configuration service N receives (and the file it came from, for messages). */
export type ServiceConfig<N extends ServiceName> = Pick<Config, (typeof SERVICES)[N]["configKeys"][number] | (typeof EVERY_SERVICE_KEYS)[number] | "sourceFile">;

/** The keys service N receives. */
export function configKeysOf(name: ServiceName): readonly ConfigKey[] {
  return [...EVERY_SERVICE_KEYS, ...SERVICES[name].configKeys];
}

/** What the kernel puts in a service's ETOKEN_CA_CONFIG: its own keys only. */
export function configFor<N extends ServiceName>(name: N, config: Config): ServiceConfig<N> {
  const own: Record<string, unknown> = { sourceFile: config.sourceFile };
  for (const key of configKeysOf(name)) own[key] = config[key];
  return own as ServiceConfig<N>;
}
