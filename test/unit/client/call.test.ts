import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { setLogLevel } from "../../../client/src/log.ts";
import { CallConnection, type CallConnectionOptions, type LocalTracks } from "../../../client/src/rtc/call.ts";
import type { CallGrant } from "../../../client/src/rtc/callApi.ts";
import { SIMULCAST_ENCODINGS } from "../../../client/src/rtc/publisher.ts";
import { applyStreams, SUBSCRIBE_FEEDS_MAX } from "../../../client/src/rtc/subscriber.ts";
import { ViewReporter } from "../../../client/src/rtc/view.ts";
import type { ViewReport } from "../../../client/src/state/layoutModel.ts";
import { Store } from "../../../client/src/state/store.ts";
import { asTrack, FakeSocket, FakeTrack, tick } from "./fakes.ts";
import { FakeMediaStream, FakePeer, offerFor, peerFactory } from "./peers.ts";

const GRANT: CallGrant = { session: "s1", expiresAt: 0, callId: "c", roomId: "!r:x", iceServers: [{ urls: "stun:127.0.0.1:3478" }], iceTransportPolicy: "all", signalling: "/_parley/v1/signal" };
const REMOTE = { user_id: "@b:y", feed_id: 7, streams: [{ mid: "a", kind: "audio" }, { mid: "v", kind: "video" }], muted: { audio: false, video: false } };

let socket: FakeSocket;
/** Answers the server side automatically; tests override per type. */
let handlers: Record<string, (m: Record<string, unknown>) => Record<string, unknown> | ParleyClientError | undefined>;

function defaultHandlers(): typeof handlers {
  let feed = 100;
  return {
    hello: () => ({ user_id: "@a:x", room_id: "!r:x", call_id: "c" }),
    publish: () => ({ jsep: { type: "answer", sdp: "v=0\r\npublisher answer" }, feed_id: ++feed }),
    subscribe: (m) => {
      const feeds = (m.feeds as { feed: number }[]).map((f) => f.feed);
      const streams = feeds.flatMap((f) => [{ feed: f, mid: `${f}a`, kind: "audio", user_id: "@b:y" }, { feed: f, mid: `${f}v`, kind: "video", user_id: "@b:y" }]);
      return { jsep: offerFor(streams), streams };
    },
    unsubscribe: () => ({ streams: [] }),
    answer: () => ({}),
    trickle: () => ({}),
    mute: () => ({}),
    leave: () => ({}),
    ping: () => ({ pong: true }),
  };
}

function serve(s: FakeSocket): void {
  const send = s.send.bind(s);
  s.send = (data: string) => {
    send(data);
    const m = JSON.parse(data) as Record<string, unknown>;
    queueMicrotask(() => {
      const r = handlers[m.type as string]?.(m);
      if (r instanceof ParleyClientError) s.receive({ type: "error", id: m.id, errcode: r.code, error: r.detail ?? "" });
      else if (r) s.receive({ type: "result", id: m.id, ...r });
    });
  };
  queueMicrotask(() => s.open());
}

function setup(local: Partial<LocalTracks> = {}, join = vi.fn(async () => GRANT), more: Partial<CallConnectionOptions> = {}) {
  const audio = new FakeTrack("audio");
  const video = new FakeTrack("video");
  const tracks: LocalTracks = { audio: asTrack(audio), video: asTrack(video), muted: { audio: false, video: false }, ...local };
  const openId = vi.fn(async () => ({ access_token: "o", token_type: "Bearer", matrix_server_name: "x", expires_in: 60 }));
  const call = new CallConnection({
    callApi: "http://127.0.0.11:9",
    room: "!r:x",
    openId,
    local: () => tracks,
    peerFactory,
    join,
    socketFactory: (url) => {
      socket = new FakeSocket(url);
      serve(socket);
      return socket;
    },
    ...more,
  });
  return { call, join, openId, audio, video };
}

const sent = (type: string) => FakeSocket.all.flatMap((s) => s.sent).filter((m) => m.type === type);

