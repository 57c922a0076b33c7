import { beforeEach, describe, expect, it } from "vitest";
import type { VideoCandidate } from "../../../appservice/src/calls/lastN.ts";
import type { SpeakersSnapshot } from "../../../appservice/src/calls/speakers.ts";
import { CallViewers, type VideoChange, type VideosPush } from "../../../appservice/src/calls/viewers.ts";
import { FakeTime } from "./fakeTimers.ts";

/**
 * A viewer whose subscription's configure is recorded (and answered when the test says). Like
 * Janus, it reports each substream switch a configure asked for (`switches`; off: the publisher
 * never sends the key frame the switch waits for).
 */
class FakeViewer {
  readonly configures: VideoChange[][] = [];
  readonly pushes: VideosPush[] = [];
  fail = false;
  switches = true;
  report: ((mid: string, layer: 0 | 1 | 2) => void) | undefined;
  hold: (() => void)[] | undefined;
  readonly feed: string | undefined;
  constructor(feed: string | undefined) {
    this.feed = feed;
  }
  self = () => this.feed;
  configure = async (changes: VideoChange[]) => {
    this.configures.push(changes);
    if (this.hold) await new Promise<void>((r) => this.hold!.push(r));
    if (this.fail) throw new Error("428 no such mid");
    if (this.switches) for (const c of changes) if (c.substream !== undefined) this.report?.(c.mid, c.substream);
  };
  push = (p: VideosPush) => void this.pushes.push(p);
  get last(): VideosPush["videos"] | undefined {
    return this.pushes.at(-1)?.videos;
  }
}

let time: FakeTime;
let candidates: VideoCandidate[];
let speakers: SpeakersSnapshot;
let viewers: CallViewers<string>;
let failures: unknown[];

const cam = (feed: string): VideoCandidate => ({ feed, videoMuted: false, screen: false });
/** Audio and video m-lines for each feed: audio mids "a-<feed>", video "v-<feed>". */
const subscription = (...feeds: string[]) =>
  feeds.flatMap((feed) => [{ mid: `a-${feed}`, feed, kind: "audio" as const }, { mid: `v-${feed}`, feed, kind: "video" as const }]);

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    time.advance(0);
    await new Promise((r) => setImmediate(r));
  }
}

function seat(key: string, feed: string | undefined, ...subscribedTo: string[]): FakeViewer {
  const v = new FakeViewer(feed);
  v.report = (mid, layer) => viewers.forwarded(key, mid, layer);
  viewers.add(key, v);
  viewers.subscribed(key, subscription(...subscribedTo));
  return v;
}

beforeEach(() => {
  time = new FakeTime();
  candidates = ["a", "b", "c", "d"].map(cam);
  speakers = { talking: [], speaking: [], recent: [] };
  failures = [];
  viewers = new CallViewers<string>(
    { lastN: 2, layerKbps: [150, 500, 1500], keyframeIntervalMs: 1000 },
    { clock: time.clock, timers: time, candidates: () => candidates, speakers: () => speakers, failed: (e) => failures.push(e) },
  );
});

describe("a viewer taken over from a previous Parley process (docs/resilience.md)", () => {
  it("sends nothing before its client's view, takes the choice for that view as applied, and changes only what changes later", async () => {
    const v = new FakeViewer("me");
    viewers.add("s", v, { adopted: true });
    viewers.subscribed("s", subscription("a", "b"));
    await settle();
    expect(v.configures).toEqual([]); // before the view: what Janus forwards is left alone
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 720 }, { feed: "b", height: 720 }] });
    await settle();
    expect(v.configures).toEqual([]); // the same layout: no layer switch, no keyframe wait
    expect(v.last!.map((x) => x.feed)).toEqual(["a", "b"]);
    viewers.view("s", { videos: 1, pinned: [], tiles: [{ feed: "a", height: 720 }] });
    await settle();
    expect(v.configures).toEqual([[{ mid: "v-b", send: false }]]);
  });
});

