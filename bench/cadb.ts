// CA database figures: record() per certificate at 0, 100k and 1M existing index lines,
// open() at 1M, revoke() (one full rewrite) at 1M, and revoke-cert's lookup of one serial (the
// whole database opened read-only, as it did before, vs findSerialLine). Prints figures only;
// asserts nothing.
// Run: node dist/bench/cadb.js [DIR]   (DIR on the file system CA_DIR will live on; default tmp)
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CaDatabase } from "../services/signer/cadb.js";
import { serialToHex } from "../services/common/ca-dir/index-format.js";
import { findSerialLine } from "../services/common/ca-dir/index-reader.js";

const base = fs.mkdtempSync(path.join(process.argv[2] ?? os.tmpdir(), "etca-bench-cadb-"));
// CPU time next to wall time: on a loaded machine wall-clock figures mislead.
const cpu = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
const RECORDS = Number(process.env.BENCH_RECORDS ?? 200);

function syntheticIndex(dir: string, lines: number): void {
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  const fd = fs.openSync(path.join(dir, "index.txt"), "w");
  const chunk: string[] = [];
  const rnd = randomBytes(lines * 15);
  for (let i = 0; i < lines; i++) {
    // 16-byte serials, first byte 0x80 | i-derived so they are unique and distinct from newSerial()'s
    const serial = (0x80 + (i % 0x7f)).toString(16).toUpperCase() + i.toString(16).toUpperCase().padStart(14, "0") + rnd.toString("hex", i * 15, i * 15 + 8).toUpperCase();
    const status = i % 50 === 0 ? `R\t310101000000Z\t250101000000Z,superseded` : `V\t310101000000Z\t`;
    chunk.push(`${status}\t${serial}\tunknown\t/DC=org/DC=example/CN=user ${i}\n`);
    if (chunk.length === 10000) {
      fs.writeSync(fd, chunk.join(""));
      chunk.length = 0;
    }
  }
  if (chunk.length) fs.writeSync(fd, chunk.join(""));
  fs.closeSync(fd);
  fs.writeFileSync(path.join(dir, "serial"), "01\n");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
}

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const der = randomBytes(1100); // record() does not parse the certificate
const rows: string[] = [];
try {
  for (const n of [0, 100_000, 1_000_000]) {
    const dir = path.join(base, `n${n}`);
    let t0 = process.hrtime.bigint();
    syntheticIndex(dir, n);
    const genMs = ms(t0);
    t0 = process.hrtime.bigint();
    const c0 = cpu();
    const db = CaDatabase.open(dir);
    const openMs = ms(t0);
    const openCpu = cpu() - c0;
    const times: number[] = [];
    let lastSerial = "";
    for (let i = 0; i < RECORDS; i++) {
      const serial = db.newSerial();
      lastSerial = serialToHex(serial);
      const t1 = process.hrtime.bigint();
      db.record({ serial, notAfter: new Date(Date.now() + 12 * 3600e3), subject: `/DC=org/DC=example/CN=bench ${i}`, certificate: der });
      times.push(ms(t1));
    }
    // group commit: 8 records in flight at once share one fdatasync
    const G = 8;
    const g0 = process.hrtime.bigint();
    for (let i = 0; i < RECORDS / G; i++) {
      await Promise.all(Array.from({ length: G }, (_, j) => db.recordGroupCommit({ serial: db.newSerial(), notAfter: new Date(Date.now() + 12 * 3600e3), subject: `/DC=org/DC=example/CN=group ${i}.${j}`, certificate: der })));
    }
    const groupMs = ms(g0) / RECORDS;
    console.log(`  recordGroupCommit(), ${G} in flight: ${groupMs.toFixed(3)} ms per record (wall / records)`);
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    const list = [...db.entries()].filter((e) => e.status === "V").slice(0, 1);
    t0 = process.hrtime.bigint();
    const res = db.revoke([{ serialHex: list[0]?.serialHex ?? "00", reason: "keyCompromise", revokedAt: new Date() }]);
    const revokeMs = ms(t0);
    db.close();
    // revoke-cert's lookup of the serial on the last line: what it did, what it does
    t0 = process.hrtime.bigint();
    const whole = CaDatabase.open(dir, { readOnly: true });
    const viaOpen = whole.get(lastSerial)?.line;
    whole.close();
    const openLookupMs = ms(t0);
    t0 = process.hrtime.bigint();
    const viaSearch = findSerialLine(path.join(dir, "index.txt"), lastSerial)?.line;
    const searchMs = ms(t0);
    console.log(`  revoke-cert lookup of the last line's serial: whole database opened ${openLookupMs.toFixed(0)} ms, findSerialLine ${searchMs.toFixed(1)} ms (${(openLookupMs / searchMs).toFixed(0)}x; lines ${viaOpen} / ${viaSearch})`);
    rows.push(
      `index lines ${String(n).padStart(9)}: record() mean ${mean.toFixed(3)} ms, median ${times[times.length >> 1]!.toFixed(3)} ms, p95 ${times[Math.floor(times.length * 0.95)]!.toFixed(3)} ms (${RECORDS} records); ` +
        `open() ${openMs.toFixed(0)} ms (cpu ${openCpu.toFixed(0)} ms); revoke() rewrite ${revokeMs.toFixed(0)} ms (${res[0]!.result}); [generating the index: ${genMs.toFixed(0)} ms, ${(fs.statSync(path.join(dir, "index.txt")).size / 1e6).toFixed(1)} MB]`,
    );
    console.log(rows[rows.length - 1]);
    const mem = process.memoryUsage();
    console.log(`  heap used after ${n} lines: ${(mem.heapUsed / 1e6).toFixed(0)} MB, rss ${(mem.rss / 1e6).toFixed(0)} MB`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
} finally {
  fs.rmSync(base, { recursive: true, force: true });
}
