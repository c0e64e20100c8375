// The kernel's book of certificates whose delivery is not settled (services/kernel/handouts.ts):
// which spool reports are legitimate, and which serial they concern.
import t from "tap";
import type { Channel } from "../../services/common/channel.js";
import { Handouts } from "../../services/kernel/handouts.js";

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
  t.same(book.unconfirmed().map((x) => x.serial), ["0A0B"], "not acknowledged by the signer yet");
  book.confirmed("req.AAAAAAAAAAAA");
  t.same(book.inFlightSerials(), [], "settled once the signer recorded it");
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

t.test("a spool that never reports is timed out", async (t) => {
  const book = new Handouts();
  const spool = channel();
  const h = book.signed("req.AAAAAAAAAAAA", "01", spool);
  const alive = setInterval(() => {}, 1000); // the book's timer does not keep a process alive by itself
  const silent = await new Promise<string>((resolve) => book.returned(h, 5, (x) => resolve(x.serial)));
  clearInterval(alive);
  t.equal(silent, "01");
});
