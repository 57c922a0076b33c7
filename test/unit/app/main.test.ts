import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parse } from "yaml";
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from "vitest";
import { main } from "../../../appservice/src/app/main.ts";
import { sampleConfigYaml } from "../../../appservice/src/config/sample.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";

let dir: string;
let configFile: string;
let regFile: string;
let out: MockInstance<typeof console.log>;
let err: MockInstance<typeof console.error>;

const printed = (spy: MockInstance<(...args: unknown[]) => void>) => spy.mock.calls.map((c) => c.join(" ")).join("\n");

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-main-"));
  configFile = path.join(dir, "config.yaml");
  regFile = path.join(dir, "registration.yaml");
  out = vi.spyOn(console, "log").mockImplementation(() => undefined);
  err = vi.spyOn(console, "error").mockImplementation(() => undefined);
});

afterEach(() => {
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

describe("main", () => {
  it("-e writes the sample config and refuses to overwrite it", async () => {
    expect(await main(["-e", "-c", configFile])).toBe(0);
    expect(readFileSync(configFile, "utf8")).toBe(sampleConfigYaml());
    expect(printed(out)).toContain(`wrote example config to ${configFile}`);

    writeFileSync(configFile, "# mine\n");
    expect(await main(["-e", "-c", configFile])).toBe(1);
    expect(readFileSync(configFile, "utf8")).toBe("# mine\n");
    expect(printed(err)).toContain(`invalid config ${configFile}:\n  - exists already; not overwriting`);
  });

  it("--validate refuses the sample, naming the placeholder secrets", async () => {
    await main(["-e", "-c", configFile]);
    expect(await main(["--validate", "-c", configFile])).toBe(1);
    const text = printed(err);
    expect(text).toContain(`appservice.asToken: placeholder secret 'generate' refused; run 'parley -g -c ${configFile}'`);
    expect(text).toContain("appservice.hsToken: placeholder secret 'generate' refused");
  });

  it("-g fills the secrets keeping the comments, writes a private registration, then --validate passes", async () => {
    await main(["-e", "-c", configFile]);
    expect(await main(["-g", "-c", configFile, "-f", regFile])).toBe(0);
    expect(printed(out)).toContain(`wrote ${regFile} (generated 3 secrets in ${configFile})`);

    const text = readFileSync(configFile, "utf8");
    expect(text).toContain("# Token Parley uses towards the homeserver (as_token)\n");
    expect(text).toContain("# Parley configuration. Generated from the schema");
    expect(text).not.toMatch(/: generate$/m);
    const filled = parse(text) as { appservice: { asToken: string; hsToken: string } };
    expect(filled.appservice.asToken).toMatch(/^[0-9a-f]{64}$/);
    expect(filled.appservice.hsToken).toMatch(/^[0-9a-f]{64}$/);
    expect(filled.appservice.asToken).not.toBe(filled.appservice.hsToken);
    // Only the three secrets changed.
    const blank = (s: string) => s.replace(/(asToken|hsToken|storeKey): .*/g, "$1: X");
    expect(blank(text)).toBe(blank(sampleConfigYaml()));

    expect(statSync(regFile).mode & 0o777).toBe(0o600);
    const reg = parse(readFileSync(regFile, "utf8")) as Record<string, unknown>;
    expect(reg.as_token).toBe(filled.appservice.asToken);
    expect(reg.hs_token).toBe(filled.appservice.hsToken);
    expect(reg.url).toBe("http://127.0.0.1:9000");
    expect(reg.sender_localpart).toBe("parley");
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]); // writeAtomic leaves nothing behind

    out.mockClear();
    expect(await main(["--validate", "-c", configFile])).toBe(0);
    expect(printed(out)).toBe(`${configFile}: valid`);
  });

  it("-g a second time keeps the secrets it generated", async () => {
    await main(["-e", "-c", configFile]);
    await main(["-g", "-c", configFile, "-f", regFile]);
    const before = readFileSync(configFile, "utf8");
    out.mockClear();
    expect(await main(["-g", "-c", configFile, "-f", regFile])).toBe(0);
    expect(readFileSync(configFile, "utf8")).toBe(before);
    expect(printed(out)).toContain(`wrote ${regFile}\n`);
  });

  it("-g on a missing config fails without writing a registration", async () => {
    expect(await main(["-g", "-c", configFile, "-f", regFile])).toBe(1);
    expect(printed(err)).toContain(`invalid config ${configFile}:\n  - cannot read:`);
    expect(existsSync(regFile)).toBe(false);
  });

  it("exits 2 on an unknown flag, with the usage", async () => {
    expect(await main(["--frobnicate", "-c", configFile])).toBe(2);
    expect(printed(err)).toContain("usage: parley -c CONFIG");
    expect(existsSync(configFile)).toBe(false);
  });

  it("exits 2 without -c and 0 for --help", async () => {
    expect(await main([])).toBe(2);
    expect(printed(err)).toContain("a config file is required (-c)");
    expect(await main(["--help"])).toBe(0);
    expect(printed(out)).toContain("-g, --generate-registration");
  });

  it("export and erase --user read the config's store: one user's records as JSON, then gone; others stay", async () => {
    await main(["-e", "-c", configFile]);
    await main(["-g", "-c", configFile, "-f", regFile]);
    const store = new SqliteStore(path.join(dir, "parley.db"));
    const row = (actor: string, at: number) => ({ at, action: "call_join", roomId: "!r:example.org", callId: "c", actor, target: null, outcome: null, details: null });
    await store.appendAudit([row("@a:example.org", 1), row("@b:example.org", 2)]);
    await store.close();
    out.mockClear();
    expect(await main(["export", "--user", "@a:example.org", "-c", configFile])).toBe(0);
    const exported = JSON.parse(printed(out)) as { userId: string; attendance: { actor: string }[] };
    expect(exported.userId).toBe("@a:example.org");
    expect(exported.attendance.map((e) => e.actor)).toEqual(["@a:example.org"]);

    out.mockClear();
    expect(await main(["erase", "--user", "@a:example.org", "-c", configFile])).toBe(0);
    expect(printed(out)).toBe("erased @a:example.org: 1 record removed or rewritten");
    out.mockClear();
    await main(["export", "--user", "@a:example.org", "-c", configFile]);
    expect((JSON.parse(printed(out)) as { attendance: unknown[] }).attendance).toEqual([]);
    out.mockClear();
    await main(["export", "--user", "@b:example.org", "-c", configFile]);
    expect((JSON.parse(printed(out)) as { attendance: unknown[] }).attendance).toHaveLength(1);
  });

  it("export and erase refuse a missing or malformed user id, and unknown commands, with exit 2", async () => {
    expect(await main(["export", "-c", configFile])).toBe(2);
    expect(await main(["erase", "--user", "bob", "-c", configFile])).toBe(2);
    expect(printed(err)).toContain("erase needs --user with a Matrix user id (@name:server)");
    expect(await main(["purge", "-c", configFile])).toBe(2);
    expect(printed(err)).toContain("unknown command 'purge'");
  });
});
