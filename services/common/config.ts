// The one configuration loader: shell KEY=value syntax, parsed and never executed.
import { redactCredentials } from "./redact.js";
import * as fs from "node:fs";
import { ConfigError } from "./errors.js";
import { BACKDATE_SECONDS, CONFIG_SCHEMA, RETIRED_KEYS, type Config, type ConfigKey, type KindValue, type KeyRef, type KeySpec, type ValueKind } from "./config-schema.js";
import { compileDnFormat, parseUsernameRdnTypes, type DnTemplate } from "./x509/dn.js";
import { isRevocationReason, reasonProblem } from "./reasons.js";

export const DEFAULT_CONFIG_FILE = "/etc/sysconfig/etoken-ca";
const MAX_CONFIG_BYTES = 256 * 1024;

export interface RawEntry { key: string; value: string; line: number }

/** Splits shell KEY=value text into entries; rejects anything a shell would expand or run. */
export function parseShellAssignments(text: string, file: string): RawEntry[] {
  const entries: RawEntry[] = [];
  const lines = text.split("\n");
  lines.forEach((rawLine, index) => {
    const line = index + 1;
    const fail = (msg: string): never => {
      throw new ConfigError("syntax", msg, { file, line });
    };
    let s = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (s.includes("\0")) fail("NUL byte in line");
    s = s.replace(/^[ \t]+/, "");
    if (s === "" || s.startsWith("#")) return;
    if (s.startsWith("export ") || s.startsWith("export\t")) s = s.slice(6).replace(/^[ \t]+/, "");
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=/.exec(s);
    if (!m) fail(`expected KEY=value, found ${JSON.stringify(s.slice(0, 40))}`);
    const key = m![1]!;
    let i = m![0].length;
    let value = "";
    while (i < s.length) {
      const c = s[i]!;
      if (c === " " || c === "\t") {
        const rest = s.slice(i).trim();
        if (rest === "" || rest.startsWith("#")) break;
        fail(`unquoted space in the value of ${key} (quote the value)`);
      } else if (c === "'") {
        const end = s.indexOf("'", i + 1);
        if (end < 0) fail(`unterminated single quote in the value of ${key}`);
        value += s.slice(i + 1, end);
        i = end + 1;
      } else if (c === '"') {
        i++;
        let closed = false;
        while (i < s.length) {
          const d = s[i]!;
          if (d === '"') { closed = true; i++; break; }
          if (d === "\\") {
            const e = s[i + 1];
            if (e === undefined) fail(`line continuation is not supported (value of ${key})`);
            if (e === '"' || e === "\\" || e === "$" || e === "`") { value += e; i += 2; continue; }
            value += "\\"; i++; continue;
          }
          if (d === "$" || d === "`") fail(`shell expansion (${d}) is not supported in the value of ${key}`);
          value += d; i++;
        }
        if (!closed) fail(`unterminated double quote in the value of ${key}`);
      } else if (c === "\\") {
        const e = s[i + 1];
        if (e === undefined) fail(`line continuation is not supported (value of ${key})`);
        value += e; i += 2;
      } else if (c === "$" || c === "`") {
        fail(`shell expansion (${c}) is not supported in the value of ${key}`);
      } else if (c === ";" || c === "&" || c === "|" || c === "<" || c === ">" || c === "(" || c === ")") {
        fail(`shell metacharacter ${JSON.stringify(c)} in the value of ${key} (quote the value)`);
      } else {
        value += c; i++;
      }
    }
    entries.push({ key, value, line });
  });
  return entries;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const OID = /^[0-2](\.(0|[1-9][0-9]{0,9}))+$/;
const USER = /^[a-z_][a-z0-9_-]{0,31}\$?$/;
const EMAIL = /^[A-Za-z0-9.!#%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Also refused: every NODE_* (Node reads them; NODE_OPTIONS=--inspect would open a debugger). */
const FORBIDDEN_ENV = new Set(["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME", "USER"]);

type Parser<K extends ValueKind> = (v: string, bad: Bad, refuse: Bad) => KindValue[K];
/** `KEY="value": expected <what>` */
type Bad = (expected: string) => never;

export function parseKeySpec(v: string, bad: Bad): KeyRef {
  if (v.startsWith("pkcs11:")) return parsePkcs11Uri(v, bad);
  const m = /^([0-9]+):([0-9A-Fa-f]*)$/.exec(v);
  if (!m) bad("SLOT:ID (slot number, colon, hex key id, e.g. 0:01) or a pkcs11: URI");
  const id = m![2]!;
  if (id.length % 2 !== 0) bad("an even number of hex digits as the key id");
  return { slot: Number(m![1]), slotId: undefined, id: id === "" ? undefined : id.toLowerCase(), label: undefined, tokenLabel: undefined, tokenSerial: undefined };
}

function parsePkcs11Uri(v: string, bad: Bad): KeyRef {
  const ref: KeyRef = { slot: undefined, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined };
  const path = v.slice("pkcs11:".length).split("?")[0]!;
  if (path === "") return ref;
  for (const attr of path.split(";")) {
    const eq = attr.indexOf("=");
    if (eq <= 0) bad(`pkcs11: URI attributes as name=value (found ${JSON.stringify(attr)})`);
    const name = attr.slice(0, eq);
    if (name === "id") {
      // RFC 7512: id is raw bytes, percent-encoded byte by byte (not UTF-8: %9f is valid here)
      const raw = attr.slice(eq + 1);
      if (!/^(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9\-._~])*$/.test(raw)) bad("the key id as percent-encoded bytes in the pkcs11: URI (e.g. id=%01%a2)");
      ref.id = Buffer.from(raw.replace(/%([0-9A-Fa-f]{2})|([^%])/g, (_m, hex: string | undefined, ch: string | undefined) => (hex !== undefined ? String.fromCharCode(parseInt(hex, 16)) : ch!)), "latin1").toString("hex");
      continue;
    }
    let value: string;
    try {
      value = decodeURIComponent(attr.slice(eq + 1));
    } catch {
      bad(`valid percent-encoding in pkcs11: URI attribute ${name}`);
    }
    switch (name) {
      case "id": ref.id = Buffer.from(value!, "latin1").toString("hex"); break;
      case "object": ref.label = value!; break;
      case "token": ref.tokenLabel = value!; break;
      case "serial": ref.tokenSerial = value!; break;
      case "slot-id": {
        if (!/^[0-9]{1,20}$/.test(value!) || !Number.isSafeInteger(Number(value!))) bad("a decimal slot-id in the pkcs11: URI");
        ref.slotId = Number(value!); // PKCS#11's CK_SLOT_ID, not a position in the slot list
        break;
      }
      case "type": if (value! !== "private") bad("type=private in the pkcs11: URI"); break;
      case "manufacturer": case "model": case "library-manufacturer": case "library-description": case "library-version": case "slot-description": case "slot-manufacturer": break;
      default: bad(`known pkcs11: URI attributes (unknown ${name})`);
    }
  }
  return ref;
}

/** `refuse` reports a broken rule as `KEY="value": <rule>` (for rules that do not read as "expected ..."). */
const PARSERS: { [K in ValueKind]: (v: string, bad: Bad, refuse: Bad) => KindValue[K] } = {
  string: (v) => v,
  // compiled with USERNAME_RDN_TYPES once all values are parsed (parseConfig), and only once
  dnFormat: (v) => v,
  path: (v, bad) => {
    if (!v.startsWith("/")) bad("an absolute path");
    if (v.includes("\0")) bad("a path without NUL");
    return v;
  },
  optionalPath: (v, bad) => (v === "" ? "" : PARSERS.path(v, bad, bad)),
  duration: (v, bad) => {
    const m = /^([0-9]{1,12})(ms|s|m|h|d)?$/.exec(v);
    if (!m) bad("a duration: a whole number of seconds, or with a unit ms, s, m, h or d (e.g. 43200, 12h, 500ms)");
    const ms = Number(m![1]) * DURATION_UNITS[m![2] ?? "s"]!;
    if (ms <= 0) bad("a duration greater than zero");
    return ms;
  },
  integer: (v, bad) => {
    if (!/^[0-9]{1,9}$/.test(v)) bad("a whole number");
    return Number(v);
  },
  bool: (v, bad) => {
    const l = v.toLowerCase();
    if (["yes", "true", "1", "on"].includes(l)) return true;
    if (["no", "false", "0", "off", ""].includes(l)) return false;
    return bad("yes or no");
  },
  oidList: (v, bad) => nonEmpty(splitList(v), bad, "at least one dotted OID").map((o) => (OID.test(o) ? o : bad(`comma-separated dotted OIDs (bad: ${JSON.stringify(o)})`))),
  uriList: (v, bad) =>
    nonEmpty(splitList(v), bad, "at least one URI:http://... entry").map((u) => {
      const m = /^URI:(https?:\/\/[\x21-\x7e]+)$/.exec(u);
      if (!m) bad(`comma-separated URI:http://... entries: relying parties fetch a CRL distribution point over http (RFC 5280 4.2.1.13) (bad: ${JSON.stringify(u)})`);
      return m![1]!;
    }),
  usbDevice: (v, bad) => {
    if (v === "") return null;
    const m = /^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$/.exec(v);
    if (!m) bad("vendor:product as four hex digits each, as lsusb prints it (e.g. 0529:0620)");
    return { vendor: parseInt(m![1]!, 16), product: parseInt(m![2]!, 16) };
  },
  keySpec: parseKeySpec,
  envList: (v, bad) => {
    const out: Record<string, string> = {};
    for (const pair of v.split(/[ \t]+/).filter(Boolean)) {
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq);
      if (eq <= 0 || !ENV_NAME.test(name)) bad(`space-separated NAME=value pairs (bad: ${JSON.stringify(pair)})`);
      if (FORBIDDEN_ENV.has(name) || name.startsWith("NODE_")) bad(`no ${name} (it would change how the services run)`);
      out[name] = pair.slice(eq + 1);
    }
    return out;
  },
  user: (v, bad) => (USER.test(v) ? v : bad("a Unix user name")),
  logLevel: (v, bad) => {
    if (v === "debug" || v === "info" || v === "notice" || v === "warning" || v === "error") return v;
    return bad("one of debug, info, notice, warning, error");
  },
  backend: (v, bad) => (v === "pkcs11" || v === "openssl" ? v : bad("pkcs11 or openssl")),
  emailList: (v, bad) => splitList(v).map((a) => (EMAIL.test(a) ? a : bad(`comma-separated e-mail addresses (bad: ${JSON.stringify(a)})`))),
  smtpUrl: (v, bad) => {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return bad("an smtp:// or smtps:// URL");
    }
    if (u.protocol !== "smtp:" && u.protocol !== "smtps:") bad("an smtp:// or smtps:// URL");
    return v;
  },
  reason: (v, _bad, refuse) => (isRevocationReason(v) ? v : refuse(reasonProblem(v))),
  rdnTypes: (v, bad) => parseUsernameRdnTypes(splitList(v), (m) => bad(`attribute types a username may bring: ${m}`)),
};

