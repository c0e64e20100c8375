// The CA certificate (loaded once) and the final assembly of a signed certificate.
//
// Signatures are RSA PKCS#1 v1.5 over SHA-256 of the TBS bytes (the token mechanism is
// CKM_SHA256_RSA_PKCS), so the algorithm identifier is always sha256WithRSAEncryption.

import crypto from "node:crypto";
import {
  DerSequence, TAG, bitString, contextTag, decodeBoolean, decodeOctetAlignedBitString, decodeOid, decodeTime,
  nul, oid, parseDer, readTlv, seq, tlv, type ErrorFactory,
} from "./der.js";
import { ConfigError } from "../errors.js";
import { pemDecode } from "./pem.js";
import { nameToSlash } from "./dn.js";

export interface CaCertificate {
  der: Buffer;
  /** the subject Name DER, copied verbatim as the issuer of what we sign */
  subjectDer: Buffer;
  /** X509_NAME_oneline form, for logs and status */
  subjectSlash: string;
  publicKey: crypto.KeyObject;
  /** SubjectPublicKeyInfo DER */
  spki: Buffer;
  /** the CA's subjectKeyIdentifier, or SHA-1 of its public key bits when it has none */
  keyId: Buffer;
  notBefore: Date;
  notAfter: Date;
}

export const SHA256_WITH_RSA = "1.2.840.113549.1.1.11";
/** AlgorithmIdentifier sha256WithRSAEncryption with NULL parameters (RFC 4055). */
export const SHA256_WITH_RSA_ALG_ID: Buffer = seq(oid(SHA256_WITH_RSA), nul());

const OID_SKI = "2.5.29.14";
const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_KEY_USAGE = "2.5.29.15";

