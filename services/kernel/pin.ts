// The PIN's whole life in root: where it can be in the kernel's memory, and when it goes.
//   prompt   the console reads it into a zeroed Buffer (console.ts), only in NEED_PIN with the
//            token present and a signer that answered
//   login    sent to the signer in a secret frame (framing.ts zeroes what encoding touched)
//   keep     only a PIN the token accepted, only while READY: `held`, nowhere else
//   re-login a restarted signer gets a copy, zeroed once sent
//   wipe     on leaving READY (kernel.ts transition), on stop, and every PIN not kept at once
import { PinFlag } from "../../proto/wire.js";
import { describeError } from "../common/errors.js";
import { secretBuffer } from "../common/secret-buffer.js";
import { NO_MATCHING_TOKEN } from "../common/pkcs11/token-match.js";
import type { KernelCore } from "./kernel.js";
import { SIGNER_TIMEOUT_MS } from "./timeouts.js";

/**
 * Login failures that the configuration causes, with the keys to fix: retyping the PIN cannot
 * help, so the console says so and does not ask again until the token is re-inserted.
 */
const CONFIG_FAULTS: Readonly<Record<string, string>> = {
  "token.no_key": "KEY",
  "token.ambiguous_key": "KEY",
  "token.ambiguous_token": "KEY",
  "token.no_key_id": "KEY",
  "token.wrong_key": "KEY or CA_CERT",
};

export function pinFlagNames(flags: number): string[] {
  const names: string[] = [];
  if (flags & PinFlag.PIN_COUNT_LOW) names.push("count-low");
  if (flags & PinFlag.PIN_FINAL_TRY) names.push("final-try");
  if (flags & PinFlag.PIN_LOCKED) names.push("locked");
  if (flags & PinFlag.PIN_TO_BE_CHANGED) names.push("to-be-changed");
  return names;
}

export class PinKeeper {
  /** The PIN, held only while READY so that a restarted signer can be logged in again. */
  private held: Buffer | undefined;
  /** The token the PIN was accepted for: any other token is refused from then on. */
  trustedSerial: string | undefined;
  private loginBusy = false;
  /** A login failure that only a configuration change fixes; no prompt until the token comes back. */
  private configFault: string | undefined;
  /** "insert the CA token" was said: not again (a signer restart, the services coming up) until a token is seen. */
  private askedForToken = false;

  constructor(private readonly core: KernelCore) {}

  get holding(): boolean {
    return this.held !== undefined;
  }

  wipe(): void {
    if (this.held) {
      this.held.fill(0);
      this.held = undefined;
    }
  }

  /** The token went away (or another came): a configuration fault is looked at again with the next one. */
  tokenGone(): void {
    this.configFault = undefined;
  }

  considerPrompt(): void {
    const k = this.core;
    if (k.state !== "NEED_PIN" || this.loginBusy || k.console.prompting || this.configFault) return;
    if (!k.token.present) {
      // only once the monitor has looked: before its first report nobody knows (a token KEY does
      // not name may be there, and the monitor will say so)
      if (k.token.epoch > 0 && !k.tokenDetail.startsWith(NO_MATCHING_TOKEN) && !this.askedForToken) {
        this.askedForToken = true;
        k.console.say("insert the CA token");
      }
      return;
    }
    this.askedForToken = false;
    // prompted again when the signer has answered (its CA database and CA_CERT are loaded)
    if (!k.supervisor.isUp("signer") || !k.signerReady) return;
    void this.promptForPin();
  }

  private async promptForPin(): Promise<void> {
    const k = this.core;
    const t = k.token;
    if (t.pinFlags & PinFlag.PIN_LOCKED) {
      k.console.say(`token "${t.label}" serial ${t.serial}: the user PIN is LOCKED; unlock it with the SO PIN, then re-insert the token`);
      k.notify("pin-locked", `the PIN of CA token ${t.serial} is locked`, { serial: t.serial });
      return;
    }
    k.notify("pin-needed", `CA token ${t.serial} is present; the PIN must be entered on the console`, { serial: t.serial });
    const warnings: string[] = [];
    if (t.pinFlags & PinFlag.PIN_COUNT_LOW) warnings.push("WARNING: a wrong PIN was entered before (retry count low)");
    if (t.pinFlags & PinFlag.PIN_FINAL_TRY) warnings.push("WARNING: FINAL TRY: one more wrong PIN locks the token");
    for (const w of warnings) k.console.say(w);
    const pin = await k.console.readSecret(`PIN for CA token "${t.label}" (serial ${t.serial}): `);
    if (pin === undefined) return; // aborted: token gone or stopping
    if (pin.length === 0) {
      this.considerPrompt();
      return;
    }
    await this.login(pin, t.serial);
  }

