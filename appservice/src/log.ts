// One logger for the process; modules take named children carrying their context
// (room, call, user, txn). Secrets never reach a line: the redact paths below cover every
// field name Parley uses for a credential, and tokens are never interpolated into messages.
import { pino, type Logger } from "pino";

export type { Logger };

const REDACT = [
  "*.asToken", "*.hsToken", "*.accessToken", "*.access_token", "*.password", "*.token",
  "*.apiSecret", "*.adminSecret", "*.adminKey", "*.authorization", "*.headers.authorization",
  "req.headers.authorization", "asToken", "hsToken", "accessToken", "password", "token",
  "*.storeKey", "storeKey", "*.key", "*.session",
];

let root: Logger = pino({
  level: process.env.PARLEY_LOG_LEVEL ?? "info",
  redact: { paths: REDACT, censor: "<redacted>" },
  base: { svc: "parley" },
});

export function configureLogging(level: string): void {
  root = pino({ level, redact: { paths: REDACT, censor: "<redacted>" }, base: { svc: "parley" } });
}

/** A named child logger; `context` fields (roomId, callId, userId, txnId, ...) go on every line. */
export function getLogger(module: string, context: Record<string, unknown> = {}): Logger {
  return root.child({ module, ...context });
}

/** The shape matrix-js-sdk takes as `logger` (its Logger interface), without importing it. */
export interface SdkLogger {
  trace(this: void, ...msg: unknown[]): void;
  debug(this: void, ...msg: unknown[]): void;
  info(this: void, ...msg: unknown[]): void;
  warn(this: void, ...msg: unknown[]): void;
  error(this: void, ...msg: unknown[]): void;
  getChild(namespace: string): SdkLogger;
}

/** Routes matrix-js-sdk's logging (which logs every request at debug) into a pino logger. */
export function sdkLogger(log: Logger): SdkLogger {
  const text = (msg: unknown[]) => msg.map((m) => (typeof m === "string" ? m : m instanceof Error ? m.message : JSON.stringify(m))).join(" ");
  return {
    trace: (...m) => log.trace(text(m)),
    debug: (...m) => log.debug(text(m)),
    info: (...m) => log.info(text(m)),
    warn: (...m) => log.warn(text(m)),
    error: (...m) => log.error(text(m)),
    getChild: (namespace) => sdkLogger(log.child({ sdk: namespace })),
  };
}