/** The subjectPublicKey BIT STRING contents of an SPKI (for key identifiers). */
export function subjectPublicKeyBits(spki: Buffer, fail: ErrorFactory): Buffer {
  const t = parseDer(spki, fail, { maxSize: 64 * 1024, maxDepth: 8 });
  const s = new DerSequence(t, fail, "subjectPublicKeyInfo");
  s.next(TAG.SEQUENCE, "algorithm");
  const bits = decodeOctetAlignedBitString(s.next(TAG.BIT_STRING, "subjectPublicKey"), "subjectPublicKey", fail);
  s.end();
  return bits;
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(spki: Buffer, fail: ErrorFactory): Buffer {
  return crypto.createHash("sha1").update(subjectPublicKeyBits(spki, fail)).digest();
}

/**
 * Loads the CA certificate (PEM with exactly one CERTIFICATE block, or DER). Refuses a
 * certificate that is not a CA (basicConstraints cA), cannot sign certificates (keyUsage
 * without keyCertSign) or does not have an RSA key. Errors are ConfigErrors naming `file`.
 */
export function loadCaCertificate(pemOrDer: Buffer | string, file?: string): CaCertificate {
  const where = file ? { file } : {};
  const fail: ErrorFactory = (m) => new ConfigError("bad_ca_cert", `CA certificate: ${m}`, where);
  let der: Buffer;
  if (Buffer.isBuffer(pemOrDer) && pemOrDer[0] === TAG.SEQUENCE) der = Buffer.from(pemOrDer);
  else der = pemDecode(Buffer.isBuffer(pemOrDer) ? pemOrDer.toString("latin1") : pemOrDer, "CERTIFICATE", fail);

  const top = parseDer(der, fail, { maxSize: 256 * 1024, maxDepth: 32 });
  const cert = new DerSequence(top, fail, "Certificate");
  const tbsT = cert.next(TAG.SEQUENCE, "tbsCertificate");
  cert.next(TAG.SEQUENCE, "signatureAlgorithm");
  cert.next(TAG.BIT_STRING, "signature");
  cert.end();

  const tbs = new DerSequence(tbsT, fail, "tbsCertificate");
  const version = tbs.optional(contextTag(0, true), "version");
  if (!version || version.length !== 3 || version.buf[version.valueStart + 2] !== 2) throw fail("not an X.509 v3 certificate");
  tbs.next(TAG.INTEGER, "serialNumber");
  tbs.next(TAG.SEQUENCE, "signature");
  tbs.next(TAG.SEQUENCE, "issuer");
  const validity = new DerSequence(tbs.next(TAG.SEQUENCE, "validity"), fail, "validity");
  const notBefore = decodeTime(validity.next(undefined, "notBefore"), "notBefore", fail);
  const notAfter = decodeTime(validity.next(undefined, "notAfter"), "notAfter", fail);
  validity.end();
  const subjectT = tbs.next(TAG.SEQUENCE, "subject");
  const spkiT = tbs.next(TAG.SEQUENCE, "subjectPublicKeyInfo");
  tbs.optional(contextTag(1, false), "issuerUniqueID");
  tbs.optional(contextTag(2, false), "subjectUniqueID");
  const extsT = tbs.optional(contextTag(3, true), "extensions");
  tbs.end();

  const exts = new Map<string, { critical: boolean; value: Buffer }>();
  if (extsT) {
    const list = readTlv(extsT.buf, extsT.valueStart, fail, extsT.end, extsT.depth + 1);
    if (list.tag !== TAG.SEQUENCE || list.end !== extsT.end) throw fail("malformed extensions");
    const ls = new DerSequence(list, fail, "extensions");
    while (!ls.done) {
      const e = new DerSequence(ls.next(TAG.SEQUENCE, "extension"), fail, "extension");
      const id = decodeOid(e.next(TAG.OID, "extnID"), "extnID", fail);
      const crit = e.optional(TAG.BOOLEAN, "critical");
      const value = e.next(TAG.OCTET_STRING, "extnValue").value;
      e.end();
      if (exts.has(id)) throw fail(`extension ${id} appears twice`);
      exts.set(id, { critical: crit ? decodeBoolean(crit, "critical", fail) : false, value });
    }
  }

  const bc = exts.get(OID_BASIC_CONSTRAINTS);
  let isCa = false;
  if (bc) {
    const t = parseDer(bc.value, fail);
    const s = new DerSequence(t, fail, "basicConstraints");
    const ca = s.optional(TAG.BOOLEAN, "cA");
    isCa = ca ? decodeBoolean(ca, "cA", fail) : false;
  }
  if (!isCa) throw fail("not a CA certificate (basicConstraints CA:TRUE is missing)");
  const ku = exts.get(OID_KEY_USAGE);
  if (ku) {
    const t = parseDer(ku.value, fail);
    if (t.tag !== TAG.BIT_STRING || t.length < 2) throw fail("malformed keyUsage");
    // keyCertSign is bit 5: 0x04 in the first content octet
    if (!(t.buf[t.valueStart + 1]! & 0x04)) throw fail("keyUsage does not allow keyCertSign");
  }

  const spki = Buffer.from(spkiT.raw);
  let publicKey: crypto.KeyObject;
  try {
    publicKey = crypto.createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch (err) {
    throw fail(`unreadable public key (${(err as Error).message})`);
  }
  if (publicKey.asymmetricKeyType !== "rsa") throw fail(`the CA key is ${publicKey.asymmetricKeyType ?? "unknown"}, but signing uses RSA (CKM_SHA256_RSA_PKCS)`);
  try {
    new crypto.X509Certificate(der); // OpenSSL must be able to read it too
  } catch (err) {
    throw fail(`OpenSSL cannot parse it (${(err as Error).message})`);
  }

  let keyId: Buffer;
  const ski = exts.get(OID_SKI);
  if (ski) {
    const t = parseDer(ski.value, fail);
    if (t.tag !== TAG.OCTET_STRING || t.length === 0) throw fail("malformed subjectKeyIdentifier");
    keyId = Buffer.from(t.value);
  } else keyId = keyIdentifier(spki, fail);

  const subjectDer = Buffer.from(subjectT.raw);
  return {
    der,
    subjectDer,
    subjectSlash: nameToSlash(subjectDer, fail),
    publicKey,
    spki,
    keyId,
    notBefore,
    notAfter,
  };
}

/** Certificate ::= SEQUENCE { tbsCertificate, sha256WithRSAEncryption, signature }. */
/** The subject Name (DER) of any X.509 certificate. */
export function certificateSubjectDer(der: Buffer, fail: ErrorFactory): Buffer {
  const cert = new DerSequence(parseDer(der, fail, { maxSize: 256 * 1024, maxDepth: 32 }), fail, "Certificate");
  const tbs = new DerSequence(cert.next(TAG.SEQUENCE, "tbsCertificate"), fail, "tbsCertificate");
  tbs.optional(contextTag(0, true), "version");
  tbs.next(TAG.INTEGER, "serialNumber");
  tbs.next(TAG.SEQUENCE, "signature");
  tbs.next(TAG.SEQUENCE, "issuer");
  tbs.next(TAG.SEQUENCE, "validity");
  return Buffer.from(tbs.next(TAG.SEQUENCE, "subject").raw);
}

export function assembleCertificate(tbs: Buffer, signature: Buffer): Buffer {
  return tlv(TAG.SEQUENCE, tbs, SHA256_WITH_RSA_ALG_ID, bitString(signature));
}

/**
 * Proves that `sign` (the token) holds the CA certificate's private key: signs a random
 * challenge (RSA PKCS#1 v1.5, SHA-256) and verifies it with the certificate's public key.
 * Errors thrown by `sign` (TokenError) propagate unchanged.
 */
export function publicKeyMatches(ca: CaCertificate, sign: (data: Buffer) => Buffer): boolean {
  const challenge = crypto.randomBytes(32);
  const signature = sign(challenge); // token errors propagate: they are not a key mismatch
  try {
    return crypto.verify("sha256", challenge, { key: ca.publicKey, padding: crypto.constants.RSA_PKCS1_PADDING }, signature);
  } catch {
    return false;
  }
}
