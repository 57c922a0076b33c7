// VideoRoom admin, publisher and subscriber operations: the bodies and JSEPs they send, the
// replies they accept, and the typed errors. The real plugin is exercised in
// test/integration/sfu.test.ts (which cannot send SDP: media would bind non-loopback addresses).
import type { WebSocket } from "ws";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { JanusReplyError, VideoRoomError } from "../../../appservice/src/sfu/errors.ts";
import type { JanusPluginHandle } from "../../../appservice/src/sfu/handle.ts";
import { VideoRoomPublisher, withOpusDtx, type TalkingEvent } from "../../../appservice/src/sfu/publisher.ts";
import { JanusSession } from "../../../appservice/src/sfu/session.ts";
import { VideoRoomSubscriber } from "../../../appservice/src/sfu/subscriber.ts";
import { JanusTransport } from "../../../appservice/src/sfu/transport.ts";
import { VideoRoomAdmin, type VideoRoomNotification } from "../../../appservice/src/sfu/videoroom.ts";
import { FakeJanus, send, type Json } from "./fakeJanus.ts";

let janus: FakeJanus;
let transport: JanusTransport;
let session: JanusSession;
let handle: JanusPluginHandle;
/** Answers the next VideoRoom message with `data` (and `jsep`), as "success" or ack + "event". */
let answer: (body: Json) => { data: Json; jsep?: Json; async: boolean };

beforeEach(async () => {
  janus = await FakeJanus.start();
  const model = janus.emulate({ adminKey: "k" });
  janus.onRequest((msg, socket: WebSocket) => {
    if (msg["janus"] !== "message") return model.answer(msg, (r) => send(socket, r));
    const { data, jsep, async } = answer(msg["body"] as Json);
    const tx = msg["transaction"];
    if (async) send(socket, { janus: "ack", transaction: tx, session_id: msg["session_id"] });
    send(socket, {
      janus: async ? "event" : "success", transaction: tx, session_id: msg["session_id"], sender: msg["handle_id"],
      plugindata: { plugin: "janus.plugin.videoroom", data }, ...(jsep ? { jsep } : {}),
    });
  });
  transport = await JanusTransport.connect({ url: janus.url, apiSecret: "s", requestTimeoutMs: 500 });
  session = await JanusSession.create(transport);
  handle = await session.attach("janus.plugin.videoroom");
});

afterEach(async () => {
  await session.destroy();
  await transport.close();
  await janus.close();
});

const lastMessage = () => janus.received.filter((m) => m["janus"] === "message").at(-1)!;

describe("VideoRoomAdmin", () => {
  it("creates a private, non-permanent room with admin_key, secret, require_e2ee and a publisher limit", async () => {
    answer = (b) => ({ data: { videoroom: "created", room: b["room"], permanent: false }, async: false });
    await new VideoRoomAdmin(handle, "adm").create({ room: "r1", secret: "sec", requireE2ee: true, publishers: 6, bitrate: 512000 });
    expect(lastMessage()["body"]).toEqual({
      request: "create", admin_key: "adm", room: "r1", secret: "sec", description: "r1", is_private: true,
      permanent: false, require_e2ee: true, publishers: 6, bitrate: 512000,
    });
  });

  it("creates a room with talk detection tuned by Parley and Opus DTX (docs/large-meetings.md)", async () => {
    answer = (b) => ({ data: { videoroom: "created", room: b["room"] }, async: false });
    await new VideoRoomAdmin(handle, "adm").create({
      room: "r2", secret: "sec", requireE2ee: true, publishers: 50, opusDtx: true, talking: { audioActivePackets: 5, audioLevelAverage: 25 },
    });
    expect(lastMessage()["body"]).toMatchObject({
      room: "r2", publishers: 50, opus_dtx: true, audiolevel_ext: true, audiolevel_event: true, audio_active_packets: 5, audio_level_average: 25,
    });
  });

  it.each([
    [426, "NO_SUCH_ROOM"], [427, "ROOM_EXISTS"], [429, "MISSING_ELEMENT"], [433, "UNAUTHORIZED"], [436, "ID_EXISTS"], [480, "UNKNOWN_ERROR"],
  ])("turns error_code %i into VideoRoomError %s", async (code, kind) => {
    answer = () => ({ data: { videoroom: "event", error_code: code, error: "nope" }, async: false });
    const err = await new VideoRoomAdmin(handle, "adm").destroy("r1", "sec").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VideoRoomError);
    expect(err).toMatchObject({ code, kind, reason: "nope" });
  });

  it("parses exists, listparticipants and kick replies, refusing the wrong shape", async () => {
    const admin = new VideoRoomAdmin(handle, "adm");
    answer = () => ({ data: { videoroom: "success", room: "r1", exists: true }, async: false });
    expect(await admin.exists("r1")).toBe(true);
    answer = () => ({ data: { videoroom: "participants", room: "r1", participants: [{ id: "a", display: "A", publisher: true }] }, async: false });
    expect(await admin.listParticipants("r1")).toEqual([{ id: "a", display: "A", publisher: true }]);
    answer = () => ({ data: { videoroom: "success" }, async: false });
    await admin.kick("r1", "sec", "a");
    expect(lastMessage()["body"]).toEqual({ request: "kick", room: "r1", secret: "sec", id: "a" });
    answer = () => ({ data: { videoroom: "participants", participants: [{ id: 5 }] }, async: false });
    await expect(admin.listParticipants("r1")).rejects.toBeInstanceOf(JanusReplyError);
  });
});

