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

/**
 * Every log line is bounded: a value from outside (an event, a reason, an error message) can be
 * any size, and one 58 KB member event once made 1.7 MB of log. Fields are cut structurally
 * (strings, arrays, objects, depth) so lines stay readable JSON; a line still longer than
 * `lineChars` (a long message) is replaced by a short line saying so.
 */
export const LOG_LIMITS = {
  lineChars: 16 * 1024,
  stringChars: 2048,
  arrayItems: 20,
  objectKeys: 40,
  depth: 5,
} as const;

/** A copy of `value` within LOG_LIMITS; errors become pino's serialized form first. */
export function bounded(value: unknown, depth = 0): unknown {
  if (typeof value === "string") {
    const over = value.length - LOG_LIMITS.stringChars;
    return over > 0 ? `${value.slice(0, LOG_LIMITS.stringChars)}…(+${over} chars)` : value;
  }
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Error) return bounded(pino.stdSerializers.err(value), depth);
  if (value instanceof Date) return value;
  if (ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
  if (depth >= LOG_LIMITS.depth) return Array.isArray(value) ? `[array of ${value.length}]` : "[object]";
  if (Array.isArray(value)) {
    const out: unknown[] = value.slice(0, LOG_LIMITS.arrayItems).map((v) => bounded(v, depth + 1));
    if (value.length > LOG_LIMITS.arrayItems) out.push(`…(+${value.length - LOG_LIMITS.arrayItems} items)`);
    return out;
  }
  const entries = Object.entries(value);
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries.slice(0, LOG_LIMITS.objectKeys)) out[k] = bounded(v, depth + 1);
  if (entries.length > LOG_LIMITS.objectKeys) out["…"] = `+${entries.length - LOG_LIMITS.objectKeys} keys`;
  return out;
}

/** The last guard: a line past LOG_LIMITS.lineChars (a long message) becomes a short one. */
export function boundLine(line: string): string {
  if (line.length <= LOG_LIMITS.lineChars) return line;
  const level = /^\{"level":(\d+)/.exec(line)?.[1] ?? "40";
  const head = line.slice(0, 1024);
  return `${JSON.stringify({ level: Number(level), time: Date.now(), svc: "parley", msg: "log line too long; cut", chars: line.length, head })}\n`;
}

function createRoot(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    redact: { paths: REDACT, censor: "<redacted>" },
    base: { svc: "parley" },
    formatters: {
      bindings: (b) => bounded(b) as Record<string, unknown>,
      log: (o) => bounded(o) as Record<string, unknown>,
    },
    hooks: { streamWrite: boundLine },
  };
  return destination ? pino(options, destination) : pino(options);
}

let root: Logger = createRoot(process.env.PARLEY_LOG_LEVEL ?? "info");

/** Sets the level of every logger made afterwards; `destination` (tests) replaces stdout. */
export function configureLogging(level: string, destination?: pino.DestinationStream): void {
  root = createRoot(level, destination);
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
