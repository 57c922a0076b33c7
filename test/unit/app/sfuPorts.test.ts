import { describe, expect, it } from "vitest";
import { sfuPorts } from "../../../appservice/src/app/sfuPorts.ts";
import type { PeerEvent, Sfu, SfuParticipant, TalkingEvent } from "../../../appservice/src/sfu/index.ts";

function fakeSfu(): Sfu {
  const participant = { participantId: "p1", closed: false, onLost: () => () => undefined, close: async () => undefined } as unknown as SfuParticipant;
  return { openParticipant: async () => participant } as unknown as Sfu;
}

describe("sfuPorts", () => {
  it("holds ICE candidates that arrive before publish/subscribe up to the cap, then M_LIMIT_EXCEEDED", async () => {
    const ports = sfuPorts(fakeSfu(), { requireE2ee: true, maxEarlyCandidates: 3 });
    const media = await ports.open({ node: "n", room: "r", secret: "s" }, "@a:x", () => undefined);
    const c = { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host" };
    await media.trickle("publisher", c);
    await media.trickle("subscriber", c);
    await media.trickle("publisher", null);
    await expect(media.trickle("subscriber", c)).rejects.toMatchObject({ errcode: "M_LIMIT_EXCEEDED" });
  });
});

/** An SFU whose participant records what the ports ask of its publisher and subscriber handles. */
function recordingSfu() {
  const calls: { what: string; arg: unknown }[] = [];
  const peer: ((e: PeerEvent) => void)[] = [];
  const talk: ((e: TalkingEvent) => void)[] = [];
  const substream: ((mid: string, layer: 0 | 1 | 2) => void)[] = [];
  const publisher = {
    onPeer: (l: (e: PeerEvent) => void) => (peer.push(l), () => undefined),
    onTalking: (l: (e: TalkingEvent) => void) => (talk.push(l), () => undefined),
    publish: async (r: unknown) => (calls.push({ what: "publish", arg: r }), { answer: { type: "answer", sdp: "v=0" }, streams: [{ type: "audio", mid: "0" }] }),
    configure: async (r: unknown) => (calls.push({ what: "publisher.configure", arg: r }), { answer: undefined }),
    trickle: async () => undefined,
    leave: async () => undefined,
  };
  const subscriber = {
    onSubstream: (l: (mid: string, layer: 0 | 1 | 2) => void) => (substream.push(l), () => undefined),
    onPeer: () => () => undefined,
    configure: async (r: unknown) => void calls.push({ what: "subscriber.configure", arg: r }),
    trickle: async () => undefined,
    leave: async () => undefined,
  };
  const participant = {
    participantId: "p1", closed: false, onLost: () => () => undefined, close: async () => undefined,
    joinAsPublisher: async () => ({ publisher, joined: { id: "p1", privateId: 7, publishers: [] } }),
    joinAsSubscriber: async () => ({ subscriber, offer: { type: "offer", sdp: "v=0" }, streams: [] }),
  } as unknown as SfuParticipant;
  const sfu = {
    openParticipant: async () => participant,
    createRoom: async (callId: string, opts: unknown) => (calls.push({ what: "createRoom", arg: opts }), { node: "n", roomId: `r-${callId}`, secret: "s" }),
    recreateRoom: async (ref: { node: string; roomId: string; secret: string }, opts: unknown) => (calls.push({ what: "recreateRoom", arg: opts }), ref),
  } as unknown as Sfu;
  return {
    sfu, calls,
    peer: (e: PeerEvent) => peer.forEach((l) => l(e)),
    talk: (e: TalkingEvent) => talk.forEach((l) => l(e)),
    substream: (mid: string, layer: 0 | 1 | 2) => substream.forEach((l) => l(mid, layer)),
  };
}

describe("sfuPorts for large meetings (docs/large-meetings.md)", () => {
  const opts = { requireE2ee: true, maxEarlyCandidates: 3, talking: { audioActivePackets: 5, audioLevelAverage: 25 }, opusDtx: true, publishers: 100 };

  it("creates rooms (and makes lost ones again) with talk detection, DTX and the call's publisher limit, and publishes asking for DTX", async () => {
    const s = recordingSfu();
    const ports = sfuPorts(s.sfu, opts);
    await ports.createRoom("c1");
    const room = { requireE2ee: true, talking: opts.talking, opusDtx: true, publishers: 100 };
    expect(s.calls[0]).toEqual({ what: "createRoom", arg: room });
    await ports.recreateRoom({ node: "n", room: "r-c1", secret: "s" });
    expect(s.calls[1]).toEqual({ what: "recreateRoom", arg: room });
    s.calls.splice(1, 1);
    const media = await ports.open({ node: "n", room: "r", secret: "s" }, "@a:x", () => undefined);
    await media.publish("v=0", { simulcast: false, onUp: () => undefined });
    expect(s.calls.at(-1)).toMatchObject({ what: "publish", arg: { opusDtx: true, e2ee: true } });
  });

  /** A published media session whose talking (as the ports pass it on) is recorded in `seen`. */
  async function publishedHearingTalk() {
    const s = recordingSfu();
    const media = await sfuPorts(s.sfu, opts).open({ node: "n", room: "r", secret: "s" }, "@a:x", () => undefined);
    const seen: boolean[] = [];
    media.onTalking!((t) => seen.push(t));
    await media.publish("v=0", { simulcast: false, onUp: () => undefined });
    return { s, media, seen };
  }

  it("passes the publisher's talking on, and takes lost audio (or a hangup) as stopped talking", async () => {
    const { s, seen } = await publishedHearingTalk();
    s.talk({ talking: true, mid: "0", level: 20 });
    s.peer({ kind: "media", info: { type: "video", receiving: false } });
    s.peer({ kind: "media", info: { type: "audio", receiving: false } });
    s.talk({ talking: true, mid: "0", level: 20 });
    s.peer({ kind: "hangup", reason: "DTLS alert" });
    expect(seen).toEqual([true, false, true, false]);
  });

  it("audio back after a gap restores what Janus's talk detection last said: Janus says nothing new when the packets are as loud as before", async () => {
    const { s, media, seen } = await publishedHearingTalk();
    const audio = (receiving: boolean) => s.peer({ kind: "media", info: { type: "audio", receiving } });
    audio(true); // the first packets: nobody talked yet
    expect(media.talkingNow!()).toBe(false);
    s.talk({ talking: true, mid: "0", level: 20 });
    expect(media.talkingNow!()).toBe(true);
    audio(false); // the sender stalls mid-sentence
    expect(media.talkingNow!()).toBe(false); // Janus still holds "talking", but nothing arrives
    audio(true); // and goes on talking: Janus's state is still "talking"
    expect(media.talkingNow!()).toBe(true);
    s.talk({ talking: false, mid: "0", level: 80 });
    audio(false);
    audio(true); // silent before the gap: nothing to restore
    s.talk({ talking: true, mid: "0", level: 20 });
    s.peer({ kind: "hangup", reason: "DTLS alert" });
    audio(true); // a new PeerConnection's first packets: Janus starts over, not talking
    expect(media.talkingNow!()).toBe(false);
    expect(seen).toEqual([true, false, true, false, false, true, false]);
  });

  it("video choices go to the subscriber as one configure; the bitrate cap to the publisher; nothing before the handles exist", async () => {
    const s = recordingSfu();
    const media = await sfuPorts(s.sfu, opts).open({ node: "n", room: "r", secret: "s" }, "@a:x", () => undefined);
    await media.configureVideos!([{ mid: "1", send: false }]);
    await media.setBitrate!(500_000);
    expect(s.calls).toEqual([]);
    await media.subscribe([{ feed: "p2" }]);
    await media.publish("v=0", { simulcast: false, onUp: () => undefined });
    await media.configureVideos!([{ mid: "1", send: false }, { mid: "3", send: true, substream: 2 }]);
    await media.configureVideos!([]);
    await media.setBitrate!(500_000);
    expect(s.calls.filter((c) => c.what !== "publish")).toEqual([
      { what: "subscriber.configure", arg: [{ mid: "1", send: false }, { mid: "3", send: true, substream: 2 }] },
      { what: "publisher.configure", arg: { bitrate: 500_000 } },
    ]);
  });

  it("the subscriber's substream reports reach onLayer listeners, from a subscription made after they listen; none after close", async () => {
    const s = recordingSfu();
    const media = await sfuPorts(s.sfu, opts).open({ node: "n", room: "r", secret: "s" }, "@a:x", () => undefined);
    const seen: [string, number][] = [];
    const off = media.onLayer!((mid, layer) => seen.push([mid, layer]));
    await media.subscribe([{ feed: "p2" }]);
    s.substream("1", 0);
    s.substream("1", 1);
    off();
    s.substream("1", 2);
    media.onLayer!((mid, layer) => seen.push([mid, layer]));
    await media.close();
    s.substream("3", 2);
    expect(seen).toEqual([["1", 0], ["1", 1]]);
  });
});

describe("a subscription prepared at hello (docs/join.md)", () => {
  /** A participant whose subscriber joins are recorded; each join is its own handle and offer. */
  function preparingSfu(opts: { failFirst?: boolean } = {}) {
    const joins: { refs: unknown; privateId: unknown }[] = [];
    const left: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const participant = {
      participantId: "p1", closed: false, onLost: () => () => undefined, close: async () => undefined,
      joinAsSubscriber: async (refs: unknown, privateId: unknown) => {
        const n = joins.push({ refs, privateId });
        if (n === 1) await gate;
        if (n === 1 && opts.failFirst) throw new Error("428 no such feed");
        const subscriber = { onSubstream: () => () => undefined, onPeer: () => () => undefined, trickle: async () => undefined, leave: async () => void left.push(n) };
        return { subscriber, offer: { type: "offer", sdp: `offer-${n}` }, streams: [{ type: "video", mid: "0", feed_id: "f1" }] };
      },
    } as unknown as SfuParticipant;
    const sfu = { openParticipant: async () => participant } as unknown as Sfu;
    return { sfu, joins, left, release };
  }
  const room = { node: "n", room: "r", secret: "s" };

  it("answers the first subscribe for the same feeds with the offer made ahead, waiting for it if still coming", async () => {
    const s = preparingSfu();
    const media = await sfuPorts(s.sfu, { requireE2ee: true, maxEarlyCandidates: 3 }).open(room, "@a:x", () => undefined);
    media.prepareSubscription!([{ feed: "f1", substream: 1 }, { feed: "f2", substream: 1 }]);
    media.prepareSubscription!([{ feed: "f3" }]); // one prepared subscription at most
    const answer = media.subscribe([{ feed: "f2", substream: 1 }, { feed: "f1", substream: 1 }]);
    s.release();
    expect(await answer).toMatchObject({ offerSdp: "offer-1" });
    expect(s.joins).toHaveLength(1);
    expect(s.joins[0]!.refs).toEqual([{ feed: "f1", substream: 1 }, { feed: "f2", substream: 1 }]);
    // Later subscriptions are updates of that one; nothing more is prepared.
    media.prepareSubscription!([{ feed: "f9" }]);
    expect(s.joins).toHaveLength(1);
  });

  it("drops it when the first subscribe asks for other feeds, or a layer or an m-line of its own, and subscribes as asked", async () => {
    for (const asked of [[{ feed: "f1", substream: 1 as const }], [{ feed: "f1", substream: 2 as const }, { feed: "f2", substream: 1 as const }], [{ feed: "f1", mid: "0", substream: 1 as const }, { feed: "f2", substream: 1 as const }]]) {
      const s = preparingSfu();
      const media = await sfuPorts(s.sfu, { requireE2ee: true, maxEarlyCandidates: 3 }).open(room, "@a:x", () => undefined);
      media.prepareSubscription!([{ feed: "f1", substream: 1 }, { feed: "f2", substream: 1 }]);
      s.release();
      expect(await media.subscribe(asked)).toMatchObject({ offerSdp: "offer-2" });
      expect(s.left).toEqual([1]);
      expect(s.joins).toHaveLength(2);
    }
  });

  it("a prepared subscription that failed leaves the client's subscribe to join as usual; an unclaimed one leaves on close", async () => {
    const failing = preparingSfu({ failFirst: true });
    const media = await sfuPorts(failing.sfu, { requireE2ee: true, maxEarlyCandidates: 3 }).open(room, "@a:x", () => undefined);
    media.prepareSubscription!([{ feed: "f1" }]);
    failing.release();
    expect(await media.subscribe([{ feed: "f1" }])).toMatchObject({ offerSdp: "offer-2" });

    const s = preparingSfu();
    const unclaimed = await sfuPorts(s.sfu, { requireE2ee: true, maxEarlyCandidates: 3 }).open(room, "@a:x", () => undefined);
    unclaimed.prepareSubscription!([{ feed: "f1" }]);
    unclaimed.prepareSubscription!([]);
    s.release();
    await unclaimed.close();
    expect(s.left).toEqual([1]);
  });

  it("a paused first subscription (a pre-join's) has every m-line told not to forward before its offer is returned; a refused pause leaves it", async () => {
    const configured: unknown[] = [];
    let refuse = false;
    const peer: ((e: { kind: string }) => void)[] = [];
    const subscriber = {
      onSubstream: () => () => undefined, trickle: async () => undefined, leave: async () => void configured.push("left"),
      onPeer: (l: (e: { kind: string }) => void) => (peer.push(l), () => undefined),
      configure: async (r: unknown) => {
        configured.push(r);
        if (refuse) throw new Error("videoroom error 453");
      },
      subscribe: async (r: unknown) => (configured.push({ subscribe: r }), { offer: { type: "offer", sdp: "offer 2" }, streams: [] }),
    };
    const participant = {
      participantId: "p1", closed: false, onLost: () => () => undefined, close: async () => undefined,
      joinAsSubscriber: async () => ({ subscriber, offer: { type: "offer", sdp: "offer" }, streams: [{ type: "audio", mid: "0", feed_id: "f1" }, { type: "video", mid: "1", feed_id: "f1" }] }),
    } as unknown as SfuParticipant;
    const media = await sfuPorts({ openParticipant: async () => participant } as unknown as Sfu, { requireE2ee: true, maxEarlyCandidates: 3 }).open(room, "@a:x", () => undefined);
    expect(await media.subscribe([{ feed: "f1", substream: 1 }], { paused: true })).toMatchObject({ offerSdp: "offer" });
    expect(configured).toEqual([[{ mid: "0", send: false }, { mid: "1", send: false }]]);
    // Its connection up (after Janus asked the publishers for key frames): the listeners hear it, once each time.
    const up: string[] = [];
    const off = media.onSubscriberUp!(() => up.push("up"));
    for (const l of peer) l({ kind: "media" });
    for (const l of peer) l({ kind: "webrtcup" });
    off();
    for (const l of peer) l({ kind: "webrtcup" });
    expect(up).toEqual(["up"]);
    // A paused update makes each new m-line not forwarding in the subscribe itself.
    expect(await media.subscribe([{ feed: "f2", mid: "1" }], { paused: true })).toMatchObject({ offerSdp: "offer 2" });
    expect(configured.at(-1)).toEqual({ subscribe: [{ feed: "f2", mid: "1", send: false }] });
    await media.subscribe([{ feed: "f3" }]);
    expect(configured.at(-1)).toEqual({ subscribe: [{ feed: "f3" }] });
    // Later subscriptions are updates, not paused ones (the seat's viewer decides what they forward).
    refuse = true;
    configured.length = 0;
    const other = await sfuPorts({ openParticipant: async () => participant } as unknown as Sfu, { requireE2ee: true, maxEarlyCandidates: 3 }).open(room, "@a:x", () => undefined);
    await expect(other.subscribe([{ feed: "f1" }], { paused: true })).rejects.toThrow();
    expect(configured.at(-1)).toBe("left");
  });
});
