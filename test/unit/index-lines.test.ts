// The packed in-memory index (index-lines.ts) and the CA database on top of it: lookups by
// serial through hash collisions, growth, and line offsets after revocations rewrite lines.
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DatabaseError } from "../../services/common/errors.js";
import { CaDatabase } from "../../services/signer/cadb.js";
import { IndexLines, serialHash } from "../../services/signer/index-lines.js";
import { thrown } from "../fixtures/thrown.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-index-lines-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

// Two serials whose FNV-1a hashes are equal (found by search): the table must tell them apart.
const COLLIDING = ["1001225A", "1005E2E0"] as const;

t.test("serial hash: the colliding pair really collides", async (t) => {
  t.equal(serialHash(COLLIDING[0]), serialHash(COLLIDING[1]));
  t.not(serialHash("0A"), serialHash("0B"));
});

t.test("IndexLines: find through collisions and growth, relayout", async (t) => {
  const lines = new IndexLines();
  const serials: string[] = [];
  for (let i = 0; i < 5000; i++) serials.push((0x100000 + i * 7919).toString(16).toUpperCase().padStart(8, "0"));
  serials.push(...COLLIDING);
  let misplaced = 0;
  for (const [i, s] of serials.entries()) if (lines.push(s, i % 3 === 0 ? "R" : "V", 10 + (i % 5)) !== i) misplaced++;
  t.equal(misplaced, 0, "push returns each line's index");
  t.equal(lines.length, serials.length);
  let wrong = 0;
  for (const [i, s] of serials.entries()) if (lines.find(s, (j) => serials[j] === s) !== i) wrong++;
  t.equal(wrong, 0, "every serial found at its own line after the arrays and the table grew");
  t.equal(lines.find("DEADBEEF", (j) => serials[j] === "DEADBEEF"), -1, "an unknown serial is not found");
  const [a, b] = COLLIDING;
  t.equal(lines.find(b, (j) => serials[j] === b), serials.length - 1, "the second of a colliding pair is found, not the first");
  t.equal(lines.find(a, (j) => serials[j] === a), serials.length - 2);
  t.equal(lines.status(0), "R");
  t.equal(lines.status(1), "V");

  let expectedEnd = 0;
  for (let i = 0; i < serials.length; i++) expectedEnd += 10 + (i % 5);
  t.equal(lines.end, expectedEnd);
  lines.relayout(new Map([[1, 40], [4000, 2]]));
  t.equal(lines.start(1), 10, "lines before the first change keep their place");
  t.equal(lines.start(2), 50, "the next line moves by the change");
  t.equal(lines.byteLength(4000), 2);
  t.equal(lines.end, expectedEnd + (40 - 11) + (2 - 10), "the end moves by both changes");
});

const dbError = (fn: () => unknown): DatabaseError => thrown(DatabaseError, fn);

function line(status: string, serial: string, subject: string, rev = ""): string {
  return `${status}\t301231000000Z\t${rev}\t${serial}\tunknown\t${subject}\n`;
}

