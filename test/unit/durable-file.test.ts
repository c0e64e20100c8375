// The one atomic-and-durable file writer (index.txt rewrites, crlnumber, CRLs, revoke queue entries).
import t from "tap";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { replaceSymlink, writeFileAtomic } from "../../services/common/durable-file.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "etca-durable-"));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

t.test("the mode is exact whatever the umask, the owner is set, the old content is replaced whole", async (t) => {
  const file = path.join(work, "crlnumber");
  fs.writeFileSync(file, "01\n");
  const old = process.umask(0o077);
  try {
    writeFileAtomic(file, "02\n", { mode: 0o644, owner: { uid: 0, gid: 1 } });
  } finally {
    process.umask(old);
  }
  const st = fs.statSync(file);
  t.equal(st.mode & 0o7777, 0o644, "0644 under umask 077");
  t.equal(st.gid, 1, "group as asked");
  t.equal(fs.readFileSync(file, "utf8"), "02\n");
  t.same(fs.readdirSync(work), ["crlnumber"], "no temporary file left");
});

t.test("a failed rename leaves the target as it was and no temporary file", async (t) => {
  const dir = path.join(work, "fail");
  fs.mkdirSync(path.join(dir, "index.txt"), { recursive: true }); // a directory where the file should go
  t.throws(() => writeFileAtomic(path.join(dir, "index.txt"), "V\t...\n", { mode: 0o600 }), { code: "EISDIR" });
  t.same(fs.readdirSync(dir), ["index.txt"], "only the directory that was there");
  t.ok(fs.statSync(path.join(dir, "index.txt")).isDirectory());
});

t.test("large content is written in full", async (t) => {
  const file = path.join(work, "index.txt");
  const data = Buffer.alloc(8 * 1024 * 1024 + 3, 0x41);
  writeFileAtomic(file, data, { mode: 0o600, syncDirectory: false });
  t.ok(fs.readFileSync(file).equals(data));
});

t.test("a symbolic link is replaced in one rename: no moment without it, no temporary name left", async (t) => {
  const dir = path.join(work, "links");
  fs.mkdirSync(dir);
  replaceSymlink(path.join(dir, "crl.pem"), "crl-000001.pem");
  t.equal(fs.readlinkSync(path.join(dir, "crl.pem")), "crl-000001.pem");
  replaceSymlink(path.join(dir, "crl.pem"), "crl-000002.pem", { syncDirectory: false });
  t.equal(fs.readlinkSync(path.join(dir, "crl.pem")), "crl-000002.pem", "the link now points at the new target");
  t.same(fs.readdirSync(dir), ["crl.pem"], "no temporary link left");
  fs.mkdirSync(path.join(dir, "busy"));
  fs.writeFileSync(path.join(dir, "busy", "x"), "");
  t.throws(() => replaceSymlink(path.join(dir, "busy"), "crl-000003.pem"), "a non-empty directory at the name is not replaced");
  t.same(fs.readdirSync(dir).sort(), ["busy", "crl.pem"], "and the temporary link is removed");
});
