// MyProxy's built-in CA for the benchmark needs a SoftHSM2 token of its own: a byte copy of the
// installation's token directory (same serial, same key, same PIN) owned by myproxy, with its
// own softhsm2.conf. The server itself is test/fixtures/myproxy.ts's startMyProxy with caLines.
import * as fs from "node:fs";
import * as path from "node:path";
import type { SoftToken } from "../../test/fixtures/softhsm.js";

/**
 * A byte copy of `token`'s SoftHSM token directory under `dir` (same serial, key and PIN),
 * owned by myproxy (dirs 0700, files 0600), with a softhsm2.conf pointing at it.
 */
export function copyTokenFor(token: SoftToken, dir: string, owner: { uid: number; gid: number }): { confPath: string; tokenDir: string } {
  const base = path.resolve(dir);
  fs.mkdirSync(base, { recursive: true, mode: 0o755 });
  fs.chmodSync(base, 0o755);
  const tokenDir = path.join(base, "tokens");
  fs.cpSync(token.tokenDir, tokenDir, { recursive: true });
  const walk = (p: string): void => {
    const st = fs.statSync(p);
    fs.chownSync(p, owner.uid, owner.gid);
    fs.chmodSync(p, st.isDirectory() ? 0o700 : 0o600);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(tokenDir);
  const confPath = path.join(base, "softhsm2.conf");
  fs.writeFileSync(confPath, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = true\nlibrary.reset_on_fork = false\n`, { mode: 0o644 });
  return { confPath, tokenDir };
}
