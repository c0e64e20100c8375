// The audit checkpoint every CRL carries: the chain head of the audit trail when the CRL was
// signed, in a non-critical CRL extension (RFC 5280 §5.2: a relying party ignores a
// non-critical extension it does not know). The CA key signs it as part of the CRL it makes
// anyway, so no new use of the key is needed.
//
//   extnID     2.25.322458238101142744022614818992570561992
//              (a UUID-derived OID, ITU-T X.667: UUID f2973299-abc9-4d74-95b1-66bf7eecf5c8)
//   critical   FALSE (omitted)
//   extnValue  OCTET STRING { SEQUENCE { seq INTEGER, head OCTET STRING (SHA-256, 32 octets) } }
//
// This module also reads CRLs back (the verifier): CRL number, checkpoint, signature.
import { createPublicKey, verify, type KeyObject } from "node:crypto";
import {
  DerSequence, TAG, children, contextTag, decodeOid, decodeSmallInt, decodeUnsigned, expectTag, integer, octetString, oid, parseDer, seq,
} from "../x509/der.js";
import type { ChainHead } from "./trail.js";

export const AUDIT_CHECKPOINT_UUID = "f2973299-abc9-4d74-95b1-66bf7eecf5c8";
export const AUDIT_CHECKPOINT_OID = `2.25.${BigInt(`0x${AUDIT_CHECKPOINT_UUID.replace(/-/g, "")}`)}`;

/** The whole Extension (SEQUENCE { extnID, extnValue }) for a CRL's crlExtensions. */
export function checkpointExtension(head: ChainHead): Buffer {
  return seq(oid(AUDIT_CHECKPOINT_OID), octetString(checkpointValue(head)));
}

/** The DER inside extnValue (what `openssl ca -crlexts` gets as `DER:...`). */
export function checkpointValue(head: ChainHead): Buffer {
  if (!/^[0-9a-f]{64}$/.test(head.hash)) throw new RangeError("the chain head must be 64 hex digits");
  return seq(integer(head.seq), octetString(Buffer.from(head.hash, "hex")));
}

export interface ReadCrl {
  /** cRLNumber, undefined when the CRL has none */
  number: bigint | undefined;
  thisUpdate: Date;
  /** the audit checkpoint, undefined when the CRL carries none (made before the trail existed) */
  checkpoint: ChainHead | undefined;
  /** the signature verifies with the CA key */
  signatureValid: boolean;
}

const SIGNATURE_HASH: Record<string, string> = {
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
};

function readTime(t: { tag: number; value: Buffer }, what: string, fail: (m: string) => Error): Date {
  const s = t.value.toString("latin1");
  const m = t.tag === TAG.UTC_TIME ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m || (t.tag !== TAG.UTC_TIME && t.tag !== TAG.GENERALIZED_TIME)) throw fail(`${what} is not a UTCTime or GeneralizedTime`);
  let year = Number(m[1]);
  if (t.tag === TAG.UTC_TIME) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/** Reads a DER CRL and checks its signature with `caKey`. Malformed input throws `fail(...)`. */
export function readCrl(der: Buffer, caKey: KeyObject | string | Buffer, fail: (m: string) => Error): ReadCrl {
  const key = typeof caKey === "object" && "type" in caKey && !Buffer.isBuffer(caKey) ? caKey : createPublicKey(caKey as string | Buffer);
  const top = new DerSequence(parseDer(der, fail, { maxSize: 256 << 20 }), fail, "CRL");
  const tbsTlv = top.next(TAG.SEQUENCE, "tbsCertList");
  const alg = top.next(TAG.SEQUENCE, "signatureAlgorithm");
  const sigBits = top.next(TAG.BIT_STRING, "signature");
  top.end();
  const algOid = decodeOid(expectTag(children(alg, fail)[0]!, TAG.OID, "signatureAlgorithm", fail), "signatureAlgorithm", fail);
  const hash = SIGNATURE_HASH[algOid];
  if (!hash) throw fail(`signature algorithm ${algOid} is not one etoken-ca knows`);
  if (sigBits.value[0] !== 0) throw fail("the signature BIT STRING has unused bits");
  const signatureValid = verify(hash, tbsTlv.raw, key, sigBits.value.subarray(1));

  const tbs = new DerSequence(tbsTlv, fail, "tbsCertList");
  tbs.optional(TAG.INTEGER, "version");
  tbs.next(TAG.SEQUENCE, "signature");
  tbs.next(TAG.SEQUENCE, "issuer");
  const thisUpdate = readTime(tbs.next(undefined, "thisUpdate"), "thisUpdate", fail);
  let number: bigint | undefined;
  let checkpoint: ChainHead | undefined;
  while (!tbs.done) {
    const t = tbs.next(undefined, "field");
    if (t.tag !== contextTag(0, true)) continue; // nextUpdate, revokedCertificates
    const exts = children(t, fail)[0];
    if (!exts) throw fail("crlExtensions is empty");
    for (const ext of children(expectTag(exts, TAG.SEQUENCE, "crlExtensions", fail), fail)) {
      const e = new DerSequence(ext, fail, "CRL extension");
      const id = decodeOid(e.next(TAG.OID, "extnID"), "extnID", fail);
      e.optional(TAG.BOOLEAN, "critical");
      const value = parseDer(e.next(TAG.OCTET_STRING, "extnValue").value, fail);
      if (id === "2.5.29.20") number = BigInt(`0x${decodeUnsigned(value, "cRLNumber", fail).toString("hex") || "0"}`);
      if (id === AUDIT_CHECKPOINT_OID) {
        const cp = new DerSequence(value, fail, "audit checkpoint");
        const s = decodeSmallInt(cp.next(TAG.INTEGER, "seq"), "audit checkpoint seq", fail);
        const h = cp.next(TAG.OCTET_STRING, "head").value;
        cp.end();
        if (h.length !== 32) throw fail("the audit checkpoint's head is not a SHA-256");
        checkpoint = { seq: s, hash: h.toString("hex") };
      }
    }
  }
  return { number, thisUpdate, checkpoint, signatureValid };
}