describe("VideoRoomPublisher", () => {
  it("joins without SDP and returns id, private_id and the publishers already there", async () => {
    answer = () => ({
      data: { videoroom: "joined", room: "r1", id: "alice", private_id: 42, publishers: [{ id: "bob", display: "Bob", streams: [{ type: "video", mid: "1" }] }] },
      async: true,
    });
    const joined = await new VideoRoomPublisher(handle).join({ room: "r1", id: "alice", display: "Alice" });
    expect(joined).toEqual({ id: "alice", privateId: 42, publishers: [{ id: "bob", display: "Bob", streams: [{ type: "video", mid: "1" }] }] });
    expect(lastMessage()["body"]).toEqual({ request: "join", ptype: "publisher", room: "r1", id: "alice", display: "Alice" });
    expect(lastMessage()["jsep"]).toBeUndefined();
  });

  it("publishes with e2ee and rid_order in the JSEP and returns Janus's answer", async () => {
    answer = () => ({ data: { videoroom: "event", configured: "ok", streams: [{ type: "video", mid: "1", simulcast: true }] }, jsep: { type: "answer", sdp: "v=0 answer" }, async: true });
    const pub = new VideoRoomPublisher(handle);
    const out = await pub.publish({ jsep: { type: "offer", sdp: "v=0 offer", e2ee: false }, e2ee: true, ridOrder: "lmh", bitrate: 1_000_000 });
    expect(out.answer).toEqual({ type: "answer", sdp: "v=0 answer" });
    expect(out.streams).toEqual([{ type: "video", mid: "1", simulcast: true }]);
    expect(lastMessage()["jsep"]).toEqual({ type: "offer", sdp: "v=0 offer", e2ee: true, rid_order: "lmh" });
    expect(lastMessage()["body"]).toEqual({ request: "publish", bitrate: 1_000_000 });
  });

  it("refuses a publish reply without an answer; configure without jsep needs none", async () => {
    const pub = new VideoRoomPublisher(handle);
    answer = () => ({ data: { videoroom: "event", configured: "ok" }, async: true });
    await expect(pub.publish({ jsep: { type: "offer", sdp: "x" }, e2ee: true })).rejects.toBeInstanceOf(JanusReplyError);
    await expect(pub.configure({ bitrate: 1, streams: [{ mid: "0", send: false }] })).resolves.toEqual({ answer: undefined });
    expect(lastMessage()["body"]).toEqual({ request: "configure", bitrate: 1, streams: [{ mid: "0", send: false }] });
  });

  it("surfaces asynchronous errors (an e2ee room refusing a clear publish) as VideoRoomError", async () => {
    answer = () => ({ data: { videoroom: "event", error_code: 433, error: "Room requires end-to-end encrypted media" }, async: true });
    await expect(new VideoRoomPublisher(handle).publish({ jsep: { type: "offer", sdp: "x" }, e2ee: false })).rejects.toMatchObject({ kind: "UNAUTHORIZED" });
  });

  it("passes room notifications on, parsed", async () => {
    const seen: VideoRoomNotification[] = [];
    new VideoRoomPublisher(handle).onNotification((n) => seen.push(n));
    janus.broadcast({ janus: "event", session_id: session.id, sender: handle.id, plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: "event", room: "r1", leaving: "ok", reason: "kicked" } } });
    janus.broadcast({ janus: "event", session_id: session.id, sender: handle.id, plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: 3 } } });
    await new Promise((r) => setTimeout(r, 30));
    expect(seen).toEqual([{ videoroom: "event", room: "r1", leaving: "ok", reason: "kicked" }]);
  });
});

