// SfuPool against two fake Janus nodes: placement, health, reconnect with claim, restart
// detection, and a stop that leaves nothing behind.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SfuUnavailableError } from "../../../appservice/src/sfu/errors.ts";
import { SfuPool } from "../../../appservice/src/sfu/pool.ts";
import { FakeJanus, type JanusModel } from "./fakeJanus.ts";

let fakes: FakeJanus[];
let models: JanusModel[];
let pool: SfuPool | undefined;
const fast = { reconnectMinMs: 20, reconnectMaxMs: 100, requestTimeoutMs: 500, keepaliveMs: 60_000 };
const tick = (ms = 30) => new Promise((r) => setTimeout(r, ms));
const nodes = () => fakes.map((f, i) => ({ id: `n${i}`, url: f.url, apiSecret: "s", adminKey: "k" }));
const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
const sockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length;

function until<T>(pred: () => T | undefined, timeoutMs = 3000): Promise<T> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const v = pred();
      if (v !== undefined && v !== false) return resolve(v);
      if (Date.now() - started > timeoutMs) return reject(new Error("condition not met"));
      setTimeout(poll, 10);
    };
    poll();
  });
}

beforeEach(async () => {
  fakes = [await FakeJanus.start(), await FakeJanus.start()];
  models = fakes.map((f) => f.emulate({ adminKey: "k" }));
});

afterEach(async () => {
  await pool?.stop();
  pool = undefined;
  for (const f of fakes) await f.close();
});

describe("SfuPool", () => {
  it("places each room on the least loaded node (rooms + participants)", async () => {
    pool = await SfuPool.start(nodes(), fast);
    const a = await pool.createRoom("call-a");
    const b = await pool.createRoom("call-b");
    expect([a.node, b.node]).toEqual(["n0", "n1"]);
    expect(a.roomId).not.toBe(b.roomId);
    expect(a.secret).toMatch(/^[0-9a-f]{48}$/);
    expect(models[0]!.rooms.get(a.roomId)?.secret).toBe(a.secret);
    const alice = await pool.openParticipant(a, "alice");
    await alice.joinAsPublisher("Alice");
    expect(await pool.listParticipants(a)).toEqual([{ id: "alice", publisher: false }]);
    expect((await pool.createRoom("call-c")).node).toBe("n1"); // n0: 1 room + 1 participant
    expect(pool.health()).toEqual([
      { id: "n0", state: "up", rooms: 1, participants: 1, handles: 1 },
      { id: "n1", state: "up", rooms: 2, participants: 0, handles: 0 },
    ]);
    await alice.close();
    expect(pool.health()[0]).toMatchObject({ participants: 0, handles: 0 });
    await pool.destroyRoom(a);
    await pool.destroyRoom(a); // idempotent: 426 counts as destroyed
    expect(models[0]!.rooms.size).toBe(0);
    expect(pool.health()[0]!.rooms).toBe(0);
  });

  it("refuses rooms with SfuUnavailableError without nodes, and retries an unreachable node", async () => {
    const none = await SfuPool.start([], fast);
    await expect(none.createRoom("c")).rejects.toBeInstanceOf(SfuUnavailableError);
    await none.stop();

    const port = fakes[1]!.port;
    await fakes[1]!.close();
    pool = await SfuPool.start(nodes(), fast);
    expect(pool.health().map((h) => h.state)).toEqual(["up", "down"]);
    const up: string[] = [];
    pool.events.on("nodeUp", (id) => up.push(id));
    fakes[1] = await FakeJanus.start(port);
    models[1] = fakes[1].emulate({ adminKey: "k" });
    await until(() => up.includes("n1"));
    expect(pool.health().map((h) => h.state)).toEqual(["up", "up"]);
  });

  it("reconnects after a dropped socket and claims every session: no restart reported", async () => {
    pool = await SfuPool.start(nodes().slice(0, 1), fast);
    const room = await pool.createRoom("c");
    const p = await pool.openParticipant(room, "alice");
    const events: string[] = [];
    pool.onNodeState((id, up) => events.push(`${up ? "up" : "down"}:${id}`));
    pool.onNodeRestarted((id) => events.push(`restarted:${id}`));
    p.onLost((r) => events.push(`lost:${r}`));
    fakes[0]!.dropClients();
    await until(() => events.includes("up:n0"));
    await tick();
    expect(events).toEqual(["down:n0", "up:n0"]);
    expect(fakes[0]!.received.filter((m) => m["janus"] === "claim")).toHaveLength(2); // control + alice
    expect(p.closed).toBe(false);
    await p.joinAsPublisher("Alice"); // the claimed session works
  });

  it("reports a restart with the lost rooms, loses the participants, and recreates rooms", async () => {
    pool = await SfuPool.start(nodes().slice(0, 1), fast);
    const lostRoom = await pool.createRoom("c1");
    const kept = await pool.createRoom("c2");
    const p = await pool.openParticipant(lostRoom, "alice");
    const lost: string[] = [];
    p.onLost((r) => lost.push(r));
    const restarted = new Promise<[string, string[]]>((resolve) => pool!.onNodeRestarted((id, rooms) => resolve([id, rooms])));
    models[0]!.restart();
    models[0]!.rooms.set(kept.roomId, { secret: kept.secret, participants: [] }); // a room that survived
    fakes[0]!.dropClients();
    expect(await restarted).toEqual(["n0", [lostRoom.roomId]]);
    expect(lost).toEqual(["lost"]);
    expect(p.closed).toBe(true);
    expect(pool.health()[0]).toMatchObject({ state: "up", participants: 0, rooms: 2 });
    const again = await pool.recreateRoom(lostRoom);
    expect(again).toEqual(lostRoom);
    expect(models[0]!.rooms.get(lostRoom.roomId)?.secret).toBe(lostRoom.secret);
    await expect(pool.recreateRoom(kept)).resolves.toEqual(kept); // already there: fine
  });

  it("treats Janus timing out the control session like a restart (rooms that survived are not lost)", async () => {
    pool = await SfuPool.start(nodes().slice(0, 1), fast);
    const room = await pool.createRoom("c");
    const [control] = [...models[0]!.sessions];
    const restarted = new Promise<[string, string[]]>((resolve) => pool!.onNodeRestarted((id, rooms) => resolve([id, rooms])));
    models[0]!.sessions.delete(control!);
    fakes[0]!.broadcast({ janus: "timeout", session_id: control });
    expect(await restarted).toEqual(["n0", []]);
    expect(await pool.roomExists(room)).toBe(true);
    expect(models[0]!.sessions.size).toBe(1); // the new control session
  });

  it("stop() destroys its rooms and sessions and leaves no timer or socket", async () => {
    const before = { timers: timers(), sockets: sockets() };
    pool = await SfuPool.start(nodes(), fast);
    const r = await pool.createRoom("c");
    await pool.openParticipant(r, "alice");
    expect(timers()).toBeGreaterThan(before.timers); // keepalives
    expect(sockets()).toBe(before.sockets + 4); // both ends of two connections
    fakes[1]!.dropClients(); // one node reconnecting while we stop
    await tick(5);
    await pool.stop();
    pool = undefined;
    await tick(50);
    expect(models[0]!.rooms.size + models[1]!.rooms.size).toBe(0);
    expect(models[0]!.sessions.size + models[1]!.sessions.size).toBeLessThanOrEqual(1); // n1's orphan awaits its reclaim timeout
    expect(fakes.map((f) => f.clients)).toEqual([0, 0]);
    expect(timers()).toBeLessThanOrEqual(before.timers);
    expect(sockets()).toBe(before.sockets);
  });
});