function nonEmpty(list: string[], bad: Bad, expected: string): string[] {
  if (list.length === 0) bad(expected);
  return list;
}

function splitList(v: string): string[] {
  return v.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** The configuration as a subset load returns it: the listed keys, and where it came from. */
export type ConfigOf<K extends ConfigKey> = Pick<Config, K | "sourceFile" | "retiredKeys">;

/** The subject template of each loaded configuration: DN_FORMAT is compiled once, by the loader. */
const DN_TEMPLATES = new WeakMap<object, DnTemplate>();

/**
 * Parses configuration text; `file` is used in messages only. With `keys` (a program that needs
 * only a few, such as etoken-ca-client, which MyProxy starts per logon), every line's syntax and
 * key name are still checked, but only the values of those keys (DN_FORMAT brings
 * USERNAME_RDN_TYPES) are parsed, defaulted and required, and the rules between keys of the
 * whole configuration are left to the programs that load all of it.
 */
export function parseConfig(text: string, file: string): Config;
export function parseConfig<K extends ConfigKey>(text: string, file: string, keys: readonly K[]): ConfigOf<K>;
export function parseConfig(text: string, file: string, keys?: readonly ConfigKey[]): ConfigOf<ConfigKey> {
  const wanted: ReadonlySet<string> | undefined = keys && new Set<string>(keys.includes("DN_FORMAT") ? [...keys, "USERNAME_RDN_TYPES"] : keys);
  const entries = parseShellAssignments(text, file);
  const seen = new Map<string, number>();
  const values: Record<string, unknown> = {};
  const retiredKeys: { key: string; line: number }[] = [];
  for (const { key, value, line } of entries) {
    if (Object.prototype.hasOwnProperty.call(RETIRED_KEYS, key)) {
      retiredKeys.push({ key, line });
      continue;
    }
    if (!Object.prototype.hasOwnProperty.call(CONFIG_SCHEMA, key)) {
      const near = closestKey(key);
      throw new ConfigError("unknown_key", `unknown key ${key}${near ? ` (did you mean ${near}?)` : ""}`, { file, line, key });
    }
    const previous = seen.get(key);
    if (previous !== undefined) {
      throw new ConfigError("duplicate_key", `${key} is set again (first set on line ${previous})`, { file, line, key });
    }
    seen.set(key, line);
    if (wanted === undefined || wanted.has(key)) values[key] = parseValue(key as ConfigKey, value, file, line);
  }
  let dn: DnTemplate | undefined;
  if (typeof values.DN_FORMAT === "string") {
    // before the missing keys, as when DN_FORMAT was checked on its own line
    values.USERNAME_RDN_TYPES ??= parseValue("USERNAME_RDN_TYPES", CONFIG_SCHEMA.USERNAME_RDN_TYPES.default, file, 0);
    dn = compileDnFormat(values.DN_FORMAT, values.USERNAME_RDN_TYPES as string[], refuser("DN_FORMAT", values.DN_FORMAT, file, seen.get("DN_FORMAT") ?? 0));
  }
  for (const [key, spec] of Object.entries(CONFIG_SCHEMA) as [ConfigKey, (typeof CONFIG_SCHEMA)[ConfigKey]][]) {
    if (key in values || (wanted !== undefined && !wanted.has(key))) continue;
    if (spec.default === undefined) {
      throw new ConfigError("missing_key", `${key} is required (${spec.doc})`, { file, key });
    }
    values[key] = parseValue(key, spec.default, file, 0);
  }
  const config = { ...values, sourceFile: file, ...(retiredKeys.length > 0 ? { retiredKeys } : {}) } as unknown as Config;
  if (wanted === undefined) crossCheck(config, file, seen);
  Object.freeze(config);
  if (dn) DN_TEMPLATES.set(config, dn);
  return config;
}

/** The known key an unknown one is a slip of (edit distance at most 2), if there is one. */
function closestKey(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const known of Object.keys(CONFIG_SCHEMA)) {
    const d = editDistance(key.toUpperCase(), known);
    if (d < bestDistance) [best, bestDistance] = [known, d];
  }
  return best;
}