describe("Opus DTX in the publisher's offer (Janus 1.1.2 answers usedtx=1 only to an offer that has it)", () => {
  const offer = (...lines: string[]) => ["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111 0", ...lines, ""].join("\r\n");

  it("adds usedtx=1 to the Opus fmtp, or an fmtp line when there is none; other codecs and lines stay", () => {
    expect(withOpusDtx(offer("a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:0 PCMU/8000", "a=fmtp:0 x=1")))
      .toBe(offer("a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1", "a=rtpmap:0 PCMU/8000", "a=fmtp:0 x=1"));
    expect(withOpusDtx(offer("a=rtpmap:111 OPUS/48000/2", "a=mid:0"))).toBe(offer("a=rtpmap:111 OPUS/48000/2", "a=fmtp:111 usedtx=1", "a=mid:0"));
  });

  it("leaves an offer that already says usedtx (either way) and one without Opus as they are", () => {
    const dtxOff = offer("a=rtpmap:111 opus/48000/2", "a=fmtp:111 usedtx=0");
    expect(withOpusDtx(dtxOff)).toBe(dtxOff);
    const video = "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=rtpmap:96 VP8/90000\n";
    expect(withOpusDtx(video)).toBe(video);
  });

  it("is applied to the publish JSEP when asked", async () => {
    answer = () => ({ data: { videoroom: "event", configured: "ok" }, jsep: { type: "answer", sdp: "v=0 answer" }, async: true });
    await new VideoRoomPublisher(handle).publish({ jsep: { type: "offer", sdp: offer("a=rtpmap:111 opus/48000/2") }, e2ee: true, opusDtx: true });
    expect((lastMessage()["jsep"] as { sdp: string }).sdp).toContain("a=fmtp:111 usedtx=1");
  });
});

describe("talking events", () => {
  const talk = (data: Json) =>
    janus.broadcast({ janus: "event", session_id: session.id, sender: handle.id, plugindata: { plugin: "janus.plugin.videoroom", data } });

  it("a publisher handle keeps only its own talking / stopped-talking (Janus sends every one to every publisher)", async () => {
    answer = () => ({ data: { videoroom: "joined", room: "r1", id: "alice", private_id: 1, publishers: [] }, async: true });
    const pub = new VideoRoomPublisher(handle);
    const seen: TalkingEvent[] = [];
    pub.onTalking((e) => seen.push(e));
    talk({ videoroom: "talking", room: "r1", id: "alice", mid: "0" }); // before join: not known as ours yet
    await pub.join({ room: "r1", id: "alice", display: "A" });
    talk({ videoroom: "talking", room: "r1", id: "bob", mid: "0", "audio-level-dBov-avg": 20 });
    talk({ videoroom: "talking", room: "r1", id: "alice", mindex: 0, mid: "0", "audio-level-dBov-avg": 21.5 });
    talk({ videoroom: "talking", room: "r1", id: 7 });
    talk({ videoroom: "stopped-talking", room: "r1", id: "alice", mid: "0", "audio-level-dBov-avg": 60 });
    await vi.waitFor(() => expect(seen).toHaveLength(2));
    expect(seen).toEqual([{ talking: true, mid: "0", level: 21.5 }, { talking: false, mid: "0", level: 60 }]);
  });
});

