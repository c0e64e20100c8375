import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { Figure, fig, note } from "../lib/report.js";
import { q, ms, now, pp, fraction } from "../lib/stats.js";
import { SpoolDriver } from "../lib/spool-driver.js";
import { MemorySampler } from "../lib/processes.js";
import { BackendName, BACKEND_LABEL, sharedInstallation, sharedDown, sharedUp, timedSequential, sustained, rawSign } from "../lib/shared-installation.js";

const entriesLabel = (n: number): string => (n === 0 ? "empty database" : n >= 1_000_000 && n % 1_000_000 === 0 ? `${n / 1_000_000}M index.txt entries` : `${n / 1000}k index.txt entries`);

async function secH2h(): Promise<void> {
  const sizes = QUICK ? [0, 20_000, 200_000] : [0, 100_000, 1_000_000];
  const DUR = QUICK ? 2000 : 5000;
  const plan: Record<BackendName, { n: number; budget: number; warm: number }[]> = {
    // per size: at most n samples, or until the budget (ms) is spent (at least 3)
    pkcs11: QUICK ? [{ n: 40, budget: 4000, warm: 5 }, { n: 30, budget: 3000, warm: 5 }, { n: 30, budget: 3000, warm: 5 }] : [{ n: 150, budget: 10000, warm: 10 }, { n: 100, budget: 8000, warm: 10 }, { n: 100, budget: 8000, warm: 10 }],
    // (the first CRL, made before measuring, has read the whole index already: little to warm)
    openssl: QUICK ? [{ n: 12, budget: 4000, warm: 2 }, { n: 5, budget: 4000, warm: 1 }, { n: 3, budget: 6000, warm: 0 }] : [{ n: 40, budget: 8000, warm: 3 }, { n: 15, budget: 12000, warm: 1 }, { n: 6, budget: 30000, warm: 0 }],
  };
  console.log(`[h2h] native vs openssl backend vs raw C_Sign on one SoftHSM2 token; sizes ${sizes.join(", ")}; 1/8/32 clients for ${DUR / 1000} s each`);
  const s = sharedInstallation();
  await sharedDown(s);
  const sign = rawSign(s, QUICK ? 500 : 2000);
  const signP50 = q(sign, 0.5);
  const out: Figure[] = [];
  const later = (id: string, what: string, value: string, goal?: string, pass?: boolean): void => {
    out.push({ id, what, value, goal, verdict: pass === undefined ? (goal ? "n/a" : undefined) : pass ? "PASS" : "MISS" });
  };
  later("(h1)", `raw C_Sign, same token, kernel stopped (n=${sign.length})`, pp(sign));
  const thr: Record<string, string[]> = {};
  const thrRate: Record<string, number[]> = {};
  const mem: Record<string, ReturnType<MemorySampler["stop"]>> = {};
  for (const [si, lines] of sizes.entries()) {
    const p50: Partial<Record<BackendName, number>> = {};
    for (const backend of ["pkcs11", "openssl"] as BackendName[]) {
      const label = BACKEND_LABEL[backend];
      const id = si === 0 ? "(h1)" : "(h2)";
      let d: SpoolDriver;
      const t0 = now();
      try {
        d = await sharedUp(s, backend, lines);
      } catch (err) {
        note(`${label} backend at ${lines} entries cannot start: ${(err as Error).message.slice(0, 300)}`);
        later(id, `${label} backend, ${entriesLabel(lines)}`, "did not start");
        continue;
      }
      const plan1 = plan[backend][si]!;
      const r = await timedSequential(s, d, s.csrPem, plan1.n, plan1.budget, 3, plan1.warm, `${label} @ ${lines}`);
      console.log(`  ${label} @ ${lines}: ${r.lat.length} requests ${pp(r.lat)} (start-up + run ${((now() - t0) / 1000).toFixed(1)} s)`);
      if (r.bad) note(`${label} at ${lines} entries: ${r.bad} requests failed, e.g. ${r.firstText.trim().slice(0, 200)}`);
      if (r.lat.length) p50[backend] = q(r.lat, 0.5);
      later(id, `${label} backend, ${entriesLabel(lines)}: request -> certificate (n=${r.lat.length})`, r.lat.length ? pp(r.lat) : "no certificate");
      if (si === 0) {
        const sampler = new MemorySampler(s.server!.pid);
        sampler.start();
        thr[backend] = [];
        thrRate[backend] = [];
        for (const clients of [1, 8, 32]) {
          const x = await sustained(s, d, s.csrPem, clients, DUR, `${label}, ${clients} clients`);
          console.log(`  ${label}: ${clients} clients ${x.rate.toFixed(1)} certs/s (${x.ok} ok, ${x.bad} failed, latency p50 ${ms(x.p50, 1)})`);
          if (x.bad) note(`${label}, ${clients} clients: ${x.bad} requests failed${x.excludedMs ? `; ${ms(x.excludedMs, 0)} of PIN re-entry left out of the rate` : ""}`);
          thr[backend]!.push(`${x.rate.toFixed(0)}`);
          thrRate[backend]!.push(x.rate);
        }
        mem[backend] = sampler.stop();
      }
    }
    const n = p50.pkcs11;
    const o = p50.openssl;
    if (n !== undefined && o !== undefined) {
      const r = n / o;
      const goal = lines === 0 ? 1 / 3 : lines === 1_000_000 ? 1 / 30 : undefined;
      later(si === 0 ? "(h1)" : "(h2)", `native p50 / openssl p50, ${entriesLabel(lines)} (native p50 = ${(n / signP50).toFixed(0)}x C_Sign p50)`, fraction(r), goal ? `<= 1/${Math.round(1 / goal)}` : undefined, goal ? r <= goal : undefined);
    }
  }
  await sharedDown(s);
  if (s.trips.count) {
    note(
      `(h1)-(h3) the kernel left READY ${s.trips.count} time(s) under load and the bench typed the PIN again (${ms(s.trips.ms, 0)} in all; during: ${s.trips.during.join("; ")}). ` +
        "On SoftHSM2 every `openssl ca` run's C_Login rewrites token.object; a C_GetTokenInfo/slot scan in another process at that moment fails (CKR_GENERAL_ERROR or token missing), so the monitor's poll or the presence fence reports the token gone",
    );
  }
  for (const b of ["pkcs11", "openssl"] as BackendName[]) {
    if (thr[b]) later("(h3)", `${BACKEND_LABEL[b]} backend: sustained certs/s, 1 / 8 / 32 clients (${DUR / 1000} s each)`, thr[b]!.join(" / "));
  }
  if (thrRate.pkcs11 && thrRate.openssl) later("(h3)", "native / openssl certs/s at 1 / 8 / 32 clients", thrRate.pkcs11.map((x, i) => `${(x / thrRate.openssl![i]!).toFixed(1)}x`).join(" / "));
  for (const b of ["pkcs11", "openssl"] as BackendName[]) {
    const m = mem[b];
    if (!m) continue;
    later("(h5)", `peak RSS during the ${BACKEND_LABEL[b]} throughput run (VmHWM reset before it), MiB`, `${m.total.toFixed(0)} (${m.rows})`, "< 300 MiB", m.total < 300);
    note(`(h5) ${BACKEND_LABEL[b]}: largest PSS seen during the throughput run (shared pages split between processes), MiB: ${m.pssTotal.toFixed(0)} (${m.pssRows})`);
  }
  note("(h1)-(h3): request -> certificate is the server side as in (b): request symlink made -> result file seen; clients are in-process spool writers doing what etoken-ca-client does");
  for (const f of out) fig(f.id, f.what, f.value, f.goal, f.verdict === "PASS" ? true : f.verdict === "MISS" ? false : undefined);
}

export const section: Section = { name: "h2h", aliases: ["backend"], title: "(h1) latency native vs openssl backend vs raw C_Sign, empty database; (h2) the same at 100,000 and 1,000,000 index.txt entries; (h3) certificates/s with 1, 8 and 32 clients, both backends; (h5) peak RSS during those runs. One installation and one SoftHSM2 token for all of it", run: secH2h };
