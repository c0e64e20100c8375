// The one logger: JSON lines on stderr, levels, and a guard that refuses to print anything
// that looks like a secret (a field named like a PIN or passphrase, or a raw Buffer). Values
// come from clients (usernames, CSR contents): every line is plain ASCII-safe text on one line
// (control, bidi, line-separator and invisible format characters escaped as \uXXXX, which
// JSON readers decode back), URL credentials are redacted, and long strings are cut short.

import { redactCredentials } from "./redact.js";

export const LOG_LEVELS = ["debug", "info", "notice", "warning", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const SECRET_FIELD = /pin|pass|secret|password|authtok|private/i;
/** Field names that match SECRET_FIELD but are known to hold no secret. */
const NOT_SECRET = new Set(["pinFlags", "pin_flags", "needPin", "passed"]);

export type LogFields = Record<string, unknown>;

export interface Logger {
  /**
   * Whether a line at this level would be written: guard a call whose fields cost something to
   * build on a hot path (`if (log.enabled("debug")) log.debug(...)`).
   */
  enabled(level: LogLevel): boolean;
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

const LEVEL_RANK = Object.fromEntries(LOG_LEVELS.map((l, i) => [l, i])) as Readonly<Record<LogLevel, number>>;
let globalRank = LEVEL_RANK.info;
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
  globalRank = LEVEL_RANK[level];
}

function levelEnabled(level: LogLevel): boolean {
  return LEVEL_RANK[level] >= globalRank;
}
/** Tests and the demo may capture log lines. */
export function setLogSink(s: LogSink): void {
  sink = s;
}

/** Longest string value written (messages and fields); the rest is counted, not written. */
export const MAX_LOG_VALUE_CHARS = 1000;

/**
 * C0 and C1 controls, DEL, U+2028/2029 and format characters (bidi embeddings, overrides and
 * isolates, zero-width characters, BOM, tags): terminals and viewers act on them.
 */
const UNSAFE_IN_LOG = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;

function escapeUnsafe(json: string): string {
  // JSON text outside strings is ASCII, so every match is inside a string, where \uXXXX is valid
  return json.replace(UNSAFE_IN_LOG, (c) => {
    let out = "";
    for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`;
    return out;
  });
}

/** A string as written: URL credentials redacted, cut at MAX_LOG_VALUE_CHARS. */
function cut(s: string): string {
  const r = redactCredentials(s);
  return r.length > MAX_LOG_VALUE_CHARS ? `${r.slice(0, MAX_LOG_VALUE_CHARS)}... (${r.length - MAX_LOG_VALUE_CHARS} more characters)` : r;
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
      out[k] = cut(v.message);
    } else if (typeof v === "string") {
      out[k] = cut(v);
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
    if (!levelEnabled(level)) return;
    const record = { ts: new Date().toISOString(), level, svc: component, pid: process.pid, msg: cut(msg), ...sanitize(fields) };
    if (sink === process.stderr && outputBroken) {
      droppedWrites++;
      return;
    }
    try {
      sink.write(escapeUnsafe(JSON.stringify(record)) + "\n");
    } catch {
      droppedWrites++;
    }
  };
  return {
    enabled: levelEnabled,
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    notice: (m, f) => emit("notice", m, f),
    warning: (m, f) => emit("warning", m, f),
    error: (m, f) => emit("error", m, f),
    child: (sub) => createLogger(`${component}.${sub}`),
  };
}
