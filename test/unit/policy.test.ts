import t from "tap";
import { SERVICE_NAMES } from "../../services/common/service-table.js";
import { isPermitted, KERNEL_TABLE, ONCE } from "../../services/kernel/policy.js";
import { KERNEL_STATES, nextState } from "../../services/kernel/states.js";

t.test("policy table: default deny", async (t) => {
  t.ok(isPermitted("spool", "issueRequest", "READY"));
  t.ok(isPermitted("spool", "issueRequest", "SUSPENDED"), "refused fast, not a violation");
  t.notOk(isPermitted("spool", "login", "READY"), "spool can never send a PIN");
  t.notOk(isPermitted("spool", "tokenEvent", "READY"), "only the monitor reports the token");
  t.notOk(isPermitted("monitor", "issueRequest", "READY"));
  t.notOk(isPermitted("notifier", "revoke", "READY"));
  t.notOk(isPermitted("signer", "signerFault", "STARTING"));
  t.ok(isPermitted("signer", "signerFault", "READY"));
  t.ok(isPermitted("signer", "signed", "READY"), "the signer announces a signature (the fence starts)");
  t.ok(isPermitted("signer", "signed", "SUSPENDED"), "a signature may complete as the token goes away: not a violation");
  t.notOk(isPermitted("signer", "signed", "STARTING"));
  t.notOk(isPermitted("spool", "signed", "READY"), "only the signer can start a fence");
  t.notOk(isPermitted("monitor", "signed", "READY"));
  t.notOk(isPermitted("spool", "issueRequest", "STOPPING"));
  t.ok(isPermitted("spool", "delivered", "READY"), "the spool reports a certificate handed to its client");
  t.ok(isPermitted("spool", "delivered", "SUSPENDED"), "also after the token went away (the certificate was signed before)");
  t.ok(isPermitted("spool", "undelivered", "NEED_PIN"));
  for (const svc of ["signer", "monitor", "notifier"] as const) {
    t.notOk(isPermitted(svc, "delivered", "READY"), `only the spool reports deliveries, not the ${svc}`);
    t.notOk(isPermitted(svc, "undelivered", "READY"), `only the spool reports non-deliveries, not the ${svc}`);
  }
  t.notOk(isPermitted("signer", "hello", "READY"), "hello is handled once by the supervisor, never by the table");
  t.equal(ONCE, "hello", "the one message permitted once, as the first frame");
  t.notOk(KERNEL_TABLE.some((r) => r.type === ONCE), "no row repeats it");
  for (const svc of SERVICE_NAMES) {
    for (const type of ["login", "issued", "makeCrl", "revoke", "logout", "shutdown", "ping", "confirmDelivery", "settleUndelivered", "undeliveredRevoked"] as const) {
      t.notOk(isPermitted(svc, type, "READY"), `${svc} may not send ${type}`);
    }
  }
});

t.test("the kernel's table: one row per sender and message, each naming its handler", async (t) => {
  const keys = KERNEL_TABLE.map((r) => `${r.sender}/${r.type}`);
  t.equal(new Set(keys).size, keys.length, "no message has two rows for one sender");
  for (const r of KERNEL_TABLE) {
    t.ok(r.states.length > 0 && !r.states.includes("STOPPING"), `${r.sender}/${r.type}: permitted in some states, never while stopping`);
    t.match(r.handler, /^on[A-Z]/, `${r.sender}/${r.type}: handled by ${r.handler}`);
  }
});

t.test("state machine", async (t) => {
  t.equal(nextState("STARTING", "services-up"), "NEED_PIN");
  t.equal(nextState("NEED_PIN", "login-ok"), "READY");
  t.equal(nextState("READY", "token-absent"), "SUSPENDED");
  t.equal(nextState("READY", "device-error"), "SUSPENDED");
  t.equal(nextState("SUSPENDED", "token-present"), "NEED_PIN");
  t.equal(nextState("SUSPENDED", "login-ok"), "SUSPENDED", "no login while suspended");
  t.equal(nextState("STARTING", "login-ok"), "STARTING");
  t.equal(nextState("READY", "relogin-failed"), "NEED_PIN");
  for (const s of KERNEL_STATES) if (s !== "STOPPING") t.equal(nextState(s, "stop"), "STOPPING");
});
