// The node flags and environment of every etoken-ca process are what docs/design.md says, and
// the kernel's shell wrapper passes the kernel's flags (services/common/service-table.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { KERNEL_NODE_FLAGS, MALLOC_ENV, SERVICE_NAMES, SERVICES } from "../../services/common/service-table.js";

const ROOT = path.resolve(fileURLToPath(new URL("../../..", import.meta.url)));

function flagsTable(): string {
  const code = (xs: readonly string[]): string => (xs.length ? `\`${xs.join(" ")}\`` : "");
  const env = code(Object.entries(MALLOC_ENV).map(([k, v]) => `${k}=${v}`));
  const rows = [
    "| process | node flags | with `SIGNER_BACKEND=openssl` | environment besides its own |",
    "|---|---|---|---|",
    `| kernel | ${code(KERNEL_NODE_FLAGS)} | the same | |`,
    ...SERVICE_NAMES.map((n) => {
      const f = SERVICES[n].nodeFlags;
      const openssl = f.openssl.join(" ") === f.pkcs11.join(" ") ? "the same" : code(f.openssl);
      return `| ${n} | ${code(f.pkcs11)} | ${openssl} | ${env}${SERVICES[n].pkcs11Env ? ", `PKCS11_ENV`" : ""} |`;
    }),
  ];
  return rows.join("\n");
}

t.test("docs/design.md lists every process's node flags and environment as the service table has them", async (t) => {
  // the table may be indented (inside a list item)
  const design = fs.readFileSync(path.join(ROOT, "docs/design.md"), "utf8").split("\n").map((l) => l.trim()).join("\n");
  const table = flagsTable();
  t.ok(design.includes(table), `docs/design.md's flags table differs from the service table; the table to paste:\n${table}\n`);
});

t.test("the spool, signer and monitor run the optimizing compiler, the notifier does not; with the openssl backend only the signer does", async (t) => {
  const lite = (n: (typeof SERVICE_NAMES)[number], backend: "pkcs11" | "openssl"): boolean => (SERVICES[n].nodeFlags[backend] as readonly string[]).includes("--lite-mode");
  t.same(SERVICE_NAMES.filter((n) => lite(n, "pkcs11")), ["notifier"], "native backend: lite");
  t.same(SERVICE_NAMES.filter((n) => lite(n, "openssl")), ["spool", "monitor", "notifier"], "openssl backend: lite");
});

t.test("bin/etoken-ca-server starts the kernel with KERNEL_NODE_FLAGS", async (t) => {
  const exec = fs.readFileSync(path.join(ROOT, "bin/etoken-ca-server"), "utf8").split("\n").find((l) => l.startsWith("exec node "));
  t.ok(exec, "the wrapper's exec line");
  t.equal(exec, `exec node '--inspect-port=[ff02::1]:9229' ${KERNEL_NODE_FLAGS.join(" ")} "$here/../dist/bin/etoken-ca-server.js" "$@"`);
});
