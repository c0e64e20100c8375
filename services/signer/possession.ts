// Proof of possession, checked by the signer alone: the spool parses the CSR strictly but leaves
// its self-signature to this check (a compromised spool could send any public key anyway). The CSR travels with the request
// (IssueRequest.csr); its self-signature must verify, its key must be the key to certify, and
// that key must not be the CA's own.
import { RequestError } from "../common/errors.js";
import { parseCsr } from "../common/x509/csr.js";

/** Returns the key to certify (the CSR's canonical SubjectPublicKeyInfo); a RequestError otherwise. */
export function provenPublicKey(csr: Uint8Array | null | undefined, publicKey: Uint8Array, caSpki: Buffer, minKeyBits: number): Buffer {
  if (!csr || csr.length === 0) throw new RequestError("no_csr", "the request carries no CSR: no proof of possession of the key");
  const parsed = parseCsr(Buffer.from(csr.buffer, csr.byteOffset, csr.length), { minKeyBits });
  if (!parsed.publicKey.equals(publicKey)) throw new RequestError("csr_mismatch", "the public key to certify is not the key that signed the CSR: no proof of possession");
  if (parsed.publicKey.equals(caSpki)) throw new RequestError("ca_key", "the CSR asks to certify the CA's own public key: refused");
  return parsed.publicKey;
}
