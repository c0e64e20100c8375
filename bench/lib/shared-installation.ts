// head to head (h1-h5): ONE installation and ONE SoftHSM2 token for everything below. The
// native and the openssl backend take turns on it (configuration switched, kernel restarted,
// CA_DIR reset to the database size under test); raw C_Sign is measured on the same token with
// the kernel stopped; MyProxy's built-in CA signs with a byte copy of that token (same serial,
// key and PIN) owned by myproxy. CLIENT_USER is myproxy, so MyProxy's callout can use the
// same installation (the spool driver writes its requests as CLIENT_USER too).
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { lookupUser } from "../../services/common/identity.js";
import { makeCsr } from "../../test/fixtures/pki.js";
import { createInstallation, makeBaseDir, countPrompts, typePin, waitForState, waitFor, readStatus, type Installation, type RunningServer } from "../../test/fixtures/server.js";
import { MYPROXY_USER } from "../../test/fixtures/myproxy.js";
import { useNativeBackend, useOpensslBackend } from "../../test/fixtures/openssl-ca.js";
import { note } from "./report.js";
import { q, now, sleep } from "./stats.js";
import { SpoolDriver } from "./spool-driver.js";
import { bringUp } from "./installation.js";
import { loggedInToken } from "./token.js";
import { syntheticIndex } from "./synthetic-index.js";

export type BackendName = "pkcs11" | "openssl";
export const BACKEND_LABEL: Record<BackendName, string> = { pkcs11: "native", openssl: "openssl" };

export interface Shared {
  inst: Installation;
  /** root-only directory of cached synthetic index files */
  cache: string;
  indexFiles: Map<number, string>;
  csrPem: string;
  csrPath: string;
  server?: RunningServer;
  driver?: SpoolDriver;
  /** kernel left READY under load and the PIN was typed again (see recover()) */
  trips: { count: number; ms: number; during: string[] };
  recovering?: Promise<void>;
}
let shared: Shared | undefined;

export function hasUser(name: string): boolean {
  try {
    lookupUser(name);
    return true;
  } catch {
    return false;
  }
}

export function sharedInstallation(): Shared {
  if (shared) return shared;
  // TOKEN_POLL_INTERVAL: the product's default (the fixture's 300 ms is for the tests)
  const inst = createInstallation({ prefix: "etca-bench-h2h", extraConfig: { CLIENT_TIMEOUT: "60", TOKEN_POLL_INTERVAL: "2", ...(hasUser(MYPROXY_USER) ? { CLIENT_USER: MYPROXY_USER } : {}) } });
  const work = path.join(inst.dir, "work");
  fs.mkdirSync(work, { mode: 0o755 });
  const csr = makeCsr(work, "bench");
  shared = { inst, cache: makeBaseDir("etca-bench-idx"), indexFiles: new Map(), csrPem: csr.csrPem, csrPath: csr.csrPath, trips: { count: 0, ms: 0, during: [] } };
  fs.chmodSync(shared.cache, 0o700);
  return shared;
}

export async function sharedDown(s: Shared): Promise<void> {
  s.driver?.close();
  s.driver = undefined;
  if (s.server) await s.server.stop();
  s.server = undefined;
}

export async function sharedCleanup(): Promise<void> {
  if (!shared) return;
  const s = shared;
  shared = undefined;
  await sharedDown(s);
  s.inst.cleanup();
  fs.rmSync(s.cache, { recursive: true, force: true });
}

/** CA_DIR with `lines` synthetic index lines (none: the directory goes, the server makes it); CRL_DIR emptied. */
export function resetDatabase(s: Shared, lines: number): void {
  const { CA_DIR: dir, CRL_DIR: crl } = s.inst.config;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(crl, { recursive: true, force: true });
  if (lines === 0) return;
  let cached = s.indexFiles.get(lines);
  if (!cached) {
    cached = path.join(s.cache, `index-${lines}.txt`);
    syntheticIndex(cached, lines);
    s.indexFiles.set(lines, cached);
  }
  const signer = s.inst.users.SIGNER_USER;
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true, mode: 0o700 });
  fs.copyFileSync(cached, path.join(dir, "index.txt"));
  fs.writeFileSync(path.join(dir, "serial"), "01\n");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
  for (const p of [dir, path.join(dir, "newcerts"), path.join(dir, "index.txt"), path.join(dir, "serial"), path.join(dir, "crlnumber")]) fs.chownSync(p, signer.uid, signer.gid);
  fs.chmodSync(dir, 0o700);
}

