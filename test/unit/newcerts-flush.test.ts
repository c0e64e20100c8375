// newcerts/<SERIAL>.pem files are fsynced off the signer's main thread (cadb/newcerts.ts), also
// when more are written before the deferred-flush timer than the early-flush bound: then the
// background flush starts at once. Before (issue 20, fifth round) that bound flushed the 256
// files synchronously, blocking the main thread, which signs, about once a second at the
// bench's sequential pace. Seen with strace on a real child process: which thread called fsync
// on each newcerts file.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";

const NEWCERTS_JS = fileURLToPath(new URL("../../services/signer/cadb/newcerts.js", import.meta.url));
/** more than the early-flush bound (256), fewer than the bound of open descriptors (1024) */
const FILES = 600;

if (spawnSync("strace", ["-V"]).status !== 0) {
  t.fail("strace is needed (apt-get install strace)");
} else {
  t.test(`${FILES} newcerts files written at once: every fsync in the thread pool, none on the main thread`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-newcerts-flush-"));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.mkdirSync(path.join(dir, "newcerts"));
    const trace = path.join(dir, "strace.out");
    // writes FILES certificates in one turn, then waits for the background flush (the deferred
    // timer and the pool's fsyncs) by watching for the directory's fsync, the flush's last step
    const program = `
      const { NewCerts } = await import(${JSON.stringify(NEWCERTS_JS)});
      const n = new NewCerts(${JSON.stringify(dir)});
      n.openDir();
      for (let i = 0; i < ${FILES}; i++) n.write((0x100000 + i).toString(16).toUpperCase(), Buffer.alloc(900, i));
      process.stdout.write("written " + process.pid + "\\n");
      setTimeout(() => process.exit(0), 60000);
      process.stdin.once("data", () => { n.close(); process.exit(0); });
    `;
    const child = spawn("strace", ["-f", "-qq", "-y", "-e", "trace=fsync", "-o", trace, process.execPath, "--input-type=module", "-e", program], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    // the main thread's id is the process's pid
    const main = await new Promise<number>((resolve) => child.stdout!.on("data", (b: Buffer) => {
      const m = /written (\d+)/.exec(b.toString());
      if (m) resolve(Number(m[1]));
    }));
    // a started fsync of a newcerts file (strace splits a call that another thread interrupts)
    const pemFsyncs = (): string[] => (fs.existsSync(trace) ? fs.readFileSync(trace, "utf8").split("\n").filter((l) => /fsync\(\d+<[^>]*\.pem>/.test(l)) : []);
    // until every file was synced in the background (close() would sync the rest on the main thread)
    for (let i = 0; i < 1200 && pemFsyncs().length < FILES; i++) await new Promise((r) => setTimeout(r, 50));
    child.stdin!.write("close\n");
    t.equal(await exited, 0, "the child ended normally");

    const pem = pemFsyncs();
    t.equal(pem.length, FILES, "each newcerts file fsynced once");
    t.same(
      pem.filter((l) => Number(l.split(/\s+/)[0]) === main),
      [],
      "no newcerts file fsynced by the main thread",
    );
  });
}
