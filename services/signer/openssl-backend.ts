// The `openssl ca` signing backend (SIGNER_BACKEND=openssl): the path the replaced system
// used, kept for operators who migrate and as the baseline the native path is measured
// against. Each certificate is one `openssl ca` run, as SIGNER_USER, with Debian's
// libengine-pkcs11-openssl engine and the operator's OPENSSL_CA_CONF:
//
//   openssl ca -batch -config OPENSSL_CA_CONF -engine pkcs11 -keyform engine
//              -keyfile 'pkcs11:serial=<token>;id=<CKA_ID>;type=private' -cert CA_CERT
//              -passin fd:3 -in <csr> -out <cert> -notext -subj <DN_FORMAT + username> -utf8
//              -preserveDN -rand_serial -md sha256 -startdate <now - 300 s> -enddate <clamped>
//              -extfile <per-request profile> -extensions etoken_ca_cert
//
// and each CRL one `openssl ca -gencrl ... -crl_lastupdate -crl_nextupdate`, published in the
// CRL_DIR layout of crl-publisher.ts (numbered files, metadata, atomic latest links). Its config
// is a generated file that includes OPENSSL_CA_CONF and adds our -crlexts section (the audit
// checkpoint; see crlConfig).
//
// The PIN: `openssl ca` logs in to the token on every run, so this backend keeps the PIN in
// one Buffer of its own (secretBuffer: outside V8's heap, never moved) from login until logout,
// token loss or stop, when it is zeroed. Each run gets it through a socketpair on fd 3 (`-passin fd:3`,
// which the engine uses for C_Login): never in argv, never in a file, never in an
// environment. The login itself goes through native-backend.ts (serial check, PIN flags,
// C_Login, key against CA_CERT), then once more through openssl (a signature with the engine
// key, verified with CA_CERT), so a broken engine setup shows at login, not at the first
// request.
//
// The engine is told where the PKCS#11 module is by a generated OpenSSL config (OPENSSL_CONF
// in the child's environment: dynamic_path, MODULE_PATH; no PIN in it). The profile: subject
// from DN_FORMAT (-subj, -preserveDN: exactly our RDNs in our order), lifetime clamped as in
// the native backend, extensions from a per-request -extfile that mirrors profile.ts (the
// operator's x509_extensions are not used; CSR extensions are never copied: a config with
// copy_extensions = copy/copyall is refused). Serial numbers: -rand_serial (159 random bits).
//
// One `openssl ca` at a time (it rewrites index.txt); revocations wait for it too. After each
// run the in-memory CaDatabase re-reads index.txt (CaDatabase.refresh()).
//
// The binary is /usr/bin/openssl; PKCS11_ENV may name another one as ETOKEN_CA_OPENSSL=PATH
// (tests put a recording wrapper there); that variable is not passed on.
import { randomBytes, X509Certificate, verify as cryptoVerify } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Writable } from "node:stream";
import { execa, execaSync } from "execa";
import { ConfigError, EtokenError, RequestError, TokenError } from "../common/errors.js";
import { pemDecode, pemEncode } from "../common/x509/pem.js";
import { secretBuffer } from "../common/secret-buffer.js";
import type { IssueInput, IssueOutput, LoginOutcome, SigningBackend } from "./backend.js";
import { Serializer } from "./backend.js";
import type { CaDatabase } from "./cadb.js";
import { formatTime } from "../common/ca-dir/index-format.js";
import type { PublishedCrl } from "./crl-publisher.js";
import { BACKDATE_SECONDS } from "../common/config-schema.js";
import { parseName } from "../common/x509/dn.js";
import { NativeBackend, type BackendContext } from "./native-backend.js";
import { AUDIT_CHECKPOINT_OID, checkpointValue } from "../common/audit/checkpoint.js";
import type { ChainHead } from "../common/audit/trail.js";

export const DEFAULT_OPENSSL = "/usr/bin/openssl";
export const OPENSSL_ENV_KEY = "ETOKEN_CA_OPENSSL";
/** The extension section of the generated -extfile. */
export const EXT_SECTION = "etoken_ca_cert";
const RUN_TIMEOUT_MS = 60_000;

