// Build step (npm run build, after tsc -p tsconfig.client.json): MyProxy starts one
// etoken-ca-client per logon, and most of its CPU is start-up. This step
//  1. joins the client's CommonJS modules into one function, dist/client/bin/etoken-ca-client.bundle.js
//     (Node resolving, reading and wrapping a dozen files cost ~8 ms per start, bench (dcpu));
//  2. writes V8's code cache of it, compiled eagerly: .bundle.cache (compiling the client's
//     functions at every start cost another ~6 ms). V8 checks the cache against the source, its
//     own version and flags, and ignores one that does not match: the client then compiles the
//     source as usual;
//  3. replaces the entry dist/client/bin/etoken-ca-client.js (the path the wrappers run) with a
//     loader of the two.
// No bundler from npm: the common one downloads a native binary at install time, and tsc's
// CommonJS output needs only this much. Each module keeps Node's semantics: its own function
// scope and strictness, one `module` object made on first require and cached before it runs
// (so cycles, such as dn.js <-> spool-protocol.js, see the same partial exports as under Node).
// Only string-literal relative requires are bundled; node: built-ins and the `posix` fallback
// stay require() calls of the loader, which sits where the entry was, so they resolve as before.
import * as fs from "node:fs";
import * as path from "node:path";
import * as v8 from "node:v8";
import * as vm from "node:vm";

const MARKER = "// etoken-ca-client loader, written by bin/etoken-ca-client.bundle.mjs\n";
const RELATIVE_REQUIRE = /\brequire\("(\.\.?\/[^"]+)"\)/g;

/** The modules reachable from `entry`, as the source of one function expression (require) => void. */
function bundle(entry) {
  const root = path.dirname(entry);
  const sources = new Map(); // id (path relative to the entry's directory) -> module source
  const visit = (file) => {
    const id = path.relative(root, file);
    if (sources.has(id)) return id;
    sources.set(id, ""); // placeholder: a cycle back here stops
    const text = fs.readFileSync(file, "utf8").replace(/^#!.*\n/, "");
    const body = text.replace(RELATIVE_REQUIRE, (_m, rel) => `__load(${JSON.stringify(visit(path.resolve(path.dirname(file), rel)))})`);
    if (/\brequire\((?!"node:|"posix")/.test(body)) throw new Error(`${file}: a require() this build step cannot follow (only string-literal relative paths, node: built-ins and posix)`);
    sources.set(id, body);
    return id;
  };
  const main = visit(entry);
  let out = `(function (require, __dirname) {\n"use strict";\nconst __modules = {\n`;
  for (const [id, body] of sources) {
    out += `${JSON.stringify(id)}: function (exports, require, module, __filename, __dirname, __load) {\n${body}\n},\n`;
  }
  out += `};
const __cache = Object.create(null);
function __load(id) {
  const cached = __cache[id];
  if (cached !== undefined) return cached.exports;
  const file = __dirname + "/" + id;
  const module = { exports: {}, id: file, filename: file, loaded: false };
  __cache[id] = module;
  __modules[id].call(module.exports, module.exports, require, module, file, file.slice(0, file.lastIndexOf("/")), __load);
  module.loaded = true;
  return module.exports;
}
__load(${JSON.stringify(main)});
})
`;
  return { source: out, count: sources.size };
}

/** V8's code cache of `source` with every function compiled (the flag is off again before the cache is written). */
function eagerCodeCache(source, filename) {
  v8.setFlagsFromString("--no-lazy");
  let script;
  try {
    script = new vm.Script(source, { filename });
  } finally {
    v8.setFlagsFromString("--lazy");
  }
  const data = script.createCachedData();
  if (new vm.Script(source, { filename, cachedData: data }).cachedDataRejected) throw new Error(`${filename}: V8 rejects the code cache just made`);
  return data;
}

const LOADER = `#!/usr/bin/env node
${MARKER}// The client is etoken-ca-client.bundle.js, compiled with V8's code cache .bundle.cache when
// V8 accepts it (same source, V8 version and flags), else from source as usual, with a warning:
// a cache that does not fit (node upgraded after the build) costs every logon ~6 ms of CPU.
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const file = __dirname + "/etoken-ca-client.bundle.js";
const cacheFile = __dirname + "/etoken-ca-client.bundle.cache";
const source = fs.readFileSync(file, "utf8");
let cachedData;
try {
  cachedData = fs.readFileSync(cacheFile);
} catch {
  // none: compile from source
}
const script = new vm.Script(source, { filename: file, cachedData });
if (script.cachedDataRejected !== false) {
  fs.writeSync(2, \`etoken-ca-client: warning: \${cachedData ? "V8 rejects" : "no"} code cache \${cacheFile}\${cachedData ? " (made by another Node.js than this " + process.version + ", or with other V8 flags)" : ""}; compiling from source costs every logon ~6 ms of CPU: rebuild with this node (npm run build), then reinstall (deploy/install)\\n\`);
}
script.runInThisContext()(require, __dirname);
`;

function writeAtomically(file, data) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, data, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

const entry = path.resolve(process.argv[2] ?? "dist/client/bin/etoken-ca-client.js");
const dir = path.dirname(entry);
const bundleFile = path.join(dir, "etoken-ca-client.bundle.js");
const show = (f) => path.relative(process.cwd(), f);
if (fs.readFileSync(entry, "utf8").includes(MARKER)) {
  console.log(`${show(entry)}: the loader already`);
} else {
  const { source, count } = bundle(entry);
  const cache = eagerCodeCache(source, bundleFile);
  writeAtomically(bundleFile, source);
  writeAtomically(path.join(dir, "etoken-ca-client.bundle.cache"), cache);
  writeAtomically(entry, LOADER);
  console.log(`${show(bundleFile)}: ${count} modules in one function, ${Buffer.byteLength(source)} bytes; V8 code cache ${cache.length} bytes; ${show(entry)} loads them`);
}
