#!/usr/bin/env node
// etoken-ca-client: MyProxy's certificate_issuer_program. Runs as CLIENT_USER with no arguments
// (or --config FILE). Reads MyProxy's stdin, drops everything the CA does not need (the
// passphrase first of all), writes a request file into SPOOL_DIR, takes the `request` symlink
// lock, waits for its result file, prints the PEM certificate (exit 0) or one line on stderr
// (exit 1). It never talks to the server.
//
// MyProxy forks one per logon, so start-up is most of its cost. It is built as CommonJS on its
// own (tsconfig.client.json -> dist/client/): Node's ESM loader alone costs ~15 ms here. It
// imports no protobuf and no logger; its one native addon on the normal path is native/spool-watch
// (process.dlopen, after the passphrase is wiped), to wait on exactly its result's name
// (cheaper to load in a fresh process than fs.watch, and one wake-up instead of many).
import "../services/common/no-inspector.js"; // first: before anything else runs (see there)
import * as fs from "node:fs";
import * as path from "node:path";
import { VERSION as CLIENT_VERSION } from "../services/common/cli.js";
import { configPathFromArgs, dnTemplateOf, loadConfig } from "../services/common/config.js";
import {
  abandonedName,
  certificateMismatch,
  checkUsername,
  csrPublicKey,
  decodeCsrPem,
  DELIVERY_GRACE_MS,
  formatErrorResult,
  formatRequestFile,
  MAX_STDIN_BYTES,
  parseMyproxyInput,
  randomName,
  REQUEST_FILE_MODE,
  REQUEST_LINK,
  REQUEST_RANDOM_CHARS,
  resultName,
  type ResultFile,
} from "../services/common/spool-protocol.js";
import { DirWaiter, tryReadResult } from "../services/common/spool-waiter.js";

const PROGRAM = "etoken-ca-client";
/** The only keys the client reads: their values are checked here, the rest by the server at start. */
const CLIENT_KEYS = ["SPOOL_DIR", "CLIENT_TIMEOUT", "DN_FORMAT", "USERNAME_RDN_TYPES"] as const;

class ClientError extends Error {}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

/** Random bytes from the kernel (node:crypto costs a few ms of start-up we do not need). */
function randomBytes(n: number): Buffer {
  const buf = Buffer.alloc(n);
  const fd = fs.openSync("/dev/urandom", "r");
  try {
    let got = 0;
    while (got < n) got += fs.readSync(fd, buf, got, n - got, null);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/**
 * The passphrase is on our stdin: no core dump may ever hold it (the hard limit too). The wrapper
 * (bin/etoken-ca-client, or the one deploy/install writes) already ran `ulimit -c 0`; only when
 * the program is started some other way is the `posix` addon loaded to set the limits.
 */
function disableCoreDumps(): void {
  try {
    // "Max core file size" soft and hard both 0. Read with one readSync: readFileSync's path for
    // files of unknown size (all of /proc) costs ~1 ms of a fresh process's CPU.
    const buf = Buffer.alloc(8192);
    const fd = fs.openSync("/proc/self/limits", O_RDONLY);
    let text: string;
    try {
      text = buf.toString("latin1", 0, fs.readSync(fd, buf, 0, buf.length, 0));
    } finally {
      fs.closeSync(fd);
    }
    if (/^Max core file size\s+0\s+0\s/m.test(text)) return;
  } catch {
    // no /proc: set the limit below
  }
  (require("posix") as { setrlimit(r: string, l: { soft: number; hard: number }): void }).setrlimit("core", { soft: 0, hard: 0 });
}

function readStdin(): Buffer {
  const buf = Buffer.alloc(MAX_STDIN_BYTES + 1);
  let total = 0;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(0, buf, total, buf.length - total, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") {
        Atomics.wait(sleeper, 0, 0, 5);
        continue;
      }
      if (code === "EOF") break;
      throw new ClientError(`cannot read stdin: ${code ?? String(err)}`);
    }
    if (n === 0) break;
    total += n;
    if (total > MAX_STDIN_BYTES) throw new ClientError(`input on stdin larger than ${MAX_STDIN_BYTES} bytes`);
  }
  return buf.subarray(0, total);
}

