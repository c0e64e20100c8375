// The signer's debug lines on the per-certificate path (C_Sign started/ended for a certificate
// and a CRL, "frame taken" for every frame): with debug off they must cost nothing, not even the
// field objects built for them (services/common/log.ts' enabled()). Observed through the real
// logger, whose debug() records whether it was called at all, on the real NativeBackend signing
// with a SoftHSM2 token. Before the fix every certificate called debug() twice at any level.
import t from "tap";
import { generateKeyPairSync } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseConfig, dnTemplateOf } from "../../services/common/config.js";
import { configFor } from "../../services/common/service-table.js";
import { createLogger, setLogLevel, setLogSink, type Logger } from "../../services/common/log.js";
import { GENESIS } from "../../services/common/audit/trail.js";
import { buildSubject } from "../../services/common/x509/dn.js";
import { loadCaCertificate } from "../../services/common/x509/certificate.js";
import { CaDatabase } from "../../services/signer/cadb.js";
import { CrlPublisher } from "../../services/signer/crl-publisher.js";
import { NativeBackend } from "../../services/signer/native-backend.js";
import { logFrameTaken } from "../../services/signer/frame-log.js";
import type { Frame } from "../../proto/wire.js";
import { createSoftToken } from "../fixtures/softhsm.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "etca-signer-debug-"));
fs.chmodSync(base, 0o711);
t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));

const lines: string[] = [];
setLogSink({ write: (l: string) => lines.push(l) });
t.teardown(() => {
  setLogSink(process.stderr);
  setLogLevel("info");
});
const real = createLogger("signer");
const debugCalls: string[] = [];
const log: Logger = { ...real, debug: (m, f) => (debugCalls.push(m), real.debug(m, f)) };

t.test("C_Sign lines: not even called when debug is off; written when it is on", async (t) => {
  const st = createSoftToken({ dir: path.join(base, "token"), label: "etca debug" });
  const config = configFor(
    "signer",
    parseConfig(
      `DN_FORMAT=/DC=org/DC=example/CN=%s\nPKCS11_MODULE=${st.modulePath}\nCA_CERT=${st.caCertPath}\nCA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\nCA_DIR=${path.join(base, "ca")}\nCRL_DIR=${path.join(base, "crl")}\n`,
      "test",
    ),
  );
  fs.mkdirSync(config.CRL_DIR, { mode: 0o755 });
  for (const [k, v] of Object.entries(st.env)) process.env[k] = v;
  const ca = loadCaCertificate(fs.readFileSync(st.caCertPath), st.caCertPath);
  const db = CaDatabase.open(config.CA_DIR, { create: true });
  const backend = new NativeBackend({ config, log, ca, db, crls: new CrlPublisher(config.CRL_DIR, ca) });
  const login = await backend.login(Buffer.from(st.userPin), st.serial);
  t.ok(login.ok, "logged in");
  t.teardown(() => backend.dropToken());
  const publicKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" });
  const run = async (name: string): Promise<void> => {
    const out = await backend.issue({ subject: buildSubject(dnTemplateOf(config), name), publicKey, csr: Buffer.alloc(0), emails: [], lifetimeSeconds: 3600 });
    t.ok(out.certificateDer.length > 0, `${name}: issued`);
    await backend.makeCrl(3_600_000, () => ({ seq: 0, hash: GENESIS }));
  };
  setLogLevel("info");
  lines.length = 0;
  await run("debug off");
  t.same(debugCalls, [], "debug off: no debug call, so no field object built");
  t.same(lines, [], "and nothing written");
  setLogLevel("debug");
  debugCalls.length = 0;
  await run("debug on");
  t.same(debugCalls, ["C_Sign started: certificate", "C_Sign ended: certificate", "C_Sign started: CRL", "C_Sign ended: CRL"], "debug on: the calls are made");
  const written = lines.map((l) => JSON.parse(l) as { msg: string; signMs?: number });
  t.ok(written.some((w) => w.msg === "C_Sign ended: certificate" && typeof w.signMs === "number"), "the certificate's line with its signMs");
  t.ok(written.some((w) => w.msg === "C_Sign ended: CRL" && typeof w.signMs === "number"), "the CRL's line with its signMs");
});

t.test("frame taken: not even called when debug is off; written when it is on", async (t) => {
  debugCalls.length = 0;
  lines.length = 0;
  const frame = { type: "issueRequest", id: 7, message: { requestId: "r-7" } } as unknown as Frame;
  setLogLevel("info");
  logFrameTaken(log, frame);
  t.same(debugCalls, [], "debug off: no debug call");
  t.same(lines, [], "and nothing written");
  setLogLevel("debug");
  logFrameTaken(log, frame);
  logFrameTaken(log, { type: "makeCrl", id: 8, message: {} } as unknown as Frame);
  t.match(lines.map((l) => JSON.parse(l)), [{ msg: "frame taken", type: "issueRequest", id: 7, request: "r-7" }, { msg: "frame taken", type: "makeCrl", id: 8 }], "debug on: type, id and the request id only");
});
