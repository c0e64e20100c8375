// The kernel's state machine as data: which event moves which state where.
// Anything not listed leaves the state unchanged.

export const KERNEL_STATES = ["STARTING", "NEED_PIN", "READY", "SUSPENDED", "STOPPING"] as const;
export type KernelState = (typeof KERNEL_STATES)[number];

export const KERNEL_EVENTS = [
  "services-up",     // every service said Hello for the first time
  "token-present",   // the monitor sees the trusted token (or any token before the first login)
  "token-absent",    // removal seen by the monitor or the USB source
  "token-refused",   // another token or another key came back
  "device-error",    // the signer lost the token
  "login-ok",        // the signer logged in and proved the key matches CA_CERT
  "relogin-failed",  // a restarted signer could not log in again with the PIN root held
  "stop",
] as const;
export type KernelEvent = (typeof KERNEL_EVENTS)[number];

export const TRANSITIONS: readonly { from: readonly KernelState[]; on: KernelEvent; to: KernelState }[] = [
  { from: ["STARTING"], on: "services-up", to: "NEED_PIN" },
  { from: ["NEED_PIN", "READY"], on: "token-absent", to: "SUSPENDED" },
  { from: ["NEED_PIN", "READY"], on: "token-refused", to: "SUSPENDED" },
  { from: ["READY", "NEED_PIN"], on: "device-error", to: "SUSPENDED" },
  { from: ["SUSPENDED"], on: "token-present", to: "NEED_PIN" },
  { from: ["NEED_PIN"], on: "login-ok", to: "READY" },
  { from: ["READY"], on: "relogin-failed", to: "NEED_PIN" },
  { from: ["STARTING", "NEED_PIN", "READY", "SUSPENDED"], on: "stop", to: "STOPPING" },
];

export function nextState(state: KernelState, event: KernelEvent): KernelState {
  for (const t of TRANSITIONS) if (t.on === event && t.from.includes(state)) return t.to;
  return state;
}
