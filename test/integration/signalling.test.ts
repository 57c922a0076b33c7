// Trust boundaries of the signalling socket against the real stack (Synapse, Janus, Parley):
// one session one socket (a second hello takes over), evictions that reach Janus and the
// provisioned call key, single-flight SFU sessions, and every client-growable bound.
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CALL_KEYS_EVENT } from "../../appservice/src/calls/provisionedKeys.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { audioOffer, callSession, janusParticipants, janusSessions, joinCall, seated, signallingUrl } from "../support/callStack.ts";
import { CryptoClient, type ToDeviceMessage } from "../support/cryptoClient.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { ERRORS_BEFORE_HELLO } from "../../appservice/src/http/signalling/server.ts";
import { SignallingClient } from "../support/signalling.ts";

const LIMITS = { sessionsPerUserPerCall: 3, socketsPerAddress: 6, helloTimeoutSeconds: 2, iceCandidatesBeforeMedia: 64, messagesPerSecond: 50, messageBurst: 200 };

let stack: Stack;
let A: Institution;
let alice: TestUser, bob: TestUser, bot: TestUser;
let roomId: string;
let failed = false;

const user = async (localpart: string) => {
  const u = await A.registerUser(localpart);
  return new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
};
const sfuRoom = async (room: string) => (await A.parleyStore().activeCall(room))!.sfu!;
const candidate = (i: number) => ({ candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${40000 + i} typ host`, sdpMid: "0", sdpMLineIndex: 0 });

beforeAll(async () => {
  // No Janus sessions made ahead (sfu.warmSessions): the tests below count the sessions in Janus
  // a socket opens and leaves (the pool's own are tested in sfu.test.ts).
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, calls: () => ({ limits: LIMITS }), sfu: () => ({ warmSessions: 0 }) });
  A = stack.institutions[0]!;
  [alice, bob] = await Promise.all([user("alice"), user("bob")]);
  bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
  roomId = await alice.join(A.alias("signal"));
  await bob.join(roomId);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

describe("bounds a client can grow", () => {
  // First in the file: it counts every socket this test process has open to Parley.
  it("sessions per user per call and sockets per address: crossing either gets M_LIMIT_EXCEEDED", async () => {
    const aliceSessions = await Promise.all([1, 2, 3].map(() => callSession(A, alice, roomId)));
    const fourth = await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId });
    expect({ status: fourth.status, errcode: fourth.json.errcode }).toEqual({ status: 429, errcode: "M_LIMIT_EXCEEDED" });

    const bobSessions = await Promise.all([1, 2, 3].map(() => callSession(A, bob, roomId)));
    const sockets = await Promise.all([...aliceSessions, ...bobSessions].map((s) => seated(A, s)));
    const extra = await SignallingClient.open(signallingUrl(A));
    const closed = await extra.closed;
    expect(closed.code).toBe(4429);
    expect(extra.pushes).toContainEqual(expect.objectContaining({ type: "error", errcode: "M_LIMIT_EXCEEDED" }));

    for (const ws of sockets) ws.close();
    await Promise.all(sockets.map((ws) => ws.closed));
    // Closed sockets end their sessions and free their places: alice joins and seats again.
    const again = await waitFor("a free place", async () => {
      const { status, json } = await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId });
      return status === 200 ? (json.session as string) : undefined;
    });
    (await seated(A, again)).close();
  });

  it("a socket that keeps sending wrong messages before any hello is closed after a few answers", async () => {
    const ws = await SignallingClient.open(signallingUrl(A));
    for (let i = 0; i < ERRORS_BEFORE_HELLO; i++) {
      expect(await ws.request({ type: "hello", session: `made-up-${i}` })).toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
    }
    ws.send({ type: "ping" });
    const closed = await ws.closed;
    expect(closed.code).toBe(4401);
    expect(ws.pushes.at(-1)).toMatchObject({ type: "error", errcode: "M_MISSING_TOKEN" });
  });

  it("a socket sending faster than its message rate is closed with M_LIMIT_EXCEEDED", async () => {
    const ws = await seated(A, await callSession(A, alice, roomId));
    for (let i = 0; i < LIMITS.messageBurst * 2; i++) ws.send({ type: "ping", id: `flood-${i}` });
    const closed = await ws.closed;
    expect(closed.code).toBe(4429);
    expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "error", errcode: "M_LIMIT_EXCEEDED" }));
    // Answered within its burst, nothing after the limit.
    const answered = ws.pushes.filter((p) => p.type === "result").length;
    expect(answered).toBeLessThanOrEqual(LIMITS.messageBurst + 1);
  });

  it("a socket that never says hello is closed after the hello timeout", async () => {
    const ws = await SignallingClient.open(signallingUrl(A));
    const openedAt = Date.now();
    const closed = await ws.closed;
    expect(closed.code).toBe(4408);
    expect(closed.at - openedAt).toBeGreaterThanOrEqual(LIMITS.helloTimeoutSeconds * 1000 - 100);
    expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "error", errcode: "M_MISSING_TOKEN" }));
  });

  it("ICE candidates queued before publish/subscribe exist are capped", async () => {
    const ws = await seated(A, await callSession(A, alice, roomId));
    const answers = await Promise.all(
      Array.from({ length: LIMITS.iceCandidatesBeforeMedia + 2 }, (_, i) => ws.request({ type: "trickle", target: "publisher", candidate: candidate(i) })),
    );
    expect(answers.filter((a) => a.type === "result")).toHaveLength(LIMITS.iceCandidatesBeforeMedia);
    expect(answers.filter((a) => a.errcode === "M_LIMIT_EXCEEDED")).toHaveLength(2);
    ws.close();
    await ws.closed;
  });

  it("50 trickles right after hello open exactly one Janus session, and none is left after close", async () => {
    const before = await janusSessions(A);
    const ws = await seated(A, await callSession(A, alice, roomId));
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => ws.request({ type: "trickle", target: "subscriber", candidate: candidate(i) })));
    expect(answers.every((a) => a.type === "result")).toBe(true);
    const during = await janusSessions(A);
    expect(during.filter((s) => !before.includes(s))).toHaveLength(1);
    ws.close();
    await ws.closed;
    const after = await waitFor("the socket's Janus session to go", async () => {
      const now = await janusSessions(A);
      return now.some((s) => !before.includes(s)) ? undefined : now;
    });
    expect(after.filter((s) => !before.includes(s))).toEqual([]);
  });
});

describe("one session, one socket, one person", () => {
  it("a second hello takes the session over; a kick then closes every socket of the user and empties the Janus room", async () => {
    const [s1, s2] = [await callSession(A, bob, roomId), await callSession(A, bob, roomId)];
    const room = await sfuRoom(roomId);
    const first = await seated(A, s1, "BOBPHONE");
    expect(await first.request({ type: "publish", jsep: audioOffer(), e2ee: true })).toMatchObject({ type: "result" });
    expect(await janusParticipants(A, room)).toEqual([bob.userId]);

    // The first socket's network died silently: the server has not seen it go when bob reconnects.
    first.stall();
    const second = await seated(A, s1, "BOBPHONE");
    // What the first socket opened at the SFU is released at once.
    await waitFor("the first socket's participant to leave Janus", async () => ((await janusParticipants(A, room))?.length === 0 ? true : undefined));
    first.resume();
    await first.closed;
    expect(first.pushes).toContainEqual({ type: "evicted", errcode: "M_FORBIDDEN", error: "session taken over by another connection" });

    const third = await seated(A, s2, "BOBLAPTOP");
    for (const ws of [second, third]) expect(await ws.request({ type: "publish", jsep: audioOffer(), e2ee: true })).toMatchObject({ type: "result" });
    expect(await janusParticipants(A, room)).toEqual([bob.userId, bob.userId]);

    await bot.kick(roomId, bob.userId, "test eviction");
    for (const ws of [second, third]) {
      expect((await ws.closed).code).toBe(4403);
      expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "evicted", errcode: "M_FORBIDDEN" }));
    }
    await waitFor("bob's participants to leave Janus", async () => ((await janusParticipants(A, room))?.length === 0 ? true : undefined));
    await bob.join(roomId);
  });

  it("a socket on standby (the pre-join's) seats nobody, outlives the hello timeout, and seats at its real hello", async () => {
    const session = await callSession(A, alice, roomId);
    const room = await sfuRoom(roomId);
    const ws = await SignallingClient.open(signallingUrl(A));
    expect(await ws.request({ type: "hello", session, standby: true })).toMatchObject({ type: "result", standby: true, user_id: alice.userId, room_id: roomId });
    await new Promise((r) => setTimeout(r, LIMITS.helloTimeoutSeconds * 1000 + 300));
    expect(ws.pushes).toEqual([]);
    expect(await janusParticipants(A, room)).toEqual([]);
    expect(await ws.request({ type: "hello", session, device_id: "ALICEPC" })).toMatchObject({ type: "result", user_id: alice.userId, resumed: false });
    expect(await ws.request({ type: "publish", jsep: audioOffer(), e2ee: true })).toMatchObject({ type: "result" });
    expect(await janusParticipants(A, room)).toEqual([alice.userId]);
    ws.close();
    await ws.closed;
    await waitFor("alice's participant to leave Janus", async () => ((await janusParticipants(A, room))?.length === 0 ? true : undefined));
  });
});

describe("provisioned keys", () => {
  it("follow the room's org.parley.call state; an evicted device gets no key sent after its eviction, the remaining one does", async () => {
    const [e, f] = await Promise.all([A.registerUser("erin"), A.registerUser("frank")]);
    const erin = new TestUser(A.synapse.clientUrl, e.userId, e.accessToken);
    const frank = new TestUser(A.synapse.clientUrl, f.userId, f.accessToken);
    const keysRoom = await erin.join(A.alias("keys"));
    await frank.join(keysRoom);
    // The room decides (this Parley's config says participant keys): the bot writes the state.
    const state = (await bot.stateEvent(keysRoom, "org.parley.call"))!;
    await bot.request(Method.Put, `/rooms/${encodeURIComponent(keysRoom)}/state/org.parley.call/`, { ...state, e2ee: { keys: "provisioned", bot: A.botUserId } });

    const [erinDevice, frankDevice] = await Promise.all(
      [e, f].map((u) => CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: u.userId, accessToken: u.accessToken, deviceId: u.deviceId, rooms: [keysRoom] })),
    );
    try {
      const keys = { erin: [] as ToDeviceMessage[], frank: [] as ToDeviceMessage[] };
      erinDevice!.onToDevice(CALL_KEYS_EVENT, (m) => keys.erin.push(m));
      frankDevice!.onToDevice(CALL_KEYS_EVENT, (m) => keys.frank.push(m));
      const keyOf = (m: ToDeviceMessage) => (m.content.keys as { index: number; key: string });
      const fromBot = (list: ToDeviceMessage[]) => list.filter((m) => m.sender === A.botUserId && m.encrypted);

      const wsErin = await SignallingClient.open(signallingUrl(A));
      const hello = await wsErin.request({ type: "hello", session: await callSession(A, erin, keysRoom), device_id: e.deviceId });
      expect(hello).toMatchObject({ type: "result", e2ee: { keys: "provisioned", bot: A.botUserId } });
      const wsFrank = await seated(A, await callSession(A, frank, keysRoom), f.deviceId);
      // Both hold the same, latest key.
      const shared = await waitFor("a key both devices hold", async () => {
        const [le, lf] = [fromBot(keys.erin).at(-1), fromBot(keys.frank).at(-1)];
        return le && lf && keyOf(le).key === keyOf(lf).key ? keyOf(le) : undefined;
      });

      // Frank's client stops answering: the server will not see its socket close by itself.
      wsFrank.stall();
      const erinBefore = fromBot(keys.erin).length;
      await bot.kick(keysRoom, frank.userId, "test eviction");
      const rotated = await waitFor("erin's key after the eviction", async () => fromBot(keys.erin).slice(erinBefore).map(keyOf)[0]);
      expect(rotated.key).not.toBe(shared.key);

      // A marker sent to frank after erin got the new key: once frank has it, every key the bot
      // sent him before it has arrived too.
      const marker = `marker-${Date.now()}`;
      await erin.request(Method.Put, `/sendToDevice/org.parley.test.marker/${marker}`, { messages: { [f.userId]: { [f.deviceId]: { marker } } } });
      await frankDevice!.nextToDevice("org.parley.test.marker", (m) => m.content.marker === marker, 20_000);
      expect(fromBot(keys.frank).map(keyOf).filter((k) => k.key === rotated.key || k.index === rotated.index)).toEqual([]);
      wsFrank.resume();
      wsErin.close();
    } finally {
      await Promise.all([erinDevice?.stop(), frankDevice?.stop()]);
    }
  });
});
