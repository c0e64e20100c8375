// Makes, verifies and publishes CRLs: crl-NNNNNN.pem/.der numbered files in CRL_DIR, then the
// fixed links crl.pem and crl.der are switched atomically, only after the new CRL is complete
// on disk and its signature verified with the CA certificate.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { replaceSymlink, syncDirectory, writeFileAtomic } from "../common/durable-file.js";
import { DatabaseError } from "../common/errors.js";
import { pemEncode } from "../common/x509/pem.js";
import type { CaCertificate } from "../common/x509/certificate.js";
import type { CaDatabase } from "./cadb.js";
import { assembleCrl, buildTbsCrl } from "./crl.js";
import { checkpointExtension } from "../common/audit/checkpoint.js";
import type { ChainHead } from "../common/audit/trail.js";

export interface PublishedCrl {
  number: number;
  thisUpdate: number;
  nextUpdate: number;
  entries: number;
  /** the numbered DER file (what CRL_URLS serve, RFC 5280 §4.2.1.13; POST_CRL_HOOK gets it) */
  path: string;
}

export const LATEST_PEM = "crl.pem";
export const LATEST_DER = "crl.der";

export class CrlPublisher {
  constructor(
    private readonly dir: string,
    private readonly ca: CaCertificate,
  ) {}

  /** The CRL the latest link points at, from its metadata file. */
  latest(): PublishedCrl | undefined {
    try {
      const target = fs.readlinkSync(path.join(this.dir, LATEST_PEM));
      const meta = JSON.parse(fs.readFileSync(path.join(this.dir, target.replace(/\.pem$/, ".json")), "utf8")) as PublishedCrl;
      return meta;
    } catch {
      return undefined;
    }
  }

  /**
   * Publishes a CRL made elsewhere (`openssl ca -gencrl`, openssl backend) in the same layout:
   * numbered .der/.pem/.json, then the latest links. The caller has verified its signature.
   */
  install(der: Buffer, meta: Omit<PublishedCrl, "path">): PublishedCrl {
    const base = `crl-${meta.number.toString().padStart(6, "0")}`;
    const info: PublishedCrl = { ...meta, path: path.join(this.dir, `${base}.der`) };
    const published = { mode: 0o644, syncDirectory: false };
    writeFileAtomic(path.join(this.dir, `${base}.der`), der, published);
    writeFileAtomic(path.join(this.dir, `${base}.pem`), pemEncode(der, "X509 CRL"), published);
    writeFileAtomic(path.join(this.dir, `${base}.json`), JSON.stringify(info) + "\n", published);
    syncDirectory(this.dir);
    replaceSymlink(path.join(this.dir, LATEST_DER), `${base}.der`, { syncDirectory: false });
    replaceSymlink(path.join(this.dir, LATEST_PEM), `${base}.pem`, { syncDirectory: false });
    syncDirectory(this.dir);
    return info;
  }

  /** `checkpoint`: the audit trail's head, carried in the CRL (common/audit/checkpoint.ts). */
  publish(db: CaDatabase, lifetimeMs: number, sign: (tbs: Buffer) => Buffer, checkpoint: ChainHead): PublishedCrl {
    const now = Date.now();
    const thisUpdate = new Date(Math.floor(now / 1000) * 1000);
    const nextUpdate = new Date(thisUpdate.getTime() + lifetimeMs);
    const number = db.nextCrlNumber();
    // An expired certificate may leave the CRL only once it has expired.
    const entries = db.revokedEntries().filter((e) => e.notAfter.getTime() >= thisUpdate.getTime());
    const tbs = buildTbsCrl({
      issuerDer: this.ca.subjectDer,
      authorityKeyId: this.ca.keyId,
      crlNumber: number,
      thisUpdate,
      nextUpdate,
      entries,
      extensions: [checkpointExtension(checkpoint)],
    });
    const signature = sign(tbs);
    if (!crypto.verify("sha256", tbs, this.ca.publicKey, signature)) {
      throw new DatabaseError("crl_signature", `the token's CRL signature does not verify with the CA certificate; CRL #${number} not published`);
    }
    const der = assembleCrl(tbs, signature);
    return this.install(der, { number: Number(number), thisUpdate: thisUpdate.getTime(), nextUpdate: nextUpdate.getTime(), entries: entries.length });
  }
}
