// METRICS_FILE on a real server: what node_exporter's textfile collector would read (as an
// unprivileged user), accepted by promtool, following the CA through NEED_PIN, a refused request,
// the PIN, an issued certificate with its CRL, and a pulled token.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { promtool, sample } from "../fixtures/prometheus.js";
import { createInstallation, runClient, typePin, waitFor, waitForState } from "../fixtures/server.js";
import { readyServer } from "../fixtures/ready-server.js";
import { removeToken } from "../fixtures/softhsm.js";
import { calloutInput, makeCsr } from "../fixtures/pki.js";

const inst = createInstallation({ prefix: "etca-metrics" });
const textfileDir = path.join(inst.dir, "textfile");
fs.mkdirSync(textfileDir, { mode: 0o755 });
const metricsFile = path.join(textfileDir, "etoken_ca.prom");
fs.appendFileSync(inst.configPath, `METRICS_FILE='${metricsFile}'\n`);
const { work } = await readyServer(t, inst, { pin: false }); // the PIN is typed by the tests below

/** The file as user nobody reads it (node_exporter does not run as root). */
function readAsNobody(): string | undefined {
  const r = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "cat", metricsFile], { encoding: "utf8" });
  return r.status === 0 ? r.stdout : undefined;
}
/** Waits until the file shows `name` with a value the test accepts. */
function waitForSample(name: string, ok: (v: string) => boolean): Promise<string> {
  return waitFor(`${name} in ${metricsFile}`, () => {
    const text = readAsNobody();
    const v = text === undefined ? undefined : sample(text, name);
    return v !== undefined && ok(v) ? text : undefined;
  });
}
const PASSPHRASE = "pass-metrics-never-on-disk";

t.test("NEED_PIN, and a request refused without the PIN is counted by its reason", async (t) => {
  await waitForState(inst, "NEED_PIN", 60_000);
  const refused = await runClient(inst, calloutInput({ username: "early", passphrase: PASSPHRASE, csrPem: makeCsr(work, "early").csrPem }));
  t.equal(refused.code, 1, "no certificate without the PIN");
  const text = await waitForSample('etoken_ca_requests_failed_total{reason="token.not_available"}', (v) => v === "1");
  t.equal(sample(text, 'etoken_ca_state{state="NEED_PIN"}'), "1");
  t.ok(Number(sample(text, "etoken_ca_pin_needed_since_timestamp_seconds")) > 0, "waiting for the PIN since a time");
  t.equal(sample(text, "etoken_ca_token_checked"), "1", "the monitor has reported");
  t.equal(sample(text, "etoken_ca_token_present"), "1");
  t.same(promtool(text), { status: 0, said: "" }, "promtool check metrics accepts it");
  const st = fs.statSync(metricsFile);
  t.equal(st.mode & 0o777, 0o644, "0644 (the kernel's umask is 077)");
  t.equal(st.uid, 0, "root's file");
  t.same(fs.readdirSync(textfileDir), ["etoken_ca.prom"], "no temporary file is left for the collector to read");
});

t.test("READY: an issued certificate, its request time, the first CRL", async (t) => {
  await typePin(inst, inst.token.userPin, 1);
  await waitForState(inst, "READY", 30_000);
  const r = await runClient(inst, calloutInput({ username: "jdoe", passphrase: PASSPHRASE, csrPem: makeCsr(work, "jdoe").csrPem }));
  t.equal(r.code, 0, r.stderr);
  const text = await waitForSample("etoken_ca_certificates_issued_total", (v) => v === "1");
  t.equal(sample(text, 'etoken_ca_state{state="READY"}'), "1");
  t.equal(sample(text, "etoken_ca_pin_needed_since_timestamp_seconds"), "0", "no longer waiting for the PIN");
  t.equal(sample(text, "etoken_ca_request_duration_seconds_count"), "1", "one request-to-certificate time");
  t.equal(sample(text, 'etoken_ca_request_duration_seconds_bucket{le="+Inf"}'), "1");
  t.ok(Number(sample(text, "etoken_ca_crls_signed_total")) >= 1, "the CRL made after login is counted");
  t.ok(Number(sample(text, "etoken_ca_crl_number")) >= 1, "CRL number");
  t.ok(Number(sample(text, "etoken_ca_crl_next_update_timestamp_seconds")) * 1000 > Date.now(), "nextUpdate in the future");
  t.equal(sample(text, 'etoken_ca_service_restarts_total{service="signer"}'), "0");
  t.equal(sample(text, "etoken_ca_queue_depth"), "0");
  t.same(promtool(text), { status: 0, said: "" }, "promtool check metrics accepts it");
});

t.test("token pulled: SUSPENDED, token absent", async (t) => {
  removeToken(inst.token);
  const text = await waitForSample('etoken_ca_state{state="SUSPENDED"}', (v) => v === "1");
  t.equal(sample(text, "etoken_ca_token_present"), "0");
  t.equal(sample(text, "etoken_ca_certificates_issued_total"), "1", "the counters stay");
  t.same(promtool(text), { status: 0, said: "" });
});
