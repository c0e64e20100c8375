// Build step (npm run build, after tsc -p tsconfig.client.json): joins the CommonJS modules of
// etoken-ca-client into one file, written over the entry dist/client/bin/etoken-ca-client.js.
// MyProxy starts one client per logon; Node resolving, reading and wrapping a dozen files costs
// ~10 ms of its CPU (bench (dcpu)). No bundler from npm: the common one downloads a native
// binary at install time, and tsc's CommonJS output needs only this much.
//
// Each module keeps Node's semantics: its own function scope and strictness, one `module` object
// made on first require and cached before it runs (so cycles, such as dn.js <-> spool-protocol.js,
// see the same partial exports as under Node). Only string-literal relative requires are bundled;
// node: built-ins and packages (the `posix` fallback) stay require() calls of the bundle file,
// which sits where the entry was, so they resolve as before.
import * as fs from "node:fs";
import * as path from "node:path";

const MARKER = "// etoken-ca-client: one file, bundled by bin/etoken-ca-client.bundle.mjs\n";
const RELATIVE_REQUIRE = /\brequire\("(\.\.?\/[^"]+)"\)/g;

function bundle(entry) {
  const root = path.dirname(entry);
  const sources = new Map(); // id (path relative to the bundle's directory) -> module source
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
  let out = `#!/usr/bin/env node\n${MARKER}"use strict";\nconst __modules = {\n`;
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
`;
  return { out, count: sources.size };
}

const entry = path.resolve(process.argv[2] ?? "dist/client/bin/etoken-ca-client.js");
const text = fs.readFileSync(entry, "utf8");
if (text.includes(MARKER)) {
  console.log(`${path.relative(process.cwd(), entry)}: already one file`);
} else {
  const { out, count } = bundle(entry);
  const tmp = `${entry}.tmp`;
  fs.writeFileSync(tmp, out, { mode: 0o644 });
  fs.renameSync(tmp, entry);
  console.log(`${path.relative(process.cwd(), entry)}: ${count} modules in one file, ${out.length} bytes`);
}
