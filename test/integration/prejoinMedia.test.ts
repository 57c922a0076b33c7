// The media connection made in the pre-join, on the real stack (Synapse, Janus 1.1.2, Parley;
// docs/join.md, seventeenth pass): a standby socket asking for it gets Janus's offer for the
// call's audio, answers it and connects, and Janus forwards nothing to it (each m-line was told
// not to before the offer left) while nobody in the call is told of it; its real hello seats it
// and the media flows, with no second connection. The videos the offer held back (twenty-sixth
// pass) come in a second offer once the connection is up, answered on the standby, or handed
// over by the hello that crossed it. A synthetic (werift) publisher and viewer.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { Method } from "matrix-js-sdk";
import { callSession, joinCall, seated, signallingUrl } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { SignallingClient } from "../support/signalling.ts";
import { SyntheticPublisher, SyntheticViewer } from "../support/synthetic.ts";

let stack: Stack;
let A: Institution;
let failed = false;
const closers: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true });
  A = stack.institutions[0]!;
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await stack?.stop({ keep: failed || undefined });
});

async function member(name: string, roomId?: string): Promise<{ user: TestUser; roomId: string }> {
  const u = await A.registerUser(name);
  const user = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
  return { user, roomId: await user.join(roomId ?? A.alias("prejoin")) };
}