/** Levenshtein distance. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    row = next;
  }
  return row[b.length]!;
}

/** Reports a broken rule as `KEY="value": <rule>` with the file and line (0: the default). */
function refuser(key: ConfigKey, value: string, file: string, line: number): Bad {
  return (rule) => {
    // a URL that is not one may still hold credentials: SMTP_URL is never quoted
    const shown = CONFIG_SCHEMA[key].kind === "smtpUrl" ? "" : `=${JSON.stringify(redactCredentials(value.length > 80 ? value.slice(0, 80) + "..." : value))}`;
    throw new ConfigError("bad_value", `${key}${shown}: ${rule}`, {
      file,
      line: line || undefined,
      key,
    });
  };
}

function parseValue(key: ConfigKey, value: string, file: string, line: number): unknown {
  const refuse = refuser(key, value, file, line);
  const bad: Bad = (expected) => refuse(`expected ${expected}`);
  const spec: KeySpec = CONFIG_SCHEMA[key];
  const parsed = (PARSERS[spec.kind] as Parser<ValueKind>)(value, bad, refuse);
  if (spec.max !== undefined && (parsed as number) > durationLimitMs(key, spec.max.limit)) refuse(`longer than ${spec.max.limit} (${spec.max.why})`);
  return parsed;
}

/** A duration's maximum in ms, as the schema writes it. */
function durationLimitMs(key: ConfigKey, limit: string): number {
  return PARSERS.duration(limit, (expected) => {
    throw new Error(`CONFIG_SCHEMA.${key}.max: expected ${expected}`);
  }, (rule) => {
    throw new Error(`CONFIG_SCHEMA.${key}.max: ${rule}`);
  });
}

