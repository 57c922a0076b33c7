// The media connection made in the pre-join (client/src/rtc/prejoinMedia.ts, docs/join.md): the
// standby socket asks for the subscription, its offer is answered on that socket with the call's
// own transforms on the receivers, and at Join the call takes socket and subscriber together;
// the hello's `prepared` decides whether the call uses it or subscribes as without.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CallConnection } from "../../../client/src/rtc/call.ts";
import type { CallGrant } from "../../../client/src/rtc/callApi.ts";
import { PrejoinSubscription } from "../../../client/src/rtc/prejoinMedia.ts";
import { StandbySocket } from "../../../client/src/rtc/signalling.ts";
import { SUBSCRIBE_FEEDS_MAX } from "../../../client/src/rtc/subscriber.ts";
import type { MediaTransformHook, ReceiverInfo } from "../../../client/src/rtc/transforms.ts";
import { FakeSocket, tick } from "./fakes.ts";
import { FakeMediaStream, FakePeer, offerFor, peerFactory } from "./peers.ts";

const URL = "ws://127.0.0.11:9/_parley/v1/signal";
const GRANT: CallGrant = { session: "s1", expiresAt: 0, callId: "c", roomId: "!r:x", iceServers: [{ urls: "turn:127.0.0.1:3478", username: "u", credential: "p" }], iceTransportPolicy: "relay", signalling: "/_parley/v1/signal" };
const HOST = { user_id: "@b:y", device_id: "BDEV", feed_id: 7, streams: [{ mid: "0", kind: "audio" }, { mid: "1", kind: "video" }], muted: { audio: false, video: false } };
const PREPARED_STREAMS = [
  { feed: 7, mid: "0", kind: "audio", user_id: "@b:y", device_id: "BDEV" },
  { feed: 7, mid: "1", kind: "video", user_id: "@b:y", device_id: "BDEV" },
];

/** The call's transforms: which receivers went to them, and when. */
function transforms(): MediaTransformHook & { attached: ReceiverInfo[] } {
  const attached: ReceiverInfo[] = [];
  return { e2ee: true, attached, attachReceiver: (_r, info) => void attached.push(info) };
}

/** A pre-join's standby socket asking for the subscription; the server side is the test's. */
function prejoin(hook = transforms()) {
  const media = new PrejoinSubscription(async () => ({ iceServers: GRANT.iceServers, iceTransportPolicy: GRANT.iceTransportPolicy, transforms: hook }), peerFactory);
  const standby = new StandbySocket(URL, "s1", (url) => new FakeSocket(url), media);
  media.bind(standby);
  const s = FakeSocket.last();
  s.open();
  s.receive({ type: "result", id: "standby", standby: true, user_id: "@a:x", room_id: "!r:x", call_id: "c" });
  return { media, standby, s, hook };
}

/** The server's `prepared` push, answered by the page (the answer's result is left to the test). */
async function offered(s: FakeSocket) {
  s.receive({ type: "prepared", jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS });
  await vi.waitFor(() => expect(s.sent.some((m) => m.type === "answer")).toBe(true));
}

/** A pre-join whose offer held the host's audio only (the video `held`), answered by the page. */
async function offeredAudio(held: unknown[] = [{ feed: 7, mid: "1" }]) {
  const p = prejoin();
  const audio = PREPARED_STREAMS.filter((x) => x.kind === "audio");
  p.s.receive({ type: "prepared", jsep: offerFor(audio), streams: audio, held });
  await vi.waitFor(() => expect(p.s.sent.filter((m) => m.type === "answer")).toHaveLength(1));
  return p;
}

/** Serves the call's requests on the (taken) socket: hello says `prepared` as given. */
function serveCall(s: FakeSocket, prepared: boolean, hello: Record<string, unknown> = {}) {
  const requests: Record<string, unknown>[] = [];
  const send = s.send.bind(s);
  s.send = (data: string) => {
    send(data);
    const m = JSON.parse(data) as Record<string, unknown>;
    if (typeof m.id !== "number") return;
    requests.push(m);
    queueMicrotask(() => {
      const answer: Record<string, Record<string, unknown>> = {
        hello: { user_id: "@a:x", room_id: "!r:x", call_id: "c", ...(prepared ? { prepared: true } : {}), ...hello },
        publish: { jsep: { type: "answer", sdp: "v=0\r\npublisher answer" }, feed_id: 100 },
        subscribe: { jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS },
      };
      s.receive({ type: "result", id: m.id, ...(answer[m.type as string] ?? {}) });
      if (m.type === "hello") s.receive({ type: "participants", participants: [HOST] });
    });
  };
  return requests;
}

/** A pre-join whose offer was answered, then Join: the call started on its socket, the hello saying `prepared` as given. */
async function joinedAfterAnswer(prepared: boolean) {
  const p = prejoin();
  await offered(p.s);
  const pc = FakePeer.all[0]!;
  const requests = serveCall(p.s, prepared);
  const call = callFor(p);
  await call.start();
  return { p, pc, requests, call };
}

