// The configuration schema as data: every key, its type, its default and what it means.
// The README's configuration reference and deploy/etoken-ca.sysconfig follow this table.

export type ValueKind =
  | "string" | "dnFormat" | "path" | "optionalPath" | "duration" | "integer" | "bool"
  | "oidList" | "uriList" | "usbDevice" | "keySpec" | "envList" | "user" | "logLevel"
  | "backend" | "emailList" | "smtpUrl" | "reason" | "rdnTypes";

export interface KeySpec {
  readonly kind: ValueKind;
  /** Default as it would be written in the file; undefined means the key is required. */
  readonly default: string | undefined;
  readonly section: string;
  readonly doc: string;
  /**
   * A duration's longest accepted value (as it would be written) and why. A timer waits at most
   * 2^31-1 ms (24.8 days; longer fires after 1 ms): a duration given to one stays below that.
   */
  readonly max?: { readonly limit: string; readonly why: string };
}

export const CONFIG_SCHEMA = {
  // seed
  DN_FORMAT: { kind: "dnFormat", default: undefined, section: "seed", doc: "Subject DN in slash form with one %s for the MyProxy username. %s inside a value (/DC=org/DC=example/CN=%s): the username is that value. %s where RDNs can stand (/DC=org/DC=example%s, or %s alone): the username is a DN suffix such as /O=Example/CN=Jane Doe, inserted there" },
  USERNAME_RDN_TYPES: { kind: "rdnTypes", default: "DC,O,OU,CN", section: "seed", doc: "Comma-separated attribute types a DN-suffix username (DN_FORMAT with %s between RDNs) may bring; a username with any other type is refused" },
  CA_OIDS: { kind: "oidList", default: undefined, section: "seed", doc: "Comma-separated certificate policy OIDs (certificatePolicies); at least one" },
  CRL_URLS: { kind: "uriList", default: undefined, section: "seed", doc: "Comma-separated URI:http://... CRL distribution points where the DER CRL is published (RFC 5280 4.2.1.13); at least one; https is warned about, other schemes are refused" },
  USB_DEVICE: { kind: "usbDevice", default: "", section: "seed", doc: "vendor:product of the token as lsusb prints it (hex); empty disables USB hot-plug" },
  KEY: { kind: "keySpec", default: "0:", section: "seed", doc: "CA key on the token: SLOT:ID (SLOT counts the initialised tokens from 0, hex key id; '0:' = first token, first private key) or an RFC 7512 pkcs11: URI (token=, serial=, slot-id= = the PKCS#11 slot ID, id=, object=)" },
  // token
  PKCS11_MODULE: { kind: "path", default: undefined, section: "token", doc: "PKCS#11 module (shared library) of the token" },
  PKCS11_ENV: { kind: "envList", default: "", section: "token", doc: "Space-separated NAME=value pairs the module needs (e.g. SOFTHSM2_CONF=...); given to the signer and the monitor only" },
  CA_CERT: { kind: "path", default: undefined, section: "token", doc: "CA certificate (PEM) whose public key must match the token key" },
  // paths
  CA_DIR: { kind: "path", default: "/var/lib/etoken-ca/ca", section: "paths", doc: "CA database in openssl ca format (index.txt, serial, crlnumber, newcerts/); signer user only, 0700" },
  CRL_DIR: { kind: "path", default: "/var/lib/etoken-ca/crl", section: "paths", doc: "Numbered CRLs and the crl.pem / crl.der latest links; written by the signer, world-readable" },
  SPOOL_DIR: { kind: "path", default: "/run/etoken-ca-spool/request", section: "paths", doc: "Request spool shared by CLIENT_USER and SPOOL_USER (2770); on tmpfs (/run): its files are worthless after a reboot and cost less CPU there than on a journaling file system" },
  REVOKE_DIR: { kind: "path", default: "/var/cache/etoken-ca/revoke", section: "paths", doc: "Revocation queue written by root (revoke-cert) and read by the kernel; root 0700, no service can reach it" },
  PIDFILE: { kind: "path", default: "/run/etoken-ca/etoken-ca-server.pid", section: "paths", doc: "Kernel pid file (revoke-cert signals it)" },
  STATUS_FILE: { kind: "path", default: "/run/etoken-ca/status.json", section: "paths", doc: "Status (JSON, no secrets) read by 'etoken-ca status'" },
  METRICS_FILE: { kind: "optionalPath", default: "", section: "paths", doc: "Prometheus metrics in the text format, for node_exporter's textfile collector (a NAME.prom file in its --collector.textfile.directory); written 0644 by the kernel when it changes (counters at most once a second); empty = off" },
  // users
  SIGNER_USER: { kind: "user", default: "causer", section: "users", doc: "Runs the signer (token session, CA database)" },
  SPOOL_USER: { kind: "user", default: "etoken-spool", section: "users", doc: "Runs the spool watcher" },
  MONITOR_USER: { kind: "user", default: "etoken-mon", section: "users", doc: "Runs the token monitor" },
  NOTIFIER_USER: { kind: "user", default: "etoken-notify", section: "users", doc: "Runs the notifier and its hooks" },
  CLIENT_USER: { kind: "user", default: "myproxy", section: "users", doc: "The MyProxy server's user, which runs etoken-ca-client" },
  // console
  CONSOLE: { kind: "path", default: "/dev/tty8", section: "console", doc: "Console device the PIN is read from (a Linux virtual terminal)" },
  CONSOLE_ALLOW_PTY: { kind: "bool", default: "no", section: "console", doc: "Accept a pseudo-terminal as CONSOLE (tests and the demo only)" },
  // issuing
  MAX_LIFETIME: { kind: "duration", default: "43200", section: "issuing", doc: "Longest validity (notAfter - notBefore, the 5-minute backdating of notBefore included) of a certificate (seconds, or with s/m/h/d); at most 395d (13 months), above 1000000 s (the IGTF ceiling for short-lived credentials) warned", max: { limit: "395d", why: "13 months, the longest an IGTF end-entity certificate may live" } },
  MIN_KEY_BITS: { kind: "integer", default: "2048", section: "issuing", doc: "Smallest RSA modulus accepted in a request" },
  CLIENT_TIMEOUT: { kind: "duration", default: "60", section: "issuing", doc: "How long etoken-ca-client waits for its certificate; the CA never signs a request past it; at most 1h", max: { limit: "1h", why: "MyProxy's request_timeout, which it stays below, is minutes" } },
  SIGN_TIMEOUT: { kind: "duration", default: "10s", section: "issuing", doc: "Longest the token may take over one signature (C_Sign; a CRL gets 0.04 ms more per entry) before the kernel declares the signer hung: the waiting request (or the CRL) fails, the signer is killed and restarted, and the PIN the kernel holds logs the new one in; at most 10m", max: { limit: "10m", why: "a signature not finished after this long is a hung token" } },
  FENCE_REVOKE_REASON: { kind: "reason", default: "unspecified", section: "issuing", doc: "Revocation reason for certificates signed while the token was being removed" },
  UNDELIVERED_REVOKE_REASON: { kind: "reason", default: "cessationOfOperation", section: "issuing", doc: "Revocation reason for certificates signed but never handed to their client (client gave up, a process died)" },
  // CRLs
  CRL_LIFETIME: { kind: "duration", default: "30d", section: "crl", doc: "nextUpdate - thisUpdate of each CRL; above 30 days is warned; at most 365d", max: { limit: "365d", why: "relying parties would trust a revoked certificate for longer than a year" } },
  CRL_REISSUE_BEFORE: { kind: "duration", default: "7d", section: "crl", doc: "A new CRL is in place at least this long before the current one's nextUpdate; from that point on, without a PIN, the crl-expiring warning is given every hour; shorter than CRL_LIFETIME, at most 365d", max: { limit: "365d", why: "it must be shorter than CRL_LIFETIME" } },
  // audit trail
  AUDIT_LOG: { kind: "path", default: "/var/log/etoken-ca/audit.log", section: "audit", doc: "Tamper-evident audit trail (JSON lines, hash-chained) written by the signer: issuances, revocations, CRLs, logins, token events; its directory is the signer's, 0700. Every CRL commits to its head; check it with etoken-ca audit verify" },
  AUDIT_CHECKPOINT_INTERVAL: { kind: "duration", default: "1d", section: "audit", doc: "While the PIN is there, a new CRL (and with it a checkpoint of the audit trail) is made at least this often; at most 365d", max: { limit: "365d", why: "an audit trail unchecked for longer than a year" } },
  AUDIT_ROTATE_SIZE: { kind: "integer", default: "67108864", section: "audit", doc: "The audit trail's file is renamed to AUDIT_LOG.<first line number> once it would grow past this many bytes (0: never); the chain continues in the new file" },
  // hooks and mail
  NOTIFY_HOOK: { kind: "optionalPath", default: "", section: "notify", doc: "Executable run on every event: argument = event name, details in ETOKEN_* variables, message on stdin" },
  POST_CRL_HOOK: { kind: "optionalPath", default: "", section: "notify", doc: "Executable run after each new CRL with the numbered DER file (CRL_DIR/crl-NNNNNN.der) as argument and CRL_URLS in ETOKEN_CRL_URLS" },
  HOOK_TIMEOUT: { kind: "duration", default: "30", section: "notify", doc: "A hook still running after this is killed and reported; at most 1h", max: { limit: "1h", why: "a hook running longer is hung; it also bounds each SMTP exchange" } },
  NOTIFY_EMAIL: { kind: "emailList", default: "", section: "notify", doc: "Comma-separated operator addresses; empty disables e-mail" },
  NOTIFY_FROM: { kind: "string", default: "etoken-ca@localhost", section: "notify", doc: "Sender address of notification e-mail" },
  SMTP_URL: { kind: "smtpUrl", default: "smtp://localhost:25", section: "notify", doc: "SMTP server for notification e-mail (smtp:// or smtps://)" },
  NOTIFY_RATE_LIMIT: { kind: "duration", default: "300", section: "notify", doc: "The same event is e-mailed at most once per this interval; at most 7d", max: { limit: "7d", why: "a repeat held longer than a week is no longer news" } },
  // monitor
  TOKEN_POLL_INTERVAL: { kind: "duration", default: "2", section: "monitor", doc: "Longest a token removal can go unnoticed by polling PKCS#11: the monitor looks a little more often, leaving room for its confirming second look; where the module has slot events, these polls are a safety net ten times less often (accepts ms, e.g. 500ms); at most 1h", max: { limit: "1h", why: "a removal unnoticed for longer is no longer watched" } },
  // backend
  SIGNER_BACKEND: { kind: "backend", default: "pkcs11", section: "backend", doc: "pkcs11 (native) or openssl (openssl ca with the pkcs11 engine)" },
  OPENSSL_CA_CONF: { kind: "optionalPath", default: "", section: "backend", doc: "openssl.cnf for SIGNER_BACKEND=openssl" },
  LOG_LEVEL: { kind: "logLevel", default: "info", section: "logging", doc: "debug, info, notice, warning or error" },
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof CONFIG_SCHEMA;

/** notBefore = issuing time - this: the certificate profile's allowance for clients' clock skew. */
export const BACKDATE_SECONDS = 300;

export interface UsbId { vendor: number; product: number }
/**
 * The token and key KEY names. `slot` is an index into the slots that hold an initialised token
 * (the SLOT:ID form: 0 = the first); `slotId` is PKCS#11's own CK_SLOT_ID (a pkcs11: URI's
 * slot-id, RFC 7512), which modules such as SoftHSM make large and arbitrary.
 */
export interface KeyRef {
  slot: number | undefined;
  slotId: number | undefined;
  id: string | undefined;
  label: string | undefined;
  tokenLabel: string | undefined;
  tokenSerial: string | undefined;
}

/** What each kind parses to. */
export interface KindValue {
  string: string;
  dnFormat: string;
  path: string;
  optionalPath: string;
  duration: number; // milliseconds
  integer: number;
  bool: boolean;
  oidList: string[];
  uriList: string[];
  usbDevice: UsbId | null;
  keySpec: KeyRef;
  envList: Record<string, string>;
  user: string;
  logLevel: "debug" | "info" | "notice" | "warning" | "error";
  backend: "pkcs11" | "openssl";
  emailList: string[];
  smtpUrl: string;
  reason: string;
  rdnTypes: string[];
}

export type Config = { readonly [K in ConfigKey]: KindValue[(typeof CONFIG_SCHEMA)[K]["kind"]] } & {
  /** The file it came from, for messages. */
  readonly sourceFile: string;
  /** Retired keys the file still sets, with their lines: warned about, otherwise ignored. */
  readonly retiredKeys?: readonly { key: string; line: number }[];
};

/** Keys earlier releases knew, and why they no longer do anything: a warning, not a refusal. */
export const RETIRED_KEYS: Readonly<Record<string, string>> = {
  CRL_WARN_BEFORE: "the crl-expiring warning now starts when CRL_REISSUE_BEFORE's reissue point passes without a PIN",
};
