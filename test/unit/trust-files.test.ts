// etoken-ca trust-files: the exact files for a CA and DN_FORMAT; hashes and fingerprint as OpenSSL computes them.
import t from "tap";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { loadCaCertificate } from "../../services/common/x509/certificate.js";
import { buildTrustFiles, subjectHash, subjectHashOld, writeTrustFiles } from "../../services/operator/trust-files.js";
import { ConfigError } from "../../services/common/errors.js";
import { mustOpenssl } from "../fixtures/pki.js";
import { thrown } from "../fixtures/thrown.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etoken-trust-"));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

function makeCa(name: string, subject: string, extra: string[] = []): string {
  const file = path.join(dir, `${name}.pem`);
  mustOpenssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(dir, `${name}.key`), "-out", file, "-days", "2", "-subj", subject, ...extra]);
  return file;
}
const load = (file: string) => loadCaCertificate(fs.readFileSync(file), file);
const ossl = (file: string, ...args: string[]): string => mustOpenssl(["x509", "-noout", ...args, "-in", file]).trim();

t.test("subject hashes equal openssl's -subject_hash and -subject_hash_old", async (t) => {
  const subjects = [
    "/DC=org/DC=example/CN=etoken-ca Test CA",
    "/C=NL/O=Some   Org  /OU=  Leading and TRAILING  /CN=MiXeD Case CA",
    "/DC=org/DC=Example Grid/O=Ünïcode Ørg/CN=CA émoji-free",
    "/C=DE/O=GermanGrid/CN=GridKa-CA/emailAddress=Grid-CA@Example.ORG",
  ];
  subjects.forEach((s, i) => {
    const f = makeCa(`h${i}`, s, ["-utf8"]);
    const ca = load(f);
    t.equal(subjectHash(ca.subjectDer), ossl(f, "-subject_hash"), `hash of ${s}`);
    t.equal(subjectHashOld(ca.subjectDer), ossl(f, "-subject_hash_old"), `old hash of ${s}`);
  });
});

