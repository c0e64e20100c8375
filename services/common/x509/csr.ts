// PKCS#10 certificate requests: strict DER parse, RSA key policy, self-signature check.
//
// We take exactly one thing from a CSR: its RSA public key (re-encoded canonically as a
// SubjectPublicKeyInfo). The subject and every requested attribute or extension (MyProxy's
// CSRs ask for a critical proxyCertInfo) are only parsed past, never used; the subject is
// checked as strictly as OpenSSL reads it (the openssl backend hands `openssl ca` the request).
//
// Signature algorithms: sha256/384/512WithRSAEncryption (and sha224), plus sha1WithRSA
// because older clients sign their requests with it. The Globus GSI library that MyProxy
// clients use signs requests with SHA-256 since GCT 6 (globus_gsi_proxy_create_req: the
// handle's algorithm or EVP_sha256()); Globus Toolkit 5 and older used MD5, which we refuse:
// an MD5-signed CSR proves nothing.

import crypto from "node:crypto";
import {
  DerSequence, TAG, bitString, contextTag, decodeOctetAlignedBitString, decodeOid, decodeSmallInt, decodeUnsigned,
  nul, oid, parseDer, readTlv, seq, walk, type ErrorFactory, type Tlv,
} from "./der.js";
import { MAX_CSR_BYTES } from "../../../proto/contract.js";
import { RequestError } from "../errors.js";

export interface CsrPolicy {
  minKeyBits: number;
  /** default 16384 */
  maxKeyBits?: number;
  /**
   * false: everything but the self-signature is checked (the spool: the signer verifies it in
   * any case, services/signer/possession.ts, and refuses with the same code and message).
   * Default true.
   */
  verifySignature?: boolean;
}

export interface ParsedCsr {
  /** SubjectPublicKeyInfo DER (canonical: rsaEncryption with NULL parameters) */
  publicKey: Buffer;
  keyBits: number;
}

export const DEFAULT_MAX_KEY_BITS = 16384;
/** A CSR with a 16384-bit key and a few extensions stays far below it. */
export { MAX_CSR_BYTES };

const RSA_ENCRYPTION = "1.2.840.113549.1.1.1";

const SIGNATURE_HASHES: ReadonlyMap<string, string> = new Map([
  ["1.2.840.113549.1.1.5", "sha1"],
  ["1.2.840.113549.1.1.14", "sha224"],
  ["1.2.840.113549.1.1.11", "sha256"],
  ["1.2.840.113549.1.1.12", "sha384"],
  ["1.2.840.113549.1.1.13", "sha512"],
]);

const REFUSED_SIGNATURES: ReadonlyMap<string, string> = new Map([
  ["1.2.840.113549.1.1.4", "md5WithRSAEncryption is not accepted (use SHA-256)"],
  ["1.2.840.113549.1.1.2", "md2WithRSAEncryption is not accepted (use SHA-256)"],
  ["1.2.840.113549.1.1.3", "md4WithRSAEncryption is not accepted (use SHA-256)"],
  ["1.2.840.113549.1.1.10", "RSASSA-PSS signatures on CSRs are not accepted (use PKCS#1 v1.5 with SHA-256)"],
]);

const KEY_TYPES: ReadonlyMap<string, string> = new Map([
  ["1.2.840.10045.2.1", "EC"],
  ["1.2.840.10040.4.1", "DSA"],
  ["1.3.101.112", "Ed25519"],
  ["1.3.101.113", "Ed448"],
  ["1.2.840.113549.1.1.10", "RSASSA-PSS"],
  ["1.2.840.10046.2.1", "DH"],
]);

function derFail(context: string): ErrorFactory {
  return (m) => new RequestError("bad_csr", `${context}: ${m}`);
}

const csrFail = derFail("CSR is not valid DER");

/** Parses an AlgorithmIdentifier whose parameters must be NULL or absent (RSA family). */
function algorithm(t: Tlv, what: string, fail: ErrorFactory): { oid: string; params: Tlv | undefined } {
  const s = new DerSequence(t, fail, what);
  const o = decodeOid(s.next(TAG.OID, "algorithm"), what, fail);
  const params = s.done ? undefined : s.next(undefined, "parameters");
  s.end();
  return { oid: o, params };
}

function bitLength(magnitude: Buffer): number {
  if (magnitude.length === 1 && magnitude[0] === 0) return 0;
  return (magnitude.length - 1) * 8 + (32 - Math.clz32(magnitude[0]!));
}

const RSA_ALG_ID = seq(oid(RSA_ENCRYPTION), nul());

interface RsaKey {
  modulus: Buffer;
  exponent: Buffer;
  keyBits: number;
  spki: Buffer;
  /** RSAPublicKey (PKCS#1) DER: node imports it ~10x faster than an SPKI */
  pkcs1: Buffer;
}