t.test("CaDatabase on the packed index: colliding serials, UTF-8 subjects, revocations that move lines", async (t) => {
  const dir = path.join(work, "db");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  const subjects = new Map<string, string>();
  let text = "";
  for (let i = 0; i < 300; i++) {
    const serial = (0x1000 + i).toString(16).toUpperCase();
    const subject = i % 2 ? `/DC=org/CN=Jürgen Öttl ${i}` : `/CN=user ${i}`;
    subjects.set(serial, subject);
    text += line("V", serial, subject);
  }
  text += line("V", COLLIDING[0], "/CN=first of the pair") + line("V", COLLIDING[1], "/CN=second of the pair");
  fs.writeFileSync(path.join(dir, "index.txt"), text);

  const db = CaDatabase.open(dir);
  t.equal(db.size, 302);
  t.equal(db.get(COLLIDING[0])!.subject, "/CN=first of the pair");
  t.equal(db.get(COLLIDING[1])!.subject, "/CN=second of the pair");
  t.equal(db.get(COLLIDING[1])!.line, 302);

  // revoking early lines makes them longer: every later line moves in the file
  const revokedAt = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  const r = db.revoke([
    { serialHex: "1001", reason: "keyCompromise", revokedAt },
    { serialHex: "1003", reason: "unspecified", revokedAt },
    { serialHex: COLLIDING[0], reason: "superseded", revokedAt },
  ]);
  t.same(r.map((x) => x.result), ["revoked", "revoked", "revoked"]);
  let mismatched = 0;
  for (const [serial, subject] of subjects) {
    const e = db.get(serial);
    if (!e || e.subject !== subject || e.serialHex !== serial) mismatched++;
  }
  t.equal(mismatched, 0, "after the rewrite every line is read back from its new place");
  t.equal(db.get("1001")!.status, "R");
  t.equal(db.get("1001")!.reason, "keyCompromise");
  t.equal(db.get("1003")!.reason, undefined, "unspecified: a bare date");
  t.equal(db.get(COLLIDING[1])!.status, "V", "the other of the colliding pair is untouched");
  t.same([...db.revokedEntries()].map((e) => e.serialHex), ["1001", "1003", COLLIDING[0]], "CRL entries in index.txt order");
  t.equal(db.revokedCount, 3);

  // what is on disk agrees with what a fresh open reads, and the entries iterate in file order
  db.close();
  const again = CaDatabase.open(dir, { readOnly: true });
  const listed = [...again.entries()];
  t.equal(listed.length, 302);
  t.equal(listed[1]!.subject, subjects.get("1001"));
  t.equal(listed[1]!.status, "R");
  t.equal(listed[301]!.serialHex, COLLIDING[1]);
  again.close();

  // a real duplicate of the second of the pair is refused with both lines named
  fs.appendFileSync(path.join(dir, "index.txt"), line("V", COLLIDING[1], "/CN=again"));
  const e = dbError(() => CaDatabase.open(dir));
  t.equal(e.code, "db.corrupt_index");
  t.match(e.message, /index\.txt:303: duplicate serial 1005E2E0, already on line 302/);
});

t.test("index.txt damaged behind the signer's back: refused with the line, nothing appended, fine again once repaired", async (t) => {
  const dir = path.join(work, "behind");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  const good = line("V", "0A", "/CN=a") + line("V", "0B", "/CN=b");
  const index = path.join(dir, "index.txt");
  fs.writeFileSync(index, good);
  const db = CaDatabase.open(dir);
  t.teardown(() => db.close());
  const record = () => db.record({ serial: Buffer.from("0C", "hex"), notAfter: new Date(Date.UTC(2030, 0, 1)), subject: "/CN=c", certificate: Buffer.from("3000", "hex") });

  fs.writeFileSync(index + ".new", good + "V\tbroken\n");
  fs.renameSync(index + ".new", index);
  for (const attempt of ["first", "second"]) {
    const e = dbError(record);
    t.equal(e.code, "db.corrupt_index", `${attempt} attempt`);
    t.match(e.message, /index\.txt:3: 2 tab-separated fields/, `${attempt} attempt names the line`);
  }
  t.equal(fs.readFileSync(index, "utf8"), good + "V\tbroken\n", "nothing was appended to either file");

  fs.writeFileSync(index + ".new", good);
  fs.renameSync(index + ".new", index);
  t.equal(record().line, 3, "recorded after the repair");
  t.equal(db.get("0C")!.subject, "/CN=c");
  t.equal(fs.readFileSync(index, "utf8"), good + "V\t300101000000Z\t\t0C\tunknown\t/CN=c\n");
});

