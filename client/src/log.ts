// One logger per module, tagged with its name; the only place the client writes to the console.
// Tokens, passwords and SDP never go through here.
/* eslint-disable no-console */

export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/** The page's storage key that sets the level (for a person or a benchmark looking into a call: "debug"). */
export const LOG_LEVEL_KEY = "parley.logLevel";
let threshold: Level = levelFrom(() => globalThis.localStorage) ?? "info";

export function setLogLevel(level: Level): void {
  threshold = level;
}

/** Whether lines at `level` are written now (work done only for a log line can be skipped). */
export function logsAt(level: Level): boolean {
  return ORDER[level] >= ORDER[threshold];
}

/**
 * The level the storage `storage()` gives names under LOG_LEVEL_KEY, if it names one (no storage,
 * or no level: undefined). A getter: in a sandboxed frame (a widget) reading `localStorage` at all throws.
 */
export function levelFrom(storage: () => Pick<Storage, "getItem"> | undefined): Level | undefined {
  try {
    const v = storage()?.getItem(LOG_LEVEL_KEY);
    return v && Object.hasOwn(ORDER, v) ? (v as Level) : undefined;
  } catch {
    return undefined;
  }
}

export interface Logger {
  debug(msg: string, ctx?: Record<string, unknown>): void;
  info(msg: string, ctx?: Record<string, unknown>): void;
  warn(msg: string, ctx?: Record<string, unknown>): void;
  error(msg: string, ctx?: Record<string, unknown>): void;
}

export function getLogger(name: string): Logger {
  const at =
    (level: Level) =>
    (msg: string, ctx?: Record<string, unknown>): void => {
      if (!logsAt(level)) return;
      const line = `[parley:${name}] ${msg}`;
      const fn = level === "debug" ? console.debug : level === "info" ? console.info : level === "warn" ? console.warn : console.error;
      if (ctx === undefined) fn(line);
      else fn(line, ctx);
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
