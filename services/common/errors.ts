// The one error hierarchy. Every message is written for an operator: it names the file,
// line, value or peer at fault and what was expected. No stack traces in normal operation.

export type ErrorContext = Readonly<Record<string, string | number | undefined>>;

export class EtokenError extends Error {
  /** Stable machine-readable code, e.g. "config.unknown_key"; travels over the wire. */
  readonly code: string;
  readonly context: ErrorContext;
  constructor(code: string, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.context = context;
  }
}

/** Broken configuration: always names the file and, where there is one, the line. */
export class ConfigError extends EtokenError {
  constructor(code: string, message: string, context: { file?: string; line?: number; key?: string } = {}) {
    const where = context.file ? `${context.file}${context.line ? `:${context.line}` : ""}: ` : "";
    super(`config.${code}`, `${where}${message}`, context);
  }
}

/** A request from a client that the CA refuses; the message goes back to the client. */
export class RequestError extends EtokenError {
  constructor(code: string, message: string, context: ErrorContext = {}) {
    super(`request.${code}`, message, context);
  }
}

/** The token or the PKCS#11 module said no (ckr = CKR_* name where known). */
export class TokenError extends EtokenError {
  readonly ckr: string | undefined;
  /** true when the token is gone or broken (removal, device error), not a usage error */
  readonly deviceLost: boolean;
  constructor(code: string, message: string, opts: { ckr?: string; deviceLost?: boolean } = {}) {
    super(`token.${code}`, message, { ckr: opts.ckr });
    this.ckr = opts.ckr;
    this.deviceLost = opts.deviceLost ?? false;
  }
}

/** The CA database (index.txt, serial, crlnumber, newcerts) is inconsistent or unwritable. */
export class DatabaseError extends EtokenError {
  constructor(code: string, message: string, context: { file?: string; line?: number } = {}) {
    const where = context.file ? `${context.file}${context.line ? `:${context.line}` : ""}: ` : "";
    super(`db.${code}`, `${where}${message}`, context);
  }
}

/** A peer process broke the wire contract (bad frame, forbidden message, bad content). */
export class ProtocolError extends EtokenError {
  constructor(code: string, message: string, context: ErrorContext = {}) {
    super(`protocol.${code}`, message, context);
  }
}

/** A file, directory, user or permission that would let the wrong party in. */
export class SecurityError extends EtokenError {
  constructor(code: string, message: string, context: ErrorContext = {}) {
    super(`security.${code}`, message, context);
  }
}

/** Wrong usage of a command-line program. */
export class UsageError extends EtokenError {
  constructor(message: string) {
    super("usage", message);
  }
}

/** One line an operator can act on, for any thrown value. */
export function describeError(err: unknown): string {
  if (err instanceof EtokenError) return err.message;
  if (err instanceof Error) {
    const sys = err as NodeJS.ErrnoException;
    if (sys.code && sys.path) return `${sys.path}: ${sys.code}: ${err.message.replace(/^[A-Z]+: /, "")}`;
    return `internal error: ${err.message}`;
  }
  return `internal error: ${String(err)}`;
}

export function errorCode(err: unknown): string {
  if (err instanceof EtokenError) return err.code;
  const sys = err as NodeJS.ErrnoException | undefined;
  return sys && typeof sys.code === "string" ? `system.${sys.code}` : "internal";
}