describe("the pre-join's subscription through Janus", () => {
  it("connects before Join with nothing forwarded and nobody told; the real hello seats it and the media flows on it", async () => {
    const host = await member("ann-prejoin");
    const hostWs = await seated(A, await callSession(A, host.user, host.roomId), "ANNDEV");
    closers.push(() => hostWs.close());
    const publisher = new SyntheticPublisher();
    closers.push(() => publisher.close());
    await publisher.publish(hostWs);
    const list = await hostWs.push("ann's feed announced", (p) => p.type === "participants" && (p.participants as { streams: unknown[] }[]).some((x) => x.streams.length === 2), 30_000);
    const annVideo = (list.participants as { streams: { mid: string; kind: string }[] }[]).flatMap((x) => x.streams).find((st) => st.kind === "video")!.mid;

    const vic = await member("vic-prejoin", host.roomId);
    const session = await callSession(A, vic.user, vic.roomId);
    const ws = await SignallingClient.open(signallingUrl(A));
    closers.push(() => ws.close());
    expect(await ws.request({ type: "hello", session, standby: true, prepare: true })).toMatchObject({ type: "result", standby: true });
    const offered = await ws.push("the prepared offer", (p) => p.type === "prepared", 20_000);
    // Ann's audio; her video held back, for the seat to subscribe to at Join.
    expect(offered.streams).toEqual([expect.objectContaining({ feed: publisher.feed, kind: "audio", user_id: host.user.userId, device_id: "ANNDEV" })]);
    expect(offered.held).toEqual([{ feed: publisher.feed, mid: annVideo }]);
    const viewer = new SyntheticViewer();
    closers.push(() => viewer.pc.close());
    await viewer.answer(ws, offered);
    await waitFor("the pre-join's connection up (ICE, DTLS)", async () => viewer.pc.connectionState === "connected" || undefined, 20_000);
    // Connected: the held video comes in a second offer, answered on the standby too.
    const videos = await ws.push("the held video's offer", (p) => p.type === "prepared" && p !== offered, 20_000);
    expect(videos.streams).toEqual([
      expect.objectContaining({ feed: publisher.feed, kind: "audio", user_id: host.user.userId, device_id: "ANNDEV" }),
      expect.objectContaining({ feed: publisher.feed, kind: "video", user_id: host.user.userId, device_id: "ANNDEV" }),
    ]);
    await viewer.answer(ws, videos);
    // Nothing forwarded: Janus was told not to before each offer left.
    const before = await viewer.flow(2000);
    expect([...before.values()]).toEqual([0, 0]);
    expect(viewer.packets.size).toBe(0);
    // Nothing more is the standby's to subscribe to.
    expect(await ws.request({ type: "subscribe", e2ee: true, feeds: offered.held as { feed: string; mid: string }[] })).toMatchObject({ type: "error", errcode: "M_MISSING_TOKEN" });
    // Nobody in the call was told of a newcomer.
    const announced = (p: { type: string; participants?: unknown }) => p.type === "participants" && (p.participants as { user_id: string }[]).some((x) => x.user_id === vic.user.userId);
    expect(hostWs.pushes.some(announced)).toBe(false);

    // Join: the real hello on the same socket seats it, and it forwards.
    const hello = await ws.request({ type: "hello", session, device_id: "VICDEV" });
    expect(hello).toMatchObject({ type: "result", prepared: true });
    expect(hello).not.toHaveProperty("prepared_update"); // (answered on the standby)
    await hostWs.push("vic in the call", announced, 10_000);
    const flowing = await waitFor("audio and video flowing on the pre-join's connection", async () => {
      const f = await viewer.flow(1000);
      return [...f.values()].every((n) => n > 5) ? f : undefined;
    }, 20_000);
    expect(flowing.size).toBe(2);
    expect(viewer.pc.getTransceivers()).toHaveLength(2); // one connection, no m-line twice
  });

  it("a knocker's lobby socket asks for it in the lobby or at the invite: made once a host lets them in (not before), with the ICE servers the lobby grant lacked, and seated by the hello", async () => {
    // Ann hosts an invite-only meeting (the first local user to join is its host) and publishes.
    const alias = A.alias("prejoin-lobby");
    const host = await member("ann-lobby", alias);
    const hostWs = await seated(A, await callSession(A, host.user, host.roomId), "ANNDEV");
    closers.push(() => hostWs.close());
    await hostWs.push("ann the host", (p) => p.type === "meeting" && (p.you as { role?: string } | undefined)?.role === "host", 20_000);
    expect(await hostWs.request({ type: "moderate", action: { action: "settings", access: "invited" } })).toMatchObject({ type: "result", access: "invited" });
    const publisher = new SyntheticPublisher();
    closers.push(() => publisher.close());
    await publisher.publish(hostWs);
    await hostWs.push("ann's feed announced", (p) => p.type === "participants" && (p.participants as { streams: unknown[] }[]).some((x) => x.streams.length === 2), 30_000);

    // Kim knocks and asks her grant from the lobby; her socket stands by without media.
    const u = await A.registerUser("kim-lobby");
    const kim = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
    await kim.request(Method.Post, `/knock/${encodeURIComponent(alias)}`, {});
    await hostWs.push("kim in the lobby", (p) => p.type === "lobby" && (p.waiting as { user_id: string }[]).some((w) => w.user_id === kim.userId), 10_000);
    const grant = await joinCall(A, { openid_token: await kim.openIdToken(), room: host.roomId, ahead: true });
    expect(grant).toMatchObject({ status: 200, json: { ice_servers: [] } });
    const session = grant.json.session as string;
    const ws = await SignallingClient.open(signallingUrl(A));
    closers.push(() => ws.close());
    expect(await ws.request({ type: "hello", session, standby: true })).toMatchObject({ type: "result", standby: true, user_id: kim.userId });
    // Asked while still knocking (the knock's stripped state named the key mode): nothing is made,
    // past the membership reads too (calls LET_IN_WAIT_MS); it waits on for the let-in.
    const early = await SignallingClient.open(signallingUrl(A));
    closers.push(() => early.close());
    const other = await joinCall(A, { openid_token: await kim.openIdToken(), room: host.roomId, ahead: true });
    expect(await early.request({ type: "hello", session: other.json.session, standby: true, prepare: true })).toMatchObject({ type: "result", standby: true });
    await new Promise((r) => setTimeout(r, 2500));
    expect(early.pushes.some((p) => p.type === "prepared")).toBe(false);

    // Let in: the socket that asked in the lobby gets its offer (with ICE servers) as the host's
    // admit goes out; her client, seeing the invite, asks on the other socket.
    expect(await hostWs.request({ type: "moderate", action: { action: "admit", user_id: kim.userId } })).toMatchObject({ type: "result" });
    const lobbyOffer = await early.push("the offer asked in the lobby", (p) => p.type === "prepared", 20_000);
    expect(lobbyOffer).toMatchObject({ ice_servers: expect.arrayContaining([expect.objectContaining({ urls: expect.anything() })]), streams: [expect.objectContaining({ feed: publisher.feed, kind: "audio" })] });
    early.close();
    expect(await ws.request({ type: "hello", session, standby: true, prepare: true })).toMatchObject({ type: "result", standby: true });
    const offered = await ws.push("the prepared offer", (p) => p.type === "prepared", 20_000);
    expect(offered).toMatchObject({ ice_servers: expect.arrayContaining([expect.objectContaining({ urls: expect.anything() })]), ice_transport_policy: "all" });
    expect(offered.streams).toEqual([expect.objectContaining({ feed: publisher.feed, kind: "audio", user_id: host.user.userId })]);
    expect(offered.held).toEqual([{ feed: publisher.feed, mid: expect.any(String) }]);
    const viewer = new SyntheticViewer();
    closers.push(() => viewer.pc.close());
    await viewer.answer(ws, offered);
    await waitFor("the pre-join's connection up (ICE, DTLS)", async () => viewer.pc.connectionState === "connected" || undefined, 20_000);
    expect([...(await viewer.flow(1000)).values()]).toEqual([0]);
    // The held video's offer comes, and Join crosses it (not answered on the standby): the hello hands it over.
    const videos = await ws.push("the held video's offer", (p) => p.type === "prepared" && p !== offered, 20_000);
    await kim.join(host.roomId);
    const hello = await ws.request({ type: "hello", session, device_id: "KIMDEV" });
    expect(hello).toMatchObject({ type: "result", prepared: true, prepared_update: { jsep: { type: "offer", sdp: (videos.jsep as { sdp: string }).sdp }, streams: videos.streams } });
    // Answered as the call's: the video flows on the same connection, the audio since the hello.
    await viewer.answer(ws, hello.prepared_update as Record<string, unknown>);
    expect(viewer.pc.getTransceivers()).toHaveLength(2);
    await waitFor("audio and video flowing on the pre-join's connection", async () => {
      const f = await viewer.flow(1000);
      return [...f.values()].every((n) => n > 5) || undefined;
    }, 20_000);
  });

  it("not answered by the real hello, it is closed and the seat subscribes as without", async () => {
    const guest = await member("eve-prejoin");
    const session = await callSession(A, guest.user, guest.roomId);
    const ws = await SignallingClient.open(signallingUrl(A));
    closers.push(() => ws.close());
    expect(await ws.request({ type: "hello", session, standby: true, prepare: true })).toMatchObject({ type: "result" });
    await ws.push("the prepared offer", (p) => p.type === "prepared", 20_000);
    const hello = await ws.request({ type: "hello", session, device_id: "EVEDEV" });
    expect(hello).toMatchObject({ type: "result" });
    expect(hello).not.toHaveProperty("prepared");
    const list = await ws.push("the participant list", (p) => p.type === "participants", 10_000);
    const feed = (list.participants as { feed_id: string; streams: unknown[] }[]).find((x) => x.streams.length > 0)!.feed_id;
    const viewer = new SyntheticViewer();
    closers.push(() => viewer.pc.close());
    await viewer.subscribe(ws, [String(feed)]);
    await waitFor("media on the seat's own subscription", async () => {
      const f = await viewer.flow(1000);
      return [...f.values()].every((n) => n > 5) || undefined;
    }, 20_000);
  });
});
