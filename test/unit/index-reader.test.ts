// Reading index.txt in pieces of whole lines, and finding one serial's line by searching the
// bytes (revoke-cert's lookup): the same answers as the CA database's index, line numbers across
// pieces, the serial in another field, duplicates, a bad or torn line, a symlink.
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DatabaseError } from "../../services/common/errors.js";
import { CaDatabase } from "../../services/signer/cadb.js";
import { findSerialLine, PIECE_BYTES, readLinePieces } from "../../services/common/ca-dir/index-reader.js";
import { thrown } from "../fixtures/thrown.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-index-reader-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

const dbError = (fn: () => unknown): DatabaseError => thrown(DatabaseError, fn);

function line(status: string, serial: string, subject: string, opts: { rev?: string; file?: string } = {}): string {
  return `${status}\t301231000000Z\t${opts.rev ?? (status === "R" ? "250101000000Z,keyCompromise" : "")}\t${serial}\t${opts.file ?? "unknown"}\t${subject}\n`;
}

function caDir(name: string, text: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
  fs.writeFileSync(path.join(dir, "index.txt"), text);
  fs.writeFileSync(path.join(dir, "serial"), "01\n");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
  return dir;
}

/** Serials of the big file: distinct, upper-case, even length; line i holds serialOf(i). */
const serialOf = (i: number): string => `7F${i.toString(16).toUpperCase().padStart(8, "0")}`;
const statusOf = (i: number): "V" | "R" | "E" => (i % 7 === 0 ? "R" : i % 11 === 0 ? "E" : "V");

// ~ 3 pieces of PIECE_BYTES, so lines straddle the piece boundaries
const BIG_LINES = Math.ceil((3 * PIECE_BYTES) / 80);
const bigDir = caDir(
  "big",
  Array.from({ length: BIG_LINES }, (_, i) => line(statusOf(i), serialOf(i), `/DC=org/DC=example/CN=user ${i}${i % 5 === 0 ? " Jürgen" : ""}`)).join(""),
);
const bigIndex = path.join(bigDir, "index.txt");

t.test("readLinePieces: whole lines, right offsets, the whole file", async (t) => {
  const bytes = fs.readFileSync(bigIndex);
  const fd = fs.openSync(bigIndex, "r");
  const pieces: { offset: number; length: number; endsWithLf: boolean }[] = [];
  let total: number;
  let sameBytes = true;
  try {
    total = readLinePieces(
      fd,
      bytes.length,
      (piece, offset) => {
        pieces.push({ offset, length: piece.length, endsWithLf: piece[piece.length - 1] === 10 });
        if (!piece.equals(bytes.subarray(offset, offset + piece.length))) sameBytes = false;
      },
      (err) => err as Error,
    );
  } finally {
    fs.closeSync(fd);
  }
  t.equal(total, bytes.length, "every byte read");
  t.ok(pieces.length >= 3, `several pieces (${pieces.length})`);
  t.ok(sameBytes, "each piece is the file's bytes at its offset");
  t.ok(pieces.every((p) => p.endsWithLf), "every piece ends at a line end");
  t.ok(pieces.every((p, i) => i === 0 || p.offset === pieces[i - 1]!.offset + pieces[i - 1]!.length), "pieces follow each other");
  const longest = bytes.toString("latin1").split("\n").reduce((m, l) => Math.max(m, l.length + 1), 0);
  t.ok(pieces.every((p) => p.length <= PIECE_BYTES + longest), "no piece holds more than PIECE_BYTES and the line it ended in");
});

t.test("readLinePieces: a line longer than a piece, and a last line without LF", async (t) => {
  const long = "x".repeat(PIECE_BYTES + 1000);
  const file = path.join(work, "long.txt");
  fs.writeFileSync(file, `short\n${long}\ntorn`);
  const fd = fs.openSync(file, "r");
  const pieces: string[] = [];
  try {
    readLinePieces(fd, fs.fstatSync(fd).size, (piece) => pieces.push(piece.toString("latin1")), (err) => err as Error);
  } finally {
    fs.closeSync(fd);
  }
  t.equal(pieces.join(""), `short\n${long}\ntorn`, "nothing lost or repeated");
  t.ok(pieces.some((p) => p.includes(`${long}\n`)), "the long line arrives whole");
  t.equal(pieces[pieces.length - 1]!.endsWith("torn"), true, "the torn last line arrives last");
});

