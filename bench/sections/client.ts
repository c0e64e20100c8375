import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { calloutInput } from "../../test/fixtures/pki.js";
import { BIN, CLEAN_PATH } from "../../test/fixtures/server.js";
import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";
import { start, stop } from "../lib/installation.js";
import { measured } from "../lib/measured.js";
import { openChildCpu } from "../lib/child-cpu.js";

async function secClient(): Promise<void> {
  const runs = QUICK ? 15 : 40;
  console.log(`[client] etoken-ca-client as CLIENT_USER vs node -e '' (${runs} interleaved runs)`);
  const r = await start("etca-bench-cli");
  try {
    const u = r.inst.users.CLIENT_USER;
    const input = calloutInput({ username: "bench client", passphrase: "x", csrPem: r.csrPem });
    const cpu = openChildCpu();
    const run = (argv: string[], stdin?: string): { wall: number; code: number | null; cpuMs: number } => {
      const spawnIt = (): { wall: number; code: number | null } => {
        const a = now();
        const p = spawnSync(argv[0]!, argv.slice(1), { uid: u.uid, gid: u.gid, cwd: "/", input: stdin ?? "", env: { PATH: CLEAN_PATH }, stdio: ["pipe", "ignore", "pipe"] });
        return { wall: now() - a, code: p.status };
      };
      if (!cpu) return { ...spawnIt(), cpuMs: NaN };
      const m = cpu.measure(spawnIt);
      return { ...m.value, cpuMs: m.cpuMs };
    };
    // what MyProxy runs: the wrapper deploy/install writes (sh, `ulimit -c 0`, exec node)
    const wrapper = path.join(r.inst.dir, "etoken-ca-client");
    fs.writeFileSync(wrapper, `#!/bin/sh\nulimit -c 0\nexec '${process.execPath}' '${BIN.client}' "$@"\n`, { mode: 0o755 });
    const base: number[] = [];
    const cli: number[] = [];
    const baseCpu: number[] = [];
    const cliCpu: number[] = [];
    let bad = 0;
    try {
      run([process.execPath, "-e", ""]);
      run([wrapper, "--config", r.inst.configPath], input);
      for (let i = 0; i < runs; i++) {
        const n = run([process.execPath, "-e", ""]);
        base.push(n.wall);
        baseCpu.push(n.cpuMs);
        const c = run([wrapper, "--config", r.inst.configPath], input);
        if (c.code !== 0) bad++;
        cli.push(c.wall);
        cliCpu.push(c.cpuMs);
      }
    } finally {
      cpu?.close();
    }
    if (bad) note(`client: ${bad} runs failed`);
    if (cpu) fig("(dcpu)", "CPU of the call-out (sh wrapper + node) vs node -e '', median", `${ms(q(cliCpu, 0.5), 1)} vs ${ms(q(baseCpu, 0.5), 1)} (+${ms(q(cliCpu, 0.5) - q(baseCpu, 0.5), 1)})`);
    else note("client CPU not measured: no cgroup v2 hierarchy to account the children in");
    const b = q(base, 0.5);
    const c = q(cli, 0.5);
    fig("(d0)", "node -e '' (bare start-up), median", ms(b, 1));
    fig("(d)", "etoken-ca-client, whole logon callout, median", `${ms(c, 1)} (+${ms(c - b, 1)})`, "<= node + 10 ms", c - b <= 10);
    if (measured.b50 !== undefined) note(`client overhead beyond server-side (b) p50: ${(c - b - measured.b50).toFixed(1)} ms (sh wrapper, start-up, config, stdin, request file and lock, inotify wait, exit)`);
  } finally {
    await stop(r);
  }
}

export const section: Section = { name: "client", title: "(d) the whole etoken-ca-client process (as CLIENT_USER) vs `node -e ''`", run: secClient };
