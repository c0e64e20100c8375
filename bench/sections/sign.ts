import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { makeBaseDir } from "../../test/fixtures/server.js";
import { createSoftToken } from "../../test/fixtures/softhsm.js";
import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";
import { loggedInToken } from "../lib/token.js";
import { measured } from "../lib/measured.js";

async function secSign(): Promise<void> {
  console.log("[sign] raw C_Sign through pkcs11js (signer's Token, RSA-2048, CKM_SHA256_RSA_PKCS)");
  const base = makeBaseDir("etca-bench-sign");
  try {
    const st = createSoftToken({ dir: path.join(base, "t") });
    const tok = loggedInToken(st);
    const data = randomBytes(1000);
    for (let i = 0; i < 50; i++) tok.sign(data);
    const N = QUICK ? 500 : 2000;
    const t: number[] = [];
    const t0 = now();
    const u0 = process.cpuUsage();
    for (let i = 0; i < N; i++) {
      const a = now();
      tok.sign(data);
      t.push(now() - a);
    }
    const rate = N / ((now() - t0) / 1000);
    const u = process.cpuUsage(u0);
    measured.signCpuMs = (u.user + u.system) / 1000 / N;
    measured.signRate = rate;
    measured.signP50 = q(t, 0.5);
    fig("(a)", "C_Sign rate, one session", `${rate.toFixed(0)} /s (p50 ${ms(q(t, 0.5), 3)})`);
    tok.close();
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

export const section: Section = { name: "sign", title: "(a) raw C_Sign rate of the token key through pkcs11js (the signer's Token class)", run: secSign };
