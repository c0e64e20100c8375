// The certificate profile (DESIGN §5): what every end-entity certificate contains.
//
// Everything constant (version, algorithm, issuer, the fixed extensions) is encoded once
// when the template is built; `tbs()` only encodes the serial, validity, subject, public
// key, subjectKeyIdentifier and subjectAltName, and copies the rest.
//
// Extensions, in this order:
//   basicConstraints     critical  CA:FALSE
//   keyUsage             critical  digitalSignature, keyEncipherment
//   extendedKeyUsage               clientAuth
//   subjectKeyIdentifier           SHA-1 of the subjectPublicKey bits (RFC 5280 method 1)
//   authorityKeyIdentifier         keyIdentifier = the CA's subjectKeyIdentifier
//   certificatePolicies            one PolicyInformation per CA_OIDS entry (if any)
//   cRLDistributionPoints          one DistributionPoint whose fullName lists every CRL_URLS
//                                  URI (if any): several ways to fetch the same CRL
//   subjectAltName                 rfc822Name per email= suffix (if any)
// Nothing is taken from the CSR except its public key.

import crypto from "node:crypto";
import {
  TAG, bitString, boolean, contextTag, explicit, headerSize, integer, isIa5, oid, octetString, seq, timeSize, tlv,
  writeHeader, writeTime, type ErrorFactory,
} from "../common/x509/der.js";
import { BACKDATE_SECONDS } from "../common/config-schema.js";
import { ConfigError, RequestError } from "../common/errors.js";
import { SHA256_WITH_RSA_ALG_ID, subjectPublicKeyBits, type CaCertificate } from "../common/x509/certificate.js";

/**
 * Certificate lifetime in seconds from the issuing time: the smallest of the requested lifetime
 * and MyProxy's max_cert_lifetime (0 = not given, for both) and the CA's maximum (MAX_LIFETIME,
 * milliseconds) less the backdating of notBefore, so that notAfter - notBefore never exceeds
 * MAX_LIFETIME; at least 1 second.
 */
export function clampLifetime(requestedSeconds: number, myproxyMaxSeconds: number, caMaxMs: number, backdateSeconds = BACKDATE_SECONDS): number {
  if (!Number.isFinite(caMaxMs) || caMaxMs <= 0) throw new RangeError(`CA maximum lifetime must be positive, not ${caMaxMs}`);
  for (const [v, what] of [[requestedSeconds, "requested lifetime"], [myproxyMaxSeconds, "max_cert_lifetime"]] as const) {
    if (!Number.isFinite(v) || v < 0) throw new RequestError("bad_lifetime", `${what} must be a non-negative number of seconds, not ${v}`);
  }
  let s = Math.floor(caMaxMs / 1000) - backdateSeconds;
  if (requestedSeconds > 0) s = Math.min(s, Math.floor(requestedSeconds));
  if (myproxyMaxSeconds > 0) s = Math.min(s, Math.floor(myproxyMaxSeconds));
  return Math.max(1, s);
}

export interface TemplateOptions {
  caCert: CaCertificate;
  /** certificatePolicies OIDs (CA_OIDS) */
  policies: string[];
  /** CRL distribution point URIs (CRL_URLS, without the "URI:" prefix) */
  crlUrls: string[];
  /** notBefore = issuing time - this, for client clock skew (default 300) */
  backdateSeconds?: number;
}

export interface TbsInput {
  /** positive serial number, unsigned big-endian (at most 20 octets) */
  serial: Buffer;
  /** subject Name DER (from buildSubject) */
  subjectDer: Buffer;
  /** SubjectPublicKeyInfo DER (from parseCsr / checkRsaPublicKey) */
  publicKey: Buffer;
  /** rfc822Names (already checked by splitUsername) */
  emails: string[];
  /** the issuing time; the certificate's notBefore is this minus backdateSeconds */
  notBefore: Date;
  /** end of validity; clamped to the CA certificate's notAfter */
  notAfter: Date;
}

const EXT = (id: string, critical: boolean, value: Buffer): Buffer =>
  critical ? seq(oid(id), boolean(true), octetString(value)) : seq(oid(id), octetString(value));

const V3 = explicit(0, integer(2));
const BASIC_CONSTRAINTS = EXT("2.5.29.19", true, seq());
// digitalSignature (bit 0) + keyEncipherment (bit 2): 101xxxxx, 5 unused bits
const KEY_USAGE = EXT("2.5.29.15", true, bitString(Buffer.from([0xa0]), 5));
const EXT_KEY_USAGE = EXT("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.2")));
// subjectKeyIdentifier prefix: SEQUENCE { OID, OCTET STRING { OCTET STRING (20 bytes) } }
const SKI_PREFIX = (() => {
  const full = EXT("2.5.29.14", false, octetString(Buffer.alloc(20)));
  return full.subarray(0, full.length - 20);
})();
const OID_SAN = oid("2.5.29.17");

const profileFail: ErrorFactory = (m) => new RequestError("bad_public_key", `public key is not valid DER: ${m}`);

