import { describe, expect, it } from "vitest";
import { renderJanusConfig, type JanusConfigInput } from "../../../appservice/src/sfu/janusConfig.ts";

const base: JanusConfigInput = {
  wsPort: 8188,
  adminWsPort: 7188,
  apiSecret: "a".repeat(64),
  adminSecret: "b".repeat(64),
  videoroomAdminKey: "c".repeat(64),
  rtpPortRange: [20000, 20999],
  certPem: "/var/lib/parley/janus/dtls.crt",
  certKey: "/var/lib/parley/janus/dtls.key",
  reclaimSessionTimeoutS: 30,
};

const render = (o: Partial<JanusConfigInput> = {}) => renderJanusConfig({ ...base, ...o });

/** The settings (`key = value` lines) of one `section: { ... }` of a rendered libconfig file. */
function section(text: string, name: string): Map<string, string> {
  const m = new RegExp(`^${name}: \\{\\n([\\s\\S]*?)^\\}`, "m").exec(text);
  if (!m) throw new Error(`no section ${name}`);
  const out = new Map<string, string>();
  for (const line of m[1]!.split("\n")) {
    const kv = /^\s*([a-z_]+) = (.*)$/.exec(line);
    if (!kv) continue;
    expect(out.has(kv[1]!), `${name}.${kv[1]} set twice`).toBe(false);
    out.set(kv[1]!, kv[2]!);
  }
  return out;
}

/** Decodes a libconfig string literal (the only escapes the renderer emits are \\ and \"). */
function str(literal: string | undefined): string {
  const m = /^"((?:[^"\\]|\\.)*)"$/.exec(literal ?? "");
  if (!m) throw new Error(`not one string literal: ${literal}`);
  return m[1]!.replace(/\\(.)/g, "$1");
}

