// What the signer needs from a signing backend. Two implement it:
//   native-backend.ts   pkcs11js: one logged-in session, certificates and CRLs built here
//   openssl-backend.ts  `openssl ca` through the PKCS#11 engine, against the operator's
//                       openssl.cnf (the path the replaced system used)
// Both work on the same CA_DIR (openssl ca's on-disk format) and publish CRLs in the same
// CRL_DIR layout, so an installation can switch backends and lose nothing.
//
// The signer's main.ts keeps the message handling and validation (the subject, the lifetime,
// the key are checked there, the same for both backends); a backend only signs.
import type { EtokenError } from "../common/errors.js";
import type { CaDatabase } from "./cadb.js";
import type { PublishedCrl } from "./crl-publisher.js";
import type { ChainHead } from "../common/audit/trail.js";

export type BackendName = "pkcs11" | "openssl";

export interface LoggedInToken {
  serial: string;
  label: string;
  pinFlags: number;
}

export type LoginOutcome =
  | { ok: true; token: LoggedInToken }
  | { ok: false; error: EtokenError; pinFlags: number };

export interface IssueInput {
  /** the subject as main.ts built it from DN_FORMAT (DER and X509_NAME_oneline form) */
  subject: { der: Buffer; slash: string };
  /** SubjectPublicKeyInfo DER, the CSR's (already checked against MIN_KEY_BITS) */
  publicKey: Buffer;
  /** the CSR (DER), its self-signature verified and its key = publicKey (possession.ts); `openssl ca` needs it */
  csr: Buffer;
  /** subjectAltName rfc822Name entries */
  emails: readonly string[];
  /** clamped lifetime in seconds */
  lifetimeSeconds: number;
  /**
   * Called the moment the token has signed, before the record is written and synced, so that the
   * kernel's presence fence can run meanwhile. A backend that cannot tell never calls it.
   */
  onSigned?: () => void;
}

export interface IssueOutput {
  /** upper-case hex as in index.txt */
  serialHex: string;
  certificateDer: Buffer;
  notAfter: Date;
  subjectSlash: string;
  /** How long the token took to sign (ms): C_Sign for the native backend, the `openssl ca` run for openssl's */
  signMs: number;
}

export interface SigningBackend {
  readonly name: BackendName;
  /** the token the backend is logged in to, or undefined */
  readonly loggedIn: { serial: string; label: string } | undefined;
  /**
   * Logs in with the PIN and proves the token key matches CA_CERT. `pin` is zeroed before
   * this returns, whatever happens (a backend that needs the PIN later keeps its own copy).
   */
  login(pin: Buffer, expectedSerial: string): Promise<LoginOutcome>;
  /** Forgets the session (and any PIN copy). Never throws. */
  logout(): void;
  /**
   * Signs and records one certificate (recorded and synced before it resolves). Errors:
   * RequestError (refused), TokenError (device lost: `deviceLost`), others.
   */
  issue(input: IssueInput): Promise<IssueOutput>;
  /**
   * Makes, verifies and publishes a CRL from the database. `checkpoint()` gives the audit
   * trail's head (synced) at the moment the CRL is made; the CRL carries it. `onSigned`: called
   * the moment the token has signed it, before it is verified and published (as IssueInput's).
   */
  makeCrl(lifetimeMs: number, checkpoint: () => ChainHead, onSigned?: () => void): Promise<PublishedCrl>;
  /** The CRL the latest link points at. */
  latestCrl(): PublishedCrl | undefined;
  /**
   * Runs `fn` with the CA database while no backend operation writes it (openssl ca rewrites
   * index.txt; a revocation must not interleave with that).
   */
  exclusive<T>(fn: (db: CaDatabase) => T): Promise<T>;
  /** The database as of now (the openssl backend re-reads what openssl ca wrote). */
  database(): CaDatabase;
  /** Releases the module and descriptors. Never throws. */
  close(): void;
}

/** One operation at a time, in arrival order (a tiny async mutex). */
export class Serializer {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => T | Promise<T>): Promise<T> {
    const next = this.tail.then(() => fn());
    this.tail = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }
}