function callFor(p: ReturnType<typeof prejoin>) {
  return new CallConnection({
    callApi: "http://127.0.0.11:9",
    room: "!r:x",
    openId: async () => ({ access_token: "o", token_type: "Bearer", matrix_server_name: "x", expires_in: 60 }),
    grantAhead: () => GRANT,
    local: () => ({ audio: null, video: null, muted: { audio: true, video: true } }),
    peerFactory,
    transforms: p.hook,
    socketAhead: (url) => p.standby.take(url),
    subscriberAhead: () => p.media.take(),
    socketFactory: (url) => new FakeSocket(url),
  });
}

beforeEach(() => {
  FakeSocket.all = [];
  FakePeer.all = [];
  vi.stubGlobal("MediaStream", FakeMediaStream);
});
afterEach(() => vi.unstubAllGlobals());

describe("the pre-join's subscription", () => {
  it("is asked with the standby hello, answered on the standby socket with the grant's ICE servers and the call's transforms on every receiver", async () => {
    const { s, hook } = prejoin();
    expect(s.sent[0]).toEqual({ type: "hello", id: "standby", session: "s1", standby: true, prepare: true });
    await offered(s);
    const pc = FakePeer.all[0]!;
    expect(pc.config).toMatchObject({ iceServers: GRANT.iceServers, iceTransportPolicy: "relay", bundlePolicy: "max-bundle" });
    expect(s.sent.find((m) => m.type === "answer")).toMatchObject({ jsep: { type: "answer" }, e2ee: true });
    // The transforms before any frame can come: at the answer, not at Join.
    expect(hook.attached.map((r) => `${r.kind} ${r.userId}|${r.deviceId}`)).toEqual(["audio @b:y|BDEV", "video @b:y|BDEV"]);
    pc.candidate("candidate:1 1 udp 1 127.0.0.1 9 typ host");
    await tick();
    expect(s.sent.filter((m) => m.type === "trickle")).toEqual([expect.objectContaining({ target: "subscriber", candidate: expect.objectContaining({ candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host" }) })]);
  });

  it("a knocker let in: its lobby socket asks once the invite shows the call, and the ICE servers its offer brings are the connection's (the lobby grant had none)", async () => {
    const hook = transforms();
    const media = new PrejoinSubscription(async () => ({ iceServers: [], iceTransportPolicy: "all", transforms: hook }), peerFactory);
    const standby = new StandbySocket(URL, "s1", (url) => new FakeSocket(url));
    const s = FakeSocket.last();
    s.open();
    s.receive({ type: "result", id: "standby", standby: true, user_id: "@a:x", room_id: "!r:x", call_id: "c" });
    expect(s.sent).toEqual([{ type: "hello", id: "standby", session: "s1", standby: true }]);
    expect(standby.prepareNow(media)).toBe(true);
    media.bind(standby);
    expect(s.sent.at(-1)).toEqual({ type: "hello", id: "standby-prepare", session: "s1", standby: true, prepare: true });
    s.receive({ type: "prepared", jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS, ice_servers: GRANT.iceServers, ice_transport_policy: "relay" });
    await vi.waitFor(() => expect(s.sent.some((m) => m.type === "answer")).toBe(true));
    expect(FakePeer.all[0]!.config).toMatchObject({ iceServers: GRANT.iceServers, iceTransportPolicy: "relay" });
  });

  it("taken at Join with the socket and seated by the hello: the call subscribes to nothing more and shows the host from its connection", async () => {
    const { pc, requests, call } = await joinedAfterAnswer(true);
    await vi.waitFor(() => expect(call.state.get().remotes).toMatchObject([{ feed: 7, userId: "@b:y" }]));
    // (Its own media published, muted as in the pre-join.)
    expect(requests.map((m) => m.type)).toEqual(["hello", "publish", "mute", "mute"]);
    expect(call.state.get().remotes[0]!.media?.video).not.toBeNull();
    // One subscriber peer connection (the pre-join's), one publisher.
    expect(FakePeer.all.filter((x) => x !== pc)).toHaveLength(1);
    expect(pc.closed).toBe(false);
    // Its requests are the call's now: a candidate found later goes on the call's signalling.
    pc.candidate("candidate:2 1 udp 1 127.0.0.1 10 typ host");
    await tick();
    expect(requests.at(-1)).toMatchObject({ type: "trickle", target: "subscriber" });
    await call.leave();
    expect(pc.closed).toBe(true);
  });

  it("its held videos (the offer was the host's audio) are subscribed at Join on the call's socket, by their publishers' mids, and answered", async () => {
    const p = await offeredAudio([{ feed: 7, mid: "1" }, { feed: 7 }, "x"]);
    const pc = FakePeer.all[0]!;
    // Nothing asked on the standby: the videos wait for the call.
    expect(p.s.sent.map((m) => m.type)).toEqual(["hello", "answer"]);
    const requests = serveCall(p.s, true);
    const call = callFor(p);
    await call.start();
    // Only the well-formed one, once.
    expect(requests.filter((m) => m.type === "subscribe")).toEqual([{ type: "subscribe", id: expect.any(Number), feeds: [{ feed: 7, mid: "1" }], e2ee: true }]);
    await vi.waitFor(() => expect(requests.filter((m) => m.type === "answer")).toHaveLength(1));
    await vi.waitFor(() => expect(call.state.get().remotes[0]?.media?.video).toBeTruthy());
    expect(FakePeer.all.filter((x) => x !== pc)).toHaveLength(1); // no second subscriber connection
    await call.leave();
  });

  it("more held videos than one subscribe may name: asked in requests of at most SUBSCRIBE_FEEDS_MAX", async () => {
    const held = Array.from({ length: SUBSCRIBE_FEEDS_MAX + 1 }, (_, i) => ({ feed: 100 + i, mid: "1" }));
    const p = await offeredAudio(held);
    const requests = serveCall(p.s, true);
    const call = callFor(p);
    await call.start();
    const asked = requests.filter((m) => m.type === "subscribe").map((m) => m.feeds as unknown[]);
    expect(asked.map((f) => f.length)).toEqual([SUBSCRIBE_FEEDS_MAX, 1]);
    expect(asked.flat()).toEqual(held);
    await call.leave();
  });

  it("the held videos' offer pushed once connected is answered on the standby: the call asks for nothing more", async () => {
    const p = await offeredAudio();
    p.s.receive({ type: "result", id: p.s.sent.find((m) => m.type === "answer")!.id });
    p.s.receive({ type: "prepared", jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS });
    await vi.waitFor(() => expect(p.s.sent.filter((m) => m.type === "answer")).toHaveLength(2));
    p.s.receive({ type: "result", id: p.s.sent.filter((m) => m.type === "answer")[1]!.id });
    const pc = FakePeer.all[0]!;
    expect(pc.getTransceivers()).toHaveLength(2);
    // (A hello handing the same offer over, as if it had crossed it: it was answered already.)
    const requests = serveCall(p.s, true, { prepared_update: { jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS } });
    const call = callFor(p);
    await call.start();
    await vi.waitFor(() => expect(call.state.get().remotes[0]?.media?.video).toBeTruthy());
    await tick();
    expect(requests.map((m) => m.type)).toEqual(["hello", "publish", "mute", "mute"]);
    await call.leave();
  });

  it("a hello that crossed the held videos' offer hands it over: answered once, on the call's socket", async () => {
    const p = await offeredAudio();
    // The server's hello result carries it (as CallSeats does when its answer had not come).
    const update = { jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS };
    const requests = serveCall(p.s, true, { prepared_update: update });
    const call = callFor(p);
    await call.start();
    await vi.waitFor(() => expect(call.state.get().remotes[0]?.media?.video).toBeTruthy());
    const types = requests.map((m) => m.type);
    expect(types.filter((t) => t === "answer")).toHaveLength(1);
    expect(types).not.toContain("subscribe");
    await call.leave();
  });

  it("a hello that does not say `prepared` (the server closed it): the pre-join's connection is closed and the call subscribes as without", async () => {
    const { pc: early, requests, call } = await joinedAfterAnswer(false);
    await vi.waitFor(() => expect(requests.map((m) => m.type)).toContain("subscribe"));
    expect(early.closed).toBe(true);
    await call.leave();
  });

  it("Join before its answer went out: nothing of it is taken, and nothing more goes out on the socket for it", async () => {
    const p = prejoin();
    const subscriber = p.media;
    p.s.receive({ type: "prepared", jsep: offerFor(PREPARED_STREAMS), streams: PREPARED_STREAMS });
    // (The answer is still being made: the peer connection exists, nothing is sent yet.)
    expect(subscriber.take()).toBeNull();
    expect(p.standby.take(URL)).toBe(p.s);
    await tick();
    await tick();
    expect(p.s.sent.filter((m) => m.type === "answer")).toEqual([]);
    expect(FakePeer.all.every((pc) => pc.closed)).toBe(true);
  });

  it("the server closing the standby socket closes the pre-join's connection", async () => {
    const p = prejoin();
    await offered(p.s);
    p.s.drop(4408, "no hello");
    expect(FakePeer.all[0]!.closed).toBe(true);
    expect(p.media.take()).toBeNull();
  });

  it("an answer's result that comes after the call took the socket is the call's client's to drop; the answer counts as sent", async () => {
    const { p, requests, call } = await joinedAfterAnswer(true);
    const answer = p.s.sent.find((m) => m.type === "answer")!;
    expect(typeof answer.id).toBe("string");
    p.s.receive({ type: "result", id: answer.id });
    expect(requests.map((m) => m.type)).not.toContain("subscribe");
    expect(call.state.get().phase).toBe("connected");
    await call.leave();
  });
});
