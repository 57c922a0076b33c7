import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { janusFiles, writeJanusFiles } from "../../../appservice/src/ops/janusFiles.ts";
import { testConfig } from "./fixtures.ts";

describe("parley janus-config", () => {
  it("writes the node's secrets and port into Parley's Janus config, API on loopback", () => {
    const config = testConfig();
    const node = config.sfu.nodes[0]!;
    const files = janusFiles(config, { rtpPortRange: [30000, 30099] });
    expect(Object.keys(files).sort()).toEqual(["janus.jcfg", "janus.plugin.videoroom.jcfg", "janus.transport.websockets.jcfg"]);
    expect(files["janus.jcfg"]).toContain(`api_secret = "${node.apiSecret}"`);
    expect(files["janus.jcfg"]).toContain('rtp_port_range = "30000-30099"');
    expect(files["janus.jcfg"]).not.toContain("certificates:"); // none given: Janus makes its own
    expect(files["janus.plugin.videoroom.jcfg"]).toContain(`admin_key = "${node.adminKey}"`);
    expect(files["janus.transport.websockets.jcfg"]).toMatch(/ws_port = 8188\n\tws_ip = "127.0.0.1"/);
    expect(files["janus.transport.websockets.jcfg"]).toMatch(/admin_ws_port = 7188\n\tadmin_ws_ip = "127.0.0.1"/);
    // The Admin API's secret is fresh each time and is none of the node's.
    expect(janusFiles(config, {})["janus.jcfg"]).not.toBe(janusFiles(config, {})["janus.jcfg"]);
  });

  it("refuses a node Janus's generated config cannot serve, and an unknown or ambiguous node", () => {
    const remote = testConfig({ sfu: { nodes: [{ id: "far", url: "ws://10.0.0.5:8188", apiSecret: "c".repeat(40), adminKey: "d".repeat(40) }] } });
    expect(() => janusFiles(remote, {})).toThrow("serves the API on ws://127.0.0.1 only");
    expect(() => janusFiles(testConfig(), { node: "nope" })).toThrow("no sfu.nodes entry with id 'nope'");
    const two = testConfig({ sfu: { nodes: [
      { id: "a", url: "ws://127.0.0.1:8188", apiSecret: "c".repeat(40), adminKey: "d".repeat(40) },
      { id: "b", url: "ws://127.0.0.1:8189", apiSecret: "e".repeat(40), adminKey: "f".repeat(40) },
    ] } });
    expect(() => janusFiles(two, {})).toThrow("several sfu.nodes: name one with --node (a, b)");
    expect(janusFiles(two, { node: "b" })["janus.transport.websockets.jcfg"]).toContain("ws_port = 8189");
  });

  it("writes the files 0600 and does not overwrite them without force", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "parley-janus-files-"));
    try {
      const files = janusFiles(testConfig(), {});
      writeJanusFiles(dir, files);
      expect(readdirSync(dir).sort()).toEqual(Object.keys(files).sort());
      expect(statSync(path.join(dir, "janus.jcfg")).mode & 0o777).toBe(0o600);
      expect(() => writeJanusFiles(dir, janusFiles(testConfig(), {}))).toThrow("pass --force");
      expect(readFileSync(path.join(dir, "janus.jcfg"), "utf8")).toBe(files["janus.jcfg"]);
      writeJanusFiles(dir, janusFiles(testConfig(), {}), true);
      expect(readFileSync(path.join(dir, "janus.jcfg"), "utf8")).not.toBe(files["janus.jcfg"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
