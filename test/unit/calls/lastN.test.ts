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
});
