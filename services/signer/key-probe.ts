// `etoken-ca check-config`'s look at the token, run as SIGNER_USER with the module's environment:
// loads PKCS11_MODULE, finds the token KEY names and its public key object (no login, no PIN),
// and compares that key with CA_CERT. Prints one problem per line on stdout ("note: " lines are
// not problems); exit 0 when there is none. The caller treats this output as untrusted.
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import { describeError } from "../common/errors.js";
import { configFromEnvironment } from "../common/service.js";
import { describeKeyRef } from "../common/pkcs11/token-match.js";
import { Token } from "./token.js";

function stripZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

function probe(): string[] {
  const config = configFromEnvironment("signer");
  const jwk = new X509Certificate(fs.readFileSync(config.CA_CERT)).publicKey.export({ format: "jwk" });
  const caModulus = jwk.n ? stripZeros(Buffer.from(jwk.n, "base64url")) : undefined;
  if (!caModulus) return [`CA_CERT=${config.CA_CERT}: not an RSA certificate`];
  const token = Token.open(config.PKCS11_MODULE);
  try {
    const info = token.select(config.KEY);
    const keys = token.publicKeys(config.KEY);
    const where = `token "${info.label}" serial ${info.serial}`;
    if (keys.length === 0) {
      const all = token.publicKeys({ ...config.KEY, id: undefined, label: undefined });
      if (all.length > 0) {
        return [`no key matching KEY (${describeKeyRef(config.KEY)}) on ${where}; its keys: ${all.slice(0, 8).map((k) => `id ${k.id || "(none)"} label "${k.label}"`).join("; ")}`];
      }
      return [`note: no public key objects on ${where}: the key is compared with CA_CERT at the first login`];
    }
    const matching = keys.filter((k) => stripZeros(k.modulus).equals(caModulus));
    if (matching.length === 0) {
      return [`KEY (${describeKeyRef(config.KEY)}) on ${where}: ${keys.map((k) => `key id ${k.id || "(none)"}`).join(", ")} does not match CA_CERT=${config.CA_CERT}`];
    }
    if (keys.length > 1) {
      return [`KEY (${describeKeyRef(config.KEY)}) matches ${keys.length} keys on ${where} (ids ${keys.map((k) => k.id || "(none)").join(", ")}): set KEY=SLOT:ID with the id of the CA key (${matching[0]!.id || "no id"})`];
    }
    return [];
  } finally {
    token.close();
  }
}

let lines: string[];
try {
  lines = probe();
} catch (err) {
  lines = [describeError(err)];
}
process.stdout.write(lines.map((l) => `${l}\n`).join(""));
process.exitCode = lines.some((l) => !l.startsWith("note: ")) ? 1 : 0;
