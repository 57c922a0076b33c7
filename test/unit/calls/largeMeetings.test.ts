import { beforeEach, describe, expect, it } from "vitest";
import { CallRoster, type CallPush, type Member } from "../../../appservice/src/calls/callRoster.ts";
import { LARGE_MEETINGS_DEFAULTS, LargeMeetings } from "../../../appservice/src/calls/largeMeetings.ts";
import type { SfuMediaSession } from "../../../appservice/src/calls/ports.ts";
import { FakeTime } from "./fakeTimers.ts";

/** A member's SFU session: its talking events fired by the test, its configures and bitrates recorded. */
class FakeMedia {
  readonly configures: unknown[][] = [];
  readonly bitrates: number[] = [];
  talk: ((t: boolean) => void) | undefined;
  /** What the SFU's talk detection holds now (talkingNow). */
  sfuTalking = false;
  readonly feedId: string;
  constructor(feedId: string) {
    this.feedId = feedId;
  }
  onTalking(l: (t: boolean) => void) {
    this.talk = l;
    return () => (this.talk = undefined);
  }
  talkingNow() {
    return this.sfuTalking;
  }
  async configureVideos(changes: unknown[]) {
    this.configures.push(changes);
  }
  async setBitrate(b: number) {
    this.bitrates.push(b);
  }
}

let time: FakeTime;
let roster: CallRoster<string>;
let large: LargeMeetings<string>;
let pushes: Map<string, CallPush[]>;
let forced: { audio: boolean; video: boolean };

function member(seat: string, published = true): Member<string> & { media: FakeMedia } {
  const media = new FakeMedia(`f-${seat}`);
  pushes.set(seat, []);
  const m = {
    seat, userId: `@${seat}:a`, deviceId: "D", media: media as unknown as SfuMediaSession, published, videoSource: "camera" as const,
    streams: published ? [{ mid: "0", kind: "audio" as const }, { mid: "1", kind: "video" as const }] : [],
    muted: { audio: false, video: false }, client: { push: (p: CallPush) => pushes.get(seat)!.push(p) },
  };
  roster.add("call", m);
  large.joined("call", m);
  return m as unknown as Member<string> & { media: FakeMedia };
}

/** Each member subscribes to every other member's audio and video. */
function subscribeAll(members: Member<string>[]) {
  for (const m of members) {
    const others = members.filter((o) => o !== m);
    large.subscribed("call", m.seat, others.flatMap((o) => [
      { mid: `a-${o.seat}`, feed: String(o.media.feedId), kind: "audio" as const },
      { mid: `v-${o.seat}`, feed: String(o.media.feedId), kind: "video" as const },
    ]));
  }
}

const settle = async () => {
  for (let i = 0; i < 4; i++) {
    time.advance(0);
    await new Promise((r) => setImmediate(r));
  }
};
const speakersOf = (seat: string) => pushes.get(seat)!.filter((p) => p.type === "speakers");
const videosOf = (seat: string) => pushes.get(seat)!.filter((p) => p.type === "videos").at(-1);

beforeEach(() => {
  time = new FakeTime();
  pushes = new Map();
  forced = { audio: false, video: false };
  roster = new CallRoster<string>(undefined, (callId) => large.rosterChanged(callId));
  large = new LargeMeetings<string>(
    { ...LARGE_MEETINGS_DEFAULTS, lastN: 1, largeCall: { from: 3, publisherBitrate: 500_000, liftedBitrate: 2_000_000 } },
    { clock: time.clock, timers: time, members: (c) => roster.members(c), forced: () => forced, failed: (what, err) => { throw Object.assign(new Error(what), { cause: err }); } },
  );
});