/** dist/client/bin -> dist/native/spool_watch.node (deploy/install copies dist/native too). */
const WATCH_ADDON = path.join(__dirname, "../../native/spool_watch.node");

function unlinkQuiet(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // already gone
  }
}

function spoolErrno(err: unknown, what: string, dir: string): ClientError {
  const code = (err as NodeJS.ErrnoException).code;
  const hint = code === "EACCES" || code === "EPERM" ? " (permission denied: run as CLIENT_USER, and check the spool directory's owner and mode)" : code === "ENOENT" ? " (no such directory: is etoken-ca-server installed and started once?)" : "";
  return new ClientError(`cannot ${what} in the spool directory ${dir}: ${code ?? String(err)}${hint}`);
}

class Request {
  readonly file: string;
  readonly link: string;
  readonly result: string;
  readonly marker: string;
  private linked = false;
  private finished = false;

  constructor(
    readonly dir: string,
    readonly id: string,
    readonly deadline: number,
  ) {
    this.file = path.join(dir, id);
    this.link = path.join(dir, REQUEST_LINK);
    this.result = path.join(dir, resultName(id));
    this.marker = path.join(dir, abandonedName(id));
  }

  write(content: string): void {
    let fd: number;
    try {
      fd = fs.openSync(this.file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, REQUEST_FILE_MODE);
    } catch (err) {
      throw spoolErrno(err, "create a request file", this.dir);
    }
    try {
      fs.fchmodSync(fd, REQUEST_FILE_MODE); // the spool user reads it through the "other" bits
      // No fsync: unlike a mail queue, a request is worthless after a crash (its MyProxy
      // connection is gone), and the spool reads it from the page cache.
      fs.writeSync(fd, content);
    } catch (err) {
      fs.closeSync(fd);
      unlinkQuiet(this.file);
      throw spoolErrno(err, "write the request file", this.dir);
    }
    fs.closeSync(fd);
  }

  /** Takes the lock (creates the `request` symlink); false when the deadline passed first. */
  async lock(waiter: DirWaiter): Promise<boolean> {
    try {
      this.linked = await waiter.lock(this.id, this.deadline);
    } catch (err) {
      throw spoolErrno(err, "create the request link", this.dir);
    }
    return this.linked;
  }

  async waitResult(waiter: DirWaiter): Promise<ResultFile | "abandoned"> {
    return (await waiter.waitFor(path.basename(this.result), this.deadline + DELIVERY_GRACE_MS, () => tryReadResult(this.result))) ?? this.abandon();
  }

