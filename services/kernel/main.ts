// Start-up of the kernel, in order: root check, configuration, users, directories, pid file,
// console, services. Any failure is one precise line and a non-zero exit.
import * as fs from "node:fs";
import { parseArgs } from "../common/cli.js";
import { configWarnings, DEFAULT_CONFIG_FILE, loadConfig } from "../common/config.js";
import { writeFileAtomic } from "../common/durable-file.js";
import { describeError, SecurityError } from "../common/errors.js";
import { disableCoreDumps, requireRoot } from "../common/identity.js";
import { createLogger, setLogLevel } from "../common/log.js";
import { SERVICE_NAMES, type ServiceName } from "../common/service-table.js";
import { OperatorConsole } from "./console.js";
import { Kernel } from "./kernel.js";
import { isServerProcess, lockInstance } from "./instance-lock.js";
import { checkStartConfiguration } from "../common/start-checks.js";
import { checkCpuProfileDir } from "./cpu-profile.js";
import { Supervisor } from "./supervisor.js";

const USAGE = "usage: etoken-ca-server [--config FILE]";

export async function startServer(argv: string[]): Promise<number | void> {
  // --cpu-prof-dir: benchmark diagnostics, root's command line only (cpu-profile.ts); not in USAGE
  const args = parseArgs(argv, { config: "value", help: "flag", "cpu-prof-dir": "value" }, USAGE);
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  requireRoot("etoken-ca-server");
  const cpuProfileDir = args["cpu-prof-dir"] === undefined ? undefined : checkCpuProfileDir(args["cpu-prof-dir"] as string);
  const config = loadConfig((args.config as string | undefined) ?? DEFAULT_CONFIG_FILE);
  setLogLevel(config.LOG_LEVEL);
  const log = createLogger("kernel");
  process.title = "etoken-ca: kernel";
  for (const warning of configWarnings(config)) log.warning(warning);
  process.umask(0o077);
  disableCoreDumps();

  // the same checks as `etoken-ca check-config`; throws the first problem
  const { users } = checkStartConfiguration(config, { create: true })!;
  // one server per CA directory, spool and console: a second one names the first and stops here
  const locks = lockInstance(config);
  let console: OperatorConsole;
  try {
    writePidFile(config.PIDFILE);
    console = OperatorConsole.open(config.CONSOLE, config.CONSOLE_ALLOW_PTY, config.sourceFile);
  } catch (err) {
    removePidFile(config.PIDFILE);
    locks.release();
    throw err;
  }
  if (cpuProfileDir) log.notice("services write CPU profiles (--cpu-prof-dir)", { dir: cpuProfileDir });
  const supervisor = new Supervisor(config, users, log, cpuProfileDir ? { cpuProfileDir } : {});
  const userNames = Object.fromEntries(SERVICE_NAMES.map((n) => [n, users[n].name])) as Record<ServiceName, string>;
  const kernel = new Kernel(config, supervisor, console, log, userNames);

  let stopping = false;
  const stop = (signal: string, exitCode = 0): void => {
    if (stopping) {
      // a second SIGTERM or SIGINT while stopping ends the kernel at once: it is always killable
      if (signal === "SIGTERM" || signal === "SIGINT") {
        removePidFile(config.PIDFILE);
        locks.release();
        process.exit(exitCode);
      }
      return;
    }
    stopping = true;
    log.notice("stopping", { signal });
    kernel
      .stop()
      .catch((err) => log.error("error while stopping", { error: describeError(err) }))
      .finally(() => {
        console.say("etoken-ca: stopped");
        console.close();
        removePidFile(config.PIDFILE);
        locks.release();
        process.exit(exitCode);
      });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => log.info("SIGHUP ignored: restart the server to change its configuration"));
  process.on("SIGUSR1", () => {
    log.notice("SIGUSR1: processing the revoke queue");
    void kernel.processRevocations("SIGUSR1");
  });
  process.on("uncaughtException", (err) => {
    log.error("internal error in the kernel; stopping", { error: describeError(err), stack: err.stack?.split("\n").slice(0, 6).join(" | ") });
    stop("internal error", 70); // non-zero: systemd's Restart=on-failure brings the CA back
  });
  log.notice("etoken-ca-server starting", { config: config.sourceFile, pid: process.pid });
  kernel.start();
  return new Promise<void>(() => {}); // runs until a signal
}

function writePidFile(file: string): void {
  try {
    const old = Number(fs.readFileSync(file, "utf8").trim());
    if (Number.isInteger(old) && old > 0 && old !== process.pid && isServerProcess(old)) {
      throw new SecurityError("already_running", `already running as pid ${old} (${file})`);
    }
  } catch (err) {
    if (err instanceof SecurityError) throw err;
  }
  writeFileAtomic(file, `${process.pid}\n`, { mode: 0o644 });
}

function removePidFile(file: string): void {
  try {
    if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.unlinkSync(file);
  } catch {
    // already gone
  }
}
