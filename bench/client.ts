// etoken-ca-client figures. Prints figures only; asserts nothing.
//  1. start-up: `node -e ''` vs the client up to the point where it has loaded everything, read
//     the configuration and parsed stdin (empty stdin: it stops there). Target: at most ~15 ms above
//     `node -e ''`. Runs are interleaved; medians of wall time, and mean CPU time of the children
//     (from /proc/self/stat cutime+cstime) because wall time misleads on a loaded machine.
//  2. round trip (as root only): real client as etca-client -> real spool as etca-spool -> a fake
//     kernel answering with a ready-made certificate; sequential and 50 at once.
// Run: node dist/bench/client.js [RUNS]   (build first; round trip needs root and openssl)
import { spawnSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CLIENT = path.join(DIST, "client/bin/etoken-ca-client.js");
const RUNS = Number(process.argv[2] ?? 30);

function childCpuMs(): number {
  const fields = fs.readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  // after "pid (comm) ": state is field 3 -> index 0; cutime is field 16, cstime 17
  const ticks = Number(fields[13]) + Number(fields[14]);
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function measure(cmd: string, args: string[]): { wall: number; cpu: number } {
  const c0 = childCpuMs();
  const t0 = process.hrtime.bigint();
  spawnSync(cmd, args, { stdio: ["ignore", "ignore", "ignore"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  return { wall: Number(process.hrtime.bigint() - t0) / 1e6, cpu: childCpuMs() - c0 };
}

function startup(): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bench-client-"));
  const conf = path.join(dir, "etoken-ca.conf");
  fs.writeFileSync(conf, `DN_FORMAT=/DC=org/CN=%s\nCA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\nPKCS11_MODULE=/usr/lib/x.so\nCA_CERT=/etc/x.pem\nSPOOL_DIR=${dir}/spool\n`);
  const base: { wall: number; cpu: number }[] = [];
  const client: { wall: number; cpu: number }[] = [];
  measure(process.execPath, ["-e", ""]); // warm the page cache
  measure(process.execPath, [CLIENT, "--config", conf]);
  for (let i = 0; i < RUNS; i++) {
    base.push(measure(process.execPath, ["-e", ""]));
    client.push(measure(process.execPath, [CLIENT, "--config", conf]));
  }
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const bw = median(base.map((x) => x.wall));
  const cw = median(client.map((x) => x.wall));
  const bc = mean(base.map((x) => x.cpu));
  const cc = mean(client.map((x) => x.cpu));
  console.log(`start-up, ${RUNS} interleaved runs each (load average ${os.loadavg()[0]!.toFixed(2)}):`);
  console.log(`  node -e ''            median wall ${bw.toFixed(1)} ms, mean cpu ${bc.toFixed(1)} ms`);
  console.log(`  etoken-ca-client      median wall ${cw.toFixed(1)} ms, mean cpu ${cc.toFixed(1)} ms`);
  console.log(`  difference            wall ${(cw - bw).toFixed(1)} ms, cpu ${(cc - bc).toFixed(1)} ms   (target: <= 15 ms)`);
  fs.rmSync(dir, { recursive: true, force: true });
}

async function roundTrip(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.log("round trip: skipped (needs root to run the spool and client as their users)");
    return;
  }
  const { SpoolHarness, runClient, makeCsr, myproxyInput } = await import("../test/fixtures/spool-harness.js");
  const h = new SpoolHarness();
  try {
    await h.start();
    const { csrPem, key } = makeCsr(h.root, "bench");
    const spki = createPublicKey(fs.readFileSync(key)).export({ type: "spki", format: "der" });
    const n = 20;
    await h.premake(spki, n + 50);
    h.issueAll();
    const seq: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await runClient(h, myproxyInput({ username: `bench${i}` }, csrPem));
      if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`);
      seq.push(performance.now() - t0);
    }
    console.log(`round trip, sequential: median ${median(seq).toFixed(1)} ms per logon (client start-up included), ${n} runs`);
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: 50 }, (_, i) => runClient(h, myproxyInput({ username: `burst${i}` }, csrPem))));
    const ok = runs.filter((r) => r.code === 0).length;
    console.log(`round trip, 50 at once: ${ok}/50 served in ${(performance.now() - t0).toFixed(0)} ms`);
  } finally {
    await h.stop();
    h.cleanup();
  }
}

startup();
await roundTrip();
