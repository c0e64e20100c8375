// The mailer's failure messages (they reach the kernel's log and the world-readable status
// file as lastHookFailure) and log lines never carry SMTP_URL's credentials.
import t from "tap";
import { createLogger, setLogSink } from "../../services/common/log.js";
import { Mailer } from "../../services/notifier/mailer.js";

t.test("smtp://user:pw@host: no password in failures or log lines", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  const failures: string[] = [];
  // port 1 on the loopback: the connection is refused at once
  const mailer = new Mailer({
    to: ["ops@example.org"], from: "ca@example.org", smtpUrl: "smtps://ca-user:pw-s3cret@127.0.0.1:1", rateLimitMs: 60_000, timeoutMs: 5_000,
    hostname: "ca", maxQueue: 1, log: createLogger("notifier"), onFailure: (_event, message) => failures.push(message),
  });
  t.teardown(() => mailer.close());
  // the first is being sent, the second waits, the third finds the queue full
  for (const event of ["ready", "token-removed", "crl-updated"]) mailer.notify({ event, message: `${event} happened`, details: [] });
  await mailer.idle();
  t.equal(failures.length, 3, "three failures: one dropped, two refused connections");
  t.match(failures.join("\n"), /dropped: 1 messages already waiting for smtps:\/\/\*\*\*@127\.0\.0\.1:1/);
  t.match(failures.join("\n"), /through smtps:\/\/\*\*\*@127\.0\.0\.1:1 failed/);
  t.ok(lines.length >= 3, "logged");
  for (const text of [...failures, ...lines]) t.notMatch(text, /pw-s3cret|ca-user/, `no credentials: ${text.slice(0, 160)}`);
});

t.test("NOTIFY_RATE_LIMIT=30d (beyond a timer's 24.8 days): a repeat waits for the window's end, not 1 ms", async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.name);
  process.on("warning", onWarning);
  t.teardown(() => process.off("warning", onWarning));
  const failures: string[] = [];
  const mailer = new Mailer({
    to: ["ops@example.org"], from: "ca@example.org", smtpUrl: "smtp://127.0.0.1:1", rateLimitMs: 30 * 86_400_000, timeoutMs: 5_000,
    hostname: "ca", log: createLogger("notifier"), onFailure: (_event, message) => failures.push(message),
  });
  t.teardown(() => mailer.close());
  const keepAlive = setTimeout(() => undefined, 10_000);
  t.teardown(() => clearTimeout(keepAlive));
  mailer.notify({ event: "token-removed", message: "first", details: [] });
  await mailer.idle();
  t.equal(failures.length, 1, "the first is sent (and refused by port 1)");
  mailer.notify({ event: "token-removed", message: "repeat", details: [] });
  // a timer armed for more than 2^31-1 ms would fire after 1 ms: give it plenty of turns
  await new Promise((r) => setTimeout(r, 50));
  await mailer.idle();
  t.equal(failures.length, 1, "the repeat is held for the window (30 days), not mailed now");
  t.same(warnings.filter((w) => w === "TimeoutOverflowWarning"), [], "no timer was armed beyond its limit");
});
