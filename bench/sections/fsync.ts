import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";

async function secFsync(): Promise<void> {
  console.log(`[fsync] what one flush costs on the file system under ${os.tmpdir()}`);
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bench-fsync-"));
  try {
    const fd = fs.openSync(path.join(d, "a"), "a");
    const app: number[] = [];
    for (let i = 0; i < (QUICK ? 30 : 100); i++) {
      fs.writeSync(fd, "x".repeat(120) + "\n");
      const a = now();
      fs.fdatasyncSync(fd);
      app.push(now() - a);
    }
    fs.closeSync(fd);
    fig("disk", "fdatasync after a 121-byte append", `p50 ${ms(q(app, 0.5))} p99 ${ms(q(app, 0.99))}`);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}

export const section: Section = { name: "fsync", title: "what one flush costs on this disk (explains (b))", run: secFsync };
