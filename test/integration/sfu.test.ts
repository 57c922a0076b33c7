// The sfu/ door against real Janus 1.1.2 processes started with Parley's generated config:
// rooms with require_e2ee, participants joined without SDP (an offer would make Janus bind
// media sockets on non-loopback addresses), kick, two-node placement, a socket drop that is
// healed by claiming the sessions, and a Janus restart on the same ports that the pool reports.
// The temp dir (configs, janus.log files) is removed on success and kept (path printed) on failure.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { renderJanusConfig } from "../../appservice/src/sfu/janusConfig.ts";
import { createSfu, type Sfu, type SfuNodeConfig, type VideoRoomNotification } from "../../appservice/src/sfu/index.ts";
import { VideoRoomError } from "../../appservice/src/sfu/errors.ts";
import { JanusSession } from "../../appservice/src/sfu/session.ts";
import { JanusTransport } from "../../appservice/src/sfu/transport.ts";
import { VIDEOROOM_PLUGIN } from "../../appservice/src/sfu/videoroom.ts";
import { startGeneratedJanus, startJanus, type GeneratedJanus, type JanusHandle } from "../../scripts/stack/janus.ts";
import { freePort } from "../../scripts/stack/ports.ts";
import { generateSelfSignedCert } from "../../scripts/stack/tls.ts";

let root: string;
let failed = false;
let janusA: GeneratedJanus;
let janusB: GeneratedJanus;
const running: { stop(): Promise<void> }[] = [];
const sfus: Sfu[] = [];
const fast = { reconnectMinMs: 50, reconnectMaxMs: 500, requestTimeoutMs: 5000 };

const nodeOf = (id: string, j: GeneratedJanus): SfuNodeConfig => ({ id, url: j.wsUrl, apiSecret: j.apiSecret, adminKey: j.videoroomAdminKey });

async function sfuOf(...nodes: SfuNodeConfig[]): Promise<Sfu> {
  const sfu = await createSfu({ nodes }, fast);
  sfus.push(sfu);
  return sfu;
}

/** An independent look into a Janus: a session of its own, and the Admin API. */
async function inspect(j: GeneratedJanus) {
  const transport = await JanusTransport.connect({ url: j.wsUrl, apiSecret: j.apiSecret });
  const session = await JanusSession.create(transport);
  const handle = await session.attach(VIDEOROOM_PLUGIN);
  const admin = await JanusTransport.connect({ url: j.adminWsUrl, apiSecret: "", protocol: "janus-admin-protocol" });
  return {
    async room(id: string): Promise<Record<string, unknown> | undefined> {
      const { data } = await handle.message({ request: "list", admin_key: j.videoroomAdminKey });
      return (data["list"] as Record<string, unknown>[]).find((r) => r["room"] === id);
    },
    async sessions(): Promise<number[]> {
      const reply = await admin.request({ janus: "list_sessions", admin_secret: j.adminSecret });
      return (reply["sessions"] as number[]).filter((s) => s !== session.id);
    },
    async close() {
      await session.destroy();
      await transport.close();
      await admin.close();
    },
  };
}

/** Janus with Parley's config on fixed ports and secrets, so that it can be started again "the same". */
async function fixedJanus(dir: string, ports: { ws: number; admin: number }, secrets: { api: string; admin: string; key: string }): Promise<JanusHandle> {
  const cert = await generateSelfSignedCert({ dir, ip: "127.0.0.1", name: "dtls" });
  return startJanus({
    dir,
    wsUrl: `ws://127.0.0.1:${ports.ws}`,
    configFiles: renderJanusConfig({
      wsPort: ports.ws, adminWsPort: ports.admin, apiSecret: secrets.api, adminSecret: secrets.admin,
      videoroomAdminKey: secrets.key, rtpPortRange: [22200, 22299], certPem: cert.certPath, certKey: cert.keyPath,
      reclaimSessionTimeoutS: 30,
    }),
  });
}

/** A TCP relay whose connections the test can cut, as a network failure would. */
async function relay(target: number): Promise<{ port: number; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const cut = () => sockets.forEach((s) => s.destroy());
  return {
    port: (server.address() as net.AddressInfo).port,
    cut,
    close: () => new Promise((resolve) => { cut(); server.close(() => resolve()); }),
  };
}

function nextNotification(subscribe: (fn: (n: VideoRoomNotification) => void) => () => void): Promise<VideoRoomNotification> {
  return new Promise((resolve) => {
    const off = subscribe((n) => { off(); resolve(n); });
  });
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), "parley-sfu-test-"));
  try {
    [janusA, janusB] = await Promise.all([
      startGeneratedJanus({ dir: path.join(root, "a"), rtpPortRange: [22000, 22099] }),
      startGeneratedJanus({ dir: path.join(root, "b"), rtpPortRange: [22100, 22199] }),
    ]);
    running.push(janusA, janusB);
  } catch (err) {
    failed = true;
    throw err;
  }
});