  /**
   * Gives up: marks the request abandoned (the CA must not sign it), frees the lock if it is
   * still ours, and claims the result name. If the spool published first, its result is returned
   * (the caller checks it, then cleanup() or refuseResult()).
   */
  abandon(): ResultFile | "abandoned" {
    if (this.finished) return "abandoned";
    this.withdraw();
    try {
      const fd = fs.openSync(this.result, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      try {
        fs.writeSync(fd, formatErrorResult("abandoned", "the client gave up"));
      } finally {
        fs.closeSync(fd);
      }
      return "abandoned"; // marker and claim stay: the spool (or its sweeper) removes them
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") return "abandoned";
    }
    return tryReadResult(this.result) ?? "abandoned";
  }

  /**
   * An error result, or a certificate that is not ours (anyone who can write the spool can plant
   * either): give up on the request as a timed-out client does, but leave the result name taken,
   * so that the spool cannot publish the certificate the CA signed for us, or, if it published
   * already, sees the marker; either way it reports the certificate undelivered (the kernel
   * revokes it). After a genuine error result the spool removes marker and result.
   */
  refuseResult(): void {
    this.withdraw();
  }

  /** Marks the request abandoned (the CA must not sign it), frees the lock if it is still ours. */
  private withdraw(): void {
    this.finished = true;
    try {
      fs.closeSync(fs.openSync(this.marker, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644));
    } catch {
      // exists already, or the directory is unusable: the result name's claim decides
    }
    if (this.linked) {
      try {
        if (fs.readlinkSync(this.link) === this.id) unlinkQuiet(this.link);
      } catch {
        // taken by the spool meanwhile
      }
    }
    unlinkQuiet(this.file);
  }

  /** Removes this client's files after its certificate was read (the marker first: see spool-protocol.ts). */
  cleanup(): void {
    this.finished = true;
    unlinkQuiet(this.marker);
    unlinkQuiet(this.result);
    unlinkQuiet(this.file);
  }
}

function fail(message: string): never {
  try {
    // not process.stderr: creating that stream costs ~1 ms of CPU at every refusal
    fs.writeSync(2, `${PROGRAM}: ${message.replace(/[\x00-\x1f\x7f]+/g, " ")}\n`);
  } catch {
    // no stderr to tell: the exit status says it
  }
  process.exit(1);
}

const USAGE = `usage: ${PROGRAM} [--config FILE]  (MyProxy's certificate_issuer_program; request on stdin)`;
const EX_USAGE = 64;

async function main(argv: string[]): Promise<void> {
  if (argv.length === 1 && (argv[0] === "--help" || argv[0] === "-h" || argv[0] === "--version")) {
    process.stdout.write(argv[0] === "--version" ? `${PROGRAM} ${CLIENT_VERSION}\n` : `${USAGE}\n`);
    process.exit(0);
  }
  if (!(argv.length === 0 || (argv.length === 2 && argv[0] === "--config") || (argv.length === 1 && argv[0]!.startsWith("--config=")))) {
    process.stderr.write(`${PROGRAM}: ${USAGE}\n`);
    process.exit(EX_USAGE);
  }
  disableCoreDumps();
  let config;
  try {
    config = loadConfig(configPathFromArgs(argv), CLIENT_KEYS);
  } catch (err) {
    fail((err as Error).message);
  }
  const input = readStdin();
  let parsed;
  let mine: { publicKey: Buffer; subject: Buffer };
  try {
    parsed = parseMyproxyInput(input);
    // the spool's own rules (spool-protocol.ts): what it would refuse is refused here, at once
    mine = { publicKey: csrPublicKey(decodeCsrPem(parsed.csrPem)), subject: checkUsername(parsed.username, dnTemplateOf(config)).subject };
  } catch (err) {
    fail((err as Error).message);
  } finally {
    input.fill(0); // the passphrase was in there
  }
  /** A certificate is printed only if it certifies our key for our username. */
  const ours = (certificatePem: string): void => {
    const why = certificateMismatch(certificatePem, mine.publicKey, mine.subject);
    if (why === undefined) return;
    req.refuseResult();
    fail(`the result file for this request holds a certificate that is not ours (${why}); refused, and what the CA signed for this request will be revoked`);
  };
  const dir = config.SPOOL_DIR;
  const deadline = Date.now() + config.CLIENT_TIMEOUT;
  const req = new Request(dir, `req.${randomName(REQUEST_RANDOM_CHARS, randomBytes)}`, deadline);
  req.write(
    formatRequestFile({ username: parsed.username, proxyLifetime: parsed.proxyLifetime, maxCertLifetime: parsed.maxCertLifetime, deadline, csrPem: parsed.csrPem }),
  );
  const onSignal = (sig: NodeJS.Signals): void => {
    const r = req.abandon();
    if (r !== "abandoned" && r.ok) {
      ours(r.certificatePem);
      req.cleanup();
      fs.writeSync(1, r.certificatePem);
      process.exit(0);
    }
    fail(`interrupted by ${sig}; the request was abandoned`); // an error result stays, with the marker
  };
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, onSignal);

  const waiter = new DirWaiter(dir, WATCH_ADDON);
  const seconds = Math.round(config.CLIENT_TIMEOUT / 100) / 10;
  if (!(await req.lock(waiter))) {
    unlinkQuiet(req.file);
    fail(`the CA's request spool stayed busy for ${seconds} s (another request held it, or etoken-ca-server is not running)`);
  }
  const r = await req.waitResult(waiter);
  waiter.close();
  if (r === "abandoned") fail(`no answer from the CA within ${seconds} s; request abandoned (is etoken-ca-server running and its token logged in?)`);
  if (!r.ok) {
    req.refuseResult();
    fail(r.message);
  }
  ours(r.certificatePem);
  req.cleanup();
  fs.writeSync(1, r.certificatePem);
  process.exit(0);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  fail(err instanceof Error ? err.message : String(err));
});
