import { describe, expect, it } from "vitest";
import { selectVideos, type VideoCandidate } from "../../../appservice/src/calls/lastN.ts";

const cam = (feed: string, extra: Partial<VideoCandidate> = {}): VideoCandidate => ({ feed, videoMuted: false, screen: false, ...extra });
const base = { pinned: [], talking: [], recent: [], videos: 9, cap: 9 };
const feeds = (...ids: string[]) => ids.map((f) => cam(f));

describe("last-N selection", () => {
  it("orders pinned, screen shares, talking, recent speakers, then join order", () => {
    const candidates = [cam("a"), cam("b"), cam("c"), cam("d", { screen: true }), cam("e"), cam("f"), cam("g")];
    expect(selectVideos({ ...base, candidates, pinned: ["f"], talking: ["e"], recent: ["c", "e", "b"] })).toEqual(["f", "d", "e", "c", "b", "a", "g"]);
  });

  it("takes the first min(videos, cap)", () => {
    const candidates = feeds("a", "b", "c", "d", "e");
    expect(selectVideos({ ...base, candidates, recent: ["d"], videos: 2 })).toEqual(["d", "a"]);
    expect(selectVideos({ ...base, candidates, recent: ["d"], videos: 200, cap: 3 })).toEqual(["d", "a", "b"]);
    expect(selectVideos({ ...base, candidates, videos: 0 })).toEqual([]);
  });

  it("skips video-muted feeds and the viewer's own, even when pinned or talking", () => {
    const candidates = [cam("me"), cam("a", { videoMuted: true }), cam("b"), cam("c")];
    expect(selectVideos({ ...base, candidates, self: "me", pinned: ["a", "me"], talking: ["a", "me"], videos: 9 })).toEqual(["b", "c"]);
  });

  it("pinned feeds come in the order given and are always chosen; unknown feeds are ignored", () => {
    const candidates = feeds("a", "b", "c", "d");
    expect(selectVideos({ ...base, candidates, pinned: ["gone", "c", "a"], talking: ["d"], videos: 2 })).toEqual(["c", "a"]);
  });

  it("a feed named twice (talking and recent) is chosen once", () => {
    const candidates = feeds("a", "b", "c");
    expect(selectVideos({ ...base, candidates, talking: ["b"], recent: ["b", "c"] })).toEqual(["b", "c", "a"]);
  });

  it("50 participants, cap 9: the speakers and then the first joiners", () => {
    const candidates = Array.from({ length: 50 }, (_, i) => cam(`p${i}`));
    const chosen = selectVideos({ ...base, candidates, talking: ["p40"], recent: ["p40", "p30", "p20"], videos: 25 });
    expect(chosen).toEqual(["p40", "p30", "p20", "p0", "p1", "p2", "p3", "p4", "p5"]);
  });

  it("feeds with a tile on screen come first (grid page 2), each group in the usual order", () => {
    const candidates = Array.from({ length: 30 }, (_, i) => cam(`p${i}`));
    // Page 1 held p0..p24; the viewer is on page 2 (p25..p29), p27 talks, p3 spoke recently.
    const shown = new Set(["p25", "p26", "p27", "p28", "p29"]);
    expect(selectVideos({ ...base, candidates, shown, talking: ["p27"], recent: ["p3"], videos: 5 })).toEqual(["p27", "p25", "p26", "p28", "p29"]);
    // More room than tiles: the rest in the usual order after them.
    expect(selectVideos({ ...base, candidates, shown, talking: ["p27"], recent: ["p3"], videos: 7 })).toEqual(["p27", "p25", "p26", "p28", "p29", "p3", "p0"]);
  });

  it("more tiles on screen than the cap: the speakers among them first; pins stay first", () => {
    const candidates = Array.from({ length: 20 }, (_, i) => cam(`p${i}`));
    const shown = new Set(candidates.map((c) => c.feed));
    expect(selectVideos({ ...base, candidates, shown, pinned: ["p9"], talking: ["p15"], recent: ["p12"], videos: 20, cap: 4 })).toEqual(["p9", "p15", "p12", "p0"]);
    // A video-muted tile is still skipped; no tiles at all is the usual order.
    const muted = candidates.map((c) => (c.feed === "p15" ? { ...c, videoMuted: true } : c));
    expect(selectVideos({ ...base, candidates: muted, shown: new Set(["p15", "p16"]), talking: ["p15"], videos: 3 })).toEqual(["p16", "p0", "p1"]);
    expect(selectVideos({ ...base, candidates, shown: new Set(), talking: ["p15"], videos: 2 })).toEqual(["p15", "p0"]);
  });
});
