// The PIN leaves no copy in the signer's memory: after Token.login and the caller's fill(0), the
// process's whole writable memory (read through /proc/PID/mem, as root) holds the PIN nowhere.
// The same search finds a JS string of it (the control), and the copies pkcs11js' own C_Login
// leaves (a JS string and a freed native copy: the signer's way before native/pin-login). And a
// PIN kept in a secretBuffer stays in one place through garbage collections, where a small
// Buffer.alloc is moved and leaves copies behind (the control).
import t from "tap";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { findInMemory } from "../fixtures/memory.js";
import { createSoftToken } from "../fixtures/softhsm.js";

const CHILD = fileURLToPath(new URL("../fixtures/pin-login-child.js", import.meta.url));
const GC_CHILD = fileURLToPath(new URL("../fixtures/gc-move-child.js", import.meta.url));
const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-pin-memory-"));
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));

// A PIN no other bytes in a node process would spell by chance.
const PIN = `Pm-${Date.now().toString(36)}-${process.pid.toString(36)}-q7`;
const st = createSoftToken({ dir: path.join(base, "token"), label: "etca pin memory", userPin: PIN });

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

/** Copies of a 24-byte secret in a child that keeps it in a Buffer made by `mode` and ran GCs. */
async function keptThroughGc(mode: "secret" | "alloc"): Promise<number> {
  const secret = Buffer.from(`gc-${Date.now().toString(36)}-${mode}-secret-0123456789`.slice(0, 24), "latin1");
  const child = spawn(process.execPath, ["--expose-gc", GC_CHILD, mode], { stdio: ["pipe", "pipe", "inherit"] });
  try {
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      child.on("exit", (code) => reject(new Error(`child exited with ${code}`)));
    });
    child.stdin!.end(secret);
    await ready;
    return findInMemory(child.pid!, secret).hits;
  } finally {
    child.kill("SIGKILL");
  }
}

t.test("secretBuffer: a PIN held through garbage collections is in one place (the kernel's way)", async (t) => {
  t.equal(await keptThroughGc("secret"), 1, "one copy: the live Buffer, outside V8's heap");
  t.ok((await keptThroughGc("alloc")) > 1, "control: a small Buffer.alloc is moved by the collector and leaves copies behind");
});
