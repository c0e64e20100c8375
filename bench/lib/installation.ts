// One installation per section: created, brought up to READY (the PIN typed on its console),
// measured with sequential requests, stopped and removed.
import * as fs from "node:fs";
import * as path from "node:path";
import { makeCsr } from "../../test/fixtures/pki.js";
import { createInstallation, startServer, untilReady, type Installation, type RunningServer } from "../../test/fixtures/server.js";
import { SpoolDriver } from "./spool-driver.js";

// ---------------------------------------------------------------------------------------------
// installations

export interface Running {
  inst: Installation;
  server: RunningServer;
  driver: SpoolDriver;
  csrPem: string;
}

/** Starts the kernel of an installation and types the PIN; resolves when READY. */
export async function bringUp(inst: Installation, serverArgs: string[] = [], nodeArgs: string[] = []): Promise<RunningServer> {
  fs.rmSync(inst.config.STATUS_FILE, { force: true }); // no stale state from an earlier run
  const server = startServer(inst, serverArgs, nodeArgs);
  try {
    await untilReady(inst, 120_000); // a loaded machine starts slowly
  } catch (err) {
    const tail = server.logs().slice(-6).join(" / ").slice(0, 1500);
    await server.stop();
    throw new Error(`${(err as Error).message}; server log: ${tail}`);
  }
  return server;
}

/** `launch`: extra arguments of etoken-ca-server and of the kernel's node (the --cpu-prof mode). */
export async function start(prefix: string, extra: Record<string, string> = {}, prepare?: (inst: Installation) => void, launch: { serverArgs?: string[]; nodeArgs?: string[] } = {}): Promise<Running> {
  const spool = tmpfsSpool(prefix);
  const inst = createInstallation({ prefix, extraConfig: { CLIENT_TIMEOUT: "60", ...(spool ? { SPOOL_DIR: spool.dir } : {}), ...extra } });
  if (spool) {
    const cleanup = inst.cleanup;
    inst.cleanup = () => {
      cleanup();
      fs.rmSync(spool.base, { recursive: true, force: true });
    };
  }
  prepare?.(inst);
  let server: RunningServer;
  try {
    server = await bringUp(inst, launch.serverArgs, launch.nodeArgs);
  } catch (err) {
    inst.cleanup();
    throw err;
  }
  const work = path.join(inst.dir, "work");
  fs.mkdirSync(work, { mode: 0o755 });
  const { csrPem } = makeCsr(work, "bench");
  const r = { inst, server, driver: new SpoolDriver(inst), csrPem };
  live.add(r);
  return r;
}

/** Installations started and not stopped yet: what stopAll() stops on SIGINT/SIGTERM. */
const live = new Set<Running>();

/** Stops every installation still running (the signal handlers' clean-up, before the image goes). */
export async function stopAll(): Promise<void> {
  await Promise.allSettled([...live].map((r) => stop(r)));
}
/**
 * The spool on tmpfs, as deployed (SPOOL_DIR's default is under /run): /run when it is tmpfs,
 * else /dev/shm; undefined (the installation's own directory) when neither is.
 */
function tmpfsSpool(prefix: string): { base: string; dir: string } | undefined {
  for (const parent of ["/run", "/dev/shm"]) {
    let type: number;
    try {
      type = fs.statfsSync(parent).type;
    } catch {
      continue;
    }
    if (type !== TMPFS_MAGIC) continue;
    const base = fs.mkdtempSync(path.join(parent, `${prefix}-`));
    fs.chmodSync(base, 0o711); // the service users traverse it; the kernel makes SPOOL_DIR
    return { base, dir: path.join(base, "request") };
  }
  return undefined;
}
const TMPFS_MAGIC = 0x01021994;

export async function stop(r: Running): Promise<void> {
  live.delete(r);
  r.driver.close();
  await r.server.stop();
  r.inst.cleanup();
}

/** Sequential requests; returns link->result and write->result samples (ms) and the ids. */
export async function sequential(r: Running, n: number, warm = 10): Promise<{ lat: number[]; full: number[]; bad: number; ids: string[]; firstText: string }> {
  for (let i = 0; i < warm; i++) await r.driver.issue(`warm ${i}`, r.csrPem);
  const lat: number[] = [];
  const full: number[] = [];
  const ids: string[] = [];
  let bad = 0;
  let firstText = "";
  for (let i = 0; i < n; i++) {
    const x = await r.driver.issue(`seq ${i} email=u${i}@example.org`, r.csrPem);
    if (!x.ok) {
      bad++;
      firstText ||= x.text;
      continue;
    }
    lat.push(x.done - x.linked);
    full.push(x.done - x.t0);
    ids.push(x.id);
  }
  return { lat, full, bad, ids, firstText };
}
