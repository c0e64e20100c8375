// etoken-ca-client is built into one bundle with V8's code cache and a loader
// (bin/etoken-ca-client.bundle.mjs): it runs with no other file of dist/ beside it, V8 accepts
// the cache, and the bundle behaves as Node's own require() does (order of evaluation, cycles,
// module.exports, built-ins); a require() it cannot follow stops the build.
import t from "tap";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { BIN, ROOT } from "../fixtures/server.js";

const BUNDLER = path.join(ROOT, "bin/etoken-ca-client.bundle.mjs");

function node(args: string[], input = "") {
  // env -i: no NODE_OPTIONS from tap; `ulimit -c 0` as the wrappers do (else the client loads the posix addon)
  const r = spawnSync("/usr/bin/env", ["-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", 'ulimit -c 0; exec "$0" "$@"', process.execPath, ...args], { encoding: "utf8", input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test("the built client is its loader, one bundle and its code cache: alone in a directory they run as from dist/", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-client-bundle-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const alone = path.join(dir, "etoken-ca-client.js");
  for (const name of ["etoken-ca-client.js", "etoken-ca-client.bundle.js", "etoken-ca-client.bundle.cache"]) {
    fs.copyFileSync(path.join(path.dirname(BIN.client), name), path.join(dir, name));
  }
  const version = node([alone, "--version"]);
  t.equal(version.code, 0, version.stderr);
  t.equal(version.stderr, "", "no warning: V8 takes the code cache");
  t.match(version.stdout, /^etoken-ca-client \d+\.\d+\.\d+\n$/);
  const missing = node([alone, "--config", path.join(dir, "no-such.conf")]);
  t.equal(missing.code, 1);
  t.equal(missing.stderr, `etoken-ca-client: ${path.join(dir, "no-such.conf")}: cannot read configuration: no such file\n`);
  // a configuration that parses (the loader, schema and DN code ran), then bad stdin (the spool protocol ran)
  const conf = path.join(dir, "etoken-ca.conf");
  fs.writeFileSync(conf, `SPOOL_DIR=${dir}\nDN_FORMAT="/O=test/CN=%s"\nCA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\nPKCS11_MODULE=/nonexistent.so\nCA_CERT=/nonexistent.pem\n`);
  const bad = node([alone, "--config", conf], "username=alice\n");
  t.equal(bad.code, 1);
  t.match(bad.stderr, /^etoken-ca-client: [^\n]+\n$/, "one line");
  t.equal(bad.stderr, node([BIN.client, "--config", conf], "username=alice\n").stderr, "the same message as the built client's");
  // the client checks the values of the keys it reads, naming file and line; the server checks the rest at start
  fs.appendFileSync(conf, "SMTP_URL=http://not-smtp\n");
  t.equal(node([alone, "--config", conf], "username=alice\n").stderr, bad.stderr, "a value only the server reads does not stop the client");
  fs.appendFileSync(conf, "CLIENT_TIMEOUT=soon\n");
  const timeout = node([alone, "--config", conf], "username=alice\n");
  t.equal(timeout.code, 1);
  t.equal(timeout.stderr, `etoken-ca-client: ${conf}:8: CLIENT_TIMEOUT="soon": expected a duration: a whole number of seconds, or with a unit ms, s, m, h or d (e.g. 43200, 12h, 500ms)\n`);
  fs.appendFileSync(conf, "CLIENT_TIMEOUT=5\n");
});

t.test("V8 accepts the built code cache (else every logon compiles the client from source)", async (t) => {
  const dir = path.dirname(BIN.client);
  const script = `const vm = require("node:vm"), fs = require("node:fs");
const s = new vm.Script(fs.readFileSync(${JSON.stringify(path.join(dir, "etoken-ca-client.bundle.js"))}, "utf8"), { cachedData: fs.readFileSync(${JSON.stringify(path.join(dir, "etoken-ca-client.bundle.cache"))}) });
process.stdout.write(String(s.cachedDataRejected));`;
  const r = node(["-e", script]);
  t.equal(r.stderr, "");
  t.equal(r.stdout, "false", "cachedDataRejected");
});

t.test("a code cache this node rejects (node upgraded after the build) or a missing one: the client runs from source and says to rebuild", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-client-cache-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const name of ["etoken-ca-client.js", "etoken-ca-client.bundle.js", "etoken-ca-client.bundle.cache"]) {
    fs.copyFileSync(path.join(path.dirname(BIN.client), name), path.join(dir, name));
  }
  const alone = path.join(dir, "etoken-ca-client.js");
  const cache = path.join(dir, "etoken-ca-client.bundle.cache");
  const good = node([alone, "--version"]);
  // V8's code cache header: magic number, then the hash of the V8 version that made it
  const data = fs.readFileSync(cache);
  data[4]! ^= 0xff;
  fs.writeFileSync(cache, data);
  const rejected = node([alone, "--version"]);
  t.equal(rejected.code, 0);
  t.equal(rejected.stdout, good.stdout, "the client itself is unchanged");
  t.equal(
    rejected.stderr,
    `etoken-ca-client: warning: V8 rejects code cache ${cache} (made by another Node.js than this ${process.version}, or with other V8 flags); compiling from source costs every logon ~6 ms of CPU: rebuild with this node (npm run build), then reinstall (deploy/install)\n`,
  );
  fs.rmSync(cache);
  const missing = node([alone, "--version"]);
  t.equal(missing.code, 0);
  t.equal(missing.stdout, good.stdout);
  t.equal(missing.stderr, `etoken-ca-client: warning: no code cache ${cache}; compiling from source costs every logon ~6 ms of CPU: rebuild with this node (npm run build), then reinstall (deploy/install)\n`);
});