/** Checks an SPKI TLV against the RSA policy; returns the canonical SPKI. */
function checkSpki(t: Tlv, minKeyBits: number, maxKeyBits: number, fail: ErrorFactory): RsaKey {
  const s = new DerSequence(t, fail, "subjectPublicKeyInfo");
  const alg = algorithm(s.next(TAG.SEQUENCE, "algorithm"), "public key algorithm", fail);
  const keyBitsT = s.next(TAG.BIT_STRING, "subjectPublicKey");
  s.end();
  if (alg.oid !== RSA_ENCRYPTION) {
    const kind = KEY_TYPES.get(alg.oid);
    throw new RequestError("key_type", `only RSA keys are accepted (this request has ${kind ? `an ${kind}` : `a ${alg.oid}`} key)`);
  }
  if (alg.params !== undefined && !(alg.params.tag === TAG.NULL && alg.params.length === 0)) {
    throw fail("rsaEncryption parameters must be NULL");
  }
  const keyDer = decodeOctetAlignedBitString(keyBitsT, "subjectPublicKey", fail);
  const keyT = readTlv(keyDer, 0, fail);
  if (keyT.end !== keyDer.length) throw fail("RSAPublicKey: trailing bytes");
  if (keyT.tag !== TAG.SEQUENCE) throw fail("RSAPublicKey is not a SEQUENCE");
  const k = new DerSequence(keyT, fail, "RSAPublicKey");
  const modulus = decodeUnsigned(k.next(TAG.INTEGER, "modulus"), "RSA modulus", fail);
  const exponent = decodeUnsigned(k.next(TAG.INTEGER, "publicExponent"), "RSA public exponent", fail);
  k.end();
  const keyBits = bitLength(modulus);
  if (!(modulus[modulus.length - 1]! & 1)) throw new RequestError("key_invalid", "RSA modulus is even: not an RSA key");
  if (keyBits < minKeyBits) throw new RequestError("key_too_small", `RSA key of ${keyBits} bits is below the minimum of ${minKeyBits}`);
  if (keyBits > maxKeyBits) throw new RequestError("key_too_large", `RSA key of ${keyBits} bits is above the maximum of ${maxKeyBits}`);
  if (!(exponent[exponent.length - 1]! & 1)) throw new RequestError("key_exponent", "RSA public exponent is even");
  if (bitLength(exponent) < 17) {
    // odd and below 2^16 + 1
    throw new RequestError("key_exponent", `RSA public exponent ${exponent.readUIntBE(0, exponent.length)} is below 65537`);
  }
  if (exponent.length > 32 || bitLength(exponent) >= keyBits) throw new RequestError("key_exponent", "RSA public exponent is unreasonably large");
  // Strict DER (minimal lengths and INTEGERs, one encoding of the OID) with NULL parameters is
  // already the canonical form: the bytes as they came, not a re-encoding (~70 µs per CSR).
  const pkcs1 = keyDer;
  const spki = t.tag === TAG.SEQUENCE && alg.params !== undefined ? Buffer.from(t.raw) : seq(RSA_ALG_ID, bitString(pkcs1));
  return { modulus, exponent, keyBits, spki, pkcs1 };
}

/** The string types OpenSSL reads in a Name, with a check of their content. */
const NAME_STRINGS: ReadonlyMap<number, { type: string; valid: (v: Buffer) => boolean }> = new Map([
  [TAG.UTF8_STRING, { type: "UTF8String", valid: isUtf8 }],
  [TAG.PRINTABLE_STRING, { type: "PrintableString", valid: () => true }],
  [0x12, { type: "NumericString", valid: () => true }],
  [TAG.T61_STRING, { type: "T61String", valid: () => true }],
  [TAG.IA5_STRING, { type: "IA5String", valid: () => true }],
  [0x1a, { type: "VisibleString", valid: () => true }],
  [TAG.BMP_STRING, { type: "BMPString", valid: (v) => v.length % 2 === 0 && codeUnits(v, 2).every((c) => c < 0xd800 || c > 0xdfff) }],
  [TAG.UNIVERSAL_STRING, { type: "UniversalString", valid: (v) => v.length % 4 === 0 && codeUnits(v, 4).every((c) => c <= 0x10ffff && (c < 0xd800 || c > 0xdfff)) }],
]);

const UTF8 = new TextDecoder("utf-8", { fatal: true });
function isUtf8(v: Buffer): boolean {
  try {
    UTF8.decode(v);
    return true;
  } catch {
    return false;
  }
}

function codeUnits(v: Buffer, size: 2 | 4): number[] {
  const out: number[] = [];
  for (let i = 0; i + size <= v.length; i += size) out.push(size === 2 ? v.readUInt16BE(i) : v.readUInt32BE(i));
  return out;
}

/**
 * The request's subject, as strictly as OpenSSL reads it: `openssl ca` (SIGNER_BACKEND=openssl)
 * loads the whole request, and a subject it cannot read would fail there as a backend error.
 */