t.test("the files for a CA and DN_FORMAT with %s inside a value", async (t) => {
  const f = makeCa("ca", "/DC=org/DC=example/O=Example Grid/CN=Example Online CA 1");
  const ca = load(f);
  const hash = ossl(f, "-subject_hash");
  const old = ossl(f, "-subject_hash_old");
  const fp = ossl(f, "-fingerprint", "-sha1").replace(/^[^=]+=/, "");
  const tf = buildTrustFiles(ca, "/DC=org/DC=example.org/O=Ex (test)/CN=user %s", ["http://ca.example.org/crl.der", "https://b.example.org/c.der"], { alias: "Example-Online", email: "ca@example.org" });
  t.equal(tf.hash, hash);
  t.equal(tf.oldHash, old);
  const sp = tf.files.get(`${hash}.signing_policy`);
  t.equal(
    sp,
    "# Globus signing policy for /DC=org/DC=example/O=Example Grid/CN=Example Online CA 1\n" +
      "# written by etoken-ca trust-files from CA_CERT and DN_FORMAT\n" +
      "access_id_CA      X509         '/DC=org/DC=example/O=Example Grid/CN=Example Online CA 1'\n" +
      "pos_rights        globus        CA:sign\n" +
      "cond_subjects     globus       '\"/DC=org/DC=example.org/O=Ex (test)/CN=user *\"'\n",
  );
  t.equal(
    tf.files.get(`${hash}.namespaces`),
    "##############################################################################\n" +
      "#NAMESPACES-VERSION: 1.0\n" +
      "#\n" +
      `# @(#)${hash}.namespaces\n` +
      "# CA alias    : Example-Online\n" +
      "#    subord_of: \n" +
      "#    subjectDN: /DC=org/DC=example/O=Example Grid/CN=Example Online CA 1\n" +
      `#    hash     : ${hash}\n` +
      "#\n" +
      'TO Issuer "/DC=org/DC=example/O=Example Grid/CN=Example Online CA 1" \\\n' +
      '  PERMIT Subject "/DC=org/DC=example\\.org/O=Ex \\(test\\)/CN=user .*"\n',
  );
  t.equal(tf.files.get(`${hash}.crl_url`), "http://ca.example.org/crl.der\nhttps://b.example.org/c.der\n");
  t.equal(
    tf.files.get(`${hash}.info`),
    "# IGTF-style CA information, written by etoken-ca trust-files.\n" +
      "# Replace every @NAME@ placeholder (alias: a short name without spaces; status: e.g.\n" +
      "# accredited:iota, accredited:mics, unaccredited or experimental) before publishing.\n" +
      "alias = Example-Online\n" +
      "url = @URL@\n" +
      "crl_url = http://ca.example.org/crl.der\n" +
      "email = ca@example.org\n" +
      "status = @STATUS@\n" +
      `sha1fp.0 = ${fp}\n` +
      'subjectdn = "/DC=org/DC=example/O=Example Grid/CN=Example Online CA 1"\n',
  );
  t.same(tf.unfilled, ["url", "status"], "the fields left to the operator are named");
  t.equal(tf.files.get(`${hash}.0`), fs.readFileSync(f, "utf8"), "<hash>.0 is the CA certificate (PEM)");

  const out = path.join(dir, "out");
  writeTrustFiles(out, tf);
  t.same(fs.readdirSync(out).sort(), [`${hash}.0`, `${hash}.crl_url`, `${hash}.info`, `${hash}.namespaces`, `${hash}.signing_policy`, `${old}.0`, `${old}.namespaces`, `${old}.signing_policy`].sort());
  t.equal(fs.readlinkSync(path.join(out, `${old}.0`)), `${hash}.0`, "the old-hash name links to the new one");
  t.equal(fs.statSync(path.join(out, `${hash}.signing_policy`)).mode & 0o777, 0o644);
  // OpenSSL finds the CA through the directory by hash
  const v = mustOpenssl(["verify", "-CApath", out, f]);
  t.match(v, /OK/);
});

t.test("DN_FORMAT with %s where RDNs stand: the namespace is the RDNs before it, then '/'", async (t) => {
  const ca = load(makeCa("rdns", "/DC=org/DC=example/CN=RDN mode CA"));
  const tf = buildTrustFiles(ca, "/DC=org/DC=example%s", ["http://ca.example.org/crl.der"], {});
  t.match(tf.files.get(`${tf.hash}.signing_policy`)!, /^cond_subjects     globus       '"\/DC=org\/DC=example\/\*"'$/m);
  t.match(tf.files.get(`${tf.hash}.namespaces`)!, /^  PERMIT Subject "\/DC=org\/DC=example\/\.\*"$/m);
});

t.test("no CRL_URLS: no .crl_url file and crl_url is a placeholder", async (t) => {
  const ca = load(makeCa("nocrl", "/DC=org/DC=example/CN=No CRL CA"));
  const tf = buildTrustFiles(ca, "/DC=org/DC=example/CN=%s", [], {});
  t.notOk([...tf.files.keys()].some((n) => n.endsWith(".crl_url")));
  t.same(tf.unfilled, ["alias", "url", "crl_url", "email", "status"]);
  t.match(tf.files.get(`${tf.hash}.signing_policy`)!, /cond_subjects     globus       '"\/DC=org\/DC=example\/CN=\*"'\n/);
});

