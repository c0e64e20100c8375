// URL credentials (smtp://user:password@host) out of every message: configuration errors, the
// notifier's failures (which reach the world-readable status file) and every log line.

/** scheme://userinfo@ : the userinfo runs to the last `@` before the path, query or fragment. */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]*(?:@[^\s/?#@]*)*@/gi;

/** `text` with the user and password of every URL in it replaced by `***`. */
export function redactCredentials(text: string): string {
  return text.includes("@") ? text.replace(URL_USERINFO, "$1***@") : text;
}
