// The PIN leaves no copy in the signer's memory: after Token.login and the caller's fill(0), the
// process's whole writable memory (read through /proc/PID/mem, as root) holds the PIN nowhere.
// The same search finds a JS string of it (the control), and the copies pkcs11js' own C_Login
// leaves (a JS string and a freed native copy: the signer's way before native/pin-login).
import t from "tap";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createSoftToken } from "../fixtures/softhsm.js";

const CHILD = fileURLToPath(new URL("../fixtures/pin-login-child.js", import.meta.url));
const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-pin-memory-"));
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));

// A PIN no other bytes in a node process would spell by chance.
const PIN = `Pm-${Date.now().toString(36)}-${process.pid.toString(36)}-q7`;
const st = createSoftToken({ dir: path.join(base, "token"), label: "etca pin memory", userPin: PIN });

/** Where `needle` occurs in the writable memory of process `pid`. */
function findInMemory(pid: number, needle: Buffer): { hits: number; scannedMiB: number } {
  const maps = fs.readFileSync(`/proc/${pid}/maps`, "utf8").trim().split("\n");
  const mem = fs.openSync(`/proc/${pid}/mem`, "r");
  const buf = Buffer.allocUnsafe(16 << 20);
  let hits = 0;
  let scanned = 0;
  try {
    for (const m of maps) {
      const [range, perms] = m.split(/\s+/) as [string, string];
      if (!perms.startsWith("rw")) continue;
      const [lo, hi] = range.split("-").map((h) => parseInt(h, 16)) as [number, number];
      // overlap by needle.length - 1 so that a copy across two reads is still seen
      for (let at = lo; at < hi; at += buf.length - (needle.length - 1)) {
        let n: number;
        try {
          n = fs.readSync(mem, buf, 0, Math.min(buf.length, hi - at), at);
        } catch {
          break; // a region that cannot be read (guard pages)
        }
        scanned += n;
        for (let i = buf.indexOf(needle); i !== -1 && i + needle.length <= n; i = buf.indexOf(needle, i + 1)) hits++;
        if (n < buf.length) break;
      }
    }
  } finally {
    fs.closeSync(mem);
  }
  return { hits, scannedMiB: scanned / 2 ** 20 };
}

async function loginAndSearch(mode: "buffer" | "string" | "pkcs11js"): Promise<{ hits: number; scannedMiB: number; kept: number }> {
  const child: ChildProcess = spawn(process.execPath, [CHILD, st.modulePath, st.confPath, mode], { stdio: ["pipe", "pipe", "inherit"] });
  try {
    const ready = new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("\n")) resolve(out);
      });
      child.on("exit", (code) => reject(new Error(`child exited with ${code} before logging in`)));
    });
    child.stdin!.end(Buffer.from(PIN, "latin1"));
    const line = await ready;
    const m = /^ready (\d+)/.exec(line);
    if (!m) throw new Error(`unexpected child output ${JSON.stringify(line)}`);
    return { ...findInMemory(child.pid!, Buffer.from(PIN, "latin1")), kept: Number(m[1]) };
  } finally {
    child.kill("SIGKILL");
  }
}

t.test("control: the search finds a JS string of the PIN", async (t) => {
  const r = await loginAndSearch("string");
  t.equal(r.kept, 1, "the child kept one string");
  t.ok(r.hits >= 1, `found ${r.hits} time(s) in ${r.scannedMiB.toFixed(0)} MiB`);
});

t.test("control: pkcs11js' own C_Login (PIN as a string) leaves copies", async (t) => {
  const r = await loginAndSearch("pkcs11js");
  t.ok(r.hits >= 1, `found ${r.hits} time(s) in ${r.scannedMiB.toFixed(0)} MiB`);
});

t.test("Token.login with a Buffer, then fill(0): the PIN is nowhere in the process", async (t) => {
  const r = await loginAndSearch("buffer");
  t.ok(r.scannedMiB > 10, `the search covered the process (${r.scannedMiB.toFixed(0)} MiB)`);
  t.equal(r.hits, 0, "no copy of the PIN in writable memory");
});
