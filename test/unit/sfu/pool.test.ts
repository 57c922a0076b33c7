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
      { id: "n0", state: "up", rooms: 1, participants: 1, handles: 1, warm: 0 },
      { id: "n1", state: "up", rooms: 2, participants: 0, handles: 0, warm: 0 },
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
    pool.onNodeRestarted((id) => void events.push(`restarted:${id}`));
    p.onLost((r) => events.push(`lost:${r}`));
    fakes[0]!.dropClients();
    await until(() => events.includes("up:n0"));
    await tick();
    expect(events).toEqual(["down:n0", "up:n0"]);
    expect(fakes[0]!.received.filter((m) => m["janus"] === "claim")).toHaveLength(2); // control + alice
    expect(p.closed).toBe(false);
    await p.joinAsPublisher("Alice"); // the claimed session works
  });

  it("on a restart: the listener recreates the lost rooms first, new participants wait, and only then are the old sessions lost", async () => {
    pool = await SfuPool.start(nodes().slice(0, 1), fast);
    const lostRoom = await pool.createRoom("c1");
    const kept = await pool.createRoom("c2");
    const p = await pool.openParticipant(lostRoom, "alice");
    const order: string[] = [];
    p.onLost((r) => order.push(`lost:${r}`));
    let newcomer: Promise<unknown> | undefined;
    pool.onNodeRestarted(async (id, rooms) => {
      order.push(`restarted:${id}:${rooms.join(",")}:alice closed=${p.closed}`);
      // A client asking now (its own ICE failed) waits for the room instead of missing it.
      newcomer = pool!.openParticipant(lostRoom, "bob").then(async (bob) => {
        order.push("bob opened");
        await bob.joinAsPublisher("Bob");
        order.push("bob joined");
      });
      await tick(50);
      order.push(`recreated:${(await pool!.recreateRoom(lostRoom)).roomId === lostRoom.roomId}`);
    });
    models[0]!.restart();
    models[0]!.rooms.set(kept.roomId, { secret: kept.secret, participants: [] }); // a room that survived
    fakes[0]!.dropClients();
    await until(() => order.includes("bob joined"));
    expect(order).toEqual([`restarted:n0:${lostRoom.roomId}:alice closed=false`, "recreated:true", "lost:lost", "bob opened", "bob joined"]);
    await newcomer;
    expect(p.closed).toBe(true);
    expect(models[0]!.rooms.get(lostRoom.roomId)?.secret).toBe(lostRoom.secret);
    expect(pool.health()[0]).toMatchObject({ state: "up", participants: 1, rooms: 2 });
    await expect(pool.recreateRoom(kept)).resolves.toEqual(kept); // already there: fine
  });

  it("sees a restarted node at once: reconnects stay at the first delay for reconnectFastMs after a drop", async () => {
    pool = await SfuPool.start(nodes().slice(0, 1), { ...fast, reconnectMinMs: 20, reconnectMaxMs: 5000, reconnectFastMs: 2000 });
    const port = fakes[0]!.port;
    const downAt = new Promise<number>((resolve) => pool!.events.once("nodeDown", () => resolve(Date.now())));
    const upAt = new Promise<number>((resolve) => pool!.events.once("nodeUp", () => resolve(Date.now())));
    await fakes[0]!.close();
    const down = await downAt;
    // Down 1.5 s: doubling from 20 ms would have the next attempt ~1 s after Janus is back.
    await tick(1500);
    fakes[0] = await FakeJanus.start(port);
    models[0] = fakes[0].emulate({ adminKey: "k" });
    const back = Date.now();
    const up = await upAt;
    expect(up - back).toBeLessThan(500);
    expect(up - down).toBeGreaterThanOrEqual(1500);
  });

  it("gives a dead node up after deadAfterMs: its rooms move to the live node before its participants are lost", async () => {
    pool = await SfuPool.start(nodes(), { ...fast, deadAfterMs: 150 });
    const room = await pool.createRoom("c1");
    expect(room.node).toBe("n0");
    const p = await pool.openParticipant(room, "alice");
    const order: string[] = [];
    p.onLost((r) => order.push(`lost:${r}`));
    const dead = new Promise<string>((resolve) => pool!.events.once("nodeDead", resolve));
    pool.onNodeRestarted(async (id, rooms) => {
      order.push(`restarted:${id}:${rooms.join(",")}:alice closed=${p.closed}`);
      const moved = await pool!.recreateRoom(room);
      order.push(`moved to ${moved.node}`);
    });
    const downAt = Date.now();
    await fakes[0]!.close();
    expect(await dead).toBe("n0");
    expect(Date.now() - downAt).toBeGreaterThanOrEqual(150);
    expect(order).toEqual([`restarted:n0:${room.roomId}:alice closed=false`, "moved to n1", "lost:lost"]);
    expect(models[1]!.rooms.get(room.roomId)?.secret).toBe(room.secret);
    // A ref naming the old node follows the room.
    const again = await pool.openParticipant(room, "alice-2");
    expect(again.room.node).toBe("n1");
    await again.joinAsPublisher("Alice");
    expect(await pool.listParticipants(room)).toEqual([{ id: "alice-2", publisher: false }]);
    expect(pool.health().map((h) => [h.id, h.state, h.rooms])).toEqual([["n0", "down", 0], ["n1", "up", 1]]);
  });

  it("does not give up the only node: with nowhere to move, calls wait for it", async () => {
    pool = await SfuPool.start(nodes().slice(0, 1), { ...fast, deadAfterMs: 50 });
    const room = await pool.createRoom("c1");
    const p = await pool.openParticipant(room, "alice");
    const events: string[] = [];
    pool.events.on("nodeDead", (id) => events.push(`dead:${id}`));
    pool.onNodeRestarted((id) => void events.push(`restarted:${id}`));
    fakes[0]!.dropClients();
    const port = fakes[0]!.port;
    await fakes[0]!.close();
    await tick(200); // four detection periods
    expect(events).toEqual([]);
    expect(p.closed).toBe(false);
    fakes[0] = await FakeJanus.start(port);
    models[0] = fakes[0].emulate({ adminKey: "k" });
    await until(() => events.includes("restarted:n0"));
    expect(events).toEqual(["restarted:n0"]);
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

  describe("sessions kept open ahead (warmSessions)", () => {
    const count = (kind: string) => fakes[0]!.received.filter((m) => m["janus"] === kind).length;
    const warm = () => pool!.health()[0]!.warm;

    it("a participant takes a session made ahead, its handles attached: no create or attach on its way in; the node makes the next", async () => {
      pool = await SfuPool.start(nodes().slice(0, 1), { ...fast, warmSessions: 2 });
      await until(() => warm() === 2);
      // The control session, then two more with two VideoRoom handles each.
      expect([count("create"), count("attach")]).toEqual([3, 5]);
      const ahead = new Set(models[0]!.sessions);
      const room = await pool.createRoom("c");
      const alice = await pool.openParticipant(room, "alice");
      await alice.joinAsPublisher("Alice");
      expect(ahead.has(alice.sessionId)).toBe(true);
      await until(() => warm() === 2);
      // Only the refill: the publisher's handle was one attached ahead.
      expect([count("create"), count("attach")]).toEqual([4, 7]);
      expect(pool.health()[0]).toMatchObject({ participants: 1, handles: 2, warm: 2 });
      // More arrivals at once than sessions ahead: each gets its own, the rest made as before.
      const more = await Promise.all(["b", "c", "d"].map((id) => pool!.openParticipant(room, id)));
      expect(new Set([alice, ...more].map((p) => p.sessionId)).size).toBe(4);
      await until(() => warm() === 2);
      expect(pool.health()[0]).toMatchObject({ participants: 4 });
    });

    it("none with warmSessions 0 (or unset)", async () => {
      pool = await SfuPool.start(nodes().slice(0, 1), { ...fast, warmSessions: 0 });
      await pool.openParticipant(await pool.createRoom("c"), "alice");
      await tick();
      expect([count("create"), warm()]).toEqual([2, 0]);
    });

    it("are dropped with their socket and made again on the next one (never claimed), and stop() destroys them even when media is kept", async () => {
      pool = await SfuPool.start(nodes().slice(0, 1), { ...fast, warmSessions: 2 });
      await until(() => warm() === 2);
      const first = new Set(models[0]!.sessions);
      const events: string[] = [];
      pool.onNodeState((id, up) => events.push(`${up ? "up" : "down"}:${id}`));
      fakes[0]!.dropClients();
      await until(() => events.includes("up:n0") && warm() === 2);
      expect(count("claim")).toBe(1); // the control session only
      const second = [...models[0]!.sessions].filter((id) => !first.has(id));
      expect(second).toHaveLength(2);
      await pool.stop({ keepMedia: true });
      pool = undefined;
      // Left: the first socket's two, which Janus reaps after reclaim_session_timeout.
      expect(models[0]!.sessions.size).toBe(2);
      expect([...models[0]!.sessions].every((id) => first.has(id))).toBe(true);
    });
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
