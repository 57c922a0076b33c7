import { afterEach, describe, expect, it, vi } from "vitest";
import { getLogger, LOG_LEVEL_KEY, levelFrom, setLogLevel } from "../../../client/src/log.ts";

describe("the client's log level", () => {
  afterEach(() => {
    setLogLevel("info");
    vi.restoreAllMocks();
  });

  it("is what the page's storage names under parley.logLevel, if it names a level", () => {
    const storage = (v: string | null) => () => ({ getItem: (k: string) => (k === LOG_LEVEL_KEY ? v : null) });
    expect(levelFrom(storage("debug"))).toBe("debug");
    expect(levelFrom(storage("warn"))).toBe("warn");
    expect(levelFrom(storage("verbose"))).toBeUndefined();
    expect(levelFrom(storage("toString"))).toBeUndefined();
    expect(levelFrom(storage(null))).toBeUndefined();
    expect(levelFrom(() => undefined)).toBeUndefined();
    // A sandboxed frame (a widget): reading localStorage throws, and so may reading from it.
    const refused = () => {
      throw new Error("SecurityError");
    };
    expect(levelFrom(refused)).toBeUndefined();
    expect(levelFrom(() => ({ getItem: refused }))).toBeUndefined();
  });

  it("writes debug lines only at debug", () => {
    const debug = vi.spyOn(console, "debug").mockImplementation(() => undefined);
    const log = getLogger("t");
    log.debug("hidden");
    setLogLevel("debug");
    log.debug("shown");
    expect(debug.mock.calls).toEqual([["[parley:t] shown"]]);
  });
});
