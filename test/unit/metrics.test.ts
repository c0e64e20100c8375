// METRICS_FILE: the text exposition format checked by Prometheus' own parser and linter
// (`promtool check metrics`, Debian's prometheus package), the values it carries, and how the file
// is replaced (atomically, 0644 whatever the umask, only on change, at most once a second).
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promtool, sample } from "../fixtures/prometheus.js";
import { KernelMetrics, MetricsFile, METRICS_FILE_MODE } from "../../services/kernel/metrics.js";
import type { StatusSnapshot } from "../../services/common/status-file.js";
import { createLogger, setLogSink } from "../../services/common/log.js";

const NOW = Date.parse("2026-12-03T12:00:00Z");
const DAY = 86400_000;

function snapshot(over: Partial<StatusSnapshot> = {}): StatusSnapshot {
  return {
    version: 1, kernelPid: 4242, state: "READY", stateSince: NOW - 2 * DAY, updatedAt: NOW,
    token: { present: true, serial: "abc", label: "ca", pinFlags: [], epoch: 1, usbAvailable: false },
    trustedTokenSerial: "abc",
    counters: { issued: 120, failed: 3, rejected: 2, fenceRevoked: 1, undelivered: 4 },
    queueDepth: 2,
    crl: { number: 7, thisUpdate: NOW - DAY, nextUpdate: NOW + 29 * DAY, entries: 4, path: "/x/crl.pem" },
    lastHookFailure: null,
    revokedSinceCrl: 1,
    services: ["spool", "signer", "monitor", "notifier"].map((name) => ({ name, user: `etca-${name}`, uid: 1, pid: 10, up: name !== "notifier", startedAt: NOW - DAY, restarts: name === "signer" ? 2 : 0, lastError: null })),
    ...over,
  };
}


function busyMetrics(): KernelMetrics {
  const m = new KernelMetrics();
  m.requestFailed("token.not_available");
  m.requestFailed("token.not_available");
  m.requestFailed("request.expired");
  m.requestFailed('evil"code\nwith newline'); // a code no service writes: counted as "other"
  m.requestRejected("request.bad_owner");
  m.certificateReturned(80, 12.5);
  m.certificateReturned(1500, 0); // a backend that does not measure C_Sign: no sign-time sample
  m.revoked("revoke-queue", 2);
  m.revoked("presence-fence");
  m.revoked("undelivered", 0);
  m.crlSigned();
  return m;
}


t.test("promtool accepts the exposition and finds nothing to lint", async (t) => {
  for (const [label, text] of [
    ["busy, READY with a CRL", busyMetrics().render(snapshot())],
    ["fresh kernel, no CRL, nothing counted", new KernelMetrics().render(snapshot({ state: "STARTING", crl: null, revokedSinceCrl: undefined }))],
  ] as const) {
    const r = promtool(text);
    t.equal(r.said, "", `${label}: promtool says nothing`);
    t.equal(r.status, 0, `${label}: promtool check metrics exits 0`);
  }
});

t.test("promtool is a real check: it refuses what breaks the format or the naming conventions", async (t) => {
  t.not(promtool('etoken_ca_x{reason="a"b"} 1\n').status, 0, "an unescaped quote in a label value");
  t.match(promtool("# HELP etoken_ca_issued a\n# TYPE etoken_ca_issued counter\netoken_ca_issued 1\n").said, /_total/, "a counter without _total");
});

