// The kernel's book of certificates whose delivery is not settled (services/kernel/handouts.ts):
// which spool reports are legitimate, and which serial they concern.
import t from "tap";
import type { Channel } from "../../services/common/channel.js";
import { Handouts, RECENT_MS } from "../../services/kernel/handouts.js";

const channel = (): Channel & { closed: boolean } => ({ closed: false }) as unknown as Channel & { closed: boolean };

t.test("reports count only for a request returned to that spool process", async (t) => {
  const book = new Handouts();
  const spool = channel();
  const other = channel();
  const h = book.signed("req.AAAAAAAAAAAA", "0A0B", spool);
  t.equal(book.find("req.AAAAAAAAAAAA", spool, true), undefined, "not yet returned (presence fence running): no report counts");
  book.returned(h, 60_000, () => t.fail("no silence timeout here"));
  t.same(book.find("req.AAAAAAAAAAAA", spool, false), { serial: "0A0B", handout: h }, "returned: the serial is the kernel's own");
  t.equal(book.find("req.AAAAAAAAAAAA", other, true), undefined, "another spool process (a restarted one) cannot report on it");
  t.equal(book.find("req.BBBBBBBBBBBB", spool, true), undefined, "a request id never dispatched");
  t.same(book.inFlightSerials(), ["0A0B"], "in flight: the signer must keep it valid when it settles");
  book.confirming(h);
  t.equal(book.find("req.AAAAAAAAAAAA", spool, false), undefined, "a second `delivered` does not count");
  t.same(book.find("req.AAAAAAAAAAAA", spool, true), { serial: "0A0B" }, "`undelivered` after `delivered` (the client refused it) still counts");
  t.same(book.unconfirmed().map((x) => x.serial), ["0A0B"], "not recorded by the signer yet");
  const signer = channel();
  const restarted = channel();
  book.sent("req.AAAAAAAAAAAA", signer, 3);
  book.confirmedThrough(signer, 2);
  t.same(book.inFlightSerials(), ["0A0B"], "the signer recorded only the batches before its own");
  book.confirmedThrough(restarted, 5);
  t.same(book.inFlightSerials(), ["0A0B"], "another signer process's word does not settle a batch sent to the one before");
  book.confirmedThrough(signer, 3);
  t.same(book.inFlightSerials(), [], "settled once the signer recorded its batch");
  t.same(book.unconfirmed(), []);
  t.same(book.find("req.AAAAAAAAAAAA", spool, true), { serial: "0A0B" }, "recently delivered: `undelivered` still counts");
  book.drop("req.AAAAAAAAAAAA");
  t.equal(book.find("req.AAAAAAAAAAAA", spool, true), undefined, "once revoked, never again");
});

t.test("a spool that stops leaves its returned certificates orphaned, and only those", async (t) => {
  const book = new Handouts();
  const dead = channel();
  const alive = channel();
  const returned = book.signed("req.AAAAAAAAAAAA", "01", dead);
  book.returned(returned, 60_000, () => {});
  book.signed("req.BBBBBBBBBBBB", "02", dead); // still fencing: settled by the issuing path
  const delivered = book.signed("req.CCCCCCCCCCCC", "03", dead);
  book.returned(delivered, 60_000, () => {});
  book.confirming(delivered);
  const elsewhere = book.signed("req.DDDDDDDDDDDD", "04", alive);
  book.returned(elsewhere, 60_000, () => {});
  dead.closed = true;
  t.same(book.orphaned().map((h) => h.serial), ["01"]);
  t.same(book.orphaned(), [], "dropped: revoked once");
  t.same(book.inFlightSerials().sort(), ["02", "03", "04"]);
  book.drop("req.DDDDDDDDDDDD");
});

t.test("a delivery the signer has not recorded counts as recent for RECENT_MS only", async (t) => {
  const book = new Handouts();
  const spool = channel();
  const h = book.signed("req.AAAAAAAAAAAA", "01", spool);
  book.returned(h, 60_000, () => {});
  book.confirming(h);
  t.same(book.find("req.AAAAAAAAAAAA", spool, true), { serial: "01" }, "`undelivered` right after `delivered` counts");
  h.deliveredAt = Date.now() - RECENT_MS - 1; // delivered long ago, the signer never said it recorded it (idle since)
  t.equal(book.find("req.AAAAAAAAAAAA", spool, true), undefined, "an `undelivered` long after the delivery does not");
  t.same(book.inFlightSerials(), ["01"], "still kept for the signer");
});

t.test("a spool that never reports is timed out", async (t) => {
  const book = new Handouts();
  const spool = channel();
  const h = book.signed("req.AAAAAAAAAAAA", "01", spool);
  const alive = setInterval(() => {}, 1000); // the book's timer does not keep a process alive by itself
  const silent = await new Promise<string>((resolve) => book.returned(h, 5, (x) => resolve(x.serial)));
  clearInterval(alive);
  t.equal(silent, "01");
});
