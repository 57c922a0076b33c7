// The signalling socket's standby (the pre-join's socket, opened ahead): the session checked and
// nobody seated, its wait bounded by the standby limit and by the session's own life, one standby
// socket per session, and the real hello on it seating as any hello does. The seats are a fake
// here (the real stack's path is in test/integration/signalling.test.ts); the socket is real.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CallSeats, PreparedAtHello } from "../../../appservice/src/calls/callSeats.ts";
import type { SessionCloser } from "../../../appservice/src/calls/callService.ts";
import { ParleyError } from "../../../appservice/src/errors.ts";
import { attachSignalling, sessionHandlers, SIGNALLING_PATH, type SignallingServer } from "../../../appservice/src/http/signalling/server.ts";
import { SignallingClient } from "../../support/signalling.ts";

const LIMITS = { socketsPerAddress: 8, helloTimeoutMs: 150, standbyMs: 500, messagesPerSecond: 50, messageBurst: 200 };
const SESSION = { userId: "@bob:x", roomId: "!r:x", callId: "c1" };

let server: Server;
let signalling: SignallingServer;
let url: string;
/** Life left in each known session (ms); unknown tokens are refused. */
let life: Map<string, number>;
let opened: string[];
/** What each standby socket would be told at its session's end, until it let go (its real hello, its close). */
let watching: Map<string, SessionCloser>;
/** The pre-join subscriptions made (prepare), what each was asked, and what each hello was handed. */
let prepared: FakePrepared[];
let handed: (PreparedAtHello | undefined)[];
/** What the next prepare gives: a subscription, none (nothing to subscribe to), or a failure. */
let prepareGives: "offer" | "lobby" | "none" | "throw";
/** Holds each prepare until released (a prepare still under way when the socket goes). */
let prepareGate: Promise<void>;

class FakePrepared {
  readonly sessionKey = "k-s1";
  readonly offerSdp = "v=0 prepared offer";
  readonly streams = [{ feed: "p1", mid: "0", kind: "audio" as const, type: "audio", user_id: "@alice:x", device_id: "A" }];
  /** The video its offer left out (a CallMedia prepare holds the videos back). */
  readonly held = [{ feed: "p1", mid: "1" }];
  onUpdate?: (offer: { sdp: string; streams: unknown[] }) => void;
  /** The seat's hello is handed the held videos' offer (CallMedia's, when its hello crossed it). */
  updateAtHello = false;
  readonly log: string[] = [];
  closed = false;
  ice?: { iceServers: { urls: string[]; username: string; credential: string }[]; iceTransportPolicy: "relay" };
  async answer(sdp: string, e2ee: boolean | undefined) {
    await new Promise((r) => setTimeout(r, 50)); // the SFU's start takes a moment: a hello behind it waits
    this.log.push(`answer ${sdp} e2ee=${e2ee}`);
  }
  async trickle(c: unknown) {
    this.log.push(`trickle ${JSON.stringify(c)}`);
  }
  async settled() {
    return true;
  }
  async close() {
    this.closed = true;
  }
}

