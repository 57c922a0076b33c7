// The crypto section of the config (appservice/src/config): optional, its key a checked secret.
import { describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConfigError, loadConfig, parseConfig } from "../../../appservice/src/config/load.ts";
import { buildRegistration } from "../../../appservice/src/matrix/registration.ts";

const base = () => ({
  homeserver: { url: "http://127.0.0.1:8008", domain: "example.org" },
  appservice: { url: "http://127.0.0.1:9000", asToken: "a".repeat(64), hsToken: "b".repeat(64) },
  meetings: { publicUrl: "https://meet.example.org" },
});

function problems(crypto: unknown): string[] {
  try {
    parseConfig({ ...base(), crypto }, "c.yaml");
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  return [];
}

describe("crypto config", () => {
  it("is optional; given, its path defaults and its key is kept", () => {
    expect(parseConfig(base()).crypto).toBeUndefined();
    expect(parseConfig({ ...base(), crypto: { storeKey: "k".repeat(64) } }).crypto).toEqual({ storeKey: "k".repeat(64), path: "parley-crypto.bin" });
  });

  it("refuses a placeholder or short store key, and unknown keys", () => {
    expect(problems({ storeKey: "generate" })).toEqual(["crypto.storeKey: placeholder secret 'generate' refused; run 'parley -g -c c.yaml' to generate one"]);
    expect(problems({ storeKey: "short" })).toEqual(["crypto.storeKey: expected a random secret of at least 32 characters"]);
    expect(problems({ storeKey: "k".repeat(64), passphrase: "x" })).toEqual(["crypto: unknown key 'passphrase'"]);
    expect(problems({})).toEqual(["crypto.storeKey: expected string (missing)"]);
  });

  it("resolves a relative path against the config file's folder", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "parley-cfg-"));
    try {
      const file = path.join(dir, "parley.yaml");
      writeFileSync(file, JSON.stringify({ ...base(), crypto: { storeKey: "k".repeat(64), path: "state/bot.bin" } }));
      expect(loadConfig(file).crypto?.path).toBe(path.join(dir, "state/bot.bin"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("turns on the appservice E2EE extensions in the registration, only with crypto", () => {
    const flags = ["receive_ephemeral", "org.matrix.msc3202", "io.element.msc4190"];
    const withCrypto = buildRegistration(parseConfig({ ...base(), crypto: { storeKey: "k".repeat(64) } }));
    for (const f of flags) expect(withCrypto[f], f).toBe(true);
    const without = buildRegistration(parseConfig(base()));
    for (const f of flags) expect(without[f], f).toBeUndefined();
  });
});
