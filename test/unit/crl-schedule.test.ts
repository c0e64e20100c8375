// The CRL schedule: a new CRL is in place at least CRL_REISSUE_BEFORE before nextUpdate, whatever
// the phase of the kernel's periodic check.
import t from "tap";
import { crlCheckIntervalMs, crlReissueAt } from "../../services/kernel/crl-schedule.js";

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