function crossCheck(c: Config, file: string, seen: Map<string, number>): void {
  const users: ConfigKey[] = ["SIGNER_USER", "SPOOL_USER", "MONITOR_USER", "NOTIFIER_USER", "CLIENT_USER"];
  for (let i = 0; i < users.length; i++) {
    for (let j = i + 1; j < users.length; j++) {
      if (c[users[i]!] === c[users[j]!]) {
        throw new ConfigError("shared_user", `${users[j]} and ${users[i]} are both ${c[users[j]!]}: every service needs its own user`, {
          file,
          line: seen.get(users[j]!) ?? seen.get(users[i]!),
        });
      }
    }
    if (c[users[i]!] === "root") {
      throw new ConfigError("root_user", `${users[i]} may not be root`, { file, line: seen.get(users[i]!) });
    }
  }
  const lifetime = `MAX_LIFETIME=${formatDuration(c.MAX_LIFETIME)}`;
  if (c.MAX_LIFETIME <= BACKDATE_SECONDS * 1000) {
    throw new ConfigError("bad_value", `${lifetime}: must be longer than the ${BACKDATE_SECONDS / 60}-minute backdating of notBefore, which it includes`, { file, line: seen.get("MAX_LIFETIME"), key: "MAX_LIFETIME" });
  }
  if (c.CRL_REISSUE_BEFORE >= c.CRL_LIFETIME) {
    throw new ConfigError("bad_value", `CRL_REISSUE_BEFORE must be shorter than CRL_LIFETIME`, { file, line: seen.get("CRL_REISSUE_BEFORE") });
  }
  if (c.SIGNER_BACKEND === "openssl" && c.OPENSSL_CA_CONF === "") {
    throw new ConfigError("missing_key", `SIGNER_BACKEND=openssl needs OPENSSL_CA_CONF`, { file, line: seen.get("SIGNER_BACKEND") });
  }
  const dirs: ConfigKey[] = ["CA_DIR", "CRL_DIR", "SPOOL_DIR", "REVOKE_DIR"];
  for (let i = 0; i < dirs.length; i++) {
    for (let j = i + 1; j < dirs.length; j++) {
      const a = c[dirs[i]!] as string, b = c[dirs[j]!] as string;
      if (a === b || a.startsWith(b + "/") || b.startsWith(a + "/")) {
        throw new ConfigError("shared_dir", `${dirs[i]} (${a}) and ${dirs[j]} (${b}) must be separate directories`, { file });
      }
    }
  }
}