/** RFC 7512 percent-encoding of a URI attribute value. */
function pct(value: string): string {
  return Array.from(Buffer.from(value, "utf8"))
    .map((b) => (/[A-Za-z0-9\-._~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, "0")}`))
    .join("");
}

/** A value for an OpenSSL config file: `\` escapes what the parser would treat specially. */
function confValue(v: string): string {
  return v.replace(/[\\$#"';]/g, (c) => `\\${c}`);
}

/** `openssl ca -subj` text for a Name: `\` before `\`, `/` and `+` (multi-valued RDNs off). */
export function subjArgument(nameDer: Buffer): string {
  const fail = (m: string) => new RequestError("bad_subject", m);
  let out = "";
  for (const rdn of parseName(nameDer, fail)) {
    if (rdn.length !== 1) throw fail("multi-valued RDNs are not supported");
    const a = rdn[0]!;
    if (!a.short) throw fail(`attribute ${a.oid} has no OpenSSL short name`);
    const text = a.value.toString("utf8").replace(/[\\/+]/g, (c) => `\\${c}`);
    out += `/${a.short}=${text}`;
  }
  return out;
}

/** The per-request extension file: the same extensions, in the same order, as profile.ts. */
export function extensionFile(opts: { policies: readonly string[]; crlUrls: readonly string[]; emails: readonly string[] }): string {
  // CRL_URLS and CA_OIDS come parsed (no "URI:" prefix), e-mails checked by dn.ts
  const lines = [
    `# written by etoken-ca's openssl backend for one request`,
    `[ ${EXT_SECTION} ]`,
    "basicConstraints = critical,CA:FALSE",
    "keyUsage = critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage = clientAuth",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid:always",
  ];
  const tail: string[] = [];
  if (opts.policies.length) lines.push(`certificatePolicies = ${opts.policies.map(confValue).join(", ")}`);
  if (opts.crlUrls.length) {
    // one DistributionPoint whose fullName lists every URL, as the native profile does
    lines.push("crlDistributionPoints = etoken_ca_crldp");
    tail.push("[ etoken_ca_crldp ]", `fullname = ${opts.crlUrls.map((u) => `URI:${confValue(u)}`).join(", ")}`);
  }
  if (opts.emails.length) {
    lines.push("subjectAltName = @etoken_ca_san");
    tail.push("[ etoken_ca_san ]", ...opts.emails.map((e, i) => `email.${i + 1} = ${confValue(e)}`));
  }
  return [...lines, ...tail, ""].join("\n");
}

/** The OpenSSL config the child gets as OPENSSL_CONF: loads the engine with our module. */
export function engineConfig(enginePath: string, modulePath: string): string {
  return [
    "# written by etoken-ca's openssl backend: the pkcs11 engine and its PKCS#11 module (no PIN here)",
    "openssl_conf = etoken_ca_init",
    "[ etoken_ca_init ]",
    "engines = etoken_ca_engines",
    "[ etoken_ca_engines ]",
    "pkcs11 = etoken_ca_pkcs11",
    "[ etoken_ca_pkcs11 ]",
    "engine_id = pkcs11",
    `dynamic_path = ${confValue(enginePath)}`,
    `MODULE_PATH = ${confValue(modulePath)}`,
    "init = 0",
    "",
  ].join("\n");
}

/** Reads the operator's openssl.cnf enough to refuse what would break the profile. */
export function checkCaConf(file: string): void {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError("openssl_conf", `OPENSSL_CA_CONF ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { key: "OPENSSL_CA_CONF" });
  }
  text.split("\n").forEach((line, i) => {
    const m = /^\s*copy_extensions\s*=\s*([A-Za-z]+)/.exec(line);
    if (m && m[1]!.toLowerCase() !== "none") {
      throw new ConfigError("openssl_conf", `copy_extensions = ${m[1]} would copy extensions from MyProxy's CSRs (a critical proxyCertInfo): expected none`, { file, line: i + 1, key: "OPENSSL_CA_CONF" });
    }
  });
}

