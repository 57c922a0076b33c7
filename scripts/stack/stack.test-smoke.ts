// Smoke test for the loopback stack: two federating Synapses and one Janus.
//   source scripts/env.sh && node scripts/stack/stack.test-smoke.ts
// Removes its temp dir on success; keeps it (and prints where) on failure.
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { renderJanusConfig } from "../../appservice/src/sfu/janusConfig.ts";
import { startJanus, type JanusHandle } from "./janus.ts";
import { freePort } from "./ports.ts";
import { killAllManaged } from "./proc.ts";
import { startSynapse, type SynapseHandle } from "./synapse.ts";
import { generateSelfSignedCert } from "./tls.ts";
import { registerUser, type RegisteredUser } from "./users.ts";

const ms = (t0: number): number => Math.round(performance.now() - t0);
const log = (msg: string): void => console.log(`[smoke] ${msg}`);

async function cs(
  hs: SynapseHandle,
  user: RegisteredUser,
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<Record<string, unknown>> {
  const res = await fetch(`${hs.clientUrl}${urlPath}`, {
    method,
    headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json" },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath} on ${hs.serverName}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

function janusRequest(url: string, request: Record<string, unknown>, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, "janus-protocol");
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no Janus answer within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on("open", () => ws.send(JSON.stringify(request)));
    ws.on("message", (data) => {
      const msg = JSON.parse(String(data)) as Record<string, unknown>;
      if (msg["transaction"] !== request["transaction"]) return;
      clearTimeout(timer);
      ws.close();
      resolve(msg);
    });
    ws.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Listening sockets of the given pids, as printed by `ss -ltnup`. */
function listeningSockets(pids: number[]): string[] {
  const out = execFileSync("ss", ["-ltnupH"], { encoding: "utf8" });
  return out.split("\n").filter((line) => pids.some((pid) => line.includes(`pid=${pid},`)));
}

async function main(): Promise<void> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "parley-smoke-"));
  const synapses: SynapseHandle[] = [];
  let janus: JanusHandle | undefined;
  let ok = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    killAllManaged();
    console.error(`[smoke] ${sig}: killed children; logs kept in ${root}`);
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    // --- Two homeservers, started in parallel. ---
    let t0 = performance.now();
    const [hs1, hs2] = await Promise.all(
      (["127.0.0.11", "127.0.0.12"] as const).map(async (ip, i) => {
        const hs = await startSynapse({ ip, dir: path.join(root, `hs${i + 1}`), appserviceRegistrationFiles: [] });
        synapses.push(hs);
        log(`synapse ${hs.serverName} ready in ${hs.startupMs} ms (client ${hs.clientUrl})`);
        return hs;
      }),
    );
    if (!hs1 || !hs2) throw new Error("unreachable");
    log(`both synapses ready in ${ms(t0)} ms`);

    t0 = performance.now();
    const [alice, bob] = await Promise.all([registerUser(hs1, "alice", { admin: true }), registerUser(hs2, "bob")]);
    log(`registered ${alice.userId} and ${bob.userId} in ${ms(t0)} ms`);

    t0 = performance.now();
    const alias = `#smoke:${hs1.serverName}`;
    const created = await cs(hs1, alice, "POST", "/_matrix/client/v3/createRoom", {
      preset: "public_chat",
      room_alias_name: "smoke",
      name: "Smoke",
    });
    const roomId = created["room_id"];
    if (typeof roomId !== "string") throw new Error("createRoom: no room_id");
    log(`alice created ${roomId} (${alias}) in ${ms(t0)} ms`);

    t0 = performance.now();
    const joined = await cs(hs2, bob, "POST", `/_matrix/client/v3/join/${encodeURIComponent(alias)}`, {});
    if (joined["room_id"] !== roomId) throw new Error(`bob joined ${String(joined["room_id"])}, expected ${roomId}`);
    const joinMs = ms(t0);
    log(`bob joined over federation in ${joinMs} ms`);

    // The join must also be visible on the room's origin server.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const members = await cs(hs1, alice, "GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`);
      const joinedUsers = Object.keys((members["joined"] ?? {}) as Record<string, unknown>);
      if (joinedUsers.includes(bob.userId)) break;
      if (Date.now() > deadline) throw new Error(`hs1 does not see bob in ${roomId}: ${joinedUsers.join(", ")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    log(`hs1 sees bob as a member after ${ms(t0)} ms`);

    // --- One Janus. ---
    t0 = performance.now();
    const janusDir = path.join(root, "janus");
    const cert = await generateSelfSignedCert({ dir: janusDir, ip: "127.0.0.1", name: "dtls" });
    const wsPort = await freePort("127.0.0.1");
    const adminWsPort = await freePort("127.0.0.1");
    const apiSecret = crypto.randomBytes(16).toString("hex");
    const rtpBase = 40000 + crypto.randomInt(0, 200) * 100;
    const wsUrl = `ws://127.0.0.1:${wsPort}`;
    janus = await startJanus({
      dir: janusDir,
      wsUrl,
      configFiles: renderJanusConfig({
        wsPort,
        adminWsPort,
        apiSecret,
        adminSecret: crypto.randomBytes(16).toString("hex"),
        videoroomAdminKey: crypto.randomBytes(16).toString("hex"),
        rtpPortRange: [rtpBase, rtpBase + 99],
        certPem: cert.certPath,
        certKey: cert.keyPath,
        reclaimSessionTimeoutS: 15,
      }),
    });
    log(`janus ready in ${janus.startupMs} ms (${ms(t0)} ms with certificate and config)`);

    const info = await janusRequest(wsUrl, { janus: "info", transaction: "x", apisecret: apiSecret });
    const plugins = Object.keys((info["plugins"] ?? {}) as Record<string, unknown>);
    const transports = Object.keys((info["transports"] ?? {}) as Record<string, unknown>);
    log(`janus info: ${String(info["janus"])}, version ${String(info["version_string"])}, plugins [${plugins.join(", ")}], transports [${transports.join(", ")}]`);
    if (info["janus"] !== "server_info" || !plugins.includes("janus.plugin.videoroom")) {
      throw new Error(`unexpected Janus info answer: ${JSON.stringify(info)}`);
    }
    if (plugins.length !== 1 || transports.length !== 1) throw new Error("janus loaded more than videoroom + websockets");
    // "info" is public; session creation must need the API secret.
    const denied = await janusRequest(wsUrl, { janus: "create", transaction: "y", apisecret: "wrong" });
    if (denied["janus"] !== "error") throw new Error(`janus accepted a wrong api secret: ${JSON.stringify(denied)}`);
    const created2 = await janusRequest(wsUrl, { janus: "create", transaction: "z", apisecret: apiSecret });
    if (created2["janus"] !== "success") throw new Error(`janus refused the api secret: ${JSON.stringify(created2)}`);
    log(`janus: create with a wrong api secret -> ${JSON.stringify(denied["error"])}, with the right one -> success`);

    // --- Nothing listens beyond loopback. ---
    const pids = [...synapses.map((s) => s.process.pid), janus.process.pid];
    const sockets = listeningSockets(pids);
    console.log(`[smoke] ss -ltnup (our processes):\n${sockets.join("\n")}`);
    const wide = sockets.filter((l) => !/\s127\.\d+\.\d+\.\d+:\d+\s/.test(l));
    if (wide.length > 0) throw new Error(`listening beyond 127.0.0.0/8:\n${wide.join("\n")}`);
    if (sockets.length !== 6) throw new Error(`expected 6 listening sockets, found ${sockets.length}`);

    ok = true;
  } finally {
    const t0 = performance.now();
    await Promise.all([janus?.stop(), ...synapses.map((s) => s.stop())]);
    log(`stopped everything in ${ms(t0)} ms`);
    if (ok) {
      await fs.rm(root, { recursive: true, force: true });
      log("PASS");
    } else {
      console.error(`[smoke] FAILED; logs and data kept in ${root}`);
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
