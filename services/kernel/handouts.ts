// The certificates the kernel has from the signer and whose delivery is not settled yet, by
// request id: what decides whether an `undelivered` or `delivered` from the spool is legitimate,
// which serial it concerns (never the one in the message), and what to revoke when the spool dies.
//
//   fencing     Issued arrived; the presence fence runs, nothing went to the spool yet
//   returned    the certificate went to this spool; it must say `delivered` or `undelivered`
//   confirming  the spool said `delivered`; the signer has not yet said it recorded that (its
//               ConfirmDelivery batch, sent to that signer process, is not in an Issued's
//               confirmed_through yet): kept, listed in flight and sent again to a restarted signer
//
// For RECENT_MS after `delivered` a client that then refuses its certificate (a key that is not
// its own) is still reported as `undelivered`.
// Everything here is lost when the kernel dies; the signer's delivery journal then revokes every
// certificate never confirmed (services/signer/delivery-journal.ts).
import { UNDELIVERED_ACCEPTED_MS } from "../../proto/contract.js";
import type { Channel } from "../common/channel.js";

export type HandoutPhase = "fencing" | "returned" | "confirming";

export interface Handout {
  readonly requestId: string;
  readonly serial: string;
  /** the spool process the request came from (its channel) */
  readonly spool: Channel;
  phase: HandoutPhase;
  timer?: NodeJS.Timeout;
  /** when the spool reported it delivered */
  deliveredAt?: number;
  /** the signer process its confirmation went to, and in which batch */
  confirmTo?: Channel;
  confirmBatch?: number;
}

/** How long a delivered request can still be reported undelivered (the client's checks take milliseconds). */
export const RECENT_MS = UNDELIVERED_ACCEPTED_MS;

export class Handouts {
  private readonly open = new Map<string, Handout>();
  private readonly recent = new Map<string, { serial: string; spool: Channel; until: number }>();

  get size(): number {
    return this.open.size;
  }

  /** Issued arrived for a request of this spool. */
  signed(requestId: string, serial: string, spool: Channel): Handout {
    const h: Handout = { requestId, serial, spool, phase: "fencing" };
    this.open.set(requestId, h);
    return h;
  }

  phaseOf(requestId: string): HandoutPhase | undefined {
    return this.open.get(requestId)?.phase;
  }

  serialOf(requestId: string): string | undefined {
    return this.open.get(requestId)?.serial;
  }

  /** The certificate went to the spool; `onSilence` runs if the spool never reports on it. */
  returned(h: Handout, silenceMs: number, onSilence: (h: Handout) => void): void {
    h.phase = "returned";
    h.timer = setTimeout(() => {
      if (this.open.get(h.requestId) === h && h.phase === "returned") onSilence(h);
    }, silenceMs);
    h.timer.unref();
  }

  /**
   * What a report from `spool` about `requestId` concerns: an open request of that spool in the
   * phase `returned`, or one delivered recently (for `undelivered`). Undefined: never returned to it.
   */
  find(requestId: string, spool: Channel, allowRecent: boolean): { serial: string; handout?: Handout } | undefined {
    const h = this.open.get(requestId);
    if (h && h.spool === spool && h.phase === "returned") return { serial: h.serial, handout: h };
    if (!allowRecent) return undefined;
    const r = this.recent.get(requestId) ?? (h && h.spool === spool && h.phase === "confirming" ? { serial: h.serial, spool, until: h.deliveredAt! + RECENT_MS } : undefined);
    if (r && r.spool === spool && r.until >= Date.now()) return { serial: r.serial };
    return undefined;
  }

  /** The spool reported the certificate delivered; the signer is to be told. */
  confirming(h: Handout): void {
    this.clearTimer(h);
    h.phase = "confirming";
    h.deliveredAt = Date.now();
  }

  /** Its confirmation went to this signer process in this batch (again, after a restart). */
  sent(requestId: string, signer: Channel, batch: number): void {
    const h = this.open.get(requestId);
    if (!h || h.phase !== "confirming") return;
    h.confirmTo = signer;
    h.confirmBatch = batch;
  }

  /** This signer process recorded every batch up to `through`: those deliveries are settled. */
  confirmedThrough(signer: Channel, through: number): void {
    for (const h of this.open.values()) {
      if (h.phase === "confirming" && h.confirmTo === signer && h.confirmBatch! <= through) this.confirmed(h);
    }
  }

  private confirmed(h: Handout): void {
    this.open.delete(h.requestId);
    this.pruneRecent();
    const until = h.deliveredAt! + RECENT_MS;
    if (until >= Date.now()) this.recent.set(h.requestId, { serial: h.serial, spool: h.spool, until });
  }

  /** Settled otherwise (revoked, refused, or the fence failed). */
  drop(requestId: string): void {
    this.recent.delete(requestId);
    const h = this.open.get(requestId);
    if (!h) return;
    this.clearTimer(h);
    this.open.delete(requestId);
  }

  /** Certificates returned to a spool process that is gone before it reported on them (now dropped). */
  orphaned(): Handout[] {
    const out = [...this.open.values()].filter((h) => h.spool.closed && h.phase === "returned");
    for (const h of out) this.drop(h.requestId);
    return out;
  }

  /** Serials the signer must keep valid when it settles its records (they are decided here). */
  inFlightSerials(): string[] {
    return [...this.open.values()].map((h) => h.serial);
  }

  /** Deliveries the signer has not acknowledged. */
  unconfirmed(): Handout[] {
    return [...this.open.values()].filter((h) => h.phase === "confirming");
  }

  private clearTimer(h: Handout): void {
    if (h.timer) clearTimeout(h.timer);
    h.timer = undefined;
  }

  private pruneRecent(): void {
    const now = Date.now();
    for (const [id, r] of this.recent) {
      // confirmation order is about expiry order (a confirmation sent again after a signer restart
      // comes later: kept a little longer, and `find` checks `until` anyway)
      if (r.until >= now) break;
      this.recent.delete(id);
    }
  }
}
