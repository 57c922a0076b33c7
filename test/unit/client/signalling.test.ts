import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { Push } from "../../../client/src/rtc/protocol.ts";
import { setLogLevel } from "../../../client/src/log.ts";
import { SignallingClient, StandbySocket } from "../../../client/src/rtc/signalling.ts";
import { FakeSocket, tick } from "./fakes.ts";

const HELLO = { user_id: "@a:x", room_id: "!r:x", call_id: "c1" };

function client(opts: Partial<ConstructorParameters<typeof SignallingClient>[0]> = {}) {
  const session = vi.fn(async (renew: boolean) => (renew ? "s2" : "s1"));
  const c = new SignallingClient({
    url: "ws://127.0.0.1:1/_parley/v1/signal",
    session,
    socketFactory: (url) => new FakeSocket(url),
    random: () => 0.5,
    backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0, maxAttempts: 3, fastAttempts: 1 },
    pingEveryMs: 60_000,
    ...opts,
  });
  return { c, session };
}

/** Opens the latest socket and answers hello. */
async function accept(hello = HELLO) {
  const s = FakeSocket.last();
  s.open();
  await tick();
  s.answer("hello", hello);
  await tick();
  return s;
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
});
afterEach(() => vi.useRealTimers());

describe("SignallingClient", () => {
  it("says hello with the session and resolves with the hello result", async () => {
    const { c } = client();
    const connected = c.connect();
    const s = FakeSocket.last();
    expect(s.url).toBe("ws://127.0.0.1:1/_parley/v1/signal");
    s.open();
    await tick();
    expect(s.lastSent("hello")).toMatchObject({ type: "hello", session: "s1" });
    s.answer("hello", HELLO);
    await expect(connected).resolves.toEqual(HELLO);
    expect(c.state.get().phase).toBe("open");
  });

  it("matches answers to requests by id, in any order", async () => {
    const { c } = client();
    void c.connect();
    const s = await accept();
    const a = c.request({ type: "mute", kind: "audio", muted: true });
    const b = c.request({ type: "ping" });
    const [muteMsg, pingMsg] = s.sent.slice(-2);
    s.receive({ type: "result", id: pingMsg!.id, pong: true });
    s.receive({ type: "result", id: muteMsg!.id });
    await expect(b).resolves.toMatchObject({ pong: true });
    await expect(a).resolves.toMatchObject({ type: "result" });
    expect(muteMsg!.id).not.toBe(pingMsg!.id);
  });

  it("rejects a request with the server's errcode and human text", async () => {
    const { c } = client();
    void c.connect();
    const s = await accept();
    const p = c.request({ type: "subscribe", feeds: [{ feed: 1 }] });
    s.fail("subscribe", "M_FORBIDDEN", "not in the room");
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ParleyClientError);
    expect((err as ParleyClientError).code).toBe("M_FORBIDDEN");
    expect((err as ParleyClientError).human).toMatch(/no longer allowed/);
    expect((err as ParleyClientError).detail).toContain("not in the room");
  });

  it("times out a request nobody answers", async () => {
    const { c } = client({ requestTimeoutMs: 1000 });
    void c.connect();
    await accept();
    const p = c.request({ type: "ping" }).catch((e: ParleyClientError) => e.code);
    await vi.advanceTimersByTimeAsync(1001);
    expect(await p).toBe("TIMEOUT");
  });

  it("hands parsed pushes to listeners and drops malformed ones (saying which), and a pre-join offer that crossed the hello quietly", async () => {
    const { c } = client();
    void c.connect();
    const s = await accept();
    const pushes: Push[] = [];
    c.events.on("push", (p) => pushes.push(p));
    const warned = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    const told = vi.spyOn(console, "debug").mockImplementation(() => undefined);
    setLogLevel("debug"); // (fakes.ts keeps the loggers quiet)
    s.receive({ type: "prepared", jsep: { type: "offer", sdp: "v=0" }, streams: [] });
    expect(warned).not.toHaveBeenCalled();
    expect(told).toHaveBeenCalledWith("[parley:signalling] a pre-join offer crossed the call's hello: not the call's");
    s.receive({ type: "nonsense" });
    expect(warned).toHaveBeenCalledWith("[parley:signalling] ignoring a malformed push", { type: "nonsense", errors: "unknown push type nonsense" });
    warned.mockRestore();
    told.mockRestore();
    setLogLevel("error");
    s.receive({ type: "participants", participants: [{ user_id: "@b:y", device_id: "BDEV", feed_id: 7, streams: [{ mid: "0", kind: "audio" }], muted: { audio: true } }] });
    s.receive({ type: "participants", participants: "nope" });
    s.receive({ type: "trickle", target: "subscriber", candidate: null });
    s.receive({ type: "trickle", target: "elsewhere", candidate: null });
    s.receiveRaw("{not json");
    expect(pushes).toEqual([
      { type: "participants", participants: [{ user_id: "@b:y", device_id: "BDEV", feed_id: 7, streams: [{ mid: "0", kind: "audio" }], muted: { audio: true, video: false } }] },
      { type: "trickle", target: "subscriber", candidate: null },
    ]);
  });

  it("reconnects with backoff after a drop, says hello again and reports the reconnect", async () => {
    const { c } = client();
    void c.connect();
    const first = await accept();
    const ready: boolean[] = [];
    c.events.on("ready", (r) => ready.push(r.reconnected));
    const pending = c.request({ type: "ping" }).catch((e: ParleyClientError) => e.code);
    first.drop(1006);
    expect(await pending).toBe("CLOSED");
    expect(c.state.get()).toMatchObject({ phase: "reconnecting", attempt: 1 });
    await expect(c.request({ type: "ping" })).rejects.toMatchObject({ code: "CLOSED" });

    await vi.advanceTimersByTimeAsync(99);
    expect(FakeSocket.all).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSocket.all).toHaveLength(2);
    // The second attempt fails too: the wait doubles.
    FakeSocket.last().drop(1006);
    expect(c.state.get().attempt).toBe(2);
    await vi.advanceTimersByTimeAsync(199);
    expect(FakeSocket.all).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    const third = await accept();
    expect(third.lastSent("hello")).toMatchObject({ session: "s1" });
    expect(ready).toEqual([true]);
    expect(c.state.get()).toMatchObject({ phase: "open", attempt: 0 });
  });

  it("gives up after maxAttempts and says why", async () => {
    const { c } = client();
    void c.connect();
    await accept();
    FakeSocket.last().drop();
    for (let i = 0; i < 3; i++) {
      await vi.advanceTimersByTimeAsync(2000);
      FakeSocket.last().drop();
    }
    expect(c.state.get().phase).toBe("closed");
    expect(c.state.get().error?.code).toBe("CLOSED");
    expect(c.state.get().error?.human).toMatch(/Lost the connection/);
  });

  it("asks for a new session when the server no longer knows it", async () => {
    const { c, session } = client();
    void c.connect();
    await accept();
    FakeSocket.last().drop();
    await vi.advanceTimersByTimeAsync(100);
    const s = FakeSocket.last();
    s.open();
    await tick();
    s.fail("hello", "M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    await tick();
    expect(session).toHaveBeenLastCalledWith(true);
    expect(s.lastSent("hello")).toMatchObject({ session: "s2" });
    s.answer("hello", HELLO);
    await tick();
    expect(c.state.get().phase).toBe("open");
  });

  it("renews an expired session (evicted M_UNKNOWN_TOKEN) instead of ending the call", async () => {
    const { c, session } = client();
    void c.connect();
    const s = await accept();
    s.receive({ type: "evicted", errcode: "M_UNKNOWN_TOKEN", error: "session expired" });
    expect(c.state.get().phase).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(100);
    const next = FakeSocket.last();
    next.open();
    await tick();
    expect(session).toHaveBeenLastCalledWith(true);
    expect(next.lastSent("hello")).toMatchObject({ session: "s2" });
  });

  it("stops for good when evicted (kick, ban, call end) and does not reconnect", async () => {
    const { c } = client();
    void c.connect();
    const s = await accept();
    s.receive({ type: "evicted", errcode: "M_FORBIDDEN", error: "you were removed from the room" });
    s.drop(4403, "you were removed from the room");
    expect(c.state.get().phase).toBe("closed");
    expect(c.state.get().error?.code).toBe("M_FORBIDDEN");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("treats a 4404 close without a push as the call having ended", async () => {
    const { c } = client();
    void c.connect();
    (await accept()).drop(4404, "call ended");
    expect(c.state.get().error?.code).toBe("M_NOT_FOUND");
    expect(c.state.get().error?.human).toBe("The call has ended.");
  });

  it("reopens the socket when a keep-alive ping goes unanswered", async () => {
    const { c } = client({ pingEveryMs: 1000, requestTimeoutMs: 500 });
    void c.connect();
    const s = await accept();
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.lastSent("ping")).toBeTruthy();
    await vi.advanceTimersByTimeAsync(500);
    expect(s.closedWith).not.toBeNull();
    expect(c.state.get().phase).toBe("reconnecting");
  });

  it("rejects connect() when the first socket never opens, with human text", async () => {
    const { c } = client();
    const p = c.connect();
    FakeSocket.last().drop(1006);
    const err = (await p.catch((e: unknown) => e)) as ParleyClientError;
    expect(err.code).toBe("NETWORK");
    expect(err.human).toMatch(/Couldn't reach the meeting server/);
    expect(c.state.get().phase).toBe("closed");
  });

  it("close() stops reconnecting", async () => {
    const { c } = client();
    void c.connect();
    const s = await accept();
    c.close();
    expect(s.closedWith?.code).toBe(1000);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeSocket.all).toHaveLength(1);
  });
});