t.test("findSerialLine agrees with the CA database's index, across piece boundaries", async (t) => {
  const db = await CaDatabase.open(bigDir, { readOnly: true });
  const picks = [0, 1, 2, BIG_LINES - 1, BIG_LINES - 2];
  for (let k = 1; k < 40; k++) picks.push(Math.floor((k * BIG_LINES) / 40) + (k % 3));
  let disagree = 0;
  let wrongLine = 0;
  for (const i of picks) {
    const mine = findSerialLine(bigIndex, serialOf(i));
    const theirs = db.get(serialOf(i));
    if (!mine || !theirs || mine.status !== theirs.status || mine.line !== theirs.line || mine.subject !== theirs.subject || mine.notAfter.getTime() !== theirs.notAfter.getTime() || mine.reason !== theirs.reason) disagree++;
    if (mine?.line !== i + 1 || mine.status !== statusOf(i)) wrongLine++;
  }
  await db.close();
  t.equal(disagree, 0, `all ${picks.length} lookups give what CaDatabase.get gives`);
  t.equal(wrongLine, 0, "each serial found on its own line with its status");
  t.equal(findSerialLine(bigIndex, "7F"), undefined, "a prefix of serials is not a serial");
  t.equal(findSerialLine(bigIndex, "0123456789"), undefined, "an unknown serial is not found");
  const r = findSerialLine(bigIndex, serialOf(7 * 1000));
  t.equal(r?.reason, "keyCompromise", "a revoked line carries its reason");
  t.equal(findSerialLine(bigIndex, serialOf(5 * 1001))?.subject, `/DC=org/DC=example/CN=user ${5 * 1001} Jürgen`, "UTF-8 subject decoded");
});

t.test("findSerialLine: the serial in another field is not a match", async (t) => {
  const file = path.join(caDir("fields", line("V", "0A1B", "/CN=a", { file: "0C0D" }) + line("V", "0E0F", "/CN=0C0D") + line("V", "0C0D", "/CN=c")), "index.txt");
  t.equal(findSerialLine(file, "0C0D")?.line, 3, "the line whose serial field it is, not the one with that file name");
  t.equal(findSerialLine(path.join(caDir("fields2", line("V", "0A1B", "/CN=a", { file: "0C0D" })), "index.txt"), "0C0D"), undefined, "only as a file name: not found");
});

t.test("findSerialLine: what it refuses, with the line", async (t) => {
  const dup = path.join(caDir("dup", line("V", "0A", "/CN=a") + line("V", "0B", "/CN=b") + line("R", "0A", "/CN=a again")), "index.txt");
  const e1 = dbError(() => findSerialLine(dup, "0A"));
  t.match(e1.message, /index\.txt:3: duplicate serial 0A, already on line 1/);
  t.equal(findSerialLine(dup, "0B")?.line, 2, "another serial of that file is still found");

  const bad = path.join(caDir("bad", line("V", "0A", "/CN=a") + "V\t991399000000Z\t\t0B\tunknown\t/CN=b\n"), "index.txt");
  t.match(dbError(() => findSerialLine(bad, "0B")).message, /index\.txt:2: bad expiry date "991399000000Z"/);
  t.equal(findSerialLine(bad, "0A")?.line, 1, "a bad line elsewhere does not hide a good one (check-db finds it)");

  const torn = path.join(caDir("torn", line("V", "0A", "/CN=a") + "V\t301231000000Z\t\t0B\tunknown\t/CN=b"), "index.txt");
  t.match(dbError(() => findSerialLine(torn, "0B")).message, /index\.txt:2: last line has no newline/);

  const none = path.join(work, "none", "index.txt");
  t.match(dbError(() => findSerialLine(none, "0A")).message, /index\.txt: index\.txt is missing/);

  const linkDir = caDir("link", "");
  fs.rmSync(path.join(linkDir, "index.txt"));
  fs.symlinkSync(dup, path.join(linkDir, "index.txt"));
  t.match(dbError(() => findSerialLine(path.join(linkDir, "index.txt"), "0B")).message, /cannot open index\.txt: ELOOP/, "a symlinked index.txt is not followed");

  t.equal(findSerialLine(path.join(caDir("empty", ""), "index.txt"), "0A"), undefined, "an empty database holds nothing");
});