describe("large meetings, per call", () => {
  it("the SFU's talking events drive the speakers push to everyone and the speaker's video to each viewer", async () => {
    const [a, b, c] = [member("a"), member("b"), member("c")];
    subscribeAll([a, b, c]);
    await settle();
    // lastN 1, nobody spoke: join order (a for b and c, b for a)
    expect(videosOf("c")).toEqual({ type: "videos", videos: [{ feed: "f-a", layer: 1 }] });
    c.media.talk!(true);
    time.advance(300);
    await settle();
    expect(speakersOf("a").at(-1)).toEqual({ type: "speakers", talking: ["f-c"], recent: [] });
    expect(videosOf("b")).toEqual({ type: "videos", videos: [{ feed: "f-a", layer: 1 }] }); // held: an interjection so far
    time.advance(LARGE_MEETINGS_DEFAULTS.speakerHoldMs);
    await settle();
    expect(speakersOf("b").at(-1)).toEqual({ type: "speakers", talking: ["f-c"], recent: ["f-c"] });
    expect(videosOf("b")).toEqual({ type: "videos", videos: [{ feed: "f-c", layer: 1 }] });
    expect(b.media.configures.at(-1)).toEqual([{ mid: "v-a", send: false }, { mid: "v-c", send: true }]);
    // c's own view is unchanged (never its own video)
    expect(videosOf("c")).toEqual({ type: "videos", videos: [{ feed: "f-a", layer: 1 }] });
    // audio m-lines are never configured
    expect([a, b, c].flatMap((m) => m.media.configures.flat())).not.toContainEqual(expect.objectContaining({ mid: expect.stringMatching(/^a-/) }));
  });

  it("a newcomer is told the speakers so far at once; nobody is told an empty list", async () => {
    const a = member("a");
    member("b");
    expect(speakersOf("b")).toEqual([]);
    a.media.talk!(true);
    time.advance(LARGE_MEETINGS_DEFAULTS.speakerHoldMs);
    await settle();
    member("c");
    expect(speakersOf("c")).toEqual([{ type: "speakers", talking: ["f-a"], recent: ["f-a"] }]);
  });

  it("speakers pushes are coalesced: a burst of talking changes makes at most one push per interval", async () => {
    const ms = ["a", "b", "c", "d", "e"].map((s) => member(s));
    await settle();
    const before = speakersOf("a").length;
    for (let i = 0; i < 20; i++) {
      ms[i % 5]!.media.talk!(i % 2 === 0);
      time.advance(50);
    }
    await settle();
    expect(speakersOf("a").length - before).toBeLessThanOrEqual(Math.ceil(1000 / LARGE_MEETINGS_DEFAULTS.speakersPushIntervalMs) + 1);
  });

  it("a muted participant does not talk: its talking is ignored, and muting stops it (Janus sends no stopped-talking then)", async () => {
    const a = member("a");
    member("b");
    a.media.talk!(true);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: ["f-a"] });
    a.muted.audio = true;
    roster.broadcast("call");
    time.advance(1000);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: [] });
    a.media.talk!(true);
    time.advance(1000);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: [] });
    a.muted.audio = false;
    forced = { audio: true, video: false };
    roster.broadcast("call");
    a.media.talk!(true);
    time.advance(1000);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: [] });
  });

  it("unmuted while Janus still holds it as talking (it says nothing more when the audio comes back as loud), a participant talks again", async () => {
    const a = member("a");
    member("b");
    a.media.sfuTalking = true;
    a.media.talk!(true);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: ["f-a"] });
    a.muted.audio = true; // muted mid-word: Janus skips the stream's audio and keeps "talking"
    roster.broadcast("call");
    time.advance(1000);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: [] });
    a.muted.audio = false; // unmuted, talking at once: no event from Janus
    roster.broadcast("call");
    time.advance(1000);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: ["f-a"] });
    // Unmuted silent: Janus's next window ends its state (stopped-talking), and nothing brings it back.
    a.media.sfuTalking = false;
    a.media.talk!(false);
    roster.broadcast("call");
    time.advance(1000);
    await settle();
    expect(speakersOf("b").at(-1)).toMatchObject({ talking: [] });
  });

  it("caps every publisher's bitrate once the call is large, lifts it below, and caps a newcomer at once", async () => {
    const a = member("a"), b = member("b");
    const viewer = member("v", false);
    roster.broadcast("call");
    expect([a.media.bitrates, b.media.bitrates, viewer.media.bitrates]).toEqual([[500_000], [500_000], []]);
    roster.broadcast("call");
    expect(a.media.bitrates).toEqual([500_000]); // told once
    const c = member("c");
    roster.broadcast("call");
    expect(c.media.bitrates).toEqual([500_000]);
    roster.remove("call", "v");
    roster.remove("call", "c");
    roster.broadcast("call");
    expect([a.media.bitrates, b.media.bitrates]).toEqual([[500_000, 2_000_000], [500_000, 2_000_000]]);
  });

  it("a small call never touches the bitrate", async () => {
    const a = member("a"), b = member("b");
    roster.broadcast("call");
    expect([a.media.bitrates, b.media.bitrates]).toEqual([[], []]);
  });

  it("the last member leaving ends the call's state: no timer, no entry", async () => {
    const [a, b] = [member("a"), member("b")];
    subscribeAll([a, b]);
    a.media.talk!(true);
    await settle();
    for (const m of [a, b]) {
      large.left("call", m);
      roster.remove("call", m.seat);
    }
    expect(a.media.talk).toBeUndefined();
    expect(large.size()).toBe(0);
    expect(time.timers).toBe(0);
  });
});
