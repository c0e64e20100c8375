import t from "tap";
import { parseConfig } from "../../services/common/config.js";
import { ConfigError } from "../../services/common/errors.js";

const BASE = "DN_FORMAT=/DC=org/DC=example/CN=%s\nPKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so\nCA_CERT=/etc/etoken-ca/ca.pem\n";

function errorOf(text: string): ConfigError {
  try {
    parseConfig(text, "/etc/sysconfig/etoken-ca");
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

t.test("defaults and quoting", async (t) => {
  const c = parseConfig(
    BASE + "# comment\n\nexport CA_OIDS='1.2.3.4, 1.3.6.1.4.1.1'\nCRL_URLS=\"URI:http://ca.example.org/crl.pem\" # trailing\nMAX_LIFETIME=12h\nTOKEN_POLL_INTERVAL=500ms\nCONSOLE_ALLOW_PTY=yes\n",
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
  t.match(errorOf(BASE + "FENCE_REVOKE_REASON=AACompromise\n").message, /:4: FENCE_REVOKE_REASON="AACompromise": expected a revocation reason openssl ca knows/);
  t.match(errorOf(BASE + "KEY='pkcs11:slot-id=0x12'\n").message, /:4: KEY=.*expected a decimal slot-id in the pkcs11: URI/);
  t.match(errorOf(BASE + "KEY='pkcs11:slot-id=99999999999999999999'\n").message, /expected a decimal slot-id/);
  t.match(errorOf(BASE + "KEY=abc\n").message, /line 4|:4: KEY="abc": expected SLOT:ID/);
});

t.test("errors name file, line and expectation", async (t) => {
  t.equal(errorOf(BASE + "FOO=1\n").message, "/etc/sysconfig/etoken-ca:4: unknown key FOO");
  t.equal(errorOf(BASE + "SIGNR_USER=x\n").message, "/etc/sysconfig/etoken-ca:4: unknown key SIGNR_USER (did you mean SIGNER_USER?)");
  t.equal(errorOf(BASE + "CA_CRT=/x\n").message, "/etc/sysconfig/etoken-ca:4: unknown key CA_CRT (did you mean CA_CERT?)");
  t.equal(errorOf(BASE + "MIN_KEY_BITS=2k\n").message, '/etc/sysconfig/etoken-ca:4: MIN_KEY_BITS="2k": expected a whole number');
  t.equal(errorOf(BASE + "CA_OIDS='1.2.3\n").message, "/etc/sysconfig/etoken-ca:4: unterminated single quote in the value of CA_OIDS");
  t.equal(errorOf(BASE + "CA_DIR=\"/x\n").message, "/etc/sysconfig/etoken-ca:4: unterminated double quote in the value of CA_DIR");
  t.match(errorOf(BASE + "CA_DIR=$HOME/ca\n").message, /:4: shell expansion \(\$\) is not supported/);
  t.match(errorOf(BASE + "CA_DIR=/a b\n").message, /:4: unquoted space/);
  t.equal(errorOf(BASE + "LOG_LEVEL=info\nLOG_LEVEL=debug\n").message, "/etc/sysconfig/etoken-ca:5: LOG_LEVEL is set again (first set on line 4)");
  t.match(errorOf("PKCS11_MODULE=/x\nCA_CERT=/y\n").message, /DN_FORMAT is required/);
  t.match(errorOf(BASE + "SPOOL_USER=causer\n").message, /SPOOL_USER and SIGNER_USER are both causer/);
  t.match(errorOf(BASE + "SIGNER_USER=root\nSPOOL_USER=x\n").message, /SIGNER_USER may not be root/);
  t.match(errorOf(BASE + "MAX_LIFETIME=-5\n").message, /expected a duration/);
  t.match(errorOf(BASE + "USB_DEVICE=529:620\n").message, /expected vendor:product/);
  t.match(errorOf(BASE + "garbage line\n").message, /:4: expected KEY=value/);
  t.match(errorOf("DN_FORMAT=/CN=%s/CN=%s\nPKCS11_MODULE=/x\nCA_CERT=/y\n").message, /:1: .*exactly one %s/);
  t.match(errorOf(BASE + "PKCS11_ENV='LD_PRELOAD=/evil.so'\n").message, /no LD_PRELOAD/);
});