/** The CRL extension section of the generated -gencrl configuration. */
export const CRL_EXT_SECTION = "etoken_ca_crl";

/**
 * The configuration `openssl ca -gencrl` runs with: the operator's file included as it is, plus
 * our CRL extensions (those of the native CRLs: authorityKeyIdentifier, and the audit trail's
 * checkpoint as a non-critical DER extension). crlnumber and the database stay the operator's.
 */
export function crlConfig(operatorConf: string, head: ChainHead): string {
  const value = checkpointValue(head).toString("hex").replace(/(..)(?!$)/g, "$1:");
  return [
    "# written by etoken-ca's openssl backend for one CRL",
    `.include ${path.resolve(operatorConf)}`,
    `[ ${CRL_EXT_SECTION} ]`,
    "authorityKeyIdentifier = keyid:always",
    `${AUDIT_CHECKPOINT_OID} = DER:${value}`,
    "",
  ].join("\n");
}

interface RunResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
}

export class OpensslBackend implements SigningBackend {
  readonly name = "openssl" as const;
  private readonly native: NativeBackend;
  private readonly serializer = new Serializer();
  private readonly openssl: string;
  private readonly env: Record<string, string>;
  private readonly work: string;
  private pin: Buffer | undefined;
  private keyUri: string | undefined;

  constructor(private readonly c: BackendContext) {
    const cfg = c.config;
    if (!cfg.OPENSSL_CA_CONF) throw new ConfigError("openssl_conf", "SIGNER_BACKEND=openssl needs OPENSSL_CA_CONF (the openssl.cnf with the ca section)", { key: "OPENSSL_CA_CONF" });
    checkCaConf(cfg.OPENSSL_CA_CONF);
    this.native = new NativeBackend(c);
    const { [OPENSSL_ENV_KEY]: bin, ...moduleEnv } = cfg.PKCS11_ENV;
    this.openssl = bin || DEFAULT_OPENSSL;
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-ca-openssl-"));
    fs.chmodSync(this.work, 0o700);
    const engineConf = path.join(this.work, "engine.cnf");
    fs.writeFileSync(engineConf, engineConfig(this.enginePath(), cfg.PKCS11_MODULE), { mode: 0o600 });
    this.env = { PATH: "/usr/bin:/bin", LANG: "C.UTF-8", OPENSSL_CONF: engineConf, ...moduleEnv };
  }