/** (Re)starts the shared installation with `backend` on a database of `lines` entries; waits for the first CRL. */
export async function sharedUp(s: Shared, backend: BackendName, lines: number): Promise<SpoolDriver> {
  await sharedDown(s);
  resetDatabase(s, lines);
  if (backend === "openssl") useOpensslBackend(s.inst);
  else useNativeBackend(s.inst);
  s.server = await bringUp(s.inst);
  s.driver = new SpoolDriver(s.inst);
  // the kernel makes its first CRL right after READY: not inside the measurements
  try {
    await waitFor("the first CRL", () => readStatus(s.inst)?.crl ?? undefined, 120_000, 100);
  } catch (err) {
    note(`${BACKEND_LABEL[backend]} at ${lines} entries: ${(err as Error).message}`);
  }
  return s.driver;
}

/**
 * After a failed request: when the kernel has left READY (the presence fence or a poll lost
 * the token: on SoftHSM2 every `openssl ca` run's C_Login rewrites token.object, and a
 * C_GetTokenInfo in the monitor at that moment fails), wait for NEED_PIN, type the PIN again
 * and wait for READY. One recovery at a time for all writers; its duration is recorded so
 * throughput can leave it out. Returns after a plain failure (kernel still READY) at once.
 */
export async function recover(s: Shared, during: string): Promise<void> {
  if (!s.recovering) {
    const state = (): string | undefined => readStatus(s.inst)?.state;
    // the status file is written a moment after the state changes
    for (let i = 0; i < 10 && state() === "READY"; i++) await sleep(50);
    if (state() === "READY" || s.recovering) {
      await s.recovering;
      return;
    }
    s.recovering = (async () => {
      const a = now();
      try {
        const st = await waitFor("NEED_PIN or READY", () => (state() === "NEED_PIN" || state() === "READY" ? state() : undefined), 60_000, 50);
        if (st === "NEED_PIN") {
          await typePin(s.inst, s.inst.token.userPin, countPrompts(s.inst) + (s.inst.consoleText().endsWith(": ") ? 0 : 1));
          await waitForState(s.inst, "READY", 120_000);
        }
      } finally {
        s.trips.count++;
        s.trips.ms += now() - a;
        s.trips.during.push(during);
        s.recovering = undefined;
      }
    })();
  }
  await s.recovering;
}

/** Sequential requests until maxN samples or budgetMs (at least minN); server-side latency as in (b). */
export async function timedSequential(s: Shared, d: SpoolDriver, csrPem: string, maxN: number, budgetMs: number, minN: number, warm: number, during: string): Promise<{ lat: number[]; bad: number; firstText: string }> {
  for (let i = 0; i < warm; i++) if (!(await d.issue(`warm ${i}`, csrPem)).ok) await recover(s, during);
  const lat: number[] = [];
  let bad = 0;
  let firstText = "";
  const t0 = now();
  for (let i = 0; i < maxN && (i < minN || now() - t0 < budgetMs); i++) {
    const x = await d.issue(`h2h ${i}`, csrPem);
    if (x.ok) lat.push(x.done - x.linked);
    else {
      bad++;
      firstText ||= x.text;
      await recover(s, during);
    }
  }
  return { lat, bad, firstText };
}

/**
 * `clients` writers, each issuing back to back for durMs; certificates per second over the
 * whole run, less the time spent recovering from a lost token (recover()).
 */
export async function sustained(s: Shared, d: SpoolDriver, csrPem: string, clients: number, durMs: number, during: string): Promise<{ rate: number; ok: number; bad: number; p50: number; excludedMs: number }> {
  const lost0 = s.trips.ms;
  const t0 = now();
  const end = t0 + durMs;
  let ok = 0;
  let bad = 0;
  const lat: number[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      for (let i = 0; now() < end; i++) {
        const x = await d.issue(`thr${clients} w${w} n${i}`, csrPem);
        if (x.ok) {
          ok++;
          lat.push(x.done - x.t0);
        } else {
          bad++;
          await recover(s, during);
        }
      }
    }),
  );
  const excludedMs = s.trips.ms - lost0;
  return { rate: ok / ((now() - t0 - excludedMs) / 1000), ok, bad, p50: q(lat, 0.5), excludedMs };
}

/** Raw C_Sign on the installation's own token (kernel stopped): the floor under both backends. */
export function rawSign(s: Shared, n: number): number[] {
  const tok = loggedInToken(s.inst.token);
  try {
    const data = randomBytes(1000); // about a TBSCertificate
    for (let i = 0; i < 50; i++) tok.sign(data);
    const t: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = now();
      tok.sign(data);
      t.push(now() - a);
    }
    return t;
  } finally {
    tok.close();
  }
}