  /** Sends the PIN to the signer; keeps it (for re-login) only when it was right. */
  private async login(pin: Buffer, expectedSerial: string): Promise<void> {
    const k = this.core;
    const signer = k.supervisor.channel("signer");
    if (!signer || k.state !== "NEED_PIN" || k.token.serial !== expectedSerial || !k.token.present) {
      pin.fill(0);
      this.considerPrompt();
      return;
    }
    this.loginBusy = true;
    let ok = false;
    try {
      const r = await signer.request("login", { pin, expectedSerial }, "loginResult", SIGNER_TIMEOUT_MS, { secret: true });
      const res = r.message;
      if (res.ok && k.state === "NEED_PIN" && k.token.present && res.tokenSerial === k.token.serial) {
        ok = true;
        this.held = pin;
        this.trustedSerial = res.tokenSerial;
        k.console.say(`PIN accepted; the token key matches the CA certificate`);
        k.transition("login-ok");
        k.notify("ready", `CA token ${res.tokenSerial} logged in; issuing`, { serial: res.tokenSerial });
        k.revocations.process("login");
      } else if (res.ok) {
        k.log.warning("login succeeded but the token changed meanwhile; logging out");
        signer.request("logout", { reason: "token changed during login" }, "ack", SIGNER_TIMEOUT_MS).catch(() => {});
      } else {
        const flags = pinFlagNames(res.pinFlags);
        k.console.say(`LOGIN FAILED: ${res.message}${flags.length ? ` (token reports: ${flags.join(", ")})` : ""}`);
        const fix = CONFIG_FAULTS[res.code];
        if (fix) {
          this.configFault = res.code;
          k.console.say(
            `this is a configuration fault: typing the PIN again will not help. Fix ${fix} in ${k.config.sourceFile} (etoken-ca check-config shows the problems), then restart etoken-ca-server`,
          );
        }
        k.log.warning("login failed", { code: res.code, message: res.message, tokenFlags: flags.join(",") });
        k.notify(res.code === "token.pin_incorrect" ? "pin-wrong" : "login-failed", `login to CA token ${expectedSerial} failed: ${res.message}`, {
          serial: expectedSerial,
          code: res.code,
        });
        k.token = { ...k.token, pinFlags: res.pinFlags };
      }
    } catch (err) {
      k.console.say(`LOGIN FAILED: ${describeError(err)}`);
      k.log.error("login failed", { error: describeError(err) });
    } finally {
      if (!ok) pin.fill(0);
      this.loginBusy = false;
      k.writeStatus();
    }
    if (!ok) this.considerPrompt();
  }

  /** A restarted signer while READY is logged in again from the PIN root holds. */
  async reLogin(): Promise<void> {
    const k = this.core;
    const signer = k.supervisor.channel("signer");
    if (!signer || !this.held) return;
    const copy = secretBuffer(this.held.length);
    this.held.copy(copy);
    try {
      const r = await signer.request("login", { pin: copy, expectedSerial: k.token.serial }, "loginResult", SIGNER_TIMEOUT_MS, { secret: true });
      if (!r.message.ok) {
        k.log.error("re-login of the restarted signer failed", { code: r.message.code, message: r.message.message });
        k.console.say(`re-login of the restarted signer failed: ${r.message.message}`);
        k.transition("relogin-failed"); // wipes the PIN: it is not retried
        this.considerPrompt();
      } else {
        k.log.notice("restarted signer logged in again");
        k.issuing.signerLoggedIn();
      }
    } catch (err) {
      k.log.error("re-login of the restarted signer failed", { error: describeError(err) });
    } finally {
      copy.fill(0);
    }
  }
}