t.test("index.txt rewritten by someone else (openssl ca): appended lines are indexed, any other change means a full read", async (t) => {
  const dir = path.join(work, "appended");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  const index = path.join(dir, "index.txt");
  const replace = (text: string): void => {
    fs.writeFileSync(index + ".new", text);
    fs.renameSync(index + ".new", index); // a new inode, as openssl ca makes it
  };
  const first = line("V", "0A", "/CN=a") + line("R", "0B", "/CN=b", "250101000000Z,keyCompromise");
  replace(first);
  const db = CaDatabase.open(dir);
  t.teardown(() => db.close());

  replace(first + line("V", "0C", "/CN=c ü") + line("R", "0D", "/CN=d", "250102000000Z,superseded"));
  db.refresh();
  t.equal(db.size, 4);
  t.same([db.get("0C")!.line, db.get("0C")!.subject], [3, "/CN=c ü"], "an appended line, read from the new file");
  t.same(db.revokedEntries().map((e) => e.serialHex), ["0B", "0D"], "an appended R line reaches the CRL list");
  t.equal(db.get("0A")!.subject, "/CN=a", "the lines before are still found");
  t.equal(db.record({ serial: Buffer.from("0E", "hex"), notAfter: new Date(Date.UTC(2030, 0, 1)), subject: "/CN=e", certificate: Buffer.from("3000", "hex") }).line, 5);
  t.match(fs.readFileSync(index, "utf8"), /\t0D\tunknown\t\/CN=d\nV\t300101000000Z\t\t0E\tunknown\t\/CN=e\n$/, "our append goes to the new file");

  // same length, another serial on line 1: the beginning changed, so everything is read again
  const now = fs.readFileSync(index, "utf8");
  replace(now.replace("\t0A\t", "\t0F\t") + line("V", "10", "/CN=g"));
  db.refresh();
  t.equal(db.get("0A"), undefined, "the serial that was replaced is gone");
  t.equal(db.get("0F")!.subject, "/CN=a", "the new serial on line 1 is found");
  t.equal(db.get("10")!.line, 6);

  // an appended duplicate is refused with both line numbers, as on a full read
  replace(fs.readFileSync(index, "utf8") + line("V", "0C", "/CN=again"));
  const e = dbError(() => db.refresh());
  t.equal(e.code, "db.corrupt_index");
  t.match(e.message, /index\.txt:7: duplicate serial 0C, already on line 3/);
});

t.test("an index.txt larger than one read (4 MiB): every line found across the piece boundaries", async (t) => {
  const dir = path.join(work, "large");
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  const parts: string[] = [];
  const n = 130_000;
  for (let i = 0; i < n; i++) {
    const serial = (0x10000000 + i).toString(16).toUpperCase();
    parts.push(i % 7 === 0 ? line("R", serial, `/DC=org/CN=Åsa Ünal ${i} ${"x".repeat(i % 40)}`, "250101000000Z,superseded") : line("V", serial, `/CN=user ${i} ${"y".repeat(i % 53)}`));
  }
  const text = parts.join("");
  t.ok(Buffer.byteLength(text) > 2 * 4 * 1024 * 1024, "more than two pieces");
  const index = path.join(dir, "index.txt");
  fs.writeFileSync(index, text);

  const db = CaDatabase.open(dir, { readOnly: true });
  t.equal(db.size, n);
  t.equal(db.revokedCount, Math.ceil(n / 7));
  let wrong = 0;
  for (let i = 0; i < n; i++) {
    const e = db.get((0x10000000 + i).toString(16).toUpperCase());
    const expected = i % 7 === 0 ? `/DC=org/CN=Åsa Ünal ${i} ${"x".repeat(i % 40)}` : `/CN=user ${i} ${"y".repeat(i % 53)}`;
    if (!e || e.line !== i + 1 || e.subject !== expected || e.status !== (i % 7 === 0 ? "R" : "V")) wrong++;
  }
  t.equal(wrong, 0, "every line at its number with its subject and status");
  db.close();

  // a duplicate and a torn last line far beyond the first piece keep their line numbers
  fs.writeFileSync(index, text + line("V", "10000001", "/CN=dup"));
  t.match(dbError(() => CaDatabase.open(dir)).message, new RegExp(`index\\.txt:${n + 1}: duplicate serial 10000001, already on line 2`));
  fs.writeFileSync(index, text + "V\t301231000000Z\t\t0A");
  t.match(dbError(() => CaDatabase.open(dir)).message, new RegExp(`index\\.txt:${n + 1}: last line has no newline at its end`));
});