beforeEach(() => {
  FakeSocket.all = [];
  FakePeer.all = [];
  handlers = defaultHandlers();
  vi.stubGlobal("MediaStream", FakeMediaStream);
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe("CallConnection", () => {
  it("joins with an OpenID token, says hello and publishes with simulcast", async () => {
    const { call, join, audio } = setup();
    await call.start();
    expect(join).toHaveBeenCalledWith("http://127.0.0.11:9", { openid_token: expect.objectContaining({ access_token: "o" }), room: "!r:x" });
    expect(socket.url).toBe("ws://127.0.0.11:9/_parley/v1/signal");
    expect(sent("hello")[0]).toMatchObject({ session: "s1" });
    expect(sent("publish")[0]).toMatchObject({ jsep: { type: "offer" }, simulcast: true });
    expect((sent("publish")[0]!.jsep as { sdp: string }).sdp).toContain("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1");
    const pub = FakePeer.all[0]!;
    expect(pub.config.iceServers).toEqual(GRANT.iceServers);
    expect(pub.transceivers.map((t) => [t.kind, t.init?.direction])).toEqual([["audio", "sendonly"], ["video", "sendonly"]]);
    expect(pub.transceivers[0]!.sender.track).toBe(audio);
    expect(pub.transceivers[1]!.init?.sendEncodings).toEqual(SIMULCAST_ENCODINGS);
    expect(pub.remoteDescription).toMatchObject({ type: "answer" });
    expect(call.state.get()).toMatchObject({ phase: "connected", ownFeed: 101 });
  });

  it("starts with the grant the pre-join asked for: no OpenID token, no join, its session in hello", async () => {
    const grantAhead = vi.fn(async () => ({ ...GRANT, session: "early" }));
    const { call, join, openId } = setup({}, undefined, { grantAhead });
    await call.start();
    expect(grantAhead).toHaveBeenCalledTimes(1);
    expect(join).not.toHaveBeenCalled();
    expect(openId).not.toHaveBeenCalled();
    expect(sent("hello").map((m) => m.session)).toEqual(["early"]);
    expect(call.state.get().phase).toBe("connected");
  });

  it("a grant ahead already here opens the socket before start() first yields (before the page draws the call screen); one on its way, after", async () => {
    const ready = setup({}, undefined, { grantAhead: () => ({ ...GRANT, session: "early" }) });
    const started = ready.call.start();
    expect(FakeSocket.all).toHaveLength(1);
    await started;
    expect(sent("hello").map((m) => m.session)).toEqual(["early"]);
    FakeSocket.all = [];
    const later = setup({}, undefined, { grantAhead: async () => ({ ...GRANT, session: "early" }) });
    const waiting = later.call.start();
    expect(FakeSocket.all).toHaveLength(0);
    await waiting;
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("asks for a fresh grant when the server no longer knows the one asked ahead, or there is none", async () => {
    handlers.hello = (m) =>
      m.session === "early" ? new ParleyClientError("M_UNKNOWN_TOKEN", "signalling", { detail: "unknown or expired session" }) : { user_id: "@a:x", room_id: "!r:x", call_id: "c" };
    const stale = setup({}, undefined, { grantAhead: async () => ({ ...GRANT, session: "early" }) });
    await stale.call.start();
    expect(stale.join).toHaveBeenCalledTimes(1);
    expect(sent("hello").map((m) => m.session)).toEqual(["early", "s1"]);
    FakeSocket.all = [];
    const none = setup({}, undefined, { grantAhead: async () => null });
    await none.call.start();
    expect(none.join).toHaveBeenCalledTimes(1);
    expect(sent("hello").map((m) => m.session)).toEqual(["s1"]);
  });

  it("tells the server about what is muted at join", async () => {
    const { call } = setup({ video: null, muted: { audio: true, video: true } });
    await call.start();
    expect(sent("mute").map((m) => [m.kind, m.muted])).toEqual([["audio", true], ["video", true]]);
  });

  it("holds local candidates until the offer is in, then trickles them", async () => {
    handlers.publish = () => undefined; // answer by hand
    const { call } = setup();
    const starting = call.start();
    await vi.waitFor(() => expect(sent("publish")).toHaveLength(1));
    FakePeer.all[0]!.candidate("candidate:1 1 udp 1 127.0.0.1 5000 typ host");
    expect(sent("trickle")).toHaveLength(0);
    socket.receive({ type: "result", id: sent("publish")[0]!.id, jsep: { type: "answer", sdp: "v=0\r\nx" }, feed_id: 1 });
    await starting;
    FakePeer.all[0]!.candidate(null);
    await tick();
    expect(sent("trickle").map((m) => [m.target, (m.candidate as { candidate?: string } | null)?.candidate ?? null])).toEqual([
      ["publisher", "candidate:1 1 udp 1 127.0.0.1 5000 typ host"],
      ["publisher", null],
    ]);
  });

  it("sends the subscriber's candidates right behind its answer, before the server has answered it", async () => {
    handlers.answer = () => undefined; // the server's reply to the answer never comes here
    const { call } = setup();
    await call.start();
    // A candidate gathered as the answer is set waits for the answer to go first.
    const setLocal = FakePeer.prototype.setLocalDescription;
    const spy = vi.spyOn(FakePeer.prototype, "setLocalDescription").mockImplementation(async function (this: FakePeer, d) {
      await setLocal.call(this, d);
      if (this === FakePeer.all[1]) this.candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ host");
    });
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(1));
    const subscriberTrickles = () => sent("trickle").filter((m) => m.target === "subscriber").map((m) => (m.candidate as { candidate?: string } | null)?.candidate ?? null);
    await vi.waitFor(() => expect(subscriberTrickles()).toEqual(["candidate:1 1 udp 1 127.0.0.1 5001 typ host"]));
    const order = FakeSocket.all.flatMap((s) => s.sent).map((m) => m.type);
    expect(order.indexOf("answer")).toBeLessThan(order.lastIndexOf("trickle"));
    // Gathered later: sent as it comes, the answer still unanswered.
    FakePeer.all[1]!.candidate(null);
    await tick();
    expect(subscriberTrickles()).toEqual(["candidate:1 1 udp 1 127.0.0.1 5001 typ host", null]);
    spy.mockRestore();
  });

  it("a grant saying relay makes the peer connections relay-only, with the grant's TURN server", async () => {
    const turn = { urls: "turn:127.0.0.1:3478?transport=udp", username: "1800000000:abc", credential: "c2VjcmV0" };
    const { call } = setup({}, vi.fn(async () => ({ ...GRANT, iceServers: [turn], iceTransportPolicy: "relay" as const })));
    await call.start();
    await vi.waitFor(() => expect(sent("publish")).toHaveLength(1));
    expect(FakePeer.all.length).toBeGreaterThanOrEqual(1);
    for (const pc of FakePeer.all) {
      expect(pc.config.iceTransportPolicy).toBe("relay");
      expect(pc.config.iceServers).toEqual([turn]);
    }
  });

  it("a grant asked in the lobby (no ICE servers) takes the ones its hello brings, a malformed entry left out", async () => {
    const turn = { urls: ["turn:127.0.0.1:3478?transport=udp"], username: "1800000000:abc", credential: "c2VjcmV0" };
    handlers.hello = () => ({ user_id: "@a:x", room_id: "!r:x", call_id: "c", ice_servers: [turn, { urls: 7 }, null], ice_transport_policy: "relay" });
    const { call } = setup({}, vi.fn(async () => ({ ...GRANT, iceServers: [] })));
    await call.start();
    await vi.waitFor(() => expect(sent("publish")).toHaveLength(1));
    for (const pc of FakePeer.all) expect(pc.config).toMatchObject({ iceServers: [turn], iceTransportPolicy: "relay" });
  });

  it("subscribes to the others while its own publish is still unanswered, and never to its own feed", async () => {
    handlers.publish = () => undefined; // answer by hand, late
    const { call } = setup();
    const starting = call.start();
    await vi.waitFor(() => expect(sent("publish")).toHaveLength(1));
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.waitFor(() => expect(sent("subscribe")).toHaveLength(1));
    expect(sent("subscribe")[0]).toMatchObject({ feeds: [{ feed: 7 }] });
    socket.receive({ type: "result", id: sent("publish")[0]!.id, jsep: { type: "answer", sdp: "v=0\r\nx" }, feed_id: 55 });
    await starting;
    // Our own feed, once up, is listed like anyone's: it is not subscribed to, nor shown.
    socket.receive({ type: "participants", participants: [{ ...REMOTE, feed_id: 55, user_id: "@a:x" }, REMOTE] });
    await tick();
    await tick();
    expect(sent("subscribe")).toHaveLength(1);
    expect(call.state.get().remotes.map((r) => r.key)).toEqual(["7"]);
  });

  it("subscribes to new feeds on ONE peer connection and unsubscribes gone ones", async () => {
    const { call } = setup();
    await call.start();
    socket.receive({ type: "participants", participants: [{ ...REMOTE, feed_id: 101, user_id: "@a:x" }, REMOTE] });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(1));
    expect(sent("subscribe")[0]).toMatchObject({ feeds: [{ feed: 7 }] });
    await vi.waitFor(() => expect(call.state.get().remotes[0]?.media?.video).toBeTruthy());
    const remote = call.state.get().remotes;
    expect(remote).toHaveLength(1);
    expect(remote[0]).toMatchObject({ key: "7", userId: "@b:y" });
    expect(remote[0]!.media!.stream.getTracks()).toHaveLength(2);

    socket.receive({ type: "participants", participants: [REMOTE, { ...REMOTE, feed_id: 8, user_id: "@c:z" }] });
    await vi.waitFor(() => expect(sent("subscribe")).toHaveLength(2));
    expect(sent("subscribe")[1]).toMatchObject({ feeds: [{ feed: 8 }] });
    expect(FakePeer.all).toHaveLength(2); // publisher + one subscriber

    socket.receive({ type: "participants", participants: [{ ...REMOTE, feed_id: 8, user_id: "@c:z" }] });
    await vi.waitFor(() => expect(sent("unsubscribe")).toHaveLength(1));
    expect(sent("unsubscribe")[0]).toMatchObject({ feeds: [7] });
    await vi.waitFor(() => expect(call.state.get().remotes.map((r) => r.key)).toEqual(["8"]));
  });

  it("more publishing feeds than one request may name: subscribed, then unsubscribed, SUBSCRIBE_FEEDS_MAX at most a request, on one connection", async () => {
    const { call } = setup();
    await call.start();
    const many = Array.from({ length: 2 * SUBSCRIBE_FEEDS_MAX + 2 }, (_, i) => ({ ...REMOTE, feed_id: 1000 + i }));
    socket.receive({ type: "participants", participants: many });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(3));
    expect(sent("subscribe").map((m) => (m.feeds as unknown[]).length)).toEqual([SUBSCRIBE_FEEDS_MAX, SUBSCRIBE_FEEDS_MAX, 2]);
    expect(sent("subscribe").flatMap((m) => (m.feeds as { feed: number }[]).map((f) => f.feed))).toEqual(many.map((p) => p.feed_id));
    await vi.waitFor(() => expect(call.state.get().remotes.filter((r) => r.media)).toHaveLength(many.length));
    expect(FakePeer.all).toHaveLength(2); // publisher + one subscriber
    socket.receive({ type: "participants", participants: [] });
    await vi.waitFor(() => expect(sent("unsubscribe")).toHaveLength(3));
    expect(sent("unsubscribe").map((m) => (m.feeds as unknown[]).length)).toEqual([SUBSCRIBE_FEEDS_MAX, SUBSCRIBE_FEEDS_MAX, 2]);
  });

  it("a refused request of several keeps the feeds of the ones before it: only its own and later feeds are asked again", async () => {
    const { call } = setup();
    await call.start();
    const subscribe = handlers.subscribe!;
    let requests = 0;
    handlers.subscribe = (m) => (++requests === 2 ? new ParleyClientError("M_UNKNOWN", "signalling", { detail: "busy" }) : subscribe(m));
    const many = Array.from({ length: SUBSCRIBE_FEEDS_MAX + 3 }, (_, i) => ({ ...REMOTE, feed_id: 2000 + i }));
    socket.receive({ type: "participants", participants: many });
    await vi.waitFor(() => expect(sent("subscribe")).toHaveLength(2));
    await tick();
    socket.receive({ type: "participants", participants: many });
    await vi.waitFor(() => expect(sent("subscribe")).toHaveLength(3));
    expect((sent("subscribe")[2]!.feeds as { feed: number }[]).map((f) => f.feed)).toEqual(many.slice(SUBSCRIBE_FEEDS_MAX).map((p) => p.feed_id));
    await vi.waitFor(() => expect(call.state.get().remotes.filter((r) => r.media)).toHaveLength(many.length));
    expect(sent("unsubscribe")).toHaveLength(0);
  });

  it("passes the server's candidates to the right peer connection", async () => {
    const { call } = setup();
    await call.start();
    socket.receive({ type: "trickle", target: "publisher", candidate: { candidate: "candidate:9", sdpMid: "0", sdpMLineIndex: 0 } });
    await tick();
    expect(FakePeer.all[0]!.remoteCandidates).toEqual([{ candidate: "candidate:9", sdpMid: "0", sdpMLineIndex: 0 }]);
  });

  it("publishes and subscribes again on fresh peer connections when asked to renegotiate", async () => {
    const { call } = setup();
    await call.start();
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(1));
    const [oldPub, oldSub] = FakePeer.all;
    socket.receive({ type: "renegotiate", reason: "janus restarted" });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(2));
    expect(oldPub!.closed && oldSub!.closed).toBe(true);
    expect(sent("publish")).toHaveLength(2);
    expect(sent("subscribe")).toHaveLength(2);
    expect(FakePeer.all).toHaveLength(4);
    await vi.waitFor(() => expect(call.state.get()).toMatchObject({ phase: "connected", ownFeed: 102 }));
  });

  it("a burst of renegotiate pushes restarts media once more at most, never tearing down the restart half done", async () => {
    const { call } = setup();
    await call.start();
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(1));
    // The server's answers to the first restart's publish wait until the whole burst is in.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const publish = handlers.publish!;
    handlers.publish = (m) => {
      void gate.then(() => socket.receive({ type: "result", id: m.id, ...(publish(m) as Record<string, unknown>) }));
      return undefined;
    };
    for (let i = 0; i < 3; i++) socket.receive({ type: "renegotiate", reason: "media session lost" });
    await tick();
    expect(sent("publish")).toHaveLength(2); // the first restart's, still waiting
    const restartPeers = FakePeer.all.slice(2);
    release();
    await vi.waitFor(() => expect(sent("publish")).toHaveLength(3));
    await vi.waitFor(() => expect(call.state.get().phase).toBe("connected"));
    // The first restart's publisher was not closed under it; the one more restart came after it.
    expect(sent("publish")).toHaveLength(3);
    expect(restartPeers[0]!.closed).toBe(true); // by the second restart, which ran after the first
    expect(FakePeer.all).toHaveLength(6);
  });

  it("subscribes again to a feed the server left out (gone at its check) when the next list still holds it", async () => {
    const { call } = setup();
    await call.start();
    const subscribe = handlers.subscribe!;
    handlers.subscribe = () => ({ streams: [] }); // gone: no offer, nothing subscribed
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.waitFor(() => expect(sent("subscribe")).toHaveLength(1));
    await tick();
    handlers.subscribe = subscribe;
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.waitFor(() => expect(sent("answer")).toHaveLength(1));
    expect(sent("subscribe")).toHaveLength(2);
    expect(sent("unsubscribe")).toHaveLength(0);
    await vi.waitFor(() => expect(call.state.get().remotes[0]?.media).not.toBeNull());
  });

  it("reconnects after a network blip: hello again, publish and subscribe again", async () => {
    vi.useFakeTimers();
    const { call } = setup();
    const starting = call.start();
    await vi.advanceTimersByTimeAsync(0);
    await starting;
    socket.receive({ type: "participants", participants: [REMOTE] });
    await vi.advanceTimersByTimeAsync(0);
    const first = socket;
    first.drop(1006);
    expect(call.state.get().phase).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(2000);
    expect(socket).not.toBe(first);
    expect(sent("hello")).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(0);
    expect(sent("publish")).toHaveLength(2);
    expect(sent("subscribe")).toHaveLength(2);
    expect(call.state.get().phase).toBe("connected");
  });

  it("carries the view reporter's request; a server that refuses it keeps the call, a reconnect sends it again", async () => {
    vi.useFakeTimers();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    handlers.view = () => new ParleyClientError("M_BAD_JSON", "signalling", { detail: "type: Invalid discriminator value" });
    const { call } = setup();
    const layout = new Store<{ report: ViewReport | null }>({ report: { videos: 2, pinned: ["7"], tiles: [{ feed: 7, height: 720 }] } });
    const views = new ViewReporter({ call, layout, statsEveryMs: 0 });
    const starting = call.start();
    await vi.advanceTimersByTimeAsync(0);
    await starting;
    await vi.advanceTimersByTimeAsync(3000);
    expect(sent("view")).toEqual([expect.objectContaining({ type: "view", videos: 2, pinned: ["7"], tiles: [{ feed: "7", height: 720 }] })]);
    expect(call.state.get().phase).toBe("connected");
    handlers.view = () => ({});
    socket.drop(1006);
    await vi.advanceTimersByTimeAsync(5000);
    expect(call.state.get().phase).toBe("connected");
    expect(sent("view")).toHaveLength(2);
    views.stop();
    warn.mockRestore();
  });

  it("a refused hello ends the call with the server's reason on screen and in the log", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    setLogLevel("warn");
    onTestFinished(() => setLogLevel("error"));
    handlers.hello = () => new ParleyClientError("M_FORBIDDEN", "signalling", { detail: "not let in" });
    const { call } = setup();
    await expect(call.start()).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    expect(call.state.get()).toMatchObject({ phase: "failed", error: { code: "M_FORBIDDEN" } });
    expect(call.state.get().error?.human).toBeTruthy();
    expect(warn).toHaveBeenCalledWith("[parley:call] the call ended", expect.objectContaining({ code: "M_FORBIDDEN", detail: expect.stringContaining("not let in") }));
    warn.mockRestore();
  });

  it("ends with human text when removed from the call", async () => {
    const { call } = setup();
    await call.start();
    socket.receive({ type: "evicted", errcode: "M_FORBIDDEN", error: "left the room" });
    expect(call.state.get().phase).toBe("failed");
    expect(call.state.get().error?.human).toBe("You're no longer allowed in this call (you left the room, or were removed from it).");
    expect(FakePeer.all.every((p) => p.closed)).toBe(true);
  });

  it("records who ended the session: from the eviction, else from the meeting's ended state", async () => {
    const { call } = setup();
    await call.start();
    socket.receive({ type: "evicted", errcode: "M_FORBIDDEN", error: "removed", by: "@h:x", reason: "spam" });
    expect(call.state.get()).toMatchObject({ phase: "failed", evicted: { errcode: "M_FORBIDDEN", by: "@h:x", reason: "spam" } });

    const second = setup();
    await second.call.start();
    socket.receive({ type: "meeting", access: "open", locked: false, guests: false, ended: { by: "@h:x", at: 1 }, you: { role: "participant", can: [] } });
    socket.receive({ type: "evicted", errcode: "M_NOT_FOUND", error: "the call has ended" });
    expect(second.call.state.get()).toMatchObject({ phase: "failed", evicted: { errcode: "M_NOT_FOUND", by: "@h:x", reason: null } });
    expect(second.call.state.get().error?.human).toBe("The call has ended.");
  });

  it("passes every push on to listeners and sends governance requests, rejecting with the server's error", async () => {
    const { call } = setup();
    await call.start();
    const seen: string[] = [];
    const off = call.onPush((p) => seen.push(p.type));
    socket.receive({ type: "reaction", user_id: "@b:y", emoji: "👍" });
    socket.receive({ type: "participants", participants: [] });
    socket.receive({ type: "lobby", waiting: "garbage" });
    off();
    socket.receive({ type: "stop_share", by: "@h:x" });
    expect(seen).toEqual(["reaction", "participants"]);

    handlers.hand = () => ({});
    await call.send({ type: "hand", raised: true });
    expect(sent("hand")).toEqual([expect.objectContaining({ type: "hand", raised: true })]);
    handlers.moderate = () => new ParleyClientError("M_FORBIDDEN", "signalling", { detail: "not a host" });
    await expect(call.send({ type: "moderate", action: { action: "end" } })).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    await call.leave();
    await expect(call.send({ type: "hand", raised: false })).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("fails with the join error in words (server not ready)", async () => {
    const { call } = setup({}, vi.fn(async () => Promise.reject(new ParleyClientError("M_UNRECOGNIZED", "join", { status: 404 }))));
    await expect(call.start()).rejects.toBeInstanceOf(ParleyClientError);
    expect(call.state.get()).toMatchObject({ phase: "failed" });
    expect(call.state.get().error?.human).toBe("This meeting server doesn't offer calls yet (its call service is missing or out of date).");
  });

  it("fails in words when the server has no media handlers yet", async () => {
    handlers.publish = () => new ParleyClientError("M_UNRECOGNIZED", "signalling", { detail: "publish is not supported here" });
    const { call } = setup();
    await expect(call.start()).rejects.toBeInstanceOf(ParleyClientError);
    expect(call.state.get().error?.human).toBe("The meeting server doesn't support this yet (its call service is out of date).");
  });

  it("leaves: says leave, closes the socket and both peer connections", async () => {
    const { call } = setup();
    await call.start();
    await call.leave();
    expect(sent("leave")).toHaveLength(1);
    expect(socket.closedWith?.code).toBe(1000);
    expect(FakePeer.all.every((p) => p.closed)).toBe(true);
    expect(call.state.get().phase).toBe("ended");
  });
});

