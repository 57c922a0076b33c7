// The committed config/ folder is what `parley --samples` writes, and its files hold up.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parse } from "yaml";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../../appservice/src/app/main.ts";
import { parseConfig } from "../../../appservice/src/config/load.ts";
import { configSchema } from "../../../appservice/src/config/schema.ts";

const CONFIG_DIR = path.join(import.meta.dirname, "../../../config");

/** Relative path -> text of every file under `dir`. */
function filesUnder(dir: string): Record<string, string> {
  const names = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  return Object.fromEntries(
    names.map((e) => {
      const full = path.join(e.parentPath, e.name);
      return [path.relative(dir, full), readFileSync(full, "utf8")];
    }),
  );
}

let out: string;
beforeEach(() => {
  out = mkdtempSync(path.join(tmpdir(), "parley-samples-"));
});
afterEach(() => rmSync(out, { recursive: true, force: true }));

describe("config/ (the sample files)", () => {
  it("is exactly what `parley --samples` generates (run `npm run config:samples` after a schema change)", async () => {
    expect(await main(["--samples", out])).toBe(0);
    const generated = filesUnder(out);
    expect(Object.keys(generated).sort()).toEqual([
      "coturn/turnserver.conf",
      "janus/janus.jcfg",
      "janus/janus.plugin.videoroom.jcfg",
      "janus/janus.transport.websockets.jcfg",
      "parley.sample.yaml",
      "registration.sample.yaml",
    ]);
    expect(filesUnder(CONFIG_DIR)).toEqual(generated);
  });

  it("the sample config parses against the schema, and passes once its secrets are generated", () => {
    const raw = parse(readFileSync(path.join(CONFIG_DIR, "parley.sample.yaml"), "utf8")) as Record<string, unknown>;
    expect(configSchema.safeParse(raw).success).toBe(true);
    const filled = JSON.parse(JSON.stringify(raw).replaceAll('"generate"', () => `"${"s".repeat(31)}${Math.random().toString(36).slice(2)}"`)) as unknown;
    const config = parseConfig(filled, "parley.sample.yaml");
    expect(config.metrics).toEqual({ enabled: true, bindAddress: "127.0.0.1", port: 9001 });
  });

  it("the sample registration names the sample's namespaces and no real secret", () => {
    const reg = parse(readFileSync(path.join(CONFIG_DIR, "registration.sample.yaml"), "utf8")) as Record<string, unknown>;
    expect(reg).toMatchObject({ id: "parley", url: "http://127.0.0.1:9000", sender_localpart: "parley", rate_limited: false });
    expect(String(reg.as_token)).toMatch(/^<.*>$/);
    expect(String(reg.hs_token)).toMatch(/^<.*>$/);
  });

  it("the Janus template keeps its API on loopback and its secrets as placeholders", () => {
    const ws = readFileSync(path.join(CONFIG_DIR, "janus/janus.transport.websockets.jcfg"), "utf8");
    expect(ws).toMatch(/ws_ip = "127\.0\.0\.1"/);
    const core = readFileSync(path.join(CONFIG_DIR, "janus/janus.jcfg"), "utf8");
    expect(core).toContain('api_secret = "<sfu.nodes[].apiSecret of this node in parley.yaml>"');
  });
});
