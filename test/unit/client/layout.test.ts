import { describe, expect, it } from "vitest";
import { tileWidth } from "../../../client/src/ui/callView.ts";

describe("tileWidth", () => {
  it("fills the stage with one tile, limited by height", () => {
    expect(tileWidth(1, 1248, 480)).toBe(853); // 480 * 16/9
  });
  it("stacks two tiles when the stage is wide but short enough to prefer rows", () => {
    // 1 column: min(930, 295*16/9=524) = 524; 2 columns: min(460, 600*16/9) = 460
    expect(tileWidth(2, 930, 600)).toBe(524);
  });
  it("uses a grid for many tiles and never goes below 120 px", () => {
    expect(tileWidth(9, 1240, 560)).toBe(320); // 3x3: min(406, 180*16/9)
    expect(tileWidth(64, 400, 300)).toBe(120);
  });
});
