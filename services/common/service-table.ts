// The service table: every process the kernel may start, as data. A child started with a name
// that is not here exits at once.
import type { Config, ConfigKey } from "./config-schema.js";

// Node/V8 flags and environment per service, for the bench's memory goal (peak RSS of the five
// processes < 300 MiB, a sum of VmHWM: the node binary's ~37-46 MiB of mapped pages count once
// per process) and for CPU per certificate. Measured here (--quick bench, ~640 certificates in;
// figures in bench/RESULTS.md, issue 20 third round):
// - Every service and the kernel: a small young generation (--max-semi-space-size=2: small messages) and one V8
//   background thread (--v8-pool-size=1, default 4: two cores shared by five processes), 3 MiB
//   less RSS each and fewer thread wake-ups; MALLOC_ARENA_MAX=2 (glibc gives each thread that
//   mallocs an arena of its own): ~1 MiB each.
// - The spool and monitor run V8's optimizing compiler: their per-request JavaScript is hot, and
//   once warm (2,310 certificates in) the JIT took the spool from 2.10 to 1.26 ms per
//   certificate and the monitor from 0.68 to 0.45, for 11-13 and 8-9 MiB of RSS (TurboFan's
//   code pages of the binary, its zone and code): the five processes' peak 291 MiB (--quick)
//   and 293 MiB (full length) against 289-291 before these cuts with both in lite mode.
//   Within 570 certificates (--quick) the monitor's JIT saves nothing yet.
// - With SIGNER_BACKEND=openssl the spool and monitor run interpreter-only too: an `openssl ca`
//   child per certificate (~20 ms) dwarfs their JavaScript, and their compiler's ~20 MiB put the
//   five processes' peak in the openssl throughput run (bench (h5)) at 316 MiB; lite: 299.
// - The notifier runs interpreter-only (--lite-mode): it does almost nothing. --no-expose-wasm
//   silences V8's warning that lite mode turns WebAssembly off (nothing here uses it).
// - The signer keeps the optimizing compiler: it builds CRLs of 100,000s of entries and reads
//   index.txt files of millions of lines in JavaScript. --optimize-for-size makes its heap grow
//   less eagerly: with SIGNER_BACKEND=openssl (each certificate an `openssl ca` child through
//   execa) its peak RSS over a few hundred certificates fell from 91 to 75 MiB; native latency,
//   throughput and CRL times did not move beyond the run-to-run noise.
// - The monitor's slot-event thread, for a module that may have slot events (a reader's module:
//   an eToken's, OpenSC's; services/monitor/pkcs11-source.ts), is a native thread (native/slot-wait),
//   not a worker_thread: a worker's V8 isolate put the five processes' sum ~10 MiB above the
//   bench's SoftHSM2 figure; the thread costs the monitor well under 1 MiB.
// - Tried for the cold figure (the first ~70/310 certificates) and not kept (issue 20 fifth
//   round, --compare against the same code, 2-4 rounds; a null comparison moved 0.77-0.91x):
//   the cold gap is the main threads running JavaScript not yet optimised, not compiling it
//   (spool's "(program)" 0.11 ms per certificate cold, 0.02 warm). --no-lazy (everything compiled
//   at start: all a code cache could give) 1.20x cold, +8 MiB; --always-sparkplug 1.22x cold,
//   1.18x warm; --no-lazy-feedback-allocation 1.28x; --single-threaded-gc 1.17x; --max-lazy
//   1.00x. --interrupt-budget=16384 (TurboFan 4x sooner) moves the compiling into the cold
//   window: cold 1.46x (--quick) and 1.21x (full), warm 0.79x after 570 certificates but 1.01x
//   after 2,310, rss-warm 297-298 MiB.
/**
 * An `--inspect-port` no socket can bind (link-local multicast without a scope: EINVAL), on the
 * node command line of every etoken-ca process: a SIGUSR1 in the first milliseconds, before
 * no-inspector.ts has replaced Node's handler, cannot open a listening inspector. The shell
 * wrappers in bin/ and deploy/install pass the same flag.
 */
export const INSPECT_PORT_NOWHERE = "--inspect-port=[ff02::1]:9229";
const EVERY_SERVICE_FLAGS = ["--max-semi-space-size=2", "--v8-pool-size=1"] as const;
/**
 * The kernel's node flags (the same reasons; its JavaScript stays compiled: it handles every
 * frame): 68 -> 62 MiB peak RSS over ~700 certificates. Started by a shell wrapper
 * (bin/etoken-ca-server, the one deploy/install writes), which spells them out;
 * test/unit/service-table.test.ts checks that they agree.
 */
export const KERNEL_NODE_FLAGS = EVERY_SERVICE_FLAGS;
const JIT = EVERY_SERVICE_FLAGS;
const LITE = [...EVERY_SERVICE_FLAGS, "--lite-mode", "--no-expose-wasm"] as const;
const SIGNER = [...EVERY_SERVICE_FLAGS, "--optimize-for-size"] as const;
/** Environment every service gets besides SERVICE_ENV (glibc's malloc tuning; see above). */
export const MALLOC_ENV = { MALLOC_ARENA_MAX: "2" } as const;

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

/** The same flags whichever SIGNER_BACKEND signs. */
const ANY_BACKEND = <F extends readonly string[]>(flags: F) => ({ pkcs11: flags, openssl: flags }) as const;

export const SERVICES = {
  spool: { userKey: "SPOOL_USER", entry: "services/spool/main.js", title: "etoken-ca: spool", pkcs11Env: false, nodeFlags: { pkcs11: JIT, openssl: LITE }, configKeys: SPOOL_KEYS },
  signer: { userKey: "SIGNER_USER", entry: "services/signer/main.js", title: "etoken-ca: signer", pkcs11Env: true, nodeFlags: ANY_BACKEND(SIGNER), configKeys: SIGNER_KEYS },
  monitor: { userKey: "MONITOR_USER", entry: "services/monitor/main.js", title: "etoken-ca: monitor", pkcs11Env: true, nodeFlags: { pkcs11: JIT, openssl: LITE }, configKeys: MONITOR_KEYS },
  notifier: { userKey: "NOTIFIER_USER", entry: "services/notifier/main.js", title: "etoken-ca: notifier", pkcs11Env: false, nodeFlags: ANY_BACKEND(LITE), configKeys: NOTIFIER_KEYS },
} as const satisfies Record<string, { userKey: ConfigKey; entry: string; title: string; pkcs11Env: boolean; nodeFlags: Readonly<Record<Config["SIGNER_BACKEND"], readonly string[]>>; configKeys: readonly ConfigKey[] }>;

export type ServiceName = keyof typeof SERVICES;
export const SERVICE_NAMES = Object.keys(SERVICES) as ServiceName[];

export function isServiceName(s: string): s is ServiceName {
  return Object.prototype.hasOwnProperty.call(SERVICES, s);
}

/** Environment variables the kernel gives a service (and nothing else but PATH/LANG, MALLOC_ENV and PKCS11_ENV). */
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
