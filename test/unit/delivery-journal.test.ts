// The signer's delivery journal (CA_DIR/delivery.journal) on a real CA database: what counts as
// signed and never confirmed delivered, across restarts (a new process opening the same files),
// torn appends, compaction, and a database adopted without a journal.
import t from "tap";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DatabaseError } from "../../services/common/errors.js";
import { CaDatabase } from "../../services/signer/cadb.js";
import { DELIVERY_JOURNAL, DeliveryJournal } from "../../services/signer/delivery-journal.js";
import { thrown } from "../fixtures/thrown.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-journal-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

let dirs = 0;
function freshDb(): CaDatabase {
  return CaDatabase.open(path.join(work, `ca-${++dirs}`), { create: true });
}

function sign(db: CaDatabase): string {
  const serial = db.newSerial();
  db.record({ serial, notAfter: new Date(Date.now() + 3600_000), subject: "/CN=journal test", certificate: randomBytes(64) });
  return serial.toString("hex").toUpperCase();
}

/** What a restarted signer finds: the same directory opened again. */
function reopen(db: CaDatabase): { db: CaDatabase; journal: DeliveryJournal } {
  db.close();
  const again = CaDatabase.open(db.dir);
  return { db: again, journal: DeliveryJournal.open(again) };
}

t.test("signed and never confirmed: exactly those, after a restart", async (t) => {
  const db = freshDb();
  const before = [sign(db), sign(db)];
  const journal = DeliveryJournal.open(db);
  t.same(journal.unconfirmed(), [], "a database without a journal: what is there already counts as settled");
  const a = sign(db);
  const b = sign(db);
  const c = sign(db);
  t.equal(journal.confirm([b]), 1, "one confirmation recorded");
  t.equal(journal.confirm([b]), 0, "a second confirmation of the same serial is not recorded again");
  journal.close();
  const r = reopen(db);
  t.same(r.journal.unconfirmed().sort(), [a, c].sort(), "after a restart: the two never confirmed");
  t.same(r.journal.toSettle(new Set([c])), [a], "one still in flight at the kernel is kept");
  t.notOk(before.some((s) => r.journal.unconfirmed().includes(s)), "lines from before the journal are never revoked");
  r.db.revoke([{ serialHex: a, reason: "cessationOfOperation", revokedAt: new Date() }]);
  r.journal.settled();
  t.same(r.journal.unconfirmed(), [c], "revoked lines are settled; the in-flight one stays tracked");
  r.journal.confirm([c]);
  t.same(r.journal.unconfirmed(), [], "confirmed later");
  r.journal.close();
  const again = reopen(r.db);
  t.same(again.journal.unconfirmed(), [], "nothing left after another restart");
  t.match(fs.readFileSync(path.join(db.dir, DELIVERY_JOURNAL), "utf8"), /^from \d+\n/, "the journal starts with its first tracked line");
  again.journal.close();
  again.db.close();
});

t.test("a confirmation torn by a crash counts as not confirmed (errs towards revoking)", async (t) => {
  const db = freshDb();
  const journal = DeliveryJournal.open(db);
  const a = sign(db);
  journal.close();
  fs.appendFileSync(path.join(db.dir, DELIVERY_JOURNAL), `D ${a.slice(0, 10)}`); // no LF: the write was cut
  const r = reopen(db);
  t.same(r.journal.unconfirmed(), [a], "the torn line is ignored");
  r.journal.confirm([a]);
  r.journal.close();
  const again = reopen(r.db);
  t.same(again.journal.unconfirmed(), [], "a confirmation appended after the torn line is read");
  again.journal.close();
  again.db.close();
});

t.test("compaction keeps only what is still open, whatever the size of the database", async (t) => {
  const db = freshDb();
  const journal = DeliveryJournal.open(db);
  const serials = Array.from({ length: 50 }, () => sign(db));
  const open = serials[20]!;
  journal.confirm(serials.filter((s) => s !== open));
  journal.compact();
  const text = fs.readFileSync(path.join(db.dir, DELIVERY_JOURNAL), "utf8");
  t.match(text, /^from 20\n/, "tracking starts at the oldest open line");
  t.equal(text.split("\n").filter((l) => l.startsWith("D ")).length, 29, "only the confirmations after it are kept");
  t.same(journal.unconfirmed(), [open]);
  journal.confirm([open]);
  journal.compact();
  t.equal(fs.readFileSync(path.join(db.dir, DELIVERY_JOURNAL), "utf8"), "from 50\n", "all settled: an empty journal after the last line");
  journal.close();
  db.close();
});

t.test("a damaged journal is refused with the file, the line and what was expected", async (t) => {
  const db = freshDb();
  DeliveryJournal.open(db).close();
  const file = path.join(db.dir, DELIVERY_JOURNAL);
  fs.writeFileSync(file, "from 0\nD 0A\nX nonsense\n");
  const e = thrown(DatabaseError, () => DeliveryJournal.open(db));
  t.match(e.message, /expected "D <SERIAL>"/);
  t.match(e.message, /delivery\.journal:3: /, "file and line");
  fs.writeFileSync(file, "from 7\n");
  t.match(thrown(DatabaseError, () => DeliveryJournal.open(db)).message, /index\.txt has 0 lines/, "a journal ahead of index.txt: an older index.txt was put back");
  db.close();
});
