// One real Janus 1.1.2 started with Parley's generated config (renderJanusConfig), the way
// scripts/stack/institutions.ts starts it, checked against what ARCHITECTURE.md promises for
// Janus: API on loopback only, api_secret / admin_secret / VideoRoom admin_key enforced, only the
// VideoRoom plugin (and only the WebSockets transport), a fixed DTLS certificate, a bounded
// rtp_port_range and a non-zero reclaim_session_timeout.
// The temp dir (config, janus.log) is removed on success and kept (path printed) on failure.
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startGeneratedJanus, type GeneratedJanus } from "../../scripts/stack/janus.ts";
import type { CertPaths } from "../../scripts/stack/tls.ts";

type Json = Record<string, unknown>;

/** One WebSocket to Janus; request() resolves with the first non-"ack" answer to its transaction. */
class JanusSocket {
  private readonly pending = new Map<string, (msg: Json) => void>();
  private readonly ws: WebSocket;
  private next = 0;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data) => {
      const msg = JSON.parse(String(data)) as Json;
      const tx = msg["transaction"];
      if (typeof tx !== "string" || msg["janus"] === "ack") return;
      const resolve = this.pending.get(tx);
      if (!resolve) return;
      this.pending.delete(tx);
      resolve(msg);
    });
  }

  static open(url: string, protocol: string): Promise<JanusSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocol);
      ws.once("open", () => resolve(new JanusSocket(ws)));
      ws.once("error", reject);
    });
  }

  request(body: Json, timeoutMs = 5000): Promise<Json> {
    const transaction = `t${this.next++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(transaction);
        reject(new Error(`no Janus answer to ${JSON.stringify(body)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(transaction, (msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
      this.ws.send(JSON.stringify({ ...body, transaction }));
    });
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once("close", () => resolve());
      this.ws.close();
    });
  }
}

interface Socket {
  proto: "tcp" | "udp";
  state: string;
  /** Local address without brackets or %scope, e.g. "127.0.0.1", "::", "*". */
  host: string;
  port: number;
  line: string;
}

/** Sockets of `pid` as `ss -H -n -p <flags>` reports them (flags select tcp/udp, listening/all). */
function socketsOf(pid: number, proto: "tcp" | "udp", flags: string): Socket[] {
  const out = execFileSync("ss", ["-H", "-n", "-p", proto === "tcp" ? "-t" : "-u", flags], { encoding: "utf8" });
  return out
    .split("\n")
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => {
      // State Recv-Q Send-Q Local:Port Peer:Port Process (no Netid column: one protocol per call)
      const [state = "", , , local = ""] = line.trim().split(/\s+/);
      const colon = local.lastIndexOf(":");
      // "127.0.0.1:80", "*:80", "[::]:80", "[fe80::1]%eth0:80"
      const host = local.slice(0, colon).replace(/%.*$/, "").replace(/^\[|\]$/g, "");
      return { proto, state, host, port: Number(local.slice(colon + 1)), line: line.trim() };
    });
}

/** plugindata.data of a VideoRoom answer (holds error_code/error when the request failed). */
function videoroomData(msg: Json): Json {
  const pd = msg["plugindata"] as { plugin?: string; data?: Json } | undefined;
  expect(pd?.plugin, JSON.stringify(msg)).toBe("janus.plugin.videoroom");
  return pd!.data!;
}


let root: string;
let janusDir: string;
let janus: GeneratedJanus | undefined;
let cert: CertPaths;
let wsPort: number, adminWsPort: number;
let apiSecret: string, adminSecret: string, videoroomAdminKey: string;
const rtpPortRange: [number, number] = [20000, 20999]; // institutions.ts, institution 0
let api: JanusSocket | undefined;
let failed = false;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "parley-janus-test-"));
  try {
    // Exactly as scripts/stack/institutions.ts starts an institution's Janus.
    janusDir = path.join(root, "janus");
    janus = await startGeneratedJanus({ dir: janusDir, rtpPortRange });
    ({ apiSecret, adminSecret, videoroomAdminKey, cert } = janus);
    [wsPort, adminWsPort] = [Number(new URL(janus.wsUrl).port), Number(new URL(janus.adminWsUrl).port)];
    api = await JanusSocket.open(`ws://127.0.0.1:${wsPort}`, "janus-protocol");
  } catch (err) {
    failed = true;
    throw err;
  }
});

