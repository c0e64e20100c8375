// Prometheus metrics without a listener: the kernel keeps a few counters and histograms and writes
// them, with the state it already publishes in the status file, in the text exposition format to
// METRICS_FILE for node_exporter's textfile collector. Replaced atomically (hidden temporary file
// in the same directory, which the collector ignores, then rename), only when the text changed,
// and at most once a second.
import { VERSION } from "../common/cli.js";
import { describeError } from "../common/errors.js";
import { writeFileAtomic } from "../common/durable-file.js";
import type { Logger } from "../common/log.js";
import { KERNEL_STATES } from "./states.js";
import type { StatusSnapshot } from "../common/status-file.js";

/** Readable by node_exporter whatever user it runs as: the file holds no secret (like the status file). */
export const METRICS_FILE_MODE = 0o644;

/** Upper bounds (seconds) of the histogram buckets. */
const ISSUE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const SIGN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** A reason label is a failure code as the services write them; anything else is counted as "other". */
const REASON = /^[a-z][a-z0-9_.-]{0,63}$/;

import type { RevocationOrigin } from "../../proto/contract.js";

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
  }
  observe(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    for (let i = 0; i < this.bounds.length; i++) if (seconds <= this.bounds[i]!) this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }
}

/** What the kernel tells the metrics besides its status snapshot. */
export class KernelMetrics {
  private readonly failed = new Map<string, number>();
  private readonly rejected = new Map<string, number>();
  private readonly revocations = new Map<RevocationOrigin, number>();
  private crlsSigned = 0;
  private readonly issueTime = new Histogram(ISSUE_BUCKETS);
  private readonly signTime = new Histogram(SIGN_BUCKETS);

  /** @param changed called after each change, so that the file follows soon */
  constructor(private readonly changed: () => void = () => {}) {}

  requestFailed(code: string): void {
    bump(this.failed, reasonLabel(code));
    this.changed();
  }
  requestRejected(code: string): void {
    bump(this.rejected, reasonLabel(code));
    this.changed();
  }
  /** A certificate went back to the spool: time since the kernel got the request, and the signer's C_Sign time. */
  certificateReturned(requestToCertificateMs: number, signMs: number): void {
    this.issueTime.observe(requestToCertificateMs / 1000);
    if (signMs > 0) this.signTime.observe(signMs / 1000);
    this.changed();
  }
  revoked(origin: RevocationOrigin, count = 1): void {
    if (count <= 0) return;
    this.revocations.set(origin, (this.revocations.get(origin) ?? 0) + count);
    this.changed();
  }
  crlSigned(): void {
    this.crlsSigned++;
    this.changed();
  }

