// The one logger: JSON lines on stderr, levels, and a guard that refuses to print anything
// that looks like a secret (a field named like a PIN or passphrase, or a raw Buffer).

export const LOG_LEVELS = ["debug", "info", "notice", "warning", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const SECRET_FIELD = /pin|pass|secret|password|authtok|private/i;
/** Field names that match SECRET_FIELD but are known to hold no secret. */
const NOT_SECRET = new Set(["pinFlags", "pin_flags", "needPin", "passed"]);

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  notice(msg: string, fields?: LogFields): void;
  warning(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(component: string): Logger;
}

export interface LogSink {
  write(line: string): unknown;
}

let globalLevel: LogLevel = "info";
let sink: LogSink = process.stderr;

/**
 * Writes that failed because the reader of stdout or stderr went away (EPIPE, a closed terminal):
 * dropped and counted. A broken log stream must never stop the CA or make it unkillable.
 */
let droppedWrites = 0;
let outputBroken = false;
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", () => {
    droppedWrites++;
    outputBroken = true;
  });
}
export function droppedLogWrites(): number {
  return droppedWrites;
}

export function setLogLevel(level: LogLevel): void {
  globalLevel = level;
}
/** Tests and the demo may capture log lines. */
export function setLogSink(s: LogSink): void {
  sink = s;
}

function sanitize(fields: LogFields | undefined): LogFields {
  const out: LogFields = {};
  if (!fields) return out;
  for (const [k, v] of Object.entries(fields)) {
    if (SECRET_FIELD.test(k) && !NOT_SECRET.has(k)) {
      out[k] = "[refused: secret-like field]";
    } else if (Buffer.isBuffer(v) || v instanceof Uint8Array) {
      out[k] = `[refused: ${v.length} raw bytes]`;
    } else if (v instanceof Error) {
      out[k] = v.message;
    } else if (typeof v === "bigint") {
      out[k] = v.toString();
    } else {
      out[k] = v;
    }
  }
  return out;
}

export function createLogger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LOG_LEVELS.indexOf(level) < LOG_LEVELS.indexOf(globalLevel)) return;
    const record = { ts: new Date().toISOString(), level, svc: component, pid: process.pid, msg, ...sanitize(fields) };
    if (sink === process.stderr && outputBroken) {
      droppedWrites++;
      return;
    }
    try {
      sink.write(JSON.stringify(record) + "\n");
    } catch {
      droppedWrites++;
    }
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    notice: (m, f) => emit("notice", m, f),
    warning: (m, f) => emit("warning", m, f),
    error: (m, f) => emit("error", m, f),
    child: (sub) => createLogger(`${component}.${sub}`),
  };
}
