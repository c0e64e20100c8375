import { spawn } from "node:child_process";
import * as fs from "node:fs";
import type * as net from "node:net";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Channel } from "../../services/common/channel.js";
import { parseConfig } from "../../services/common/config.js";
import { configFor } from "../../services/common/service-table.js";
import { makeBaseDir, countPrompts, typePin, waitForState } from "../../test/fixtures/server.js";
import { createSoftToken, reinsertToken, removeToken } from "../../test/fixtures/softhsm.js";
import { ensureUser } from "../../test/fixtures/users.js";
import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now, sleep } from "../lib/stats.js";
import { start, stop } from "../lib/installation.js";
import { measured } from "../lib/measured.js";

/** The fence as the kernel does it: presenceCheck to a real monitor process, round trip. */
async function fenceRtt(): Promise<number[]> {
  const base = makeBaseDir("etca-bench-fence");
  const mon = ensureUser("etca-mon");
  const tok = createSoftToken({ dir: path.join(base, "hsm"), readerGid: mon.gid });
  const config = parseConfig(`DN_FORMAT=/CN=%s\nCA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\nPKCS11_MODULE=${tok.modulePath}\nCA_CERT=${tok.caCertPath}\nMONITOR_USER=etca-mon\nTOKEN_POLL_INTERVAL=1h\n`, "bench");
  const child = spawn(process.execPath, [fileURLToPath(new URL("../../services/common/start.js", import.meta.url)), "monitor"], {
    uid: mon.uid,
    gid: mon.gid,
    cwd: "/",
    stdio: ["ignore", "ignore", "pipe", "pipe"],
    env: { PATH: "/usr/bin:/bin", ETOKEN_CA_SERVICE: "monitor", ETOKEN_CA_CONFIG: JSON.stringify(configFor("monitor", config)), ETOKEN_CA_UID: String(mon.uid), ETOKEN_CA_GID: String(mon.gid), SOFTHSM2_CONF: tok.confPath },
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  try {
    const ch = new Channel(child.stdio[3] as net.Socket, "monitor");
    // a monitor that cannot start must fail the section, not leave the bench waiting on nothing
    await new Promise<void>((resolve, reject) => {
      ch.onFrame((f) => (f.type === "tokenEvent" ? resolve() : undefined));
      child.once("exit", (code, signal) => reject(new Error(`the monitor exited (${signal ?? `code ${code}`}) before its first token report: ${stderr.trim() || "no output"}`)));
    });
    const rtt: number[] = [];
    for (let i = 0; i < (QUICK ? 200 : 1000); i++) {
      const a = now();
      await ch.request("presenceCheck", { epoch: 1 }, "presence", 10_000);
      rtt.push(now() - a);
    }
    ch.send("shutdown", { reason: "bench done" });
    await Promise.race([new Promise((r) => child.once("exit", r)), sleep(5000)]);
    return rtt;
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    fs.rmSync(base, { recursive: true, force: true });
  }
}

async function secDetect(): Promise<void> {
  const poll = 300;
  console.log(`[detect] presence fence cost; token removal -> SUSPENDED (TOKEN_POLL_INTERVAL=${poll}ms)`);
  const rtt = await fenceRtt();
  measured.fenceRtt = q(rtt, 0.5);
  fig("fence", "fence round trip kernel<->monitor (presenceCheck)", `p50 ${ms(q(rtt, 0.5), 3)} p99 ${ms(q(rtt, 0.99), 3)}`, "adds <= 1 ms p50", q(rtt, 0.5) <= 1);
  if (measured.b50 !== undefined) note(`(b) p50 with the fence ${ms(measured.b50)}, without it about ${ms(measured.b50 - measured.fenceRtt)} (the fence runs after signing, in series; the kernel has no switch to turn it off)`);
  const r = await start("etca-bench-det", { TOKEN_POLL_INTERVAL: `${poll}ms` });
  try {
    const det: number[] = [];
    const rounds = QUICK ? 3 : 8;
    for (let i = 0; i < rounds; i++) {
      await sleep(Math.random() * poll);
      const mark = r.server.logs().length;
      const a = now();
      removeToken(r.inst.token);
      let seen = NaN;
      while (now() - a < 10_000) {
        const l = r.server.logs();
        if (l.slice(mark).some((x) => x.includes("state change") && x.includes("SUSPENDED"))) {
          seen = now() - a;
          break;
        }
        await sleep(1);
      }
      det.push(seen);
      reinsertToken(r.inst.token);
      await waitForState(r.inst, "NEED_PIN");
      await typePin(r.inst, r.inst.token.userPin, countPrompts(r.inst) + (r.inst.consoleText().endsWith(": ") ? 0 : 1));
      await waitForState(r.inst, "READY");
    }
    fig("detect", `removal -> SUSPENDED on the kernel log (${rounds} rounds)`, `p50 ${ms(q(det, 0.5), 0)} max ${ms(Math.max(...det), 0)}`, `<= ${poll} ms (one poll)`, Math.max(...det) <= poll);
  } finally {
    await stop(r);
  }
}

export const section: Section = { name: "detect", title: "presence fence round trip; token removal -> SUSPENDED (kernel state change on its log)", run: secDetect };