t.test("the bundle keeps require() semantics: order, cycles, module.exports, built-ins", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bundle-semantics-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, "bin"));
  fs.mkdirSync(path.join(dir, "lib"));
  const files: Record<string, string> = {
    "bin/main.js": `#!/usr/bin/env node
"use strict";
const log = require("../lib/log.js");
log.push("main");
const a = require("../lib/a.js");
const b = require("../lib/b.js");
const path = require("node:path");
log.push("a.seenB=" + a.seenB + " b.seenA=" + b.seenA + " same=" + (require("../lib/a.js") === a));
log.push("fn=" + require("./fn.js")(2) + " path=" + typeof path.join);
log.push("strict=" + require("../lib/strict.js").strict);
process.stdout.write(log.join("|") + "\\n");
`,
    "bin/fn.js": `"use strict";\nmodule.exports = (x) => x * 21;\n`,
    "lib/log.js": `"use strict";\nmodule.exports = [];\n`,
    "lib/a.js": `"use strict";\nrequire("./log.js").push("a");\nexports.early = 1;\nconst b = require("./b.js");\nexports.seenB = b.late;\n`,
    "lib/b.js": `"use strict";\nrequire("./log.js").push("b");\nconst a = require("./a.js");\nexports.seenA = a.early;\nexports.late = 2;\n`,
    "lib/strict.js": `"use strict";\nexports.strict = (function () { return this === undefined; })();\n`,
  };
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  const entry = path.join(dir, "bin/main.js");
  const unbundled = node([entry]);
  t.equal(unbundled.code, 0, unbundled.stderr);
  t.equal(unbundled.stdout, "main|a|b|a.seenB=2 b.seenA=1 same=true|fn=42 path=function|strict=true\n", "what Node itself does");
  const built = node([BUNDLER, entry]);
  t.equal(built.code, 0, built.stderr);
  fs.rmSync(path.join(dir, "lib"), { recursive: true });
  fs.rmSync(path.join(dir, "bin/fn.js"));
  const bundled = node([entry]);
  t.equal(bundled.code, 0, bundled.stderr);
  t.equal(bundled.stdout, unbundled.stdout, "the bundle alone prints the same");
  const again = node([BUNDLER, entry]);
  t.equal(again.code, 0, "a second run leaves the bundle as it is");
  t.equal(node([entry]).stdout, unbundled.stdout);
});

t.test("a require() the build step cannot follow stops the build", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "etca-bundle-dynamic-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const entry = path.join(dir, "main.js");
  fs.writeFileSync(entry, `"use strict";\nconst name = "./x.js";\nrequire(name);\n`);
  const r = node([BUNDLER, entry]);
  t.not(r.code, 0);
  t.match(r.stderr, `${entry}: a require() this build step cannot follow`);
  t.equal(fs.readFileSync(entry, "utf8"), `"use strict";\nconst name = "./x.js";\nrequire(name);\n`, "the entry is left as it was");
});
