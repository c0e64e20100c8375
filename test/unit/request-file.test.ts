// The spool formats: MyProxy's stdin, request files, result files, revoke queue entries.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import t from "tap";
import { RequestError } from "../../services/common/errors.js";
import {
  checkUsername,
  csrPublicKey,
  decodeCsrPem,
  formatErrorResult,
  formatRequestFile,
  formatRevokeEntry,
  MAX_USERNAME_BYTES,
  normalizeSerial,
  parseMyproxyInput,
  parseResultFile,
  parseRevokeEntry,
  randomName,
  REQUEST_NAME,
  SPOOL_FILE,
} from "../../services/common/spool-protocol.js";
import { checkCsr, checkDeadline, parseRequestFile } from "../../services/spool/request-file.js";
import { compileDnFormat } from "../../services/common/x509/dn.js";
import { thrown } from "../fixtures/thrown.js";

const CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAAAA\nBBBB\n-----END CERTIFICATE REQUEST-----\n";
const NOW = 1_800_000_000_000;

const errorOf = (fn: () => unknown): RequestError => thrown(RequestError, fn);

const request = (o: Partial<Parameters<typeof formatRequestFile>[0]> = {}): string =>
  formatRequestFile({ username: "jdoe", proxyLifetime: 3600, maxCertLifetime: 43200, deadline: NOW + 30_000, csrPem: CSR, ...o });