describe("applyStreams", () => {
  it("adds new mids and drops a removed feed's", () => {
    const a = applyStreams(new Map(), {}, [{ feed: 1, mid: "0", kind: "audio", user_id: "@a", device_id: "A" }, { feed: 2, mid: "1", kind: "audio", user_id: "@b", device_id: "B" }]);
    const b = applyStreams(a, { removed: [1] }, []);
    expect([...b.keys()]).toEqual(["1"]);
    // Janus reuses an m-line for another feed.
    const c = applyStreams(b, {}, [{ feed: 3, mid: "1", kind: "audio", user_id: "@c", device_id: "C" }]);
    expect(c.get("1")?.feed).toBe(3);
  });
});

describe("CallConnection and E2EE", () => {
  function e2eeSetup(onHello: () => Promise<void>) {
    const rosters: { userId: string; deviceId: string }[][] = [];
    const arriving: { userId: string; deviceId: string }[] = [];
    const letIn: string[] = [];
    const refused: string[] = [];
    const call = new CallConnection({
      callApi: "http://127.0.0.11:9",
      room: "!r:x",
      openId: async () => ({ access_token: "o", token_type: "Bearer", matrix_server_name: "x", expires_in: 60 }),
      local: () => ({ audio: null, video: null, muted: { audio: true, video: true } }),
      peerFactory,
      join: async () => GRANT,
      transforms: { participants: (devices) => void rosters.push(devices), arriving: (d) => void arriving.push(d), letIn: (u, by) => void letIn.push(`${u} ${by}`), letInRefused: (u) => void refused.push(u) },
      onHello,
      socketFactory: (url) => {
        socket = new FakeSocket(url);
        serve(socket);
        return socket;
      },
    });
    return { call, rosters, arriving, letIn, refused };
  }

  it("hands the frame transforms the devices the server announces in the pre-join; a malformed announcement is dropped", async () => {
    const { call, arriving } = e2eeSetup(async () => undefined);
    await call.start();
    socket.receive({ type: "arriving", user_id: "@b:y", device_id: "BDEV" });
    socket.receive({ type: "arriving", user_id: "not a user", device_id: "X" });
    socket.receive({ type: "arriving", user_id: "@c:y", device_id: "" });
    expect(arriving).toEqual([{ userId: "@b:y", deviceId: "BDEV" }]);
  });

  it("hands the frame transforms the users the server says were let in; a malformed one is dropped", async () => {
    const { call, letIn } = e2eeSetup(async () => undefined);
    await call.start();
    socket.receive({ type: "let_in", user_id: "@e:y" });
    socket.receive({ type: "let_in", user_id: "nobody" });
    socket.receive({ type: "let_in" });
    expect(letIn).toEqual(["@e:y server"]);
  });

  it("tells the frame transforms of a user this device's own admit lets in as it asks the server (before the answer), and of a refusal; nothing for another act", async () => {
    const { call, letIn, refused } = e2eeSetup(async () => undefined);
    await call.start();
    const toldBeforeAnswer: string[][] = [];
    handlers.moderate = (m) => {
      toldBeforeAnswer.push([...letIn]);
      return (m.action as { user_id?: string }).user_id === "@no:y" ? new ParleyClientError("M_FORBIDDEN", "signalling", { detail: "locked" }) : {};
    };
    await call.send({ type: "moderate", action: { action: "admit", user_id: "@e:y" } });
    expect(toldBeforeAnswer).toEqual([["@e:y self"]]);
    expect(refused).toEqual([]);
    await expect(call.send({ type: "moderate", action: { action: "admit", user_id: "@no:y" } })).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    expect(refused).toEqual(["@no:y"]);
    await call.send({ type: "moderate", action: { action: "deny", user_id: "@f:y" } });
    await call.send({ type: "moderate", action: { action: "admit_all" } });
    expect(letIn).toEqual(["@e:y self", "@no:y self"]);
    expect(refused).toEqual(["@no:y"]);
  });

  it("publishes only once the key mode is set (what onHello returns has settled)", async () => {
    let setMode!: () => void;
    const { call } = e2eeSetup(() => new Promise<void>((r) => (setMode = r)));
    const starting = call.start();
    await vi.waitFor(() => expect(sent("hello")).toHaveLength(1));
    await tick();
    expect(sent("publish")).toHaveLength(0);
    setMode();
    await starting;
    expect(sent("publish")).toHaveLength(1);
  });

  it("tells the frame transforms which other devices are in the call and which publish (the SFU's roster), as the server lists them", async () => {
    const { call, rosters } = e2eeSetup(async () => undefined);
    await call.start();
    socket.receive({
      type: "participants",
      participants: [
        { ...REMOTE, device_id: "BDEV" },
        { ...REMOTE, feed_id: 8, user_id: "@c:z", device_id: "CDEV", streams: [] }, // not publishing
        { ...REMOTE, feed_id: 9, user_id: "@d:z", device_id: "" }, // no device declared
      ],
    });
    expect(rosters.at(-1)).toEqual([
      { userId: "@b:y", deviceId: "BDEV", publishing: true },
      { userId: "@c:z", deviceId: "CDEV", publishing: false },
    ]);
  });
});