t.test("what the formats cannot express is refused with a message naming it", async (t) => {
  const ca = load(makeCa("plain", "/DC=org/DC=example/CN=Plain CA"));
  for (const [fmt, shown] of [
    ["/DC=org/O=Bob's Org/CN=%s", `"'"`],
    ['/DC=org/O=The "Grid"/CN=%s', `"\\""`],
    ["/DC=org/O=A*B/CN=%s", `"*"`],
    ["/DC=org/O=A?B/CN=%s", `"?"`],
    ["/DC=org/O=A\\/B/CN=%s", `"\\\\"`],
    ["/DC=org/O=Zürich/CN=%s", `"\\\\"`],
  ] as const) {
    const err = thrown(ConfigError, () => buildTrustFiles(ca, fmt, [], {}));
    t.match(err.message, `contains ${shown}`, `${fmt}: names the character`);
    t.match(err.message, /cannot express/);
  }
  const quoted = load(makeCa("quoted", "/DC=org/O=O'Brien Ltd/CN=Quote CA"));
  const err = thrown(ConfigError, () => buildTrustFiles(quoted, "/DC=org/CN=%s", [], {}));
  t.match(err.message, /the CA certificate's subject .*contains "'"/);
});

t.test("grid-proxy-init -verify accepts a subject in DN_FORMAT's namespace and refuses one outside it", async (t) => {
  const caFile = makeCa("globus", "/DC=org/DC=example/O=Example Grid/CN=Globus Check CA", ["-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  const out = path.join(dir, "globus-trust");
  writeTrustFiles(out, buildTrustFiles(load(caFile), "/DC=org/DC=example.org/O=Ex/CN=%s", [], {}));
  const ext = path.join(dir, "user.ext");
  fs.writeFileSync(ext, "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\n");
  const proxy = (name: string, subject: string) => {
    const key = path.join(dir, `${name}.key`);
    const cert = path.join(dir, `${name}.pem`);
    mustOpenssl(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", path.join(dir, `${name}.csr`), "-subj", subject]);
    mustOpenssl(["x509", "-req", "-in", path.join(dir, `${name}.csr`), "-CA", caFile, "-CAkey", path.join(dir, "globus.key"), "-set_serial", "0x1234", "-days", "1", "-out", cert, "-extfile", ext]);
    fs.chmodSync(key, 0o600);
    return spawnSync("grid-proxy-init", ["-cert", cert, "-key", key, "-verify", "-hours", "1", "-out", path.join(dir, `${name}.proxy`)], {
      env: { PATH: "/usr/bin:/bin", X509_CERT_DIR: out }, encoding: "utf8",
    });
  };
  const inside = proxy("inside", "/DC=org/DC=example.org/O=Ex/CN=alice");
  t.equal(inside.status, 0, `inside the namespace: ${inside.stderr.trim()}`);
  t.match(inside.stdout, /Proxy Verify OK/);
  const outside = proxy("outside", "/DC=org/DC=example.org/O=Other/CN=mallory");
  t.not(outside.status, 0, "outside the namespace: refused by the signing_policy");
});

t.test("trust files are written as new regular files: a symbolic link waiting at a temporary name is not followed", async (t) => {
  const ca = load(makeCa("planted", "/DC=org/DC=example/CN=Planted Link CA"));
  const tf = buildTrustFiles(ca, "/DC=org/DC=example/CN=%s", ["http://ca.example.org/crl.der"], {});
  const out = path.join(dir, "planted-out");
  const victim = path.join(dir, "victim");
  fs.mkdirSync(out);
  fs.writeFileSync(victim, "keep me\n");
  // the temporary names the writer used before: `.<name>.<pid>.tmp`
  for (const name of tf.files.keys()) fs.symlinkSync(victim, path.join(out, `.${name}.${process.pid}.tmp`));
  writeTrustFiles(out, tf);
  t.equal(fs.readFileSync(victim, "utf8"), "keep me\n", "the link's target is untouched");
  for (const [name, text] of tf.files) {
    const st = fs.lstatSync(path.join(out, name));
    t.ok(st.isFile(), `${name} is a regular file`);
    t.equal(st.mode & 0o777, 0o644, `${name} is 0644`);
    t.equal(fs.readFileSync(path.join(out, name), "utf8"), text, `${name} has its content`);
  }
});