afterEach(async ({ task }) => {
  if (task.result?.state === "fail") failed = true;
  for (const sfu of sfus.splice(0)) await sfu.stop();
});

afterAll(async () => {
  for (const r of running.reverse()) await r.stop();
  if (failed) console.error(`sfu test failed: configs and janus.log kept in ${root}`);
  else if (root) await fs.rm(root, { recursive: true, force: true });
});

describe("sfu/ against a real Janus 1.1.2", () => {
  it("creates a private room that requires e2ee, and destroys it (idempotently)", async () => {
    const sfu = await sfuOf(nodeOf("a", janusA));
    const look = await inspect(janusA);
    try {
      const ref = await sfu.createRoom("call-1", { publishers: 4 });
      expect(ref.node).toBe("a");
      expect(await look.room(ref.roomId)).toMatchObject({ require_e2ee: true, is_private: true, max_publishers: 4 });
      expect(sfu.health()).toEqual([{ id: "a", state: "up", rooms: 1, participants: 0, handles: 0, warm: 0 }]);
      await sfu.destroyRoom(ref);
      await sfu.destroyRoom(ref);
      expect(await look.room(ref.roomId)).toBeUndefined();
      await expect(sfu.kick(ref, "x")).rejects.toMatchObject({ kind: "NO_SUCH_ROOM", code: 426 });
    } finally {
      await look.close();
    }
  });

  it("joins a publisher without SDP, lists and kicks it; typed errors for bad joins", async () => {
    const sfu = await sfuOf(nodeOf("a", janusA));
    const ref = await sfu.createRoom("call-2");
    const alice = await sfu.openParticipant(ref, "alice");
    const { publisher, joined } = await alice.joinAsPublisher("Alice");
    expect(joined).toMatchObject({ id: "alice", publishers: [] });
    expect(typeof joined.privateId).toBe("number");
    expect(await sfu.listParticipants(ref)).toEqual([{ id: "alice", display: "Alice", publisher: false }]);
    expect(sfu.health()[0]).toMatchObject({ rooms: 1, participants: 1, handles: 1 });

    const bob = await sfu.openParticipant(ref, "alice");
    await expect(bob.joinAsPublisher("Impostor")).rejects.toMatchObject({ kind: "ID_EXISTS" });
    // A feed that does not publish: refused before Janus would make an offer.
    await expect(bob.joinAsSubscriber([{ feed: "alice" }], joined.privateId)).rejects.toMatchObject({ kind: "NO_SUCH_FEED" });
    await expect(publisher.unpublish()).rejects.toMatchObject({ kind: "NOT_PUBLISHED" });
    await bob.close();

    const kicked = nextNotification((fn) => publisher.onNotification(fn));
    await sfu.kick(ref, "alice");
    expect(await kicked).toMatchObject({ leaving: "ok", reason: "kicked" });
    expect(await sfu.listParticipants(ref)).toEqual([]);
    await alice.close();
    expect(sfu.health()[0]).toMatchObject({ participants: 0, handles: 0 });
  });

  it("places rooms on the least loaded of two nodes", async () => {
    const sfu = await sfuOf(nodeOf("a", janusA), nodeOf("b", janusB));
    const r1 = await sfu.createRoom("c1");
    const r2 = await sfu.createRoom("c2");
    expect([r1.node, r2.node]).toEqual(["a", "b"]);
    const p = await sfu.openParticipant(r2, "p");
    await p.joinAsPublisher("P");
    const r3 = await sfu.createRoom("c3");
    expect(r3.node).toBe("a"); // a: 1 room; b: 1 room + 1 participant
    expect((await sfu.createRoom("c4")).node).toBe("b");
    expect(sfu.health()).toEqual([
      { id: "a", state: "up", rooms: 2, participants: 0, handles: 0, warm: 0 },
      { id: "b", state: "up", rooms: 2, participants: 1, handles: 1, warm: 0 },
    ]);
    const lookB = await inspect(janusB);
    try {
      expect(await lookB.room(r2.roomId)).toMatchObject({ num_participants: 1 });
    } finally {
      await lookB.close();
    }
  });

  it("claims its sessions after a dropped socket: no restart, the participant stays joined", async () => {
    const cutter = await relay(Number(new URL(janusA.wsUrl).port));
    running.push({ stop: () => cutter.close() });
    const sfu = await sfuOf({ ...nodeOf("a", janusA), url: `ws://127.0.0.1:${cutter.port}` });
    const ref = await sfu.createRoom("call-5");
    const alice = await sfu.openParticipant(ref, "alice");
    const { publisher } = await alice.joinAsPublisher("Alice");
    const restarts: string[][] = [];
    sfu.onNodeRestarted((_id, rooms) => void restarts.push(rooms));
    cutter.cut();
    await until(() => sfu.health()[0]!.state === "down");
    await until(() => sfu.health()[0]!.state === "up");
    expect(restarts).toEqual([]);
    expect(alice.closed).toBe(false);
    expect(await sfu.listParticipants(ref)).toEqual([{ id: "alice", display: "Alice", publisher: false }]);
    await publisher.configure({ bitrate: 256_000 }); // the claimed handle answers
  });

  it("reports a Janus restart on the same ports with the lost rooms, and recreates them", async () => {
    const dir = path.join(root, "c");
    const ports = { ws: await freePort("127.0.0.1"), admin: await freePort("127.0.0.1") };
    const secret = () => randomBytes(32).toString("hex");
    const secrets = { api: secret(), admin: secret(), key: secret() };
    let janusC = await fixedJanus(dir, ports, secrets);
    running.push({ stop: () => janusC.stop() });
    const sfu = await sfuOf({ id: "c", url: `ws://127.0.0.1:${ports.ws}`, apiSecret: secrets.api, adminKey: secrets.key });
    const ref = await sfu.createRoom("call-6");
    const alice = await sfu.openParticipant(ref, "alice");
    await alice.joinAsPublisher("Alice");
    const lost: string[] = [];
    alice.onLost((reason) => lost.push(reason));
    const restarted = new Promise<[string, string[]]>((resolve) => sfu.onNodeRestarted((id, rooms) => resolve([id, rooms])));

    await janusC.kill9();
    janusC = await fixedJanus(dir, ports, secrets);
    expect(await restarted).toEqual(["c", [ref.roomId]]);
    // The lost sessions are released once the listeners are done (rooms first, clients after).
    await until(() => lost.length > 0);
    expect(lost).toEqual(["lost"]);
    expect(sfu.health()).toEqual([{ id: "c", state: "up", rooms: 1, participants: 0, handles: 0, warm: 0 }]);

    expect(await sfu.recreateRoom(ref)).toEqual(ref);
    const again = await sfu.openParticipant(ref, "alice");
    await expect(again.joinAsPublisher("Alice")).resolves.toMatchObject({ joined: { id: "alice" } });
  });

  it("stop() leaves no session and no room of Parley's in Janus", async () => {
    const sfu = await sfuOf(nodeOf("a", janusA));
    const look = await inspect(janusA);
    try {
      const ref = await sfu.createRoom("call-7");
      const p = await sfu.openParticipant(ref, "p");
      await p.joinAsPublisher("P");
      expect((await look.sessions()).length).toBeGreaterThanOrEqual(2); // control + participant
      await sfus.pop()!.stop();
      expect(await look.room(ref.roomId)).toBeUndefined();
      expect(await look.sessions()).toEqual([]);
    } finally {
      await look.close();
    }
  });

  it("keeps sessions open ahead (warmSessions): a participant joins on one, the pool makes another, and stop() leaves none", async () => {
    const sfu = await createSfu({ nodes: [nodeOf("a", janusA)] }, { ...fast, warmSessions: 2 });
    sfus.push(sfu);
    const look = await inspect(janusA);
    try {
      const settle = (warm: number) => until(() => sfu.health()[0]!.warm === warm);
      await settle(2);
      const ahead = await look.sessions(); // the control session and the two made ahead
      expect(ahead).toHaveLength(3);
      const ref = await sfu.createRoom("call-9");
      const alice = await sfu.openParticipant(ref, "alice");
      expect(ahead).toContain(alice.sessionId);
      // The handles attached ahead are VideoRoom handles Janus knows: a publisher joins on one and is
      // listed; a subscriber's join on the other reaches the plugin (refused: that feed does not publish).
      const { joined } = await alice.joinAsPublisher("Alice");
      expect(await sfu.listParticipants(ref)).toEqual([{ id: "alice", display: "Alice", publisher: false }]);
      await settle(2);
      expect(sfu.health()[0]).toMatchObject({ participants: 1, handles: 2, warm: 2 });
      expect(await look.sessions()).toHaveLength(4);
      await expect(alice.joinAsSubscriber([{ feed: "nobody" }], joined.privateId)).rejects.toMatchObject({ kind: "NO_SUCH_FEED" });
      await alice.close();
      expect(await look.sessions()).toHaveLength(3);
      await sfus.pop()!.stop();
      expect(await look.sessions()).toEqual([]);
    } finally {
      await look.close();
    }
  });

  it("maps a wrong admin_key to VideoRoomError UNAUTHORIZED", async () => {
    const sfu = await sfuOf({ ...nodeOf("a", janusA), adminKey: "wrong" });
    const err = await sfu.createRoom("call-8").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VideoRoomError);
    expect(err).toMatchObject({ code: 433, kind: "UNAUTHORIZED" });
  });
});

function until(pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (pred()) return resolve();
      if (Date.now() - started > timeoutMs) return reject(new Error("condition not met in time"));
      setTimeout(poll, 10);
    };
    poll();
  });
}