beforeEach(async () => {
  life = new Map([["s1", 60_000], ["short", 200]]);
  opened = [];
  watching = new Map();
  prepared = [];
  handed = [];
  prepareGives = "offer";
  prepareGate = Promise.resolve();
  const seats = {
    standby: (token: string, ended: SessionCloser) => {
      const lifeMs = life.get(token);
      if (lifeMs === undefined) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
      watching.set(token, ended);
      return { ...SESSION, key: `k-${token}`, lifeMs, release: () => watching.get(token) === ended && watching.delete(token) };
    },
    open: async (_client: unknown, token: string, _device: unknown, fromStandby?: PreparedAtHello) => {
      handed.push(fromStandby);
      if (!life.has(token)) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
      opened.push(token);
      // Seated with it if it was answered by now (the hello waited for an answer under way).
      const p = fromStandby && (await fromStandby.media);
      await fromStandby?.answering?.catch(() => undefined);
      const fake = p as unknown as FakePrepared | undefined;
      const seated = fake !== undefined && fake.log.some((l) => l.startsWith("answer"));
      const update = seated && fake.updateAtHello ? { preparedUpdate: { sdp: "v=0 held", streams: [{ feed: "p1", mid: "1", kind: "video" }] } } : {};
      return { seat: { session: { ...SESSION, token, key: `k-${token}` } }, e2ee: { required: true, keys: "participant", bot: "@bot:x" }, resumed: false, ...(seated ? { prepared: true } : {}), ...update };
    },
    prepare: async (_token: string, wanted: () => boolean) => {
      await prepareGate;
      if (prepareGives === "throw") throw new Error("the SFU is gone");
      if (prepareGives === "none" || !wanted()) return undefined;
      const p = new FakePrepared();
      if (prepareGives === "lobby") p.ice = { iceServers: [{ urls: ["turn:127.0.0.1:3478"], username: "u", credential: "c" }], iceTransportPolicy: "relay" };
      prepared.push(p);
      return p;
    },
    closed: vi.fn(),
  } as unknown as CallSeats;
  server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  signalling = attachSignalling(server, seats, sessionHandlers, LIMITS);
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}${SIGNALLING_PATH}`;
});

afterEach(async () => {
  await signalling.close();
  await new Promise((r) => server.close(r));
});

const standingBy = async (session = "s1") => {
  const ws = await SignallingClient.open(url);
  const answer = await ws.request({ type: "hello", session, standby: true });
  return { ws, answer };
};

describe("a standby hello", () => {
  it("is answered with the session's call and seats nobody; the socket outlives the hello timeout", async () => {
    const { ws, answer } = await standingBy();
    expect(answer).toMatchObject({ type: "result", standby: true, user_id: "@bob:x", room_id: "!r:x", call_id: "c1" });
    expect(opened).toEqual([]);
    await new Promise((r) => setTimeout(r, LIMITS.helloTimeoutMs + 200));
    expect(await ws.request({ type: "ping" })).toMatchObject({ type: "error", errcode: "M_MISSING_TOKEN" });
    ws.close();
  });

  it("then the real hello on the same socket seats the session, and the standby limit no longer applies", async () => {
    const { ws } = await standingBy();
    expect(watching.has("s1")).toBe(true);
    expect(signalling.standbys()).toBe(1);
    expect(await ws.request({ type: "hello", session: "s1" })).toMatchObject({ type: "result", call_id: "c1", resumed: false });
    expect(opened).toEqual(["s1"]);
    expect(signalling.standbys()).toBe(0); // (parley_signalling_standby_sockets)
    // Seated: the socket no longer waits on the session's end as a standby (its seat does).
    expect(watching.has("s1")).toBe(false);
    await new Promise((r) => setTimeout(r, LIMITS.standbyMs + 200));
    expect(await ws.request({ type: "ping" })).toMatchObject({ type: "result", pong: true });
    ws.close();
  });

  it("waits at most standbyMs for the real hello, then the socket is closed (4408)", async () => {
    const { ws } = await standingBy();
    const at = Date.now();
    const closed = await ws.closed;
    expect(closed.code).toBe(4408);
    expect(closed.at - at).toBeGreaterThanOrEqual(LIMITS.standbyMs - 100);
    expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "error", errcode: "M_MISSING_TOKEN" }));
  });

  it("waits no longer than its session lives", async () => {
    const { ws } = await standingBy("short");
    const at = Date.now();
    const closed = await ws.closed;
    expect(closed.code).toBe(4408);
    expect(closed.at - at).toBeLessThan(LIMITS.standbyMs - 200);
  });

  it("is closed as soon as its session ends (a knocker denied, an eviction), not at its timer; a closed one lets go of the session", async () => {
    const { ws } = await standingBy();
    const at = Date.now();
    watching.get("s1")!({ errcode: "M_FORBIDDEN", message: "membership is now leave" });
    const closed = await ws.closed;
    expect(closed.code).toBe(4403);
    expect(closed.at - at).toBeLessThan(LIMITS.standbyMs - 200);
    expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "error", errcode: "M_FORBIDDEN", error: "membership is now leave" }));
    const other = await standingBy();
    other.ws.close();
    await other.ws.closed;
    await vi.waitFor(() => expect(watching.has("s1")).toBe(false));
    expect(signalling.standbys()).toBe(0);
  });

  it("one standby socket per session: a newer one closes the older (4403)", async () => {
    const first = await standingBy();
    const second = await standingBy();
    expect((await first.ws.closed).code).toBe(4403);
    expect(signalling.standbys()).toBe(1);
    expect(first.ws.pushes).toContainEqual(expect.objectContaining({ errcode: "M_FORBIDDEN", error: "a newer standby socket took this session" }));
    // The newer one is the session's: it seats.
    expect(await second.ws.request({ type: "hello", session: "s1" })).toMatchObject({ type: "result" });
    second.ws.close();
  });

  it("an unknown session is refused; a second standby on one socket is refused", async () => {
    const ws = await SignallingClient.open(url);
    expect(await ws.request({ type: "hello", session: "made-up", standby: true })).toMatchObject({ type: "error", errcode: "M_UNKNOWN_TOKEN" });
    expect(await ws.request({ type: "hello", session: "s1", standby: true })).toMatchObject({ type: "result", standby: true });
    expect(await ws.request({ type: "hello", session: "s1", standby: true })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    ws.close();
  });

  it("is refused on a socket that is seated already", async () => {
    const ws = await SignallingClient.open(url);
    expect(await ws.request({ type: "hello", session: "s1" })).toMatchObject({ type: "result" });
    expect(await ws.request({ type: "hello", session: "s1", standby: true })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    ws.close();
  });
});

describe("a standby hello with prepare (the pre-join's subscription, docs/join.md)", () => {
  const preparing = async () => {
    const ws = await SignallingClient.open(url);
    expect(await ws.request({ type: "hello", session: "s1", standby: true, prepare: true })).toMatchObject({ type: "result", standby: true });
    return ws;
  };
  const candidate = { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid: "0", sdpMLineIndex: 0 };

  it("pushes the SFU's offer; the socket takes its answer and candidates, nothing else, and the real hello seats it", async () => {
    const ws = await preparing();
    expect(await ws.push("prepared", (p) => p.type === "prepared")).toMatchObject({
      jsep: { type: "offer", sdp: "v=0 prepared offer" },
      streams: [{ mid: "0", user_id: "@alice:x" }],
      held: [{ feed: "p1", mid: "1" }],
    });
    expect(await ws.request({ type: "publish", jsep: { type: "offer", sdp: "v=0" } })).toMatchObject({ type: "error", errcode: "M_MISSING_TOKEN" });
    expect(await ws.request({ type: "trickle", target: "publisher", candidate })).toMatchObject({ type: "error", errcode: "M_MISSING_TOKEN" });
    expect(await ws.request({ type: "trickle", target: "subscriber", candidate })).toMatchObject({ type: "result" });
    // The answer and the hello back to back: the hello is handed the answer under way, and waits for it.
    ws.send({ type: "answer", id: "a", jsep: { type: "answer", sdp: "v=0 answer" }, e2ee: true });
    expect(await ws.request({ type: "hello", session: "s1" })).toMatchObject({ type: "result", prepared: true });
    expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "result", id: "a" }));
    expect(prepared[0]!.log).toEqual([`trickle ${JSON.stringify(candidate)}`, "answer v=0 answer e2ee=true"]);
    expect(handed.at(-1)?.answering).toBeDefined();
    expect(prepared[0]!.closed).toBe(false); // the seat's now
    expect(prepared[0]!.ice).toBeUndefined();
    expect(ws.pushes.find((p) => p.type === "prepared")).not.toHaveProperty("ice_servers"); // its grant had them
    ws.close();
  });

  it("the held videos' offer is a second `prepared` while on standby, answered there; none after the hello, whose result carries one it crossed", async () => {
    const ws = await preparing();
    await ws.push("prepared", (p) => p.type === "prepared");
    expect(await ws.request({ type: "answer", jsep: { type: "answer", sdp: "v=0 answer" }, e2ee: true })).toMatchObject({ type: "result" });
    const p = prepared[0]!;
    p.onUpdate!({ sdp: "v=0 held", streams: [{ feed: "p1", mid: "1", kind: "video", user_id: "@alice:x", device_id: "A" }] });
    const second = await ws.push("the held videos' offer", (m) => m.type === "prepared" && (m.jsep as { sdp: string }).sdp === "v=0 held");
    expect(second).toEqual({ type: "prepared", jsep: { type: "offer", sdp: "v=0 held" }, streams: [{ feed: "p1", mid: "1", kind: "video", user_id: "@alice:x", device_id: "A" }] });
    expect(await ws.request({ type: "answer", jsep: { type: "answer", sdp: "v=0 answer 2" }, e2ee: true })).toMatchObject({ type: "result" });
    expect(p.log).toEqual(["answer v=0 answer e2ee=true", "answer v=0 answer 2 e2ee=true"]);
    p.updateAtHello = true;
    expect(await ws.request({ type: "hello", session: "s1" })).toMatchObject({
      type: "result",
      prepared: true,
      prepared_update: { jsep: { type: "offer", sdp: "v=0 held" }, streams: [{ feed: "p1", mid: "1" }] },
    });
    // After the hello, an offer made for the standby is not pushed (the hello carried it).
    const pushes = ws.pushes.length;
    p.onUpdate!({ sdp: "v=0 late", streams: [] });
    await new Promise((r) => setTimeout(r, 30));
    expect(ws.pushes.slice(pushes).some((m) => m.type === "prepared")).toBe(false);
    ws.close();
  });

  it("a lobby grant's (let in) carries the ICE servers its grant did not", async () => {
    prepareGives = "lobby";
    const ws = await preparing();
    expect(await ws.push("prepared", (p) => p.type === "prepared")).toMatchObject({
      jsep: { type: "offer" },
      ice_servers: [{ urls: ["turn:127.0.0.1:3478"], username: "u", credential: "c" }],
      ice_transport_policy: "relay",
    });
    ws.close();
  });

  it("a standby without prepare (a knocker's lobby socket) asks for it once more with its session, once; any other second standby hello is refused", async () => {
    const ws = await SignallingClient.open(url);
    expect(await ws.request({ type: "hello", session: "s1", standby: true })).toMatchObject({ type: "result", standby: true });
    expect(prepared).toEqual([]);
    // Another session, or no prepare: refused (the socket stays on standby for s1).
    expect(await ws.request({ type: "hello", session: "short", standby: true, prepare: true })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    expect(await ws.request({ type: "hello", session: "s1", standby: true })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    expect(await ws.request({ type: "hello", session: "s1", standby: true, prepare: true })).toMatchObject({ type: "result", standby: true, user_id: "@bob:x" });
    expect(await ws.push("prepared", (p) => p.type === "prepared")).toMatchObject({ jsep: { type: "offer", sdp: "v=0 prepared offer" } });
    expect(await ws.request({ type: "hello", session: "s1", standby: true, prepare: true })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    expect(prepared).toHaveLength(1);
    // It is the standby's like one asked at once: answered, the real hello seats it.
    expect(await ws.request({ type: "answer", jsep: { type: "answer", sdp: "v=0 answer" }, e2ee: true })).toMatchObject({ type: "result" });
    expect(await ws.request({ type: "hello", session: "s1" })).toMatchObject({ type: "result", prepared: true });
    ws.close();
  });

  it("without prepare, with nothing to subscribe to, or when it could not be made, there is nothing to answer", async () => {
    const plain = await SignallingClient.open(url);
    expect(await plain.request({ type: "hello", session: "s1", standby: true })).toMatchObject({ type: "result" });
    expect(await plain.request({ type: "answer", jsep: { type: "answer", sdp: "v=0" } })).toMatchObject({ type: "error", errcode: "M_MISSING_TOKEN" });
    expect(prepared).toEqual([]);
    plain.close();
    await plain.closed;
    for (const gives of ["none", "throw"] as const) {
      prepareGives = gives;
      const ws = await preparing();
      expect(await ws.request({ type: "answer", jsep: { type: "answer", sdp: "v=0" } })).toMatchObject({ type: "error", errcode: "M_NOT_FOUND" });
      expect(ws.pushes.some((p) => p.type === "prepared")).toBe(false);
      // The real hello is handed nothing to seat.
      expect(await ws.request({ type: "hello", session: "s1" })).not.toHaveProperty("prepared");
      ws.close();
      await ws.closed;
    }
  });

  it("a real hello before any answer neither waits for the subscription nor is handed it: one still being made, or pushed and not answered, is closed", async () => {
    // Still being made (a knocker's let-in still being checked) when the call's hello comes.
    let release!: () => void;
    prepareGate = new Promise((r) => (release = r));
    const early = await preparing();
    expect(await early.request({ type: "hello", session: "s1" })).toMatchObject({ type: "result" });
    expect(handed.at(-1)).toBeUndefined();
    release();
    await new Promise((r) => setTimeout(r, 50));
    expect(prepared).toEqual([]); // not wanted any more: never made, never pushed
    expect(early.pushes.some((p) => p.type === "prepared")).toBe(false);
    early.close();
    await early.closed;
    // Pushed, its offer crossing the hello: not answered, so not the call's.
    const crossed = await preparing();
    await crossed.push("prepared", (p) => p.type === "prepared");
    expect(await crossed.request({ type: "hello", session: "s1" })).not.toHaveProperty("prepared");
    expect(handed.at(-1)).toBeUndefined();
    await vi.waitFor(() => expect(prepared[0]!.closed).toBe(true));
    crossed.close();
  });

  it("is closed with its socket, or when the standby ends; one still being made then is closed as it comes, never pushed", async () => {
    const ws = await preparing();
    await ws.push("prepared", (p) => p.type === "prepared");
    ws.close();
    await vi.waitFor(() => expect(prepared[0]!.closed).toBe(true));
    // Its session ending closes the socket, and so the subscription.
    const ended = await preparing();
    await ended.push("prepared", (p) => p.type === "prepared");
    watching.get("s1")!({ errcode: "M_FORBIDDEN", message: "membership is now leave" });
    await ended.closed;
    await vi.waitFor(() => expect(prepared[1]!.closed).toBe(true));
    // Still being made when the socket goes: the prepare is told it is not wanted.
    let release!: () => void;
    prepareGate = new Promise((r) => (release = r));
    const late = await preparing();
    late.close();
    await late.closed;
    release();
    await new Promise((r) => setTimeout(r, 50));
    expect(prepared).toHaveLength(2);
    expect(late.pushes.some((p) => p.type === "prepared")).toBe(false);
  });
});