  /** The text exposition format (version 0.0.4) of these metrics and the snapshot's. */
  render(s: StatusSnapshot): string {
    const out = new Exposition();
    out.family("etoken_ca_build_info", "gauge", "Always 1; the labels name the running release", [[{ version: VERSION, nodejs: process.version }, 1]]);
    out.family("etoken_ca_state", "gauge", "1 for the kernel's current state, 0 for the others", KERNEL_STATES.map((st) => [{ state: st }, s.state === st ? 1 : 0]));
    out.family("etoken_ca_state_since_timestamp_seconds", "gauge", "When the kernel entered its current state (Unix time)", [[{}, s.stateSince / 1000]]);
    out.family("etoken_ca_pin_needed_since_timestamp_seconds", "gauge", "When the kernel started waiting for the PIN (Unix time); 0 when it is not waiting", [
      [{}, s.state === "NEED_PIN" ? s.stateSince / 1000 : 0],
    ]);
    // epoch 0: the monitor has not reported yet, so present is not known: no sample rather than a
    // 0 that an `== 0` alert would take for a missing token at every start
    const checked = s.token.epoch > 0;
    out.family("etoken_ca_token_checked", "gauge", "1 once the token monitor has reported since the server started, 0 before", [[{}, checked ? 1 : 0]]);
    out.family("etoken_ca_token_present", "gauge", "1 when the token monitor sees the CA token, 0 when not; no sample before its first report", checked ? [[{}, s.token.present ? 1 : 0]] : []);
    out.family("etoken_ca_certificates_issued_total", "counter", "Certificates delivered to their clients", [[{}, s.counters.issued]]);
    out.family("etoken_ca_requests_failed_total", "counter", "Requests answered with an error after the spool accepted them, by failure code", labelled(this.failed, "reason"));
    out.family("etoken_ca_requests_rejected_total", "counter", "Request files the spool refused before issuing, by failure code", labelled(this.rejected, "reason"));
    out.family("etoken_ca_fence_revoked_total", "counter", "Certificates revoked and withheld because the token's presence was not confirmed after signing", [[{}, s.counters.fenceRevoked]]);
    out.family("etoken_ca_undelivered_total", "counter", "Certificates signed that never reached their client (revoked)", [[{}, s.counters.undelivered]]);
    out.family("etoken_ca_revocations_total", "counter", "Revocations recorded in the CA database, by origin (queue: revoke-cert)", labelled(this.revocations, "origin"));
    out.family("etoken_ca_revocations_pending_crl", "gauge", "Revocations recorded that no published CRL carries yet", [[{}, s.revokedSinceCrl ?? 0]]);
    out.family("etoken_ca_crls_signed_total", "counter", "CRLs signed by the token", [[{}, this.crlsSigned]]);
    out.family("etoken_ca_queue_depth", "gauge", "Requests at the signer", [[{}, s.queueDepth]]);
    out.histogram("etoken_ca_request_duration_seconds", "From the spool's issue request to the certificate returned to the spool", this.issueTime);
    out.histogram("etoken_ca_sign_duration_seconds", "Time of the token's C_Sign for one certificate, measured by the signer", this.signTime);
    if (s.crl) {
      out.family("etoken_ca_crl_number", "gauge", "Number of the latest CRL", [[{}, s.crl.number]]);
      out.family("etoken_ca_crl_this_update_timestamp_seconds", "gauge", "thisUpdate of the latest CRL (Unix time)", [[{}, s.crl.thisUpdate / 1000]]);
      out.family("etoken_ca_crl_next_update_timestamp_seconds", "gauge", "nextUpdate of the latest CRL (Unix time)", [[{}, s.crl.nextUpdate / 1000]]);
      out.family("etoken_ca_crl_entries", "gauge", "Revoked certificates listed in the latest CRL", [[{}, s.crl.entries]]);
    }
    out.family("etoken_ca_service_up", "gauge", "1 while the service runs and has said hello", s.services.map((v) => [{ service: v.name }, v.up ? 1 : 0]));
    out.family("etoken_ca_service_restarts_total", "counter", "Restarts of each service since the kernel started", s.services.map((v) => [{ service: v.name }, v.restarts]));
    out.family("etoken_ca_log_writes_dropped_total", "counter", "Log lines lost because stdout/stderr could not be written", [[{}, s.logWritesDropped ?? 0]]);
    return out.text();
  }
}

/**
 * Writes METRICS_FILE when its text changed. It is fed by the kernel's status-file writes, whose
 * Throttle already keeps counter changes to one write a second (state changes are written at once).
 */
export class MetricsFile {
  private lastText = "";
  private lastError = "";

  constructor(
    private readonly file: string,
    private readonly metrics: KernelMetrics,
    private readonly log: Logger,
  ) {}

  update(snapshot: StatusSnapshot): void {
    const text = this.metrics.render(snapshot);
    if (text === this.lastText) return;
    try {
      writeFileAtomic(this.file, text, { mode: METRICS_FILE_MODE, syncDirectory: false });
      this.lastText = text;
      this.lastError = "";
    } catch (err) {
      // said once per kind of error (the message names a random temporary file), not at every write
      const kind = (err as NodeJS.ErrnoException).code ?? describeError(err);
      if (kind !== this.lastError) this.log.error("cannot write the metrics file", { file: this.file, error: describeError(err) });
      this.lastError = kind;
    }
  }
}

type Labels = Record<string, string>;
type Sample = [Labels, number];

function bump(m: Map<string, number>, key: string): void {
  m.set(key, (m.get(key) ?? 0) + 1);
}

function reasonLabel(code: string): string {
  return REASON.test(code) ? code : "other";
}

function labelled<K extends string>(m: ReadonlyMap<K, number>, label: string): Sample[] {
  return [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => [{ [label]: k }, v]);
}

const escapeLabel = (v: string): string => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const escapeHelp = (v: string): string => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
const number = (v: number): string => (Number.isNaN(v) ? "NaN" : v === Infinity ? "+Inf" : v === -Infinity ? "-Inf" : String(v));

class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: "counter" | "gauge", help: string, samples: readonly Sample[]): void {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) this.sample(name, labels, value);
  }

  histogram(name: string, help: string, h: Histogram): void {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} histogram`);
    h.bounds.forEach((le, i) => this.sample(`${name}_bucket`, { le: String(le) }, h.counts[i]!));
    this.sample(`${name}_bucket`, { le: "+Inf" }, h.count);
    this.sample(`${name}_sum`, {}, h.sum);
    this.sample(`${name}_count`, {}, h.count);
  }

  private sample(name: string, labels: Labels, value: number): void {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
    this.lines.push(`${name}${l.length ? `{${l.join(",")}}` : ""} ${number(value)}`);
  }

  text(): string {
    return this.lines.join("\n") + "\n";
  }
}