export class CertificateTemplate {
  readonly backdateSeconds: number;
  readonly caCert: CaCertificate;
  /** version, (serial goes between), then signature algorithm + issuer */
  private readonly algIssuer: Buffer;
  /** basicConstraints + keyUsage + extendedKeyUsage */
  private readonly extsA: Buffer;
  /** authorityKeyIdentifier + certificatePolicies + cRLDistributionPoints */
  private readonly extsB: Buffer;

  constructor(opts: TemplateOptions) {
    const bad = (m: string): never => {
      throw new ConfigError("bad_profile", m);
    };
    this.caCert = opts.caCert;
    this.backdateSeconds = opts.backdateSeconds ?? BACKDATE_SECONDS;
    if (!Number.isInteger(this.backdateSeconds) || this.backdateSeconds < 0 || this.backdateSeconds > 86400) bad(`backdate of ${opts.backdateSeconds} s is not 0-86400`);
    this.algIssuer = Buffer.concat([SHA256_WITH_RSA_ALG_ID, opts.caCert.subjectDer]);
    this.extsA = Buffer.concat([BASIC_CONSTRAINTS, KEY_USAGE, EXT_KEY_USAGE]);
    const parts: Buffer[] = [EXT("2.5.29.35", false, seq(tlv(contextTag(0, false), opts.caCert.keyId)))];
    if (opts.policies.length > 0) {
      const seen = new Set<string>();
      const infos = opts.policies.map((p) => {
        if (seen.has(p)) bad(`CA_OIDS: policy ${p} is listed twice`);
        seen.add(p);
        try {
          return seq(oid(p));
        } catch {
          return bad(`CA_OIDS: ${JSON.stringify(p)} is not a dotted OID`);
        }
      });
      parts.push(EXT("2.5.29.32", false, seq(...infos)));
    }
    if (opts.crlUrls.length > 0) {
      const names = opts.crlUrls.map((u) => {
        if (!/^[a-z][a-z0-9+.-]*:\/\/[\x21-\x7e]+$/i.test(u)) bad(`CRL_URLS: ${JSON.stringify(u)} is not an ASCII URI (scheme://...)`);
        return tlv(contextTag(6, false), Buffer.from(u, "latin1"));
      });
      // DistributionPoint { distributionPoint [0] { fullName [0] GeneralNames } }
      const dp = seq(explicit(0, tlv(contextTag(0, true), ...names)));
      parts.push(EXT("2.5.29.31", false, seq(dp)));
    }
    this.extsB = Buffer.concat(parts);
  }

  /** The DER TBSCertificate for one request. Refusals are RequestErrors. */
  tbs(input: TbsInput): Buffer {
    const serial = stripZeros(input.serial);
    if (serial.length === 0) throw new RequestError("bad_serial", "serial number must not be zero");
    if (serial.length > 20 || (serial.length === 20 && serial[0]! & 0x80)) throw new RequestError("bad_serial", "serial number is longer than 20 octets");
    const serialDer = integer(serial);
    if (input.subjectDer[0] !== TAG.SEQUENCE) throw new RequestError("bad_subject", "subject is not a DER Name");
    if (input.publicKey[0] !== TAG.SEQUENCE) throw new RequestError("bad_public_key", "public key is not a DER SubjectPublicKeyInfo");

    const issuedMs = Math.floor(input.notBefore.getTime() / 1000) * 1000;
    const notBefore = new Date(issuedMs - this.backdateSeconds * 1000);
    let afterMs = Math.floor(input.notAfter.getTime() / 1000) * 1000;
    if (!Number.isFinite(issuedMs) || !Number.isFinite(afterMs)) throw new RequestError("bad_lifetime", "invalid validity dates");
    const caEnd = this.caCert.notAfter.getTime();
    if (issuedMs >= caEnd) throw new RequestError("ca_expired", `the CA certificate expired on ${this.caCert.notAfter.toISOString()}`);
    if (afterMs > caEnd) afterMs = caEnd;
    if (afterMs <= issuedMs) throw new RequestError("bad_lifetime", "notAfter is not after the issuing time");
    const notAfter = new Date(afterMs);
    const vLen = timeSize(notBefore) + timeSize(notAfter);
    const validity = Buffer.allocUnsafe(headerSize(vLen) + vLen);
    writeTime(validity, writeTime(validity, writeHeader(validity, 0, TAG.SEQUENCE, vLen), notBefore), notAfter);

    const ski = crypto.createHash("sha1").update(subjectPublicKeyBits(input.publicKey, profileFail)).digest();
    const extParts: Buffer[] = [this.extsA, SKI_PREFIX, ski, this.extsB];
    if (input.emails.length > 0) {
      const names = input.emails.map((e) => {
        if (e.length === 0 || !isIa5(e)) throw new RequestError("bad_email", `e-mail address ${JSON.stringify(e)} is not ASCII`);
        return tlv(contextTag(1, false), Buffer.from(e, "latin1"));
      });
      extParts.push(seq(OID_SAN, octetString(seq(...names))));
    }
    const exts = explicit(3, tlv(TAG.SEQUENCE, ...extParts));
    return tlv(TAG.SEQUENCE, V3, serialDer, this.algIssuer, validity, input.subjectDer, input.publicKey, exts);
  }
}

function stripZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  return b.subarray(i);
}