describe("VideoRoomSubscriber", () => {
  it("reports the substream Janus switched each m-line to; other events and malformed ones are not reports", async () => {
    const sub = new VideoRoomSubscriber(handle);
    const seen: [string, number][] = [];
    const all: [string, number][] = [];
    const off = sub.onSubstream((mid, layer) => seen.push([mid, layer]));
    sub.onSubstream((mid, layer) => all.push([mid, layer]));
    const event = (data: Json) =>
      janus.broadcast({ janus: "event", session_id: session.id, sender: handle.id, plugindata: { plugin: "janus.plugin.videoroom", data } });
    event({ videoroom: "event", room: "r1", mid: "1", substream: 0 });
    event({ videoroom: "event", room: "r1", mid: "1", temporal: 2 });
    event({ videoroom: "event", room: "r1", mid: "3", substream: 7 });
    event({ videoroom: "event", room: "r1", substream: 1 });
    event({ videoroom: "talking", room: "r1", id: "x", mid: "1", substream: 1 });
    event({ videoroom: "event", room: "r1", mid: "3", substream: 2 });
    await vi.waitFor(() => expect(seen).toHaveLength(2));
    off();
    event({ videoroom: "event", room: "r1", mid: "1", substream: 2 });
    await vi.waitFor(() => expect(all).toHaveLength(3)); // delivered, to the listener still on
    expect(seen).toEqual([["1", 0], ["3", 2]]);
  });

  it("configures only the m-lines given: pause, resume, substream (no renegotiation)", async () => {
    answer = () => ({ data: { videoroom: "event", room: "r1", configured: "ok" }, async: true });
    await new VideoRoomSubscriber(handle).configure([{ mid: "1", send: false }, { mid: "3", send: true, substream: 2 }, { mid: "5", substream: 0 }]);
    expect(lastMessage()["body"]).toEqual({ request: "configure", streams: [{ mid: "1", send: false }, { mid: "3", substream: 2, send: true }, { mid: "5", substream: 0 }] });
    expect(lastMessage()["jsep"]).toBeUndefined();
  });

  it("joins with multistream streams and returns Janus's offer", async () => {
    answer = () => ({
      data: { videoroom: "attached", room: "r1", streams: [{ mid: "0", type: "audio", feed_id: "bob", feed_mid: "0" }] },
      jsep: { type: "offer", sdp: "v=0 offer", e2ee: true },
      async: true,
    });
    const sub = new VideoRoomSubscriber(handle);
    const out = await sub.join({ room: "r1", streams: [{ feed: "bob", substream: 1 }, { feed: "carol", mid: "1" }], privateId: 42 });
    expect(out.offer).toEqual({ type: "offer", sdp: "v=0 offer", e2ee: true });
    expect(out.streams[0]).toMatchObject({ mid: "0", feed_id: "bob" });
    expect(lastMessage()["body"]).toEqual({
      request: "join", ptype: "subscriber", room: "r1", use_msid: true, private_id: 42,
      streams: [{ feed: "bob", substream: 1 }, { feed: "carol", mid: "1" }],
    });
  });

  it("subscribes, unsubscribes, starts with the answer and selects simulcast layers", async () => {
    const sub = new VideoRoomSubscriber(handle);
    answer = () => ({ data: { videoroom: "updated", room: "r1", streams: [] }, jsep: { type: "offer", sdp: "o2" }, async: true });
    expect((await sub.subscribe([{ feed: "dave" }, { feed: "erin", substream: 0 }])).offer).toEqual({ type: "offer", sdp: "o2" });
    expect(lastMessage()["body"]).toEqual({ request: "subscribe", streams: [{ feed: "dave" }, { feed: "erin", substream: 0 }] });
    await sub.unsubscribe([{ feed: "dave" }, { subMid: "3" }]);
    expect(lastMessage()["body"]).toEqual({ request: "unsubscribe", streams: [{ feed: "dave" }, { sub_mid: "3" }] });
    answer = () => ({ data: { videoroom: "event", room: "r1", started: "ok" }, async: true });
    await sub.start({ type: "answer", sdp: "a" }, true);
    expect(lastMessage()["jsep"]).toEqual({ type: "answer", sdp: "a", e2ee: true });
    answer = () => ({ data: { videoroom: "event", room: "r1", configured: "ok" }, async: true });
    await sub.configure([{ mid: "1", substream: 0, temporal: 1 }, { mid: "2", send: false }]);
    expect(lastMessage()["body"]).toEqual({ request: "configure", streams: [{ mid: "1", substream: 0, temporal: 1 }, { mid: "2", send: false }] });
  });

  it("maps 428 for a feed that is not publishing", async () => {
    answer = () => ({ data: { videoroom: "event", error_code: 428, error: "No such feed (x)" }, async: true });
    await expect(new VideoRoomSubscriber(handle).join({ room: "r1", streams: [{ feed: "x" }] })).rejects.toMatchObject({ kind: "NO_SUCH_FEED" });
  });
});