afterEach(({ task }) => {
  if (task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await api?.close();
  await janus?.stop();
  if (failed) console.error(`janus test failed: config and janus.log kept in ${root}`);
  else if (root) await fs.rm(root, { recursive: true, force: true });
});

describe("Janus started with Parley's generated config", () => {
  it("loads only the VideoRoom plugin and the WebSockets transport", async () => {
    const info = await api!.request({ janus: "info" });
    expect(info["janus"]).toBe("server_info");
    expect(info["version_string"]).toBe("1.1.2");
    expect(Object.keys(info["plugins"] as Json)).toEqual(["janus.plugin.videoroom"]);
    expect(Object.keys(info["transports"] as Json)).toEqual(["janus.transport.websockets"]);
    expect(info["events"]).toEqual({});
    expect(info["loggers"]).toEqual({});
    expect(info["api_secret"]).toBe(true);
    expect(info["reclaim-session-timeout"]).toBe(30);
    // The log agrees: one plugin and one transport were even attempted.
    const log = await fs.readFile(janus!.logFile, "utf8");
    expect(log.match(/Loading plugin '[^']+'/g)).toEqual(["Loading plugin 'libjanus_videoroom.so'"]);
    expect(log.match(/Loading transport plugin '[^']+'/g)).toEqual(["Loading transport plugin 'libjanus_websockets.so'"]);
  });

  it("needs the api_secret for sessions and the admin_key for rooms (string ids)", async () => {
    const refused = [
      await api!.request({ janus: "create" }),
      await api!.request({ janus: "create", apisecret: "wrong" }),
      await api!.request({ janus: "create", apisecret: apiSecret.toUpperCase() }),
    ];
    for (const r of refused) {
      expect(r["janus"], JSON.stringify(r)).toBe("error");
      expect((r["error"] as Json)["code"]).toBe(403);
    }

    const created = await api!.request({ janus: "create", apisecret: apiSecret });
    expect(created["janus"], JSON.stringify(created)).toBe("success");
    const session_id = (created["data"] as Json)["id"] as number;

    const unauthAttach = await api!.request({ janus: "attach", session_id, plugin: "janus.plugin.videoroom" });
    expect((unauthAttach["error"] as Json | undefined)?.["code"], JSON.stringify(unauthAttach)).toBe(403);
    const attached = await api!.request({ janus: "attach", session_id, plugin: "janus.plugin.videoroom", apisecret: apiSecret });
    expect(attached["janus"], JSON.stringify(attached)).toBe("success");
    const handle_id = (attached["data"] as Json)["id"] as number;
    const vr = async (body: Json) =>
      videoroomData(await api!.request({ janus: "message", session_id, handle_id, apisecret: apiSecret, body }));

    expect(await vr({ request: "create", room: "x", description: "t" })).toMatchObject({
      error_code: 429,
      error: "Missing mandatory element (admin_key)",
    });
    expect(await vr({ request: "create", room: "x", admin_key: "wrong" })).toMatchObject({ error_code: 433 });
    expect(await vr({ request: "exists", room: "x" })).toMatchObject({ exists: false });

    expect(await vr({ request: "create", room: "x", admin_key: videoroomAdminKey })).toEqual({
      videoroom: "created",
      room: "x",
      permanent: false,
    });
    // string_ids = true: numeric room ids are refused.
    expect(await vr({ request: "create", room: 5, admin_key: videoroomAdminKey })).toMatchObject({ error_code: 430 });
    expect(await vr({ request: "exists", room: "x" })).toMatchObject({ exists: true });
    expect(await vr({ request: "destroy", room: "x" })).toMatchObject({ videoroom: "destroyed", room: "x" });
    expect(await vr({ request: "exists", room: "x" })).toMatchObject({ exists: false });

    const destroyed = await api!.request({ janus: "destroy", session_id, apisecret: apiSecret });
    expect(destroyed["janus"], JSON.stringify(destroyed)).toBe("success");
  });

  it("listens on 127.0.0.1 only: the API and Admin API ports, nothing else", async () => {
    const pid = janus!.process.pid;
    const tcp = socketsOf(pid, "tcp", "-l");
    expect(tcp.map((s) => `${s.host}:${s.port}`).sort()).toEqual(
      [`127.0.0.1:${wsPort}`, `127.0.0.1:${adminWsPort}`].sort(),
    );
    for (const s of tcp) expect(s.host, s.line).toBe("127.0.0.1");
    // No UDP socket at all while no PeerConnection exists.
    expect(socketsOf(pid, "udp", "-a").map((s) => s.line)).toEqual([]);
  });

  it("wrote reclaim_session_timeout, rtp_port_range, the DTLS certificate and the secrets into its config", async () => {
    const jcfg = await fs.readFile(path.join(janusDir, "config", "janus.jcfg"), "utf8");
    expect(jcfg).toMatch(/^\s*reclaim_session_timeout = 30$/m);
    expect(jcfg).toMatch(/^\s*rtp_port_range = "20000-20999"$/m);
    expect(jcfg).toContain(`cert_pem = "${cert.certPath}"`);
    expect(jcfg).toContain(`cert_key = "${cert.keyPath}"`);
    expect(jcfg).toContain(`admin_secret = "${adminSecret}"`);
    expect(jcfg).toContain(`api_secret = "${apiSecret}"`);
    // Inside scripts/isolated.sh, ICE is pinned to the namespace's media interface.
    const iface = process.env.PARLEY_MEDIA_IFACE;
    if (iface) expect(jcfg).toMatch(new RegExp(`^\\s*ice_enforce_list = "${iface}"$`, "m"));
    else expect(jcfg).not.toMatch(/ice_enforce_list/);
    expect(jcfg).toMatch(/^\s*disable = ".*libjanus_echotest\.so.*"$/m);
    const vrcfg = await fs.readFile(path.join(janusDir, "config", "janus.plugin.videoroom.jcfg"), "utf8");
    expect(vrcfg).toContain(`admin_key = "${videoroomAdminKey}"`);
  });

  it("Admin API: refuses requests without the admin_secret, answers get_status with it", async () => {
    const admin = await JanusSocket.open(`ws://127.0.0.1:${adminWsPort}`, "janus-admin-protocol");
    try {
      for (const body of [{ janus: "get_status" }, { janus: "get_status", admin_secret: "wrong" }, { janus: "get_status", admin_secret: apiSecret }]) {
        const r = await admin.request(body);
        expect(r["janus"], JSON.stringify(r)).toBe("error");
        expect((r["error"] as Json)["code"]).toBe(403);
      }
      const status = await admin.request({ janus: "get_status", admin_secret: adminSecret });
      expect(status["janus"], JSON.stringify(status)).toBe("success");
      expect(status["status"]).toMatchObject({ reclaim_session_timeout: 30, session_timeout: 60, token_auth: false });
    } finally {
      await admin.close();
    }
  });
});
