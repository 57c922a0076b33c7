import { describe, expect, it } from "vitest";
import { chooseLayers, layerForHeight, type Layer } from "../../../appservice/src/calls/layers.ts";

const kbps = [150, 500, 1500] as const;
const layers = (feeds: string[], heights: Record<string, number>, previous: Record<string, Layer> = {}, downlinkKbps?: number) =>
  Object.fromEntries(chooseLayers({ feeds, heights: new Map(Object.entries(heights)), previous: new Map(Object.entries(previous)), downlinkKbps, layerKbps: kbps }));

describe("layer per tile", () => {
  it("follows the tile height: below 200 low, below 480 medium, else high", () => {
    expect([0, 199, 200, 479, 480, 2160].map((h) => layerForHeight(h, undefined))).toEqual([0, 0, 1, 1, 2, 2]);
  });

  it("a feed without a tile (a thumbnail or off screen) gets the low layer; a thumbnail never the high one", () => {
    expect(layers(["a", "b"], { b: 150 })).toEqual({ a: 0, b: 0 });
    expect(layers(["a"], { a: 479 }, { a: 2 })).toEqual({ a: 1 });
  });

  it("going up needs 20 % above the threshold; going down is at once", () => {
    // up from 0: 200 px is not enough, 240 is
    expect(layerForHeight(220, 0)).toBe(0);
    expect(layerForHeight(240, 0)).toBe(1);
    // up from 1: 480 is not enough, 576 is
    expect(layerForHeight(500, 1)).toBe(1);
    expect(layerForHeight(576, 1)).toBe(2);
    // up two steps at once only as far as the height passes each threshold by 20 %
    expect(layerForHeight(500, 0)).toBe(1);
    expect(layerForHeight(600, 0)).toBe(2);
    // down at once, with no margin
    expect(layerForHeight(479, 2)).toBe(1);
    expect(layerForHeight(199, 1)).toBe(0);
    // a resize that wobbles around the threshold does not flap
    const seq = [210, 190, 230, 250, 230, 195].reduce<Layer[]>((acc, h) => [...acc, layerForHeight(h, acc.at(-1) ?? 0)], []);
    expect(seq).toEqual([0, 0, 0, 1, 1, 0]);
  });

  it("a downlink budget lowers the highest layers, largest tile first, until the estimate fits", () => {
    const heights = { big: 1000, mid: 700, s1: 300, s2: 300 };
    // 1500 + 1500 + 500 + 500 = 4000 kbps wanted
    expect(layers(Object.keys(heights), heights)).toEqual({ big: 2, mid: 2, s1: 1, s2: 1 });
    // 3000: the big tile goes down first (1500 + 500 + 500 + 500 = 3000)
    expect(layers(Object.keys(heights), heights, {}, 3000)).toEqual({ big: 1, mid: 2, s1: 1, s2: 1 });
    // 2000: both large tiles at medium, then the largest medium goes low
    expect(layers(Object.keys(heights), heights, {}, 2000)).toEqual({ big: 1, mid: 1, s1: 1, s2: 1 });
    expect(layers(Object.keys(heights), heights, {}, 1700)).toEqual({ big: 0, mid: 1, s1: 1, s2: 1 });
    // nothing fits: everything at the low layer, nothing dropped
    expect(layers(Object.keys(heights), heights, {}, 100)).toEqual({ big: 0, mid: 0, s1: 0, s2: 0 });
  });
});