/** A real CSR (RSA 2048), PEM. */
function makeCsrPem(): string {
  return execFileSync("openssl", ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "/dev/null", "-subj", "/CN=NULL SUBJECT NAME ENTRY"], { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

const myproxy = (head: string, csr = CSR): Buffer => Buffer.from(`${head}\n\n${csr}`);

t.test("MyProxy stdin: keeps what the CA needs, drops the passphrase", async (t) => {
  const input = myproxy("username=jdoe email=j@example.org\npassphrase=secret words\nproxy_lifetime=43200\nretrievers=NULL\nmax_cert_lifetime=0");
  const p = parseMyproxyInput(input);
  t.same(p, { username: "jdoe email=j@example.org", proxyLifetime: 43200, maxCertLifetime: 0, csrPem: CSR });
  t.notMatch(JSON.stringify(p), /secret/);
  t.equal(parseMyproxyInput(myproxy("username=a\nproxy_lifetime=NULL\nmax_cert_lifetime=NULL")).proxyLifetime, 0, "NULL = unset");
  t.equal(parseMyproxyInput(Buffer.from("username=a\r\n\r\n" + CSR.replace(/\n/g, "\r\n"))).username, "a", "CRLF tolerated from MyProxy");
});

t.test("one set of rules: the client refuses at once, with the spool's message, what the spool or signer would refuse (issue 14, item 9)", async (t) => {
  const csr = makeCsrPem();
  const dn = compileDnFormat("/DC=org/DC=example/CN=%s");
  const cases: [string, string, string][] = [
    ["mismatched PEM labels", "jdoe", csr.replace("BEGIN CERTIFICATE REQUEST", "BEGIN NEW CERTIFICATE REQUEST")],
    ["NEW label on both lines", "jdoe", csr.replace(/(BEGIN|END) CERTIFICATE REQUEST/g, "$1 NEW CERTIFICATE REQUEST")],
    ["key=value line inside the PEM block", "jdoe", csr.replace("-----\n", "-----\nkey=value\n")],
    ["Proc-Type header inside the PEM block", "jdoe", csr.replace("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n")],
    ["two PEM blocks", "jdoe", csr + csr],
    ["username with a slash", "evil/CN=admin", csr],
    ["username with a bad e-mail suffix", "jdoe email=nobody", csr],
    ["username with leading space", " jdoe", csr],
  ];
  for (const [name, username, pem] of cases) {
    const client = errorOf(() => {
      const p = parseMyproxyInput(myproxy(`username=${username}\npassphrase=x`, pem));
      csrPublicKey(decodeCsrPem(p.csrPem));
      checkUsername(p.username, dn);
    });
    const spool = errorOf(() => {
      const r = parseRequestFile(Buffer.from(request({ username, csrPem: pem })));
      checkUsername(r.username, dn);
      checkCsr(r.csrPem, 2048);
    });
    t.equal(client.message, spool.message, `${name}: the client refuses with the spool's message (${spool.message})`);
    t.equal(client.code, spool.code, `${name}: and its code`);
  }
  // and what the spool accepts, the client accepts
  const ok = parseMyproxyInput(myproxy("username=jdoe email=j@example.org", csr));
  t.equal(checkUsername(ok.username, dn).name, "jdoe");
  t.equal(csrPublicKey(decodeCsrPem(ok.csrPem)).length > 200, true, "the CSR's public key is found");
});

t.test("MyProxy stdin: the passphrase is overwritten in the input before anything is decoded", async (t) => {
  const input = myproxy("username=jdoe\npassphrase=sécret wörds\nproxy_lifetime=60");
  parseMyproxyInput(input);
  const text = input.toString("utf8");
  t.notMatch(text, /sécret|wörds/, "no byte of the passphrase is left in the caller's Buffer");
  t.match(text, /^username=jdoe\npassphrase=\*{14}\nproxy_lifetime=60\n\n/, "its bytes became '*', the other lines are untouched");
  const crlf = Buffer.from("username=a\r\npassphrase=xyz\r\n\r\n" + CSR);
  t.equal(parseMyproxyInput(crlf).username, "a");
  t.match(crlf.toString("latin1"), /^username=a\r\npassphrase=\*\*\*\r\n\r\n/, "CRLF lines: the CR stays");
  const invalid = Buffer.concat([Buffer.from("username=b\npassphrase="), Buffer.from([0xff, 0xfe]), Buffer.from("\n\n" + CSR)]);
  t.equal(parseMyproxyInput(invalid).username, "b", "a passphrase that is not UTF-8 does not matter: it is never decoded");
  const inCsr = Buffer.from("username=c\n\n" + CSR.replace("BBBB", "passphrase=BBBB"));
  const before = Buffer.from(inCsr);
  try {
    parseMyproxyInput(inCsr);
  } catch {
    // whether such a CSR is accepted is not the point here
  }
  t.same(inCsr, before, "only lines before the empty line are looked at");
});

t.test("MyProxy stdin: malformed input", async (t) => {
  const cases: [Buffer, RegExp][] = [
    [Buffer.alloc(0), /empty input/],
    [Buffer.from("username=a\n"), /no empty line/],
    [myproxy("username=a\nusername=b"), /line 2: username given twice/],
    [myproxy("username=a\nbogus line"), /line 2: expected key=value/],
    [myproxy("username=a\nPROXY=1"), /line 2: expected key=value with a lower-case key, found key "PROXY"$/],
    [myproxy("username=a\nPassphrase=hunter2 is secret"), /found key "Passphrase"$/],
    [myproxy("username=a\nhunter2 is secret"), /line 2: .*found no '='$/],
    [myproxy("proxy_lifetime=1"), /no username/],
    [myproxy("username="), /empty username/],
    [myproxy("username=NULL"), /empty username/],
    [myproxy("username=a\tb"), /control character/],
    [myproxy("username=" + "é".repeat(MAX_USERNAME_BYTES / 2 + 1)), new RegExp(`longer than ${MAX_USERNAME_BYTES} bytes`)],
    [myproxy("username=a\nproxy_lifetime=-1"), /proxy_lifetime="-1"/],
    [myproxy("username=a\nproxy_lifetime=1e3"), /proxy_lifetime="1e3"/],
    [myproxy("username=a\nproxy_lifetime=007"), /proxy_lifetime="007"/],
    [myproxy("username=a\nmax_cert_lifetime=99999999999"), /max_cert_lifetime/],
    [myproxy("username=a", "garbage"), /PEM certificate request/],
    [myproxy("username=a", CSR + CSR), /PEM certificate request/],
    [myproxy("username=a", CSR.replace("BBBB", "BB*B")), /PEM certificate request/],
    [Buffer.from([0x75, 0x3d, 0xff, 0x0a, 0x0a]), /not valid UTF-8/],
    [Buffer.from("username=a\0\n\n" + CSR), /NUL byte/],
    [Buffer.from("username=a\rb\n\n" + CSR), /carriage return/],
    [Buffer.alloc(70_000, 0x61), /larger than 65536/],
  ];
  for (const [input, re] of cases) {
    const e = errorOf(() => parseMyproxyInput(input));
    t.match(e.message, re, input.subarray(0, 40).toString("latin1"));
    t.notMatch(e.message, /\n/, "one line");
    t.notMatch(e.message, /hunter2/, "no value is quoted: it may be the passphrase");
  }
});


t.test("request file: round trip", async (t) => {
  const text = request();
  t.equal(text, `version=1\nusername=jdoe\nproxy_lifetime=3600\nmax_cert_lifetime=43200\ndeadline=${NOW + 30_000}\n\n${CSR}end\n`);
  t.same(parseRequestFile(Buffer.from(text)), { username: "jdoe", proxyLifetime: 3600, maxCertLifetime: 43200, deadline: NOW + 30_000, csrPem: CSR });
});

t.test("request file: every refusal", async (t) => {
  const good = request();
  const cases: [string | Buffer, string, RegExp][] = [
    [good.replace("username=jdoe\n", "username=jdoe\nusername=eve\n"), "request.bad_header", /header line 3: username given twice/],
    [good.replace("username=jdoe\n", "username=jdoe\npassphrase=x\n"), "request.bad_header", /unknown key "passphrase"/],
    [good.replace("username=jdoe\n", "username=jdoe\nnoequals\n"), "request.bad_header", /expected key=value/],
    [good.replace("username=jdoe\n", "=x\n"), "request.bad_header", /expected key=value/],
    [good.replace("deadline=", "deadlinex="), "request.bad_header", /unknown key/],
    [good.replace(/deadline=\d+\n/, ""), "request.bad_header", /header has no deadline/],
    [good.replace("version=1", "version=2"), "request.bad_version", /version "2"/],
    [good.replace("jdoe", "jd\0oe"), "request.bad_format", /NUL byte/],
    [good.replace("jdoe\n", "jdoe\r\n"), "request.bad_format", /carriage return/],
    [Buffer.concat([Buffer.from(good.slice(0, 20)), Buffer.from([0xc3, 0x28]), Buffer.from(good.slice(20))]), "request.bad_format", /UTF-8/],
    [request({ username: "" }), "request.bad_username", /empty username/],
    [request({ username: "x".repeat(MAX_USERNAME_BYTES + 1) }), "request.bad_username", new RegExp(`longer than ${MAX_USERNAME_BYTES}`)],
    [request({ username: "a\u0007b" }), "request.bad_username", /control character/],
    [good.replace("proxy_lifetime=3600", "proxy_lifetime=-3600"), "request.bad_header", /proxy_lifetime="-3600"/],
    [good.replace("proxy_lifetime=3600", "proxy_lifetime=abc"), "request.bad_header", /proxy_lifetime="abc"/],
    [good.replace("proxy_lifetime=3600", "proxy_lifetime="), "request.bad_header", /proxy_lifetime=""/],
    [good.replace("proxy_lifetime=3600", "proxy_lifetime= 3600"), "request.bad_header", /proxy_lifetime=" 3600"/],
    [request({ maxCertLifetime: 400_000_000 }), "request.bad_header", /max_cert_lifetime=400000000: larger than/],
    [good.replace("deadline=", "deadline=-"), "request.bad_header", /deadline="-/],
    [good.slice(0, -4), "request.incomplete", /no end marker/],
    [good.slice(0, 60), "request.incomplete", /no end marker/],
    [good + "extra\n", "request.incomplete", /no end marker/],
    [good.replace("\n\n", "\n"), "request.bad_format", /no empty line/],
    [good.replace(CSR, ""), "request.bad_csr", /no certificate request/],
  ];
  for (const [text, code, re] of cases) {
    const e = errorOf(() => parseRequestFile(typeof text === "string" ? Buffer.from(text) : text));
    t.equal(e.code, code, `${code}: ${re.source}`);
    t.match(e.message, re);
  }
});

t.test("deadline", async (t) => {
  const policy = { now: NOW, clientTimeoutMs: 60_000 };
  t.doesNotThrow(() => checkDeadline(NOW + 60_000, policy));
  t.equal(errorOf(() => checkDeadline(NOW, policy)).code, "request.expired");
  t.equal(errorOf(() => checkDeadline(NOW - 5, policy)).code, "request.expired");
  t.equal(errorOf(() => checkDeadline(NOW + 60_000 + 60_001, policy)).code, "request.bad_deadline");
});

t.test("result files", async (t) => {
  const pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  t.same(parseResultFile(pem), { ok: true, certificatePem: pem });
  t.equal(formatErrorResult("request.expired", "the deadline\npassed\x1b[31m"), "error=request.expired\nthe deadline passed [31m\n");
  t.equal(formatErrorResult("bad code!", ""), "error=error\nrequest failed\n");
  t.same(parseResultFile("error=request.expired\nthe deadline passed\n"), { ok: false, code: "request.expired", message: "the deadline passed" });
  t.same(parseResultFile("junk"), { ok: false, code: "bad_result", message: "the spool wrote a result that is neither a certificate nor an error" });
  t.equal(parseResultFile(formatErrorResult("x", "y".repeat(1000))).ok, false);
});

t.test("names", async (t) => {
  for (let i = 0; i < 100; i++) {
    const n = randomName(16, randomBytes);
    t.match(n, /^[A-Za-z0-9]{16}$/);
  }
  t.ok(REQUEST_NAME.test("req.abcdEFGH1234"));
  for (const bad of ["req.abc", "req.abcdefgh/x", "../req.abcdefgh", "req.abcdefgh.result", "req.abcdefgh\n", "xreq.abcdefgh"]) t.notOk(REQUEST_NAME.test(bad), bad);
  for (const ok of ["req.abcdefgh", "req.abcdefgh.result", "req.abcdefgh.abandoned", "req.abcdefgh.result.tmpXy12"]) t.ok(SPOOL_FILE.test(ok), ok);
  t.notOk(SPOOL_FILE.test("req.abcdefgh.other"));
});

t.test("revoke queue entries and serials", async (t) => {
  const text = formatRevokeEntry({ serial: "0A1B", reason: "keyCompromise", queuedAt: NOW });
  t.equal(text, `version=1\nserial=0A1B\nreason=keyCompromise\nqueued_at=${NOW}\nend\n`);
  t.same(parseRevokeEntry(text), { serial: "0A1B", reason: "keyCompromise", queuedAt: NOW });
  const bad: [string, RegExp][] = [
    [text.replace("end\n", ""), /no end marker/],
    [text.replace("0A1B", "0a1b"), /not upper-case hex/],
    [text.replace("keyCompromise", "toString"), /unknown reason "toString"/],
    [text.replace("keyCompromise", "privilegeWithdrawn"), /privilegeWithdrawn is an RFC 5280 reason that openssl ca does not know/],
    [text.replace("reason=", "serial=1\nreason="), /serial given twice/],
    [text.replace("version=1\n", "version=1\nuser=root\n"), /unknown or malformed line/],
    [text.replace(String(NOW), "yesterday"), /queued_at/],
    [text.replace("version=1", "version=9"), /version must be 1/],
    [text.replace("0A1B", "0A\u00001B"), /NUL/],
  ];
  for (const [s, re] of bad) t.match(errorOf(() => parseRevokeEntry(s)).message, re);
  t.equal(normalizeSerial("0x0a:1b"), "0A1B");
  t.equal(normalizeSerial("abc"), "0ABC");
  t.equal(normalizeSerial("000ABC"), "0ABC");
  t.equal(normalizeSerial("00"), "00");
  t.equal(normalizeSerial("xyz"), undefined);
  t.equal(normalizeSerial(""), undefined);
});