t.test("the values: state enum, PIN-needed since, counters by reason, histograms, CRL, services, build", async (t) => {
  const text = busyMetrics().render(snapshot());
  t.equal(sample(text, 'etoken_ca_state{state="READY"}'), "1");
  for (const s of ["STARTING", "NEED_PIN", "SUSPENDED", "STOPPING"]) t.equal(sample(text, `etoken_ca_state{state="${s}"}`), "0", `state ${s} is 0`);
  t.equal(sample(text, "etoken_ca_pin_needed_since_timestamp_seconds"), "0", "not waiting for the PIN: 0");
  t.equal(sample(text, "etoken_ca_token_present"), "1");
  t.equal(sample(text, "etoken_ca_certificates_issued_total"), "120");
  t.equal(sample(text, 'etoken_ca_requests_failed_total{reason="token.not_available"}'), "2");
  t.equal(sample(text, 'etoken_ca_requests_failed_total{reason="request.expired"}'), "1");
  t.equal(sample(text, 'etoken_ca_requests_failed_total{reason="other"}'), "1", "a code of unexpected shape is not a label value");
  t.notMatch(text, /evil/, "the odd code itself is not written");
  t.equal(sample(text, 'etoken_ca_requests_rejected_total{reason="request.bad_owner"}'), "1");
  t.equal(sample(text, "etoken_ca_fence_revoked_total"), "1");
  t.equal(sample(text, "etoken_ca_undelivered_total"), "4");
  t.equal(sample(text, 'etoken_ca_revocations_total{origin="revoke-queue"}'), "2");
  t.equal(sample(text, 'etoken_ca_revocations_total{origin="presence-fence"}'), "1");
  t.equal(sample(text, 'etoken_ca_revocations_total{origin="undelivered"}'), undefined, "no revocation of that origin yet: no series");
  t.equal(sample(text, "etoken_ca_revocations_pending_crl"), "1");
  t.equal(sample(text, "etoken_ca_crls_signed_total"), "1");
  t.equal(sample(text, "etoken_ca_queue_depth"), "2");
  t.equal(sample(text, 'etoken_ca_request_duration_seconds_bucket{le="0.05"}'), "0");
  t.equal(sample(text, 'etoken_ca_request_duration_seconds_bucket{le="0.1"}'), "1", "80 ms is in the 0.1 s bucket");
  t.equal(sample(text, 'etoken_ca_request_duration_seconds_bucket{le="1"}'), "1");
  t.equal(sample(text, 'etoken_ca_request_duration_seconds_bucket{le="2.5"}'), "2", "buckets are cumulative");
  t.equal(sample(text, 'etoken_ca_request_duration_seconds_bucket{le="+Inf"}'), "2");
  t.equal(sample(text, "etoken_ca_request_duration_seconds_count"), "2");
  t.equal(Number(sample(text, "etoken_ca_request_duration_seconds_sum")), 1.58);
  t.equal(sample(text, 'etoken_ca_sign_duration_seconds_bucket{le="0.01"}'), "0");
  t.equal(sample(text, 'etoken_ca_sign_duration_seconds_bucket{le="0.025"}'), "1", "12.5 ms of C_Sign");
  t.equal(sample(text, "etoken_ca_sign_duration_seconds_count"), "1", "only measured signatures count");
  t.equal(Number(sample(text, "etoken_ca_sign_duration_seconds_sum")), 0.0125);
  t.equal(sample(text, "etoken_ca_crl_number"), "7");
  t.equal(Number(sample(text, "etoken_ca_crl_next_update_timestamp_seconds")), (NOW + 29 * DAY) / 1000);
  t.equal(Number(sample(text, "etoken_ca_crl_this_update_timestamp_seconds")), (NOW - DAY) / 1000);
  t.equal(sample(text, 'etoken_ca_service_restarts_total{service="signer"}'), "2");
  t.equal(sample(text, 'etoken_ca_service_restarts_total{service="spool"}'), "0");
  t.equal(sample(text, 'etoken_ca_service_up{service="notifier"}'), "0");
  t.match(text, /^etoken_ca_build_info\{version="\d+\.\d+\.\d+",nodejs="v\d+[^"]*"\} 1$/m);

  const waiting = new KernelMetrics().render(snapshot({ state: "NEED_PIN", stateSince: NOW - 60_000, token: { ...snapshot().token, present: false }, crl: null }));
  t.equal(Number(sample(waiting, "etoken_ca_pin_needed_since_timestamp_seconds")), (NOW - 60_000) / 1000, "waiting for the PIN since");
  t.equal(sample(waiting, 'etoken_ca_state{state="NEED_PIN"}'), "1");
  t.equal(sample(waiting, "etoken_ca_token_present"), "0");
  t.notMatch(waiting, /etoken_ca_crl_number/, "no CRL yet: no CRL series");
});

// Before the monitor's first report nobody knows whether the token is there: etoken_ca_token_present
// 0 then made an `== 0` alert fire at every start. Before the fix it was written 0, with nothing
// saying it was not checked yet.
t.test("before the monitor's first report: token_present absent, token_checked 0; after it, both", async (t) => {
  const notChecked = new KernelMetrics().render(snapshot({ state: "STARTING", token: { present: false, serial: "", label: "", pinFlags: [], epoch: 0, usbAvailable: false } }));
  t.equal(sample(notChecked, "etoken_ca_token_checked"), "0", "not checked yet");
  t.equal(sample(notChecked, "etoken_ca_token_present"), undefined, "no token_present sample: neither 0 nor 1 is known");
  t.same(promtool(notChecked), { status: 0, said: "" }, "promtool accepts it");
  const absent = new KernelMetrics().render(snapshot({ state: "NEED_PIN", token: { present: false, serial: "", label: "", pinFlags: [], epoch: 1, usbAvailable: false } }));
  t.equal(sample(absent, "etoken_ca_token_checked"), "1", "the monitor reported");
  t.equal(sample(absent, "etoken_ca_token_present"), "0", "and saw no token");
  const present = new KernelMetrics().render(snapshot());
  t.equal(sample(present, "etoken_ca_token_checked"), "1");
  t.equal(sample(present, "etoken_ca_token_present"), "1");
});

t.test("the file: replaced atomically, 0644 under umask 077, only on change", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-metrics-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "etoken_ca.prom");
  const m = new KernelMetrics();
  const out = new MetricsFile(file, m, createLogger("test"));
  const old = process.umask(0o077);
  try {
    out.update(snapshot());
  } finally {
    process.umask(old);
  }
  t.equal(fs.statSync(file).mode & 0o777, METRICS_FILE_MODE, "written 0644");
  t.equal(METRICS_FILE_MODE, 0o644);
  t.same(fs.readdirSync(dir), ["etoken_ca.prom"], "no temporary file left behind");
  t.equal(promtool(fs.readFileSync(file, "utf8")).status, 0, "promtool accepts the file");
  const first = fs.statSync(file).ino;

  out.update(snapshot());
  t.equal(fs.statSync(file).ino, first, "nothing changed: the file is not rewritten");

  m.requestFailed("request.expired");
  out.update(snapshot({ state: "NEED_PIN", counters: { ...snapshot().counters, failed: 4 } }));
  t.not(fs.statSync(file).ino, first, "a change is written");
  const text = fs.readFileSync(file, "utf8");
  t.equal(sample(text, 'etoken_ca_state{state="NEED_PIN"}'), "1", "the latest state is the one written");
  t.same(fs.readdirSync(dir), ["etoken_ca.prom"]);
});

t.test("an unwritable METRICS_FILE is logged once, not once a second, and does not throw", async (t) => {
  const lines: string[] = [];
  setLogSink({ write: (l: string) => lines.push(l) });
  t.teardown(() => setLogSink(process.stderr));
  const out = new MetricsFile("/nonexistent-dir/etoken_ca.prom", new KernelMetrics(), createLogger("test"));
  out.update(snapshot());
  out.update(snapshot({ queueDepth: 5 }));
  const errors = lines.filter((l) => l.includes("cannot write the metrics file"));
  t.equal(errors.length, 1, "one error line");
  t.match(errors[0], /nonexistent-dir\/etoken_ca\.prom/, "naming the file");
});
