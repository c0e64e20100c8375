import t from "tap";
import { configWarnings, dnTemplateOf, parseConfig } from "../../services/common/config.js";
import { ConfigError } from "../../services/common/errors.js";
import { CONFIG_SCHEMA, type ConfigKey } from "../../services/common/config-schema.js";

const REQUIRED = "DN_FORMAT=/DC=org/DC=example/CN=%s\nPKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so\nCA_CERT=/etc/etoken-ca/ca.pem\n";
const BASE = REQUIRED + "CA_OIDS=1.3.6.1.4.1.99999.1.1\nCRL_URLS=URI:http://ca.example.org/crl.der\n";

function errorOf(text: string): ConfigError {
  try {
    parseConfig(text, "/etc/sysconfig/etoken-ca");
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

t.test("SMTP_URL credentials never appear in a message", async (t) => {
  for (const url of ["http://user:pw@host", "smtp://user:pw@"]) {
    const err = errorOf(BASE + `SMTP_URL='${url}'\n`);
    t.match(err.message, new RegExp(`:${BASE.split("\n").length}: SMTP_URL: expected an smtp:// or smtps:// URL$`), url);
    t.notMatch(err.message, /pw/, `${url}: no password in ${JSON.stringify(err.message)}`);
  }
});

t.test("defaults and quoting", async (t) => {
  const c = parseConfig(
    REQUIRED + "# comment\n\nexport CA_OIDS='1.2.3.4, 1.3.6.1.4.1.1'\nCRL_URLS=\"URI:http://ca.example.org/crl.pem\" # trailing\nMAX_LIFETIME=12h\nTOKEN_POLL_INTERVAL=500ms\nCONSOLE_ALLOW_PTY=yes\n",
    "f",
  );
  t.same(c.CA_OIDS, ["1.2.3.4", "1.3.6.1.4.1.1"]);
  t.same(c.CRL_URLS, ["http://ca.example.org/crl.pem"]);
  t.equal(c.MAX_LIFETIME, 12 * 3600 * 1000);
  t.equal(c.TOKEN_POLL_INTERVAL, 500);
  t.equal(c.CONSOLE_ALLOW_PTY, true);
  t.equal(c.SIGNER_USER, "causer");
  t.equal(c.CLIENT_TIMEOUT, 60_000);
  t.same(c.KEY, { slot: 0, slotId: undefined, id: undefined, label: undefined, tokenLabel: undefined, tokenSerial: undefined });
});

t.test("KEY forms", async (t) => {
  t.equal(parseConfig(BASE + "KEY=1:0a0B\n", "f").KEY.id, "0a0b");
  const uri = parseConfig(BASE + "KEY='pkcs11:token=etoken%20ca;id=%01;type=private'\n", "f").KEY;
  t.equal(uri.tokenLabel, "etoken ca");
  t.equal(uri.id, "01");
  const bySlotId = parseConfig(BASE + "KEY='pkcs11:slot-id=1905289389;id=%01'\n", "f").KEY;
  t.equal(bySlotId.slotId, 1905289389, "slot-id is PKCS#11's CK_SLOT_ID");
  t.equal(bySlotId.slot, undefined, "not a position in the slot list");
  t.equal(parseConfig(BASE + "KEY=0:01\n", "f").KEY.slotId, undefined);
  t.equal(parseConfig(BASE + "FENCE_REVOKE_REASON=cessationOfOperation\n", "f").FENCE_REVOKE_REASON, "cessationOfOperation");
  t.match(errorOf(BASE + "FENCE_REVOKE_REASON=AACompromise\n").message, /:6: FENCE_REVOKE_REASON="AACompromise": AACompromise is an RFC 5280 reason that openssl ca does not know/);
  t.match(errorOf(BASE + "KEY='pkcs11:slot-id=0x12'\n").message, /:6: KEY=.*expected a decimal slot-id in the pkcs11: URI/);
  t.match(errorOf(BASE + "KEY='pkcs11:slot-id=99999999999999999999'\n").message, /expected a decimal slot-id/);
  t.match(errorOf(BASE + "KEY=abc\n").message, /line 6|:6: KEY="abc": expected SLOT:ID/);
});

t.test("errors name file, line and expectation", async (t) => {
  t.equal(errorOf(BASE + "FOO=1\n").message, "/etc/sysconfig/etoken-ca:6: unknown key FOO");
  t.equal(errorOf(BASE + "SIGNR_USER=x\n").message, "/etc/sysconfig/etoken-ca:6: unknown key SIGNR_USER (did you mean SIGNER_USER?)");
  t.equal(errorOf(BASE + "CA_CRT=/x\n").message, "/etc/sysconfig/etoken-ca:6: unknown key CA_CRT (did you mean CA_CERT?)");
  t.equal(errorOf(BASE + "MIN_KEY_BITS=2k\n").message, '/etc/sysconfig/etoken-ca:6: MIN_KEY_BITS="2k": expected a whole number');
  t.equal(errorOf(BASE + "CA_OIDS='1.2.3\n").message, "/etc/sysconfig/etoken-ca:6: unterminated single quote in the value of CA_OIDS");
  t.equal(errorOf(BASE + "CA_DIR=\"/x\n").message, "/etc/sysconfig/etoken-ca:6: unterminated double quote in the value of CA_DIR");
  t.match(errorOf(BASE + "CA_DIR=$HOME/ca\n").message, /:6: shell expansion \(\$\) is not supported/);
  t.match(errorOf(BASE + "CA_DIR=/a b\n").message, /:6: unquoted space/);
  t.equal(errorOf(BASE + "LOG_LEVEL=info\nLOG_LEVEL=debug\n").message, "/etc/sysconfig/etoken-ca:7: LOG_LEVEL is set again (first set on line 6)");
  t.match(errorOf("PKCS11_MODULE=/x\nCA_CERT=/y\n").message, /DN_FORMAT is required/);
  t.match(errorOf(BASE + "SPOOL_USER=causer\n").message, /SPOOL_USER and SIGNER_USER are both causer/);
  t.match(errorOf(BASE + "SIGNER_USER=root\nSPOOL_USER=x\n").message, /SIGNER_USER may not be root/);
  t.match(errorOf(BASE + "MAX_LIFETIME=-5\n").message, /expected a duration/);
  t.match(errorOf(BASE + "USB_DEVICE=529:620\n").message, /expected vendor:product/);
  t.match(errorOf(BASE + "garbage line\n").message, /:6: expected KEY=value/);
  t.match(errorOf("DN_FORMAT=/CN=%s/CN=%s\nPKCS11_MODULE=/x\nCA_CERT=/y\n").message, /:1: .*exactly one %s/);
  t.match(errorOf(BASE + "PKCS11_ENV='LD_PRELOAD=/evil.so'\n").message, /no LD_PRELOAD/);
  // Node reads NODE_* (NODE_OPTIONS=--inspect opens a debugger in the signer): none of them
  for (const name of ["NODE_OPTIONS", "NODE_EXTRA_CA_CERTS", "NODE_DEBUG"]) {
    t.match(errorOf(BASE + `PKCS11_ENV='${name}=--inspect'\n`).message, new RegExp(`no ${name} \\(`), name);
  }
});

t.test("DN_FORMAT and USERNAME_RDN_TYPES are checked by the loader", async (t) => {
  const rest = "PKCS11_MODULE=/x\nCA_CERT=/y\nCA_OIDS=1.2.3\nCRL_URLS=URI:http://x.example.org/c.der\n";
  t.match(errorOf(`LOG_LEVEL=info\nDN_FORMAT=/DC=org/XX=y/CN=%s\n${rest}`).message,
    /^\/etc\/sysconfig\/etoken-ca:2: DN_FORMAT="\/DC=org\/XX=y\/CN=%s": unknown attribute type "XX"/);
  t.match(errorOf(`DN_FORMAT='/O=a+CN=b%s'\n${rest}`).message, /:1: DN_FORMAT="\/O=a\+CN=b%s": multi-valued RDNs/);
  t.match(errorOf(`DN_FORMAT='/C=USA/CN=%s'\n${rest}`).message, /:1: DN_FORMAT=.*two-letter/);
  t.same(parseConfig(BASE, "f").USERNAME_RDN_TYPES, ["DC", "O", "OU", "CN"], "default");
  t.same(parseConfig(BASE + "USERNAME_RDN_TYPES='commonName, O'\n", "f").USERNAME_RDN_TYPES, ["CN", "O"]);
  t.match(errorOf(BASE + "USERNAME_RDN_TYPES=CN,XX\n").message, /:6: USERNAME_RDN_TYPES="CN,XX": .*unknown attribute type "XX"/);
  t.match(errorOf(BASE + "USERNAME_RDN_TYPES=\n").message, /:6: USERNAME_RDN_TYPES="": .*at least one attribute type/);
});

t.test("dnTemplateOf: DN_FORMAT with the configured USERNAME_RDN_TYPES, the one template every process uses", async (t) => {
  const c = parseConfig(BASE.replace("DN_FORMAT=/DC=org/DC=example/CN=%s", "DN_FORMAT=/DC=org/DC=example%s") + "USERNAME_RDN_TYPES=O,CN\n", "f");
  const dn = dnTemplateOf(c);
  t.equal(dn.mode, "rdns");
  t.equal(dn.slashBefore, "/DC=org/DC=example");
  t.same(dn.usernameTypes, ["O", "CN"]);
  t.same(dnTemplateOf(parseConfig(BASE, "f")).usernameTypes, ["DC", "O", "OU", "CN"], "the default types");
});

t.test("FENCE_REVOKE_REASON: removeFromCRL is refused (delta CRLs only)", async (t) => {
  t.equal(parseConfig(BASE + "FENCE_REVOKE_REASON=superseded\n", "f").FENCE_REVOKE_REASON, "superseded");
  t.match(errorOf(BASE + "FENCE_REVOKE_REASON=removeFromCRL\n").message,
    /:6: FENCE_REVOKE_REASON="removeFromCRL": removeFromCRL is only meaningful in delta CRLs \(RFC 5280 §5\.3\.1\)/);
  t.match(errorOf(BASE + "FENCE_REVOKE_REASON=because\n").message, /:6: FENCE_REVOKE_REASON="because": unknown reason "because"; one of unspecified, /);
});

t.test("the IGTF profile held by the configuration", async (t) => {
  t.match(errorOf(REQUIRED).message, /CA_OIDS is required/, "no certificatePolicies without CA_OIDS");
  t.match(errorOf(REQUIRED + "CA_OIDS=1.2.3\n").message, /CRL_URLS is required/, "no CRL distribution point without CRL_URLS");
  t.match(errorOf(REQUIRED + "CA_OIDS=\nCRL_URLS=URI:http://x.example.org/c.der\n").message, /:4: CA_OIDS="": expected at least one dotted OID/);
  t.match(errorOf(REQUIRED + "CA_OIDS=1.2.3\nCRL_URLS=\n").message, /:5: CRL_URLS="": expected at least one URI:http:\/\/\.\.\. entry/);
  t.match(errorOf(REQUIRED + "CA_OIDS=1.2.3\nCRL_URLS=URI:ldap://x.example.org/cn=crl\n").message, /:5: CRL_URLS="URI:ldap:\/\/x.example.org\/cn=crl": expected comma-separated URI:http:\/\/\.\.\. entries/);
  t.match(errorOf(REQUIRED + "CA_OIDS=1.2.3\nCRL_URLS=http://x.example.org/c.der\n").message, /:5: CRL_URLS=.*URI:http/);

  t.match(errorOf(BASE + "MAX_LIFETIME=396d\n").message, /:6: MAX_LIFETIME="396d": longer than 395d \(13 months, the longest an IGTF end-entity certificate may live\)/);
  t.match(errorOf(BASE + "MAX_LIFETIME=300\n").message, /:6: MAX_LIFETIME=300s: must be longer than the 5-minute backdating of notBefore/);
  t.equal(parseConfig(BASE + "MAX_LIFETIME=395d\n", "f").MAX_LIFETIME, 395 * 86_400_000, "13 months is the limit");

  t.same(configWarnings(parseConfig(BASE, "f")), [], "the defaults are clean");
  const line = BASE.split("\n").length;
  t.same(
    configWarnings(parseConfig(BASE + "CRL_WARN_BEFORE=3d\n", "f")),
    [`f:${line}: CRL_WARN_BEFORE is no longer used (the crl-expiring warning now starts when CRL_REISSUE_BEFORE's reissue point passes without a PIN): remove it`],
    "a retired key is a warning, not a refusal (an upgraded server still starts)",
  );
  t.same(configWarnings(parseConfig(BASE + "MAX_LIFETIME=1000001\n", "f")), ["f: MAX_LIFETIME=\"1000001s\": above 1000000 s, the IGTF ceiling for short-lived credentials"]);
  t.same(configWarnings(parseConfig(BASE + "MAX_LIFETIME=1000000\n", "f")), [], "1,000,000 s itself is fine");
  t.match(configWarnings(parseConfig(REQUIRED + "CA_OIDS=1.2.3\nCRL_URLS=URI:https://x.example.org/c.der\n", "f")), [/^f: CRL_URLS="URI:https:\/\/x.example.org\/c.der": https distribution points/]);
  t.match(configWarnings(parseConfig(BASE + "CRL_LIFETIME=31d\n", "f")), [/^f: CRL_LIFETIME="2678400s": above 30 days/]);
  t.same(configWarnings(parseConfig(BASE + "CRL_LIFETIME=30d\n", "f")), []);
});

t.test("a key subset (the client's): every line's syntax and key name checked, only the subset's values parsed", async (t) => {
  const keys = ["SPOOL_DIR", "CLIENT_TIMEOUT", "DN_FORMAT", "USERNAME_RDN_TYPES"] as const;
  // a value only the server reads may be wrong: the server refuses it at start, the client needs none of it
  const c = parseConfig(BASE + "SMTP_URL=http://x\nCLIENT_TIMEOUT=5s\n", "f", keys);
  t.equal(c.CLIENT_TIMEOUT, 5000);
  t.equal(c.SPOOL_DIR, "/run/etoken-ca-spool/request", "defaults of the subset");
  t.same(c.USERNAME_RDN_TYPES, ["DC", "O", "OU", "CN"]);
  t.equal(c.sourceFile, "f");
  t.notOk("SMTP_URL" in c, "a key outside the subset is not in the result");
  t.same(dnTemplateOf(c), dnTemplateOf(parseConfig(BASE, "f")), "the same subject template as a whole load");
  t.equal(dnTemplateOf(c), dnTemplateOf(c), "DN_FORMAT is compiled once per load");
  // what the subset still refuses, with file and line as a whole load does
  const subsetError = (text: string): string => {
    try {
      parseConfig(text, "/etc/sysconfig/etoken-ca", keys);
    } catch (err) {
      if (err instanceof ConfigError) return err.message;
      throw err;
    }
    return "no error";
  };
  const line = BASE.split("\n").length;
  for (const [extra, message] of [
    ["CLIENT_TIMEOUT=soon\n", `:${line}: CLIENT_TIMEOUT="soon": expected a duration`],
    ["SPOOL_DIR=spool\n", `:${line}: SPOOL_DIR="spool": expected an absolute path`],
    ["CLINET_TIMEOUT=5\n", `:${line}: unknown key CLINET_TIMEOUT (did you mean CLIENT_TIMEOUT?)`],
    ["CA_DIR=/a\nCA_DIR=/b\n", `:${line + 1}: CA_DIR is set again (first set on line ${line})`],
    ["SMTP_URL=$HOST\n", `:${line}: shell expansion ($) is not supported in the value of SMTP_URL`],
    ["DN_FORMAT2=x\n", `:${line}: unknown key DN_FORMAT2`],
  ] as const) {
    t.match(subsetError(BASE + extra), message, extra);
    t.match(subsetError(BASE + extra), errorOf(BASE + extra).message, `${extra}: the message of a whole load`);
  }
  t.match(subsetError(BASE.replace("DN_FORMAT=/DC=org/DC=example/CN=%s", "DN_FORMAT=/DC=org/CN=x")), "/etc/sysconfig/etoken-ca:1: DN_FORMAT=\"/DC=org/CN=x\": must contain exactly one %s (found 0)");
  t.equal(subsetError(BASE.replace("DN_FORMAT=/DC=org/DC=example/CN=%s\n", "")), "/etc/sysconfig/etoken-ca: DN_FORMAT is required (" + "Subject DN in slash form with one %s for the MyProxy username. %s inside a value (/DC=org/DC=example/CN=%s): the username is that value. %s where RDNs can stand (/DC=org/DC=example%s, or %s alone): the username is a DN suffix such as /O=Example/CN=Jane Doe, inserted there)");
});

// Node's timers wait at most 2^31-1 ms (24.8 days): a longer delay fires after 1 ms. Each duration
// has a sensible maximum in the schema (max), and the loader refuses a longer one where it is read.
const TIMER_LIMIT_MS = 2 ** 31 - 1;
/** Durations that are date arithmetic, never a timer's delay: they may exceed a timer's limit. */
const BEYOND_TIMERS = ["MAX_LIFETIME", "CRL_LIFETIME", "CRL_REISSUE_BEFORE", "AUDIT_CHECKPOINT_INTERVAL"];

t.test("every duration has a maximum, given in its doc, and the loader refuses what is longer (file, line, value, limit)", async (t) => {
  const durations = Object.entries(CONFIG_SCHEMA).filter(([, spec]) => spec.kind === "duration");
  t.equal(durations.length, 9, "the schema's durations");
  const line = BASE.split("\n").length;
  for (const [key, spec] of durations) {
    const max = (spec as { max?: { limit: string; why: string } }).max;
    t.ok(max, `${key} has a max`);
    if (!max) continue;
    t.ok(spec.doc.includes(`at most ${max.limit}`), `${key}'s doc says "at most ${max.limit}"`);
    const limitMs = parseConfig(`${BASE}${key}=${max.limit}\n`, "f", [key as ConfigKey])[key as ConfigKey] as number;
    if (!BEYOND_TIMERS.includes(key)) t.ok(limitMs <= TIMER_LIMIT_MS, `${key}: its maximum fits a timer`);
    const over = `${limitMs + 1}ms`;
    let message = "no error";
    try {
      parseConfig(`${BASE}${key}=${over}\n`, "/etc/sysconfig/etoken-ca", [key as ConfigKey]);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      message = err.message;
    }
    t.equal(message, `/etc/sysconfig/etoken-ca:${line}: ${key}="${over}": longer than ${max.limit} (${max.why})`, `${key}: one past the limit is refused`);
  }
});

t.test("SIGN_TIMEOUT=30d and TOKEN_POLL_INTERVAL=60d (meaning 'never') are refused at start, not obeyed after 1 ms", async (t) => {
  t.equal(errorOf(BASE + "SIGN_TIMEOUT=30d\n").message, "/etc/sysconfig/etoken-ca:6: SIGN_TIMEOUT=\"30d\": longer than 10m (a signature not finished after this long is a hung token)");
  t.equal(errorOf(BASE + "TOKEN_POLL_INTERVAL=60d\n").message, "/etc/sysconfig/etoken-ca:6: TOKEN_POLL_INTERVAL=\"60d\": longer than 1h (a removal unnoticed for longer is no longer watched)");
  t.match(errorOf(BASE + "HOOK_TIMEOUT=25d\n").message, /^\/etc\/sysconfig\/etoken-ca:6: HOOK_TIMEOUT="25d": longer than 1h /);
  t.match(errorOf(BASE + "CLIENT_TIMEOUT=25d\n").message, /^\/etc\/sysconfig\/etoken-ca:6: CLIENT_TIMEOUT="25d": longer than 1h /);
  t.match(errorOf(BASE + "NOTIFY_RATE_LIMIT=30d\n").message, /^\/etc\/sysconfig\/etoken-ca:6: NOTIFY_RATE_LIMIT="30d": longer than 7d /);
  t.equal(parseConfig(BASE + "NOTIFY_RATE_LIMIT=7d\n", "f").NOTIFY_RATE_LIMIT, 7 * 86_400_000, "a week's rate limit is accepted");
  t.equal(parseConfig(BASE + "CRL_LIFETIME=90d\n", "f").CRL_LIFETIME, 90 * 86_400_000, "a CRL lifetime beyond a timer's limit is date arithmetic: accepted (and warned)");
  t.equal(parseConfig(BASE + "SIGN_TIMEOUT=10m\n", "f").SIGN_TIMEOUT, 600_000);
});