  /** ENGINESDIR/pkcs11.so as the openssl binary reports it. */
  private enginePath(): string {
    let out: string;
    try {
      out = execaSync(this.openssl, ["version", "-e"], { env: { PATH: "/usr/bin:/bin" }, extendEnv: false, timeout: 10_000 }).stdout;
    } catch (err) {
      throw new ConfigError("openssl_missing", `cannot run ${this.openssl} (SIGNER_BACKEND=openssl): ${(err as Error).message.split("\n")[0]}`, { key: "SIGNER_BACKEND" });
    }
    const m = /ENGINESDIR: "([^"]+)"/.exec(out);
    const p = path.join(m?.[1] ?? "/usr/lib/x86_64-linux-gnu/engines-3", "pkcs11.so");
    if (!fs.existsSync(p)) throw new ConfigError("engine_missing", `the PKCS#11 engine ${p} is missing: install libengine-pkcs11-openssl`, { key: "SIGNER_BACKEND" });
    return p;
  }

  get loggedIn(): { serial: string; label: string } | undefined {
    return this.pin && this.keyUri ? this.native.loggedIn : undefined;
  }

  /** The arguments naming the engine key and handing over the PIN (for both ca and dgst). */
  private keyArgs(keyOption: string): string[] {
    return ["-engine", "pkcs11", "-keyform", "engine", keyOption, this.keyUri!, "-passin", "fd:3"];
  }

  /**
   * Runs openssl with the PIN on fd 3 (a socketpair: written from our Buffer, then closed).
   * Never rejects: the caller looks at the exit code.
   */
  private run(args: string[]): Promise<RunResult> {
    const pin = this.pin;
    if (!pin) throw new TokenError("not_logged_in", "not logged in");
    return this.exec(args, { env: this.env, cwd: this.work, pin });
  }

  /**
   * One openssl child through execa, output collected here: execa's own buffering (its stream
   * transforms and collectors per run) raised the signer's peak RSS by ~16 MiB over a few
   * hundred runs, measured; openssl prints a few lines.
   */
  private async exec(args: string[], opts: { env: Record<string, string>; cwd?: string; pin?: Buffer }): Promise<RunResult> {
    const child = execa(this.openssl, args, {
      env: opts.env,
      extendEnv: false,
      cwd: opts.cwd,
      stdio: ["ignore", "pipe", "pipe", opts.pin ? "pipe" : "ignore"],
      reject: false,
      timeout: RUN_TIMEOUT_MS,
      buffer: false,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (d: Buffer) => out.push(d));
    child.stderr!.on("data", (d: Buffer) => err.push(d));
    if (opts.pin) {
      const fd3 = child.stdio[3] as unknown as Writable;
      fd3.on("error", () => {
        // openssl exited without reading the PIN: its exit code says why
      });
      fd3.end(opts.pin);
    }
    const r = await child;
    return {
      exitCode: r.exitCode,
      stdout: Buffer.concat(out).toString("utf8"),
      stderr: Buffer.concat(err).toString("utf8") + (r.timedOut ? `\n(killed after ${RUN_TIMEOUT_MS} ms)` : ""),
    };
  }

  private tmp(suffix: string): string {
    return path.join(this.work, `${randomBytes(8).toString("hex")}${suffix}`);
  }

  /** The useful part of openssl's stderr for a message: the error lines, short. */
  private static why(r: RunResult): string {
    const lines = r.stderr.split("\n").map((l) => l.trim()).filter(Boolean);
    const errors = lines.filter((l) => /error|unable|failed|cannot|problem|expired|not/i.test(l) && !/^Using configuration/.test(l));
    const picked = (errors.length ? errors : lines).slice(-3).join("; ");
    return `openssl exited with ${r.exitCode ?? "a signal"}${picked ? `: ${picked.slice(0, 600)}` : ""}`;
  }

  /** After a failed run: a gone token becomes a deviceLost TokenError (and the PIN is wiped). */
  private failure(r: RunResult, doing: string): EtokenError {
    const lost = this.native.probe();
    if (lost) {
      this.forgetPin();
      return new TokenError(lost.code.replace(/^token\./, ""), `${doing}: ${lost.message}`, { ckr: lost.ckr, deviceLost: true });
    }
    if (/PIN_INCORRECT|PIN_LOCKED|login failed/i.test(r.stderr)) {
      return new TokenError("engine_login", `${doing}: the engine could not log in to the token (${OpensslBackend.why(r)})`);
    }
    return new EtokenError("backend.openssl", `${doing}: ${OpensslBackend.why(r)}`);
  }

  private forgetPin(): void {
    this.pin?.fill(0);
    this.pin = undefined;
    this.keyUri = undefined;
  }

  async login(pin: Buffer, expectedSerial: string): Promise<LoginOutcome> {
    return this.serializer.run(async () => {
      this.forgetPin();
      const own = secretBuffer(pin.length);
      pin.copy(own);
      const outcome = await this.native.login(pin, expectedSerial); // zeroes `pin`
      if (!outcome.ok) {
        own.fill(0);
        return outcome;
      }
      const keyId = this.native.keyIdHex;
      if (!keyId) {
        own.fill(0);
        this.native.logout();
        return { ok: false, error: new TokenError("no_key_id", "the CA key on the token has no CKA_ID: openssl's engine cannot name it"), pinFlags: outcome.token.pinFlags };
      }
      this.pin = own;
      this.keyUri = `pkcs11:serial=${pct(outcome.token.serial)};id=${Array.from(Buffer.from(keyId, "hex")).map((b) => `%${b.toString(16).padStart(2, "0")}`).join("")};type=private`;
      const problem = await this.selfTest();
      if (problem) {
        this.forgetPin();
        this.native.logout();
        return { ok: false, error: problem, pinFlags: outcome.token.pinFlags };
      }
      return outcome;
    });
  }

  /** One signature through the engine, verified with CA_CERT: the openssl path works. */
  private async selfTest(): Promise<EtokenError | undefined> {
    const data = this.tmp(".challenge");
    const sig = this.tmp(".sig");
    const challenge = randomBytes(32);
    try {
      fs.writeFileSync(data, challenge, { mode: 0o600 });
      const r = await this.run(["dgst", "-sha256", ...this.keyArgs("-sign"), "-out", sig, data]);
      if (r.exitCode !== 0) return this.failure(r, "signing a challenge through the openssl pkcs11 engine");
      const signature = fs.readFileSync(sig);
      if (!cryptoVerify("sha256", challenge, this.c.ca.publicKey, signature)) {
        return new TokenError("wrong_key", `the key ${this.keyUri} that openssl's engine uses does not match CA_CERT (${this.c.config.CA_CERT})`);
      }
      return undefined;
    } finally {
      fs.rmSync(data, { force: true });
      fs.rmSync(sig, { force: true });
    }
  }

  logout(): void {
    this.forgetPin();
    this.native.logout();
  }

  issue(input: IssueInput): Promise<IssueOutput> {
    return this.serializer.run(() => this.issueNow(input));
  }

  private async issueNow(input: IssueInput): Promise<IssueOutput> {
    if (!this.loggedIn) throw new TokenError("not_logged_in", "not logged in");
    // openssl ca certifies the CSR's key: main.ts checked that it is input.publicKey (possession.ts)
    const cfg = this.c.config;
    const now = Math.floor(Date.now() / 1000) * 1000;
    const notBefore = new Date(now - BACKDATE_SECONDS * 1000);
    const notAfter = new Date(now + input.lifetimeSeconds * 1000);
    const csrFile = this.tmp(".csr");
    const extFile = this.tmp(".ext");
    const outFile = this.tmp(".pem");
    try {
      fs.writeFileSync(csrFile, pemEncode(input.csr, "CERTIFICATE REQUEST"), { mode: 0o600 });
      fs.writeFileSync(extFile, extensionFile({ policies: cfg.CA_OIDS, crlUrls: cfg.CRL_URLS, emails: input.emails }), { mode: 0o600 });
      const started = performance.now();
      const r = await this.run([
        "ca", "-batch", "-config", cfg.OPENSSL_CA_CONF,
        ...this.keyArgs("-keyfile"),
        "-cert", cfg.CA_CERT,
        "-in", csrFile, "-out", outFile, "-notext",
        "-subj", subjArgument(input.subject.der), "-utf8", "-preserveDN",
        "-rand_serial", "-md", "sha256",
        "-startdate", formatTime(notBefore), "-enddate", formatTime(notAfter),
        "-extfile", extFile, "-extensions", EXT_SECTION,
      ]);
      const signMs = performance.now() - started;
      if (r.exitCode !== 0) {
        const e = this.failure(r, "openssl ca could not sign the request");
        this.refreshQuietly();
        throw e;
      }
      const der = pemDecode(fs.readFileSync(outFile, "utf8"), "CERTIFICATE");
      const cert = new X509Certificate(der);
      const spki = cert.publicKey.export({ type: "spki", format: "der" });
      if (!spki.equals(input.publicKey)) throw new EtokenError("backend.openssl", "openssl ca certified a key other than the request's: certificate withheld");
      const db = this.c.db;
      db.refresh();
      const entry = db.get(cert.serialNumber);
      if (!entry) {
        throw new EtokenError("backend.openssl", `openssl ca recorded serial ${cert.serialNumber} outside CA_DIR (${cfg.CA_DIR}): OPENSSL_CA_CONF's database and new_certs_dir must be CA_DIR/index.txt and CA_DIR/newcerts`);
      }
      if (entry.subject !== input.subject.slash) {
        this.c.log.warning("openssl ca wrote another subject than the profile's", { serial: entry.serialHex, expected: input.subject.slash, written: entry.subject });
      }
      return { serialHex: entry.serialHex, certificateDer: der, notAfter: new Date(cert.validTo), subjectSlash: entry.subject, signMs };
    } finally {
      for (const f of [csrFile, extFile, outFile]) fs.rmSync(f, { force: true });
    }
  }

  private refreshQuietly(): void {
    try {
      this.c.db.refresh();
    } catch (err) {
      this.c.log.error("cannot re-read index.txt after openssl ca", { error: (err as Error).message });
    }
  }

  makeCrl(lifetimeMs: number, checkpoint: () => ChainHead): Promise<PublishedCrl> {
    return this.serializer.run(() => this.makeCrlNow(lifetimeMs, checkpoint));
  }

  private async makeCrlNow(lifetimeMs: number, checkpoint: () => ChainHead): Promise<PublishedCrl> {
    if (!this.loggedIn) throw new TokenError("not_logged_in", "not logged in");
    const cfg = this.c.config;
    const thisUpdate = new Date(Math.floor(Date.now() / 1000) * 1000);
    const nextUpdate = new Date(thisUpdate.getTime() + Math.max(1000, Math.floor(lifetimeMs / 1000) * 1000));
    const outFile = this.tmp(".crl");
    const confFile = this.tmp(".cnf");
    try {
      fs.writeFileSync(confFile, crlConfig(cfg.OPENSSL_CA_CONF, checkpoint()), { mode: 0o600 });
      const r = await this.run([
        "ca", "-batch", "-gencrl", "-config", confFile, "-crlexts", CRL_EXT_SECTION,
        ...this.keyArgs("-keyfile"),
        "-cert", cfg.CA_CERT, "-md", "sha256",
        "-crl_lastupdate", formatTime(thisUpdate), "-crl_nextupdate", formatTime(nextUpdate),
        "-out", outFile,
      ]);
      if (r.exitCode !== 0) throw this.failure(r, "openssl ca -gencrl failed");
      const pem = fs.readFileSync(outFile, "utf8");
      const der = pemDecode(pem, "X509 CRL");
      const info = await this.inspectCrl(outFile);
      this.refreshQuietly();
      return this.c.crls.install(der, { number: info.number, thisUpdate: thisUpdate.getTime(), nextUpdate: nextUpdate.getTime(), entries: info.entries });
    } finally {
      fs.rmSync(outFile, { force: true });
      fs.rmSync(confFile, { force: true });
    }
  }

  /** CRL number and entry count, and the signature checked against CA_CERT (no PIN needed). */
  private async inspectCrl(file: string): Promise<{ number: number; entries: number }> {
    const r = await this.exec(["crl", "-in", file, "-noout", "-text", "-crlnumber", "-CAfile", this.c.config.CA_CERT, "-verify"], { env: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" } });
    if (r.exitCode !== 0 || !/verify OK/.test(r.stderr)) {
      throw new EtokenError("backend.openssl", `the CRL openssl ca made does not verify with CA_CERT: not published (${r.stderr.trim().slice(0, 300)})`);
    }
    const out = r.stdout;
    const m = /crlNumber=(?:0x)?([0-9A-Fa-f]+)/.exec(out);
    if (!m) throw new EtokenError("backend.openssl", "the CRL openssl ca made has no CRL number: OPENSSL_CA_CONF needs crlnumber = $dir/crlnumber (CA_DIR/crlnumber)");
    const entries = (out.match(/^\s+Serial Number: /gm) ?? []).length;
    return { number: Number.parseInt(m[1]!, 16), entries };
  }

  latestCrl(): PublishedCrl | undefined {
    return this.c.crls.latest();
  }

  exclusive<T>(fn: (db: CaDatabase) => T): Promise<T> {
    return this.serializer.run(() => {
      this.c.db.refresh();
      return fn(this.c.db);
    });
  }

  database(): CaDatabase {
    this.refreshQuietly();
    return this.c.db;
  }

  close(): void {
    this.forgetPin();
    this.native.close();
    try {
      fs.rmSync(this.work, { recursive: true, force: true });
    } catch {
      // /tmp is cleaned anyway
    }
  }
}
