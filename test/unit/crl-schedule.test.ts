// The CRL schedule: a new CRL is in place at least CRL_REISSUE_BEFORE before nextUpdate, whatever
// the phase of the kernel's periodic check.
import t from "tap";
import { crlAction, crlCheckIntervalMs, crlReissueAt } from "../../services/common/crl-schedule.js";

const DAY = 86_400_000;

t.test("the first check at or after the reissue point leaves a whole interval before the mark", async (t) => {
  for (const reissueBefore of [7 * DAY, DAY, 3_600_000, 20_000]) {
    const interval = crlCheckIntervalMs(reissueBefore);
    const nextUpdate = 30 * DAY;
    const mark = nextUpdate - reissueBefore;
    let worst = -Infinity;
    for (let phase = 0; phase < interval; phase += interval / 16) {
      // checks at phase, phase + interval, ...: the first that finds the CRL due
      const reissueAt = crlReissueAt(nextUpdate, reissueBefore);
      const first = phase + Math.ceil((reissueAt - phase) / interval) * interval;
      worst = Math.max(worst, first);
    }
    t.ok(worst + interval <= mark, `CRL_REISSUE_BEFORE=${reissueBefore / 1000}s: made at the latest ${(mark - worst) / 1000}s before the mark, which leaves an interval (${interval / 1000}s) to make it`);
  }
});

t.test("without a PIN, crl-expiring starts when the reissue point passes, then hourly", async (t) => {
  const nextUpdate = 30 * DAY;
  const at = (now: number, o: { ready?: boolean; dirty?: boolean; lastWarning?: number } = {}) =>
    crlAction({ ready: o.ready ?? false, now, nextUpdate, thisUpdate: 0, checkpointIntervalMs: 60 * DAY, dirty: o.dirty ?? false, reissueBeforeMs: 7 * DAY, lastWarning: o.lastWarning ?? 0 });
  const point = crlReissueAt(nextUpdate, 7 * DAY);
  t.equal(at(point - 1), undefined, "before the reissue point: quiet");
  t.equal(at(point), "warn", "at the reissue point (7 days and two minutes before expiry), not 3 days before");
  t.equal(at(point + 10 * 60_000, { lastWarning: point }), undefined, "at most hourly");
  t.equal(at(point + 61 * 60_000, { lastWarning: point }), "warn");
  t.equal(at(point, { ready: true }), "make", "READY: the CRL is made instead");
  t.equal(at(point - 1, { ready: true }), undefined);
  t.equal(at(point - DAY, { ready: true, dirty: true }), "make", "revocations: made at once");
  t.equal(crlAction({ ready: true, now: 0, nextUpdate: undefined, thisUpdate: undefined, checkpointIntervalMs: DAY, dirty: false, reissueBeforeMs: 7 * DAY, lastWarning: 0 }), "make", "no CRL yet");
  t.equal(crlAction({ ready: false, now: 0, nextUpdate: undefined, thisUpdate: undefined, checkpointIntervalMs: DAY, dirty: false, reissueBeforeMs: 7 * DAY, lastWarning: 0 }), undefined, "no CRL yet and no PIN: nothing to warn about");
});

t.test("READY: a CRL (an audit checkpoint) at least every AUDIT_CHECKPOINT_INTERVAL, even with nothing revoked", async (t) => {
  const thisUpdate = 1000 * DAY;
  const at = (now: number, ready = true) =>
    crlAction({ ready, now, nextUpdate: thisUpdate + 30 * DAY, thisUpdate, checkpointIntervalMs: DAY, dirty: false, reissueBeforeMs: 7 * DAY, lastWarning: 0 });
  t.equal(at(thisUpdate + DAY - 1), undefined, "before the interval: nothing");
  t.equal(at(thisUpdate + DAY), "make", "the interval has passed: a new CRL");
  t.equal(at(thisUpdate + DAY, false), undefined, "without a PIN no CRL can be made, and the CRL is far from expiring: no warning either");
});