/** The IGTF ceiling for short-lived credentials (1,000,000 s, about 11.6 days). */
const SHORT_LIVED_MS = 1_000_000_000;
const CRL_LIFETIME_WARN_MS = 30 * 86_400_000;

/** A duration as the configuration could say it (whole seconds, or ms). */
function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Rules a configuration may break with a warning only: [key, broken?, rule]. */
const WARNINGS: readonly [ConfigKey, (c: Config) => boolean, string][] = [
  ["MAX_LIFETIME", (c) => c.MAX_LIFETIME > SHORT_LIVED_MS, "above 1000000 s, the IGTF ceiling for short-lived credentials"],
  ["CRL_URLS", (c) => c.CRL_URLS.some((u) => u.startsWith("https:")), "https distribution points are not followed by every relying party (RFC 5280 4.2.1.13 asks for http)"],
  ["CRL_LIFETIME", (c) => c.CRL_LIFETIME > CRL_LIFETIME_WARN_MS, "above 30 days: relying parties would keep trusting revoked certificates for that long after a CRL could not be renewed"],
];

/** One line per warning: the file, the key, its value, the rule. */
export function configWarnings(c: Config): string[] {
  const retired = (c.retiredKeys ?? []).map(({ key, line }) => `${c.sourceFile}:${line}: ${key} is no longer used (${RETIRED_KEYS[key]}): remove it`);
  return retired.concat(
    WARNINGS.filter(([, broken]) => broken(c)).map(([key, , rule]) => {
      const v = c[key];
      const shown = typeof v === "number" ? formatDuration(v) : Array.isArray(v) ? v.map((u) => `URI:${u}`).join(",") : String(v);
      return `${c.sourceFile}: ${key}=${JSON.stringify(shown)}: ${rule}`;
    }),
  );
}

/** Reads and parses the configuration file (with `keys`: see parseConfig); every failure is a ConfigError naming the file. */
export function loadConfig(file?: string): Config;
export function loadConfig<K extends ConfigKey>(file: string, keys: readonly K[]): ConfigOf<K>;
export function loadConfig(file: string = DEFAULT_CONFIG_FILE, keys?: readonly ConfigKey[]): ConfigOf<ConfigKey> {
  let text: string;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new ConfigError("not_file", "not a regular file", { file });
      if (st.size > MAX_CONFIG_BYTES) throw new ConfigError("too_large", `larger than ${MAX_CONFIG_BYTES} bytes`, { file });
      text = fs.readFileSync(fd, "utf8");
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "ELOOP" ? "is a symbolic link (refused)" : code === "EACCES" ? "permission denied" : String(code ?? err);
    throw new ConfigError("unreadable", `cannot read configuration: ${why}`, { file });
  }
  return keys ? parseConfig(text, file, keys) : parseConfig(text, file);
}

/** The subject template every process builds and checks names with: DN_FORMAT, USERNAME_RDN_TYPES. */
export function dnTemplateOf(config: Pick<Config, "DN_FORMAT" | "USERNAME_RDN_TYPES">): DnTemplate {
  return DN_TEMPLATES.get(config) ?? compileDnFormat(config.DN_FORMAT, config.USERNAME_RDN_TYPES);
}

/** `--config FILE` from argv (or the default), for every program. */
export function configPathFromArgs(argv: readonly string[]): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--config") return argv[i + 1] ?? DEFAULT_CONFIG_FILE;
    if (a.startsWith("--config=")) return a.slice("--config=".length);
  }
  return DEFAULT_CONFIG_FILE;
}