describe("renderJanusConfig", () => {
  it("writes exactly the core, WebSockets transport and VideoRoom plugin configs", () => {
    expect(Object.keys(render()).sort()).toEqual([
      "janus.jcfg",
      "janus.plugin.videoroom.jcfg",
      "janus.transport.websockets.jcfg",
    ]);
  });

  it("janus.jcfg: secrets, session timeouts, DTLS certificate, RTP range", () => {
    const jcfg = render()["janus.jcfg"]!;
    const general = section(jcfg, "general");
    expect(str(general.get("api_secret"))).toBe(base.apiSecret);
    expect(str(general.get("admin_secret"))).toBe(base.adminSecret);
    expect(general.get("reclaim_session_timeout")).toBe("30");
    expect(general.get("session_timeout")).toBe("60");
    expect(str(general.get("server_name"))).toBe("parley-janus");
    // Folders are left to the launcher (scripts/stack/janus.ts isolates them).
    expect(general.has("plugins_folder")).toBe(false);

    const certificates = section(jcfg, "certificates");
    expect(str(certificates.get("cert_pem"))).toBe(base.certPem);
    expect(str(certificates.get("cert_key"))).toBe(base.certKey);
    expect(certificates.has("cert_pwd")).toBe(false);

    expect(str(section(jcfg, "media").get("rtp_port_range"))).toBe("20000-20999");

    const nat = section(jcfg, "nat");
    expect(nat.get("ice_lite")).toBe("false");
    expect(nat.has("ice_enforce_list")).toBe(false);
    expect(section(jcfg, "events").get("broadcast")).toBe("false");
    const disabledPlugins = str(section(jcfg, "plugins").get("disable")).split(",");
    expect(disabledPlugins).toContain("libjanus_echotest.so");
    expect(disabledPlugins).toContain("libjanus_streaming.so");
    expect(disabledPlugins).not.toContain("libjanus_videoroom.so");
    const disabledTransports = str(section(jcfg, "transports").get("disable")).split(",");
    expect(disabledTransports).toContain("libjanus_http.so");
    expect(disabledTransports).not.toContain("libjanus_websockets.so");
    expect(str(section(jcfg, "loggers").get("disable"))).toBe("libjanus_jsonlog.so");
  });

  it("janus.jcfg: optional settings", () => {
    const jcfg = render({ sessionTimeoutS: 120, reclaimSessionTimeoutS: 5, serverName: "janus-a", iceEnforceList: "lo", localIp: "192.0.2.20" })[
      "janus.jcfg"
    ]!;
    const general = section(jcfg, "general");
    expect(general.get("session_timeout")).toBe("120");
    expect(general.get("reclaim_session_timeout")).toBe("5");
    expect(str(general.get("server_name"))).toBe("janus-a");
    expect(str(section(jcfg, "nat").get("ice_enforce_list"))).toBe("lo");
    // Set, Janus does not look for its address by addressing 1.2.3.4; unset, the key is absent.
    expect(str(general.get("interface"))).toBe("192.0.2.20");
    expect(section(render({})["janus.jcfg"]!, "general").has("interface")).toBe(false);
  });

  it("WebSockets transport: Janus API and Admin API as plain ws on 127.0.0.1 only", () => {
    const ws = render()["janus.transport.websockets.jcfg"]!;
    expect(Object.fromEntries(section(ws, "general"))).toEqual({
      json: '"compact"',
      events: "false",
      ws: "true",
      ws_port: "8188",
      ws_ip: '"127.0.0.1"',
      ws_interface: '"lo"',
      wss: "false",
    });
    expect(Object.fromEntries(section(ws, "admin"))).toEqual({
      admin_ws: "true",
      admin_ws_port: "7188",
      admin_ws_ip: '"127.0.0.1"',
      admin_ws_interface: '"lo"',
      admin_wss: "false",
    });
  });

  it("VideoRoom: admin_key, string room ids, locked RTP forwarding, no preconfigured rooms", () => {
    const vr = render()["janus.plugin.videoroom.jcfg"]!;
    expect(Object.fromEntries(section(vr, "general"))).toEqual({
      admin_key: `"${base.videoroomAdminKey}"`,
      lock_rtp_forward: "true",
      string_ids: "true",
      events: "false",
    });
    expect(vr.replace(/^general: \{[\s\S]*?^\}\n/m, "").replace(/^#.*\n/gm, "").trim()).toBe("");
  });

  it("quotes secrets and paths so they stay one string value", () => {
    const nasty = 'x" ; debug_level = 7 ; y = "\\';
    const files = render({ apiSecret: nasty, adminSecret: `${nasty}2`, videoroomAdminKey: `${nasty}3`, certPem: "/tmp/a \"b\"\\c.crt" });
    const general = section(files["janus.jcfg"]!, "general");
    expect(general.get("api_secret")).toBe('"x\\" ; debug_level = 7 ; y = \\"\\\\"');
    expect(str(general.get("api_secret"))).toBe(nasty);
    expect(str(general.get("admin_secret"))).toBe(`${nasty}2`);
    expect(general.get("debug_level")).toBe("4");
    expect(str(section(files["janus.jcfg"]!, "certificates").get("cert_pem"))).toBe('/tmp/a "b"\\c.crt');
    expect(str(section(files["janus.plugin.videoroom.jcfg"]!, "general").get("admin_key"))).toBe(`${nasty}3`);
  });

  it("rejects control characters in string values (no line injection)", () => {
    expect(() => render({ apiSecret: "a\nadmin_secret = \"x\"" })).toThrow(/control characters/);
    expect(() => render({ adminSecret: "a\tb" })).toThrow(/control characters/);
    expect(() => render({ videoroomAdminKey: "a\rb" })).toThrow(/control characters/);
    expect(() => render({ certKey: "/tmp/\u0000" })).toThrow(/control characters/);
    expect(() => render({ iceEnforceList: "lo\n" })).toThrow(/control characters/);
  });

  it.each<[number, number]>([
    [21000, 20000],
    [0, 100],
    [20000, 65536],
    [-1, 10],
    [20000.5, 20999],
    [Number.NaN, 20999],
    [20000, Number.POSITIVE_INFINITY],
  ])("rejects rtpPortRange [%s, %s]", (lo, hi) => {
    expect(() => render({ rtpPortRange: [lo, hi] })).toThrow(/rtpPortRange/);
  });

  it("accepts a one-port RTP range and the port bounds", () => {
    expect(render({ rtpPortRange: [40000, 40000] })["janus.jcfg"]).toContain('rtp_port_range = "40000-40000"');
    expect(render({ rtpPortRange: [1, 65535] })["janus.jcfg"]).toContain('rtp_port_range = "1-65535"');
  });

  it("rejects bad ports and timeouts", () => {
    expect(() => render({ wsPort: 0 })).toThrow(/wsPort/);
    expect(() => render({ adminWsPort: 70000 })).toThrow(/adminWsPort/);
    expect(() => render({ reclaimSessionTimeoutS: -1 })).toThrow(/reclaimSessionTimeoutS/);
    expect(() => render({ reclaimSessionTimeoutS: 0 })).toThrow(/reclaimSessionTimeoutS must be a positive integer/);
    expect(() => render({ reclaimSessionTimeoutS: 1.5 })).toThrow(/reclaimSessionTimeoutS/);
    expect(() => render({ sessionTimeoutS: Number.NaN })).toThrow(/sessionTimeoutS/);
  });
});