describe("a viewer's videos applied to its subscription", () => {
  it("before any view: the cap's videos at the subscription's layer 1 (no substream asked, no key frame), the others paused, in ONE configure; audio untouched", async () => {
    const v = seat("s", "me", "a", "b", "c", "d");
    await settle();
    expect(v.configures).toEqual([[
      { mid: "v-c", send: false },
      { mid: "v-d", send: false },
    ]]);
    expect(v.last).toEqual([{ feed: "a", layer: 1 }, { feed: "b", layer: 1 }]);
  });

  it("a view with videos=1 pauses the other video and only that; the push lists exactly the chosen feed", async () => {
    const v = seat("s", "me", "a", "b", "c");
    await settle();
    speakers = { talking: ["b"], speaking: ["b"], recent: ["b"] };
    viewers.view("s", { videos: 1, pinned: [], tiles: [{ feed: "b", height: 300 }] });
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-a", send: false }]);
    expect(v.last).toEqual([{ feed: "b", layer: 1 }]);
    // the same view again: nothing to tell Janus, nothing pushed
    viewers.view("s", { videos: 1, pinned: [], tiles: [{ feed: "b", height: 300 }] });
    await settle();
    expect(v.configures).toHaveLength(2);
    expect(v.pushes).toHaveLength(2);
  });

  it("a viewer on grid page 2 gets the videos of the tiles it shows, not the speakers' of page 1", async () => {
    const v = seat("s", "me", "a", "b", "c", "d");
    speakers = { talking: ["a"], speaking: ["a"], recent: ["a", "b"] };
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "c", height: 300 }, { feed: "d", height: 300 }], page: 1 });
    await settle();
    expect(v.last).toEqual([{ feed: "c", layer: 1 }, { feed: "d", layer: 1 }]);
    // Back on page 1: the speakers' videos again.
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 300 }, { feed: "b", height: 300 }] });
    await settle();
    expect(v.last).toEqual([{ feed: "a", layer: 1 }, { feed: "b", layer: 1 }]);
  });

  it("on page 1 a new speaker's video comes at once, before the client's layout sends a view with its tile", async () => {
    const v = seat("s", "me", "a", "b", "c");
    viewers.view("s", { videos: 1, pinned: [], tiles: [{ feed: "a", height: 300 }] });
    await settle();
    expect(v.last).toEqual([{ feed: "a", layer: 1 }]);
    speakers = { talking: ["c"], speaking: ["c"], recent: ["c"] };
    viewers.invalidate();
    await settle();
    expect(v.last).toEqual([{ feed: "c", layer: 0 }]);
  });

  it("tile heights move layers with hysteresis, one substream change per changed tile", async () => {
    const v = seat("s", "me", "a", "b");
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 300 }, { feed: "b", height: 100 }] });
    await settle();
    expect(v.last).toEqual([{ feed: "a", layer: 1 }, { feed: "b", layer: 0 }]);
    time.advance(1000);
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 500 }, { feed: "b", height: 100 }] });
    await settle();
    expect(v.pushes).toHaveLength(1); // 500 px is not 20 % above 480
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 600 }, { feed: "b", height: 100 }] });
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-a", substream: 2 }]);
    expect(v.last).toEqual([{ feed: "a", layer: 2 }, { feed: "b", layer: 0 }]);
  });

  it("a downlink estimate lowers the layers until they fit", async () => {
    const v = seat("s", "me", "a", "b");
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 1000 }, { feed: "b", height: 900 }], downlinkKbps: 2100 });
    await settle();
    expect(v.last).toEqual([{ feed: "a", layer: 1 }, { feed: "b", layer: 2 }]);
  });

  it("a pinned feed is always among the videos; a muted one never", async () => {
    const v = seat("s", "me", "a", "b", "c", "d");
    candidates = [cam("a"), { ...cam("b"), videoMuted: true }, cam("c"), cam("d")];
    viewers.view("s", { videos: 2, pinned: ["d", "b"], tiles: [] });
    await settle();
    expect(v.last).toEqual([{ feed: "d", layer: 0 }, { feed: "a", layer: 0 }]);
  });

  it("new m-lines (a subscribe) are chosen for at once; gone ones are forgotten", async () => {
    const v = seat("s", "me", "a");
    await settle();
    expect(v.last).toEqual([{ feed: "a", layer: 1 }]);
    viewers.subscribed("s", subscription("a", "b", "c"));
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-c", send: false }]);
    viewers.subscribed("s", subscription("b", "c"));
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-c", send: true }]);
    expect(v.last).toEqual([{ feed: "b", layer: 1 }, { feed: "c", layer: 1 }]);
  });

  it("a publisher that left is forgotten: its m-lines are never configured again", async () => {
    const v = seat("s", "me", "a", "b", "c");
    await settle();
    candidates = [cam("b"), cam("c"), cam("d")];
    viewers.forgetFeed("a");
    viewers.invalidate();
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-c", send: true }]);
    expect(v.last).toEqual([{ feed: "b", layer: 1 }, { feed: "c", layer: 1 }]);
  });

  it("a refused configure changes nothing known; the next change tries again", async () => {
    const v = seat("s", "me", "a", "b", "c");
    v.fail = true;
    await settle();
    expect(failures).toHaveLength(1);
    expect(v.pushes).toHaveLength(0);
    v.fail = false;
    viewers.invalidate();
    await settle();
    expect(v.configures).toHaveLength(2);
    expect(v.configures[1]).toEqual(v.configures[0]);
    expect(v.last).toEqual([{ feed: "a", layer: 1 }, { feed: "b", layer: 1 }]);
  });

  it("changes while a configure is in flight wait for it, then go as one", async () => {
    const v = seat("s", "me", "a", "b", "c");
    v.hold = [];
    await settle();
    expect(v.configures).toHaveLength(1);
    speakers = { talking: ["c"], speaking: ["c"], recent: ["c"] };
    viewers.invalidate();
    viewers.view("s", { videos: 1, pinned: [], tiles: [] });
    await settle();
    expect(v.configures).toHaveLength(1);
    const release = v.hold.splice(0);
    v.hold = undefined;
    release.forEach((r) => r());
    await settle();
    expect(v.configures).toHaveLength(2);
    expect(v.last).toEqual([{ feed: "c", layer: 0 }]);
  });

  it("a speaker change in a call of 50: one configure per viewer, the new speaker's keyframe asked in one batch", async () => {
    candidates = Array.from({ length: 50 }, (_, i) => cam(`p${i}`));
    const all = candidates.map((c) => c.feed);
    const seats = all.map((f) => seat(f, f, ...all.filter((x) => x !== f)));
    await settle();
    time.advance(5000);
    const before = seats.map((s) => s.configures.length);
    speakers = { talking: ["p40"], speaking: ["p40"], recent: ["p40"] };
    viewers.invalidate();
    await settle();
    const resumes = (feed: string, s: FakeViewer, from: number) => s.configures.slice(from).flat().filter((c) => c.mid === `v-${feed}` && (c.send || c.substream !== undefined));
    seats.forEach((s, i) => {
      if (all[i] === "p40") return;
      expect(s.configures.length - before[i]!).toBe(1);
      expect(resumes("p40", s, before[i]!)).toEqual([{ mid: "v-p40", send: true }]);
    });
    // Another change asking p40's keyframe within the interval waits for it to end...
    const mid = seats.map((s) => s.configures.length);
    time.advance(300);
    viewers.view("p1", { videos: 2, pinned: [], tiles: [{ feed: "p40", height: 300 }, { feed: "p0", height: 100 }] });
    viewers.view("p2", { videos: 2, pinned: [], tiles: [{ feed: "p40", height: 700 }, { feed: "p0", height: 100 }] });
    await settle();
    expect(resumes("p40", seats[1]!, mid[1]!)).toEqual([]);
    expect(resumes("p40", seats[2]!, mid[2]!)).toEqual([]);
    expect(seats[2]!.last).toContainEqual({ feed: "p40", layer: 1 });
    // ...and then both go in one batch.
    time.advance(700);
    await settle();
    expect(resumes("p40", seats[2]!, mid[2]!)).toEqual([{ mid: "v-p40", substream: 2 }]);
    expect(seats[2]!.last).toEqual([{ feed: "p40", layer: 2 }, { feed: "p0", layer: 0 }]);
  });

  it("a layer switch the SFU does not report is asked again each keyframe interval until it is, at most LAYER_RETRIES (5) times", async () => {
    const v = seat("s", "me", "a", "b");
    v.switches = false; // the publisher drops the key frame requests: Janus never switches
    // Janus's first key frames: it forwards layer 1 of both (reported: these feeds simulcast).
    viewers.forwarded("s", "v-a", 1);
    viewers.forwarded("s", "v-b", 1);
    await settle();
    expect(v.configures).toEqual([]);
    // Thumbnails: layer 0 for both.
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 100 }, { feed: "b", height: 100 }] });
    await settle();
    expect(v.configures).toEqual([[{ mid: "v-a", substream: 0 }, { mid: "v-b", substream: 0 }]]);
    time.advance(999);
    await settle();
    expect(v.configures).toHaveLength(1); // not before the interval
    time.advance(1);
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-a", substream: 0 }, { mid: "v-b", substream: 0 }]);
    // Janus switches b now; only a is asked again.
    viewers.forwarded("s", "v-b", 0);
    time.advance(1000);
    await settle();
    expect(v.configures.at(-1)).toEqual([{ mid: "v-a", substream: 0 }]);
    // a never switches: 5 retries in all, then nothing more (Janus and the next change take over).
    for (let i = 0; i < 10; i++) {
      time.advance(1000);
      await settle();
    }
    const asksOfA = v.configures.flat().filter((c) => c.mid === "v-a").length;
    expect(asksOfA).toBe(1 + 5);
    expect(time.timers).toBe(0);
    expect(v.last).toEqual([{ feed: "a", layer: 0 }, { feed: "b", layer: 0 }]);
  });

  it("a switch reported before the configure's answer, a pause, or a left publisher is not asked again", async () => {
    const v = seat("s", "me", "a", "b", "c");
    v.switches = false;
    v.hold = [];
    await settle();
    viewers.forwarded("s", "v-a", 1); // Janus's event came before its answer to the configure
    v.hold.splice(0).forEach((r) => r());
    v.hold = undefined;
    await settle();
    viewers.view("s", { videos: 1, pinned: [], tiles: [{ feed: "a", height: 300 }] }); // b paused
    await settle();
    viewers.forgetFeed("c");
    const before = v.configures.length;
    for (let i = 0; i < 10; i++) {
      time.advance(1000);
      await settle();
    }
    expect(v.configures.slice(before)).toEqual([]);
  });

  it("an m-line Janus reports no layer on (its publisher does not simulcast) is not asked again", async () => {
    const v = seat("s", "me", "a", "b");
    v.switches = false;
    viewers.forwarded("s", "v-b", 1); // b simulcasts; a sends one layer and Janus says nothing of it
    viewers.view("s", { videos: 2, pinned: [], tiles: [{ feed: "a", height: 100 }, { feed: "b", height: 100 }] });
    await settle();
    for (let i = 0; i < 3; i++) {
      time.advance(1000);
      await settle();
    }
    expect(v.configures.flat().filter((c) => c.mid === "v-a")).toEqual([{ mid: "v-a", substream: 0 }]);
    expect(v.configures.flat().filter((c) => c.mid === "v-b").length).toBe(1 + 3);
  });

  it("the retries of one publisher's layer by many viewers go in one batch per keyframe interval", async () => {
    const seats = ["s1", "s2", "s3"].map((k) => seat(k, k, "a"));
    for (const s of seats) s.switches = false;
    for (const k of ["s1", "s2", "s3"]) viewers.forwarded(k, "v-a", 1);
    for (const k of ["s1", "s2", "s3"]) viewers.view(k, { videos: 1, pinned: [], tiles: [{ feed: "a", height: 100 }] });
    await settle();
    time.advance(1000);
    await settle();
    for (const s of seats) expect(s.configures).toEqual([[{ mid: "v-a", substream: 0 }], [{ mid: "v-a", substream: 0 }]]);
    // A view change of s1 that asks a's key frame within the interval waits for the next batch.
    time.advance(200);
    viewers.view("s1", { videos: 1, pinned: [], tiles: [{ feed: "a", height: 700 }] });
    await settle();
    expect(seats[0]!.configures).toHaveLength(2);
    time.advance(800);
    await settle();
    expect(seats[0]!.configures.at(-1)).toEqual([{ mid: "v-a", substream: 2 }]);
    expect(seats[1]!.configures.at(-1)).toEqual([{ mid: "v-a", substream: 0 }]);
    expect(seats.map((s) => s.configures.length)).toEqual([3, 3, 3]);
  });

  it("a removed viewer and a closed call leave no timer", async () => {
    seat("s", "me", "a", "b", "c");
    seat("t", "x", "a", "b", "c");
    await settle();
    viewers.remove("s");
    expect(viewers.size).toBe(1);
    viewers.invalidate();
    viewers.close();
    expect(time.timers).toBe(0);
  });
});
