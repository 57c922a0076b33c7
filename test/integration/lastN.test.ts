// Large meetings on the real stack (Synapse, Janus 1.1.2, Parley; docs/large-meetings.md):
// synthetic participants (werift peer connections, no browser) publish Opus with the
// audio-level extension and VP8 through Janus; two synthetic viewers subscribe to everyone. A
// `view` with videos=1 makes Janus stop forwarding the other videos (the viewer's packet counts)
// while every audio keeps flowing, the `videos` push names exactly the forwarded feed, and a
// publisher who starts talking (loud audio levels: Janus's own talk detection) reaches the
// viewers as a `speakers` push and becomes their one video, its keyframe requests (one PLI per
// resumed viewer in Janus 1.1.2) arriving as one batch.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { callSession, seated } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import type { Answer, SignallingClient } from "../support/signalling.ts";
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

const lastPush = (ws: SignallingClient, type: string): Answer | undefined => ws.pushes.filter((p) => p.type === type).at(-1);

describe("last-N videos and the speaker order through Janus", () => {
  it("videos=1 stops the other videos at Janus, audio flows for all, and a new speaker becomes the one video", async () => {
    const users = await Promise.all(["ann", "ben", "cat", "vic", "dan"].map(async (name) => {
      const u = await A.registerUser(`${name}-lastn`);
      return new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
    }));
    const roomId = await users[0]!.join(A.alias("lastn"));
    await Promise.all(users.slice(1).map((u) => u.join(roomId)));
    // Seated one after the other: a seat joins the call (its place in the join order) at hello.
    const sockets: SignallingClient[] = [];
    for (const u of users) sockets.push(await seated(A, await callSession(A, u, roomId)));
    closers.push(() => sockets.forEach((s) => s.close()));
    const [annWs, benWs, catWs, vicWs, danWs] = sockets as [SignallingClient, SignallingClient, SignallingClient, SignallingClient, SignallingClient];

    // Three publishers, one after the other (join order ann, ben, cat).
    const pubs = [new SyntheticPublisher(), new SyntheticPublisher(), new SyntheticPublisher()];
    closers.push(...pubs.map((p) => () => p.close()));
    for (const [i, ws] of [annWs, benWs, catWs].entries()) await pubs[i]!.publish(ws);
    const [ann, ben, cat] = pubs.map((p) => p.feed) as [string, string, string];
    // The room negotiates the audio-level extension and Opus DTX (the offers had no usedtx).
    expect(pubs[0]!.answerSdp).toMatch(/a=extmap:\d+ urn:ietf:params:rtp-hdrext:ssrc-audio-level/);
    expect(pubs[0]!.answerSdp).toMatch(/a=fmtp:111 .*usedtx=1/);
    // The roster announces a feed once Janus receives its media (to the members: ann is one).
    await annWs.push("three publishers with video", (p) =>
      p.type === "participants" && (p.participants as { streams: { kind: string }[] }[]).filter((x) => x.streams.some((s) => s.kind === "video")).length === 3,
    30_000);

    const viewer = new SyntheticViewer();
    const second = new SyntheticViewer();
    closers.push(() => viewer.pc.close(), () => second.pc.close());
    await viewer.subscribe(vicWs, [ann, ben, cat]);
    await second.subscribe(danWs, [ann, ben, cat]);
    // No view yet: the config's cap (9) at layer 1, so all three.
    await vicWs.push("all three videos", (p) => p.type === "videos" && (p.videos as unknown[]).length === 3, 20_000);
    const all = await waitFor("every m-line flowing", async () => {
      const f = await viewer.flow(1000);
      return [...f.values()].every((n) => n > 5) ? f : undefined;
    }, 30_000);
    expect(all.size).toBe(6);

    // One video: nobody spoke, so the first to join.
    expect(await vicWs.request({ type: "view", videos: 1, tiles: [{ feed: ann, height: 720 }] })).toMatchObject({ type: "result" });
    expect(await danWs.request({ type: "view", videos: 1 })).toMatchObject({ type: "result" });
    await danWs.push("dan's one video", (p) => p.type === "videos" && (p.videos as unknown[]).length === 1);
    const one = await vicWs.push("one video", (p) => p.type === "videos" && (p.videos as unknown[]).length === 1);
    expect(one.videos).toEqual([{ feed: ann, layer: 2 }]);
    const afterView = await waitFor("ben's and cat's video paused by Janus", async () => {
      const f = await viewer.flow(1000);
      return f.get(viewer.mid(ben, "video")) === 0 && f.get(viewer.mid(cat, "video")) === 0 ? f : undefined;
    }, 15_000);
    expect(afterView.get(viewer.mid(ann, "video"))).toBeGreaterThan(5);
    for (const feed of [ann, ben, cat]) expect(afterView.get(viewer.mid(feed, "audio"))).toBeGreaterThan(20);

    // Cat talks (loud audio levels): Janus's talk detection, Parley's speakers push, cat's video.
    await waitFor("both viewers settled (no video of cat)", async () => {
      const [a, b] = await Promise.all([viewer.flow(500), second.flow(500)]);
      return a.get(viewer.mid(cat, "video")) === 0 && b.get(second.mid(cat, "video")) === 0 || undefined;
    });
    const plisBefore = pubs[2]!.plis.length;
    pubs[2]!.level = 10;
    const speaking = await vicWs.push("cat talking", (p) => p.type === "speakers" && (p.talking as string[]).includes(cat), 15_000);
    expect(speaking.talking).toEqual([cat]);
    const spoke = await vicWs.push("cat the newest speaker", (p) => p.type === "speakers" && (p.recent as string[])[0] === cat, 15_000);
    expect(spoke).toEqual({ type: "speakers", talking: [cat], recent: [cat] });
    const catVideo = await vicWs.push("cat's video", (p) => p.type === "videos" && (p.videos as { feed: string }[])[0]?.feed === cat);
    expect(catVideo.videos).toEqual([{ feed: cat, layer: 0 }]); // no tile for cat in the last view: a thumbnail
    const afterSpeaker = await waitFor("only cat's video forwarded", async () => {
      const f = await viewer.flow(1000);
      return f.get(viewer.mid(ann, "video")) === 0 && (f.get(viewer.mid(cat, "video")) ?? 0) > 5 ? f : undefined;
    }, 15_000);
    expect(afterSpeaker.get(viewer.mid(ben, "video"))).toBe(0);
    await waitFor("cat's video at the second viewer", async () => ((await second.flow(500)).get(second.mid(cat, "video")) ?? 0) > 3 || undefined);
    // Both viewers resumed cat in one pass: Janus sent one PLI per viewer (no coalescing in
    // 1.1.2), back to back, inside the 300 ms in which the browser's encoder makes one keyframe.
    const plis = pubs[2]!.plis.slice(plisBefore);
    expect(plis.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...plis) - Math.min(...plis)).toBeLessThan(300);
    // Everyone else heard about it too.
    await annWs.push("speakers at ann", (p) => p.type === "speakers" && (p.recent as string[])[0] === cat);
    expect(lastPush(benWs, "speakers")).toMatchObject({ talking: [cat] });

    // Cat stops: Janus says so within a window of packets; the order stays (recent), talking empties.
    pubs[2]!.level = 127;
    const quiet = await vicWs.push("cat stopped", (p) => p.type === "speakers" && (p.talking as string[]).length === 0, 15_000);
    expect(quiet.recent).toEqual([cat]);
    expect(lastPush(vicWs, "videos")!.videos).toEqual([{ feed: cat, layer: 0 }]);

    // Garbage views are refused like any other message.
    expect(await vicWs.request({ type: "view", videos: 500 })).toMatchObject({ type: "error", errcode: "M_BAD_JSON" });
    expect(await vicWs.request({ type: "view", videos: 2, pinned: [ann, ann] })).toMatchObject({ type: "error", errcode: "M_INVALID_PARAM" });
  });
});