describe("the pre-join's socket on standby", () => {
  const URL = "ws://127.0.0.1:1/_parley/v1/signal";
  /** A standby socket whose server answered its standby hello. */
  const standingBy = () => {
    const standby = new StandbySocket(URL, "s0", (url) => new FakeSocket(url));
    const s = FakeSocket.last();
    s.open();
    s.receive({ type: "result", id: s.lastSent("hello").id, standby: true, ...HELLO });
    return { standby, s };
  };

  it("says a standby hello with its session as soon as it opens", () => {
    const { s } = standingBy();
    expect(s.sent).toEqual([{ type: "hello", id: "standby", session: "s0", standby: true }]);
    expect(s.closedWith).toBeNull();
  });

  it("is taken by the call's first open: the real hello goes out on it at once, with no socket of its own", async () => {
    const { standby, s } = standingBy();
    const { c } = client({ socketAhead: (url) => standby.take(url) });
    const connected = c.connect();
    await tick();
    expect(FakeSocket.all).toEqual([s]);
    expect(s.lastSent("hello")).toMatchObject({ type: "hello", session: "s1" });
    expect(s.lastSent("hello")).not.toHaveProperty("standby");
    s.answer("hello", HELLO);
    await expect(connected).resolves.toEqual(HELLO);
    // Once: the socket is the call's now.
    expect(standby.take(URL)).toBeNull();
  });

  it("a socket still opening is taken too; its hello is the call's, not a standby one", async () => {
    const standby = new StandbySocket(URL, "s0", (url) => new FakeSocket(url));
    const { c } = client({ socketAhead: (url) => standby.take(url) });
    void c.connect();
    const s = FakeSocket.last();
    expect(FakeSocket.all).toEqual([s]);
    s.open();
    await tick();
    expect(s.sent).toEqual([expect.objectContaining({ type: "hello", session: "s1" })]);
  });

  it("the standby hello's late answer reaches the call's client and is dropped there", async () => {
    const standby = new StandbySocket(URL, "s0", (url) => new FakeSocket(url));
    const s = FakeSocket.last();
    s.open();
    const { c } = client({ socketAhead: (url) => standby.take(url) });
    const connected = c.connect();
    await tick();
    s.receive({ type: "result", id: "standby", standby: true, ...HELLO });
    s.answer("hello", { ...HELLO, call_id: "c2" });
    await expect(connected).resolves.toEqual({ ...HELLO, call_id: "c2" });
  });

  it("is not used once refused, closed by the server, or for another address: the call opens its own", async () => {
    const refused = new StandbySocket(URL, "s0", (url) => new FakeSocket(url));
    const r = FakeSocket.last();
    expect(refused.alive).toBe(true); // opening
    r.open();
    r.receive({ type: "error", id: "standby", errcode: "M_UNKNOWN_TOKEN", error: "unknown" });
    expect(r.closedWith?.code).toBe(1000);
    expect(refused.alive).toBe(false); // a new one is opened in its place (webServices.ts)
    expect(refused.take(URL)).toBeNull();

    const timedOut = new StandbySocket(URL, "s0", (url) => new FakeSocket(url));
    const t = FakeSocket.last();
    t.open();
    expect(timedOut.alive).toBe(true);
    t.drop(4408, "no hello");
    expect(timedOut.alive).toBe(false);
    expect(timedOut.take(URL)).toBeNull();

    const { standby, s } = standingBy();
    expect(standby.take("ws://127.0.0.1:2/_parley/v1/signal")).toBeNull();
    expect(s.closedWith?.code).toBe(1000);

    const { c } = client({ socketAhead: () => null });
    void c.connect();
    expect(FakeSocket.last().sent).toEqual([]);
    expect(FakeSocket.all).toHaveLength(4);
  });

  it("is asked for once: a reconnect opens a socket of its own", async () => {
    const { standby } = standingBy();
    const socketAhead = vi.fn((url: string) => standby.take(url));
    const { c } = client({ socketAhead });
    void c.connect();
    await tick();
    FakeSocket.last().answer("hello", HELLO);
    await tick();
    FakeSocket.last().drop(1006);
    await vi.advanceTimersByTimeAsync(100);
    expect(FakeSocket.all).toHaveLength(2);
    expect(socketAhead).toHaveBeenCalledTimes(1);
  });

  it("opened before its session is known: the standby hello waits for both the socket and the session, in either order", async () => {
    let give!: (s: string | null) => void;
    const first = new StandbySocket(URL, new Promise<string | null>((r) => (give = r)), (url) => new FakeSocket(url));
    const a = FakeSocket.last();
    a.open();
    await tick();
    expect(a.sent).toEqual([]);
    give("s0");
    await tick();
    expect(a.sent).toEqual([{ type: "hello", id: "standby", session: "s0", standby: true }]);
    expect(first.take(URL)).toBe(a);

    const second = new StandbySocket(URL, Promise.resolve("s0"), (url) => new FakeSocket(url));
    const b = FakeSocket.last();
    await tick();
    expect(b.sent).toEqual([]);
    b.open();
    expect(b.sent).toEqual([{ type: "hello", id: "standby", session: "s0", standby: true }]);
    second.close();
  });

  it("no session for it (the grant refused or naming another socket): closed, not used", async () => {
    for (const session of [Promise.resolve(null), Promise.reject(new Error("refused"))]) {
      const standby = new StandbySocket(URL, session, (url) => new FakeSocket(url));
      const s = FakeSocket.last();
      s.open();
      await tick();
      expect(s.sent).toEqual([]);
      expect(s.closedWith?.code).toBe(1000);
      expect(standby.take(URL)).toBeNull();
    }
  });

  it("taken by a Join before its session came (a knock let in): no standby hello, the call's own hello on it", async () => {
    let give!: (s: string | null) => void;
    const standby = new StandbySocket(URL, new Promise<string | null>((r) => (give = r)), (url) => new FakeSocket(url));
    const s = FakeSocket.last();
    s.open();
    const { c } = client({ socketAhead: (url) => standby.take(url) });
    void c.connect();
    await tick();
    give("s0");
    await tick();
    expect(s.sent).toEqual([expect.objectContaining({ type: "hello", session: "s1" })]);
    expect(s.closedWith).toBeNull();
  });

  it("opened without media (a knocker's lobby socket), asks for the pre-join's subscription on the same socket once: with its standby hello if still to go, else a second one", async () => {
    const prepare = () => ({ onPrepared: vi.fn(), onGone: vi.fn() });
    // Its standby hello out already: a second one, with the same session and prepare.
    const { standby, s } = standingBy();
    const media = prepare();
    expect(standby.prepareNow(media)).toBe(true);
    expect(s.sent.at(-1)).toEqual({ type: "hello", id: "standby-prepare", session: "s0", standby: true, prepare: true });
    s.receive({ type: "result", id: "standby-prepare", standby: true, ...HELLO });
    const offer = { type: "offer", sdp: "v=0" };
    s.receive({ type: "prepared", jsep: offer, streams: [], held: [{ feed: 3, mid: "1" }], ice_servers: [{ urls: "turn:127.0.0.1:3478", username: "u", credential: "c" }, { nonsense: 1 }], ice_transport_policy: "relay" });
    expect(media.onPrepared).toHaveBeenCalledWith({ jsep: offer, streams: [], held: [{ feed: 3, mid: "1" }], ice: { iceServers: [{ urls: "turn:127.0.0.1:3478", username: "u", credential: "c" }], iceTransportPolicy: "relay" } });
    expect(s.closedWith).toBeNull();
    // Once: a second ask sends nothing.
    expect(standby.prepareNow(prepare())).toBe(false);
    expect(s.sent.filter((m) => m.type === "hello")).toHaveLength(2);
    // Its close tells the subscription.
    standby.close();
    expect(media.onGone).toHaveBeenCalled();

    // Still opening (or its session still to come): the standby hello itself says prepare, nothing else goes out.
    let give!: (t: string | null) => void;
    const opening = new StandbySocket(URL, new Promise<string | null>((r) => (give = r)), (url) => new FakeSocket(url));
    const o = FakeSocket.last();
    expect(opening.prepareNow(prepare())).toBe(true);
    o.open();
    give("s0");
    await tick();
    expect(o.sent).toEqual([{ type: "hello", id: "standby", session: "s0", standby: true, prepare: true }]);
    // Taken or gone: nothing asked.
    expect(opening.take(URL)).toBe(o);
    expect(opening.prepareNow(prepare())).toBe(false);
  });

  it("close() closes it (another pre-join, the meeting left)", () => {
    const { standby, s } = standingBy();
    standby.close();
    expect(s.closedWith).toEqual({ code: 1000, reason: "not joining" });
    expect(standby.take(URL)).toBeNull();
  });
});
