import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { CaDatabase } from "../../services/signer/cadb.js";
import { loadCaCertificate } from "../../services/common/x509/certificate.js";
import { CrlPublisher } from "../../services/signer/crl-publisher.js";
import { GENESIS } from "../../services/common/audit/trail.js";
import { makeBaseDir } from "../../test/fixtures/server.js";
import { createSoftToken } from "../../test/fixtures/softhsm.js";
import { QUICK } from "../lib/options.js";
import type { Section } from "./section.js";
import { fig, note } from "../lib/report.js";
import { q, ms, now } from "../lib/stats.js";
import { loggedInToken } from "../lib/token.js";
import { syntheticIndex } from "../lib/synthetic-index.js";

async function secCrl(): Promise<void> {
  console.log("[crl] CrlPublisher.publish (entries, TBS, C_Sign, verify, files, latest link) vs openssl ca -gencrl (pkcs11 engine, same token)");
  const base = makeBaseDir("etca-bench-crl");
  try {
    const st = createSoftToken({ dir: path.join(base, "t") });
    const tok = loggedInToken(st);
    const ca = loadCaCertificate(fs.readFileSync(st.caCertPath), st.caCertPath);
    const sizes = QUICK ? [1_000, 20_000] : [1_000, 100_000];
    for (const n of sizes) {
      const dir = path.join(base, `db${n}`);
      fs.mkdirSync(path.join(dir, "newcerts"), { recursive: true });
      syntheticIndex(path.join(dir, "index.txt"), n, 1);
      fs.writeFileSync(path.join(dir, "serial"), "01\n");
      fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
      const copy = path.join(base, `ossl${n}`);
      fs.cpSync(dir, copy, { recursive: true });
      const db = CaDatabase.open(dir);
      const crlDir = path.join(base, `crl${n}`);
      fs.mkdirSync(crlDir);
      const pub = new CrlPublisher(crlDir, ca);
      const ours: number[] = [];
      for (let i = 0; i < (n > 10_000 ? 5 : 15); i++) {
        const a = now();
        pub.publish(db, 30 * 86400_000, (tbs) => tok.sign(tbs), { seq: 0, hash: GENESIS });
        ours.push(now() - a);
      }
      db.close();
      // openssl ca -gencrl with the key on the same token
      fs.writeFileSync(
        path.join(copy, "ca.cnf"),
        `openssl_conf = oc\n[oc]\nengines = es\n[es]\npkcs11 = p11\n[p11]\nengine_id = pkcs11\nMODULE_PATH = ${st.modulePath}\nPIN = ${st.userPin}\ninit = 0\n` +
          `[ca]\ndefault_ca = d\n[d]\ndir = ${copy}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/newcerts\ncertificate = ${st.caCertPath}\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\npolicy = p\n[p]\n`,
      );
      const oss: number[] = [];
      let err = "";
      for (let i = 0; i < 3; i++) {
        const a = now();
        const p = spawnSync("openssl", ["ca", "-batch", "-config", path.join(copy, "ca.cnf"), "-gencrl", "-engine", "pkcs11", "-keyform", "engine", "-keyfile", `pkcs11:id=%${st.caKeyId.match(/../g)!.join("%")};type=private`, "-out", path.join(copy, `crl${i}.pem`)], {
          env: { ...process.env, ...st.env },
          encoding: "utf8",
        });
        if (p.status !== 0) {
          err = (p.stderr || "").trim().split("\n").slice(-2).join(" | ");
          break;
        }
        oss.push(now() - a);
      }
      const o = oss.length ? q(oss, 0.5) : NaN;
      const m = q(ours, 0.5);
      const label = n >= 100_000 ? "(crl)" : "crl";
      if (err) note(`openssl ca -gencrl at ${n} failed: ${err}`);
      fig(label, `CRL with ${n} revoked: ours vs openssl ca -gencrl`, `${ms(m, 1)} vs ${Number.isNaN(o) ? "n/a" : ms(o, 0)} (${Number.isNaN(o) ? "?" : (m / o).toFixed(3)}x)`, n >= 100_000 ? "<= 0.2x openssl" : undefined, n >= 100_000 && !Number.isNaN(o) ? m <= 0.2 * o : undefined);
    }
    tok.close();
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

export const section: Section = { name: "crl", title: "CRL generation at 1,000 and 100,000 revoked entries vs `openssl ca -gencrl`", run: secCrl };