function checkSubject(t: Tlv): void {
  const fail = derFail("CSR subject");
  const name = new DerSequence(t, fail, "Name");
  while (!name.done) {
    const rdn = new DerSequence(name.next(TAG.SET, "RelativeDistinguishedName"), fail, "RelativeDistinguishedName");
    if (rdn.done) throw fail("empty RelativeDistinguishedName");
    while (!rdn.done) {
      const atv = new DerSequence(rdn.next(TAG.SEQUENCE, "AttributeTypeAndValue"), fail, "AttributeTypeAndValue");
      const type = decodeOid(atv.next(TAG.OID, "type"), "attribute type", fail);
      const value = atv.next(undefined, "value");
      atv.end();
      const kind = NAME_STRINGS.get(value.tag);
      if (!kind) throw fail(`${type}: value with tag 0x${value.tag.toString(16).padStart(2, "0")} is not a string type`);
      if (!kind.valid(value.value)) throw fail(`${type}: not a valid ${kind.type}`);
    }
  }
}

/**
 * Re-validates an RSA SubjectPublicKeyInfo (what crosses the process boundary to the
 * signer): strict DER, RSA, odd exponent >= 65537, modulus between the bounds.
 */
export function checkRsaPublicKey(spki: Buffer, minKeyBits: number, maxKeyBits = DEFAULT_MAX_KEY_BITS): { keyBits: number } {
  const fail = derFail("public key is not valid DER");
  const t = parseDer(spki, fail, { maxSize: MAX_CSR_BYTES, maxDepth: 8 });
  const k = checkSpki(t, minKeyBits, maxKeyBits, fail);
  if (!k.spki.equals(spki)) throw new RequestError("bad_public_key", "public key is not in canonical form (rsaEncryption, NULL parameters)");
  return { keyBits: k.keyBits };
}

/**
 * Parses and checks a DER PKCS#10 request. Every refusal is a RequestError whose message
 * says exactly what is wrong.
 */
export function parseCsr(input: Buffer, policy: CsrPolicy): ParsedCsr {
  const maxKeyBits = policy.maxKeyBits ?? DEFAULT_MAX_KEY_BITS;
  const top = parseDer(input, csrFail, { maxSize: MAX_CSR_BYTES, maxDepth: 24 });
  if (top.tag !== TAG.SEQUENCE) throw csrFail("not a SEQUENCE (is this a certificate request?)");
  walk(top, csrFail); // every nested TLV well-formed before we look at anything

  const outer = new DerSequence(top, csrFail, "CertificationRequest");
  const info = outer.next(TAG.SEQUENCE, "certificationRequestInfo");
  const sigAlg = algorithm(outer.next(TAG.SEQUENCE, "signatureAlgorithm"), "signatureAlgorithm", csrFail);
  const signature = decodeOctetAlignedBitString(outer.next(TAG.BIT_STRING, "signature"), "signature", csrFail);
  outer.end();

  const cri = new DerSequence(info, csrFail, "certificationRequestInfo");
  const version = decodeSmallInt(cri.next(TAG.INTEGER, "version"), "version", csrFail);
  if (version !== 0) throw new RequestError("bad_csr", `CSR version ${version + 1} is not supported (expected version 1, encoded 0)`);
  checkSubject(cri.next(TAG.SEQUENCE, "subject")); // never used (the CA sets it), but openssl ca must load it
  const spkiT = cri.next(TAG.SEQUENCE, "subjectPKInfo");
  const attrs = cri.optional(contextTag(0, true), "attributes");
  cri.end();
  if (attrs) {
    // Parse past the attributes (extensionRequest and others): each one SEQUENCE { OID, SET }.
    const list = new DerSequence(attrs, csrFail, "attributes");
    while (!list.done) {
      const a = new DerSequence(list.next(TAG.SEQUENCE, "attribute"), csrFail, "attribute");
      decodeOid(a.next(TAG.OID, "type"), "attribute type", csrFail);
      a.next(TAG.SET, "values");
      a.end();
    }
  }

  const key = checkSpki(spkiT, policy.minKeyBits, maxKeyBits, csrFail);

  const hash = SIGNATURE_HASHES.get(sigAlg.oid);
  if (!hash) {
    throw new RequestError("bad_signature_algorithm", REFUSED_SIGNATURES.get(sigAlg.oid) ?? `CSR signature algorithm ${sigAlg.oid} is not accepted (use sha256WithRSAEncryption)`);
  }
  if (sigAlg.params !== undefined && !(sigAlg.params.tag === TAG.NULL && sigAlg.params.length === 0)) {
    throw csrFail("signature algorithm parameters must be NULL");
  }
  if (policy.verifySignature === false) return { publicKey: key.spki, keyBits: key.keyBits };
  let ok = false;
  try {
    // the DER key straight to verify: no KeyObject built and dropped per request (~10 µs less)
    ok = crypto.verify(hash, info.raw, { key: key.pkcs1, format: "der", type: "pkcs1", padding: crypto.constants.RSA_PKCS1_PADDING }, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new RequestError("bad_csr_signature", "CSR signature does not verify");
  return { publicKey: key.spki, keyBits: key.keyBits };
}
