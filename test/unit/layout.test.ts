// Code laid out by what it owns: a service folder holds only that process's logic, code more than
// one process uses lives in services/common/ (x509/, ca-dir/, pkcs11/, ...), and bin/ imports
// common code only, except the one process a command is (etoken-ca-server is the kernel,
// etoken-ca runs services/operator). Scans the import specifiers of every .ts source.
import t from "tap";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(fileURLToPath(new URL("../../..", import.meta.url)));

/** The process a command in bin/ is: it may import that folder besides common code. */
const BIN_PROCESS: Readonly<Record<string, string>> = {
  "bin/etoken-ca-server.ts": "services/kernel",
  "bin/etoken-ca.ts": "services/operator",
};

const IMPORT = /(?:\bfrom|\bimport)\s*\(?\s*["'](\.\.?\/[^"']+)["']/g;

/** The owner of a source file: "common" (services/common, proto), "services/<name>" or "bin". */
export function ownerOf(rel: string): string {
  const parts = rel.split("/");
  if (parts[0] === "proto") return "common";
  if (parts[0] === "services") return parts[1] === "common" ? "common" : `services/${parts[1]}`;
  return parts[0]!;
}

/** Why `from` may not import `to` (paths relative to the root), or undefined when it may. */
export function layoutProblem(from: string, to: string): string | undefined {
  const a = ownerOf(from);
  const b = ownerOf(to);
  if (b === "common" || a === b) return undefined;
  if (a === "common") return `${from} -> ${to}: common code imports ${b}`;
  if (a === "bin") {
    if (BIN_PROCESS[from] === b) return undefined;
    return `${from} -> ${to}: bin/ imports only services/common/**`;
  }
  if (a.startsWith("services/")) return `${from} -> ${to}: ${a} imports ${b} (shared code belongs in services/common/)`;
  return undefined;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) {
      if (e.name !== "generated") out.push(...sources(rel));
    } else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(rel);
  }
  return out;
}

function importsOf(rel: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, rel), "utf8");
  return [...text.matchAll(IMPORT)].map((m) => path.posix.normalize(path.posix.join(path.posix.dirname(rel), m[1]!)).replace(/\.js$/, ".ts"));
}

t.test("the rule itself", async (t) => {
  t.equal(layoutProblem("services/signer/main.ts", "services/signer/token.ts"), undefined, "a service's own code");
  t.equal(layoutProblem("services/spool/main.ts", "services/common/x509/dn.ts"), undefined, "common code");
  t.equal(layoutProblem("services/kernel/kernel.ts", "proto/wire.ts"), undefined, "the wire contract is common");
  t.match(layoutProblem("services/kernel/main.ts", "services/signer/dn.ts"), /kernel\/main.ts -> services\/signer/, "one service into another");
  t.match(layoutProblem("services/common/config.ts", "services/signer/dn.ts"), /common code imports services\/signer/, "common into a service");
  t.match(layoutProblem("bin/revoke-cert.ts", "services/signer/index-reader.ts"), /bin\/ imports only/, "bin into a service");
  t.equal(layoutProblem("bin/etoken-ca-server.ts", "services/kernel/main.ts"), undefined, "the server command is the kernel");
  t.match(layoutProblem("bin/etoken-ca-server.ts", "services/signer/token.ts"), /bin\/ imports only/);
});

t.test("no import crosses from one process's code into another's", async (t) => {
  const files = [...sources("services"), ...sources("bin"), ...sources("proto")];
  t.ok(files.length > 50, `scanned ${files.length} source files`);
  const found: string[] = [];
  for (const from of files) {
    for (const to of importsOf(from)) {
      const problem = layoutProblem(from, to);
      if (problem !== undefined) found.push(problem);
    }
  }
  t.same(found, [], "imports that break the layout");
});
