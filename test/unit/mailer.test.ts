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
