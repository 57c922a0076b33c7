// The last-N part of the signalling protocol: the `speakers` and `videos` pushes pass the client's
// guards only when well formed, and `viewRequest` keeps a layout's report within the agreed bounds.
import { describe, expect, it } from "vitest";
import { parsePush } from "../../../client/src/rtc/protocol.ts";
import { VIEW_LIMITS, viewRequest } from "../../../client/src/rtc/viewProtocol.ts";

const errors = (m: Record<string, unknown>): string[] => {
  const r = parsePush(m);
  if (!("errors" in r)) throw new Error(`accepted ${JSON.stringify(r.push)}`);
  return r.errors;
};

describe("the speakers push", () => {
  it("parses talking and recent feeds", () => {
    const m = { type: "speakers", talking: ["12"], recent: ["12", "7", 3] };
    expect(parsePush(m)).toEqual({ push: m });
    expect(parsePush({ type: "speakers", talking: [], recent: [] })).toEqual({ push: { type: "speakers", talking: [], recent: [] } });
  });
  it.each([
    [{ talking: "12", recent: [] }, "talking must be an array of feed ids"],
    [{ talking: [], recent: [{}] }, "recent[0] must be a feed id"],
    [{ talking: ["1", "1"], recent: [] }, "talking[1] repeats feed 1"],
    [{ talking: [], recent: Array.from({ length: VIEW_LIMITS.maxRecent + 1 }, (_, i) => String(i)) }, "recent has more than 50 entries"],
    [{ recent: [] }, "talking must be an array of feed ids"],
  ])("rejects %j", (fields, error) => {
    expect(errors({ type: "speakers", ...fields })).toContain(error);
  });
});

describe("the videos push", () => {
  it("parses each video with its layer", () => {
    const m = { type: "videos", videos: [{ feed: "3", layer: 0 }, { feed: "4", layer: 2 }] };
    expect(parsePush(m)).toEqual({ push: m });
    expect(parsePush({ type: "videos", videos: [{ feed: "3", layer: 1, extra: true }] })).toEqual({ push: { type: "videos", videos: [{ feed: "3", layer: 1 }] } });
  });
  it.each([
    [{ videos: null }, "videos must be an array of {feed, layer}"],
    [{ videos: [{ feed: "3", layer: 3 }] }, "videos[0] must be {feed, layer: 0|1|2}"],
    [{ videos: [{ feed: "3", layer: "1" }] }, "videos[0] must be {feed, layer: 0|1|2}"],
    [{ videos: [{ layer: 1 }] }, "videos[0] must be {feed, layer: 0|1|2}"],
    [{ videos: [{ feed: "3", layer: 1 }, { feed: 3, layer: 0 }] }, "videos[1] repeats feed 3"],
  ])("rejects %j", (fields, error) => {
    expect(errors({ type: "videos", ...fields })).toContain(error);
  });
});

describe("viewRequest", () => {
  it("reports a layout as it is when it is within bounds", () => {
    expect(viewRequest({ videos: 6, pinned: ["3"], tiles: [{ feed: "3", height: 540 }], downlinkKbps: 2500.4 })).toEqual({
      type: "view",
      videos: 6,
      pinned: ["3"],
      tiles: [{ feed: "3", height: 540 }],
      downlink_kbps: 2500,
    });
    expect(viewRequest({ videos: 0 })).toEqual({ type: "view", videos: 0 });
  });
  it("sends feed ids as strings and each tile's feed once", () => {
    expect(viewRequest({ videos: 2, pinned: [7], tiles: [{ feed: 7, height: 100 }, { feed: "7", height: 300 }, { feed: 8, height: 50 }] })).toEqual({
      type: "view",
      videos: 2,
      pinned: ["7"],
      tiles: [{ feed: "7", height: 100 }, { feed: "8", height: 50 }],
    });
  });
  it("clamps counts and heights, keeps at most 4 distinct pins and 200 tiles, drops a useless estimate", () => {
    const v = viewRequest({
      videos: 1e6,
      pinned: ["1", "1", "2", "3", "4", "5"],
      tiles: Array.from({ length: 300 }, (_, i) => ({ feed: String(i), height: i === 0 ? 99_999 : -5.5 })),
      downlinkKbps: Number.NaN,
    });
    expect(v.videos).toBe(200);
    expect(v.pinned).toEqual(["1", "2", "3", "4"]);
    expect(v.tiles).toHaveLength(200);
    expect(v.tiles![0]!.height).toBe(4320);
    expect(v.tiles![1]!.height).toBe(0);
    expect(v).not.toHaveProperty("downlink_kbps");
    expect(viewRequest({ videos: Number.NaN, downlinkKbps: 0 })).toEqual({ type: "view", videos: 0 });
    expect(viewRequest({ videos: 1, page: 5000 }).page).toBe(1000);
    expect(viewRequest({ videos: 1, page: 0 })).not.toHaveProperty("page");
  });
});
