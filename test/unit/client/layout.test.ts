// The call screen's layout: tile sizes, pages as large as the viewport holds, the speaker view,
// pins, and the view report the server gets from it.
import { describe, expect, it } from "vitest";
import type { Tile } from "../../../client/src/state/callModel.ts";
import { gridPageSize, LayoutModel, layoutOrder, tileWidth } from "../../../client/src/state/layoutModel.ts";
import { fakeTile } from "./callFakes.ts";

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

describe("gridPageSize", () => {
  const o = { minTileWidth: 200, maxPageSize: 25, gap: 10 };
  it("holds as many tiles of the minimum width as fit", () => {
    // 1240 wide: 5 columns of 200 (+10 gaps); 560 high: 4 rows of 112.5 (+10)
    expect(gridPageSize(1240, 560, o)).toBe(20);
  });
  it("holds one tile on a tiny stage and no more than the cap on a huge one", () => {
    expect(gridPageSize(100, 50, o)).toBe(1);
    expect(gridPageSize(7680, 4320, o)).toBe(25);
  });
});

const tile = fakeTile;
const call = (n: number, over: Record<string, Partial<Tile>> = {}) => ({
  tiles: [tile("local"), ...Array.from({ length: n }, (_, i) => tile(String(i + 1), over[String(i + 1)]))],
  activeSpeaker: null as string | null,
});
const keys = (m: LayoutModel) => m.state.get().shown.map((p) => p.tile.key);

describe("layoutOrder", () => {
  it("puts pins first, then this device, then the others as the call ordered them", () => {
    expect(layoutOrder(call(4).tiles, ["3", "gone"]).map((t) => t.key)).toEqual(["3", "local", "1", "2", "4"]);
  });
});

describe("LayoutModel", () => {
  it("cuts a large call into pages the viewport holds and pages through them", () => {
    const m = new LayoutModel({ minTileWidth: 200, maxPageSize: 25 });
    m.setViewport({ width: 1240, height: 560, dpr: 1 });
    m.setCall(call(49));
    expect(m.state.get()).toMatchObject({ page: 0, pages: 3, pageSize: 20 });
    expect(keys(m)).toHaveLength(20);
    expect(keys(m)[0]).toBe("local");
    m.nextPage();
    expect(keys(m)[0]).toBe("20");
    m.nextPage();
    m.nextPage(); // past the last page: stays
    expect(m.state.get().page).toBe(2);
    expect(keys(m)).toEqual(["40", "41", "42", "43", "44", "45", "46", "47", "48", "49"]);
    m.previousPage();
    expect(m.state.get().page).toBe(1);
  });

  it("reports the remote videos of the page at their height in device pixels, without this device or cameras that are off", () => {
    const m = new LayoutModel({ minTileWidth: 200 });
    m.setViewport({ width: 1240, height: 560, dpr: 2 });
    m.setCall(call(3, { "2": { cameraOn: false } }));
    const w = tileWidth(4, 1240, 560);
    expect(m.state.get().report).toEqual({
      videos: 2,
      pinned: [],
      tiles: [
        { feed: "1", height: Math.round(w / (16 / 9)) * 2 },
        { feed: "3", height: Math.round(w / (16 / 9)) * 2 },
      ],
    });
  });

  it("goes back to the last page there is when people leave", () => {
    const m = new LayoutModel({ minTileWidth: 200 });
    m.setViewport({ width: 1240, height: 560, dpr: 1 });
    m.setCall(call(30));
    m.nextPage();
    m.setCall(call(5));
    expect(m.state.get()).toMatchObject({ page: 0, pages: 1 });
  });

  it("pins up to four remote tiles, first in the layout and in the report; a leaver's pin goes", () => {
    const m = new LayoutModel({ minTileWidth: 200 });
    m.setViewport({ width: 1240, height: 560, dpr: 1 });
    m.setCall(call(30));
    for (const k of ["25", "26", "27", "28", "29"]) m.togglePin(k);
    m.togglePin("local"); // not a remote: nothing to pin
    expect(m.state.get().pinned).toEqual(["26", "27", "28", "29"]);
    expect(keys(m).slice(0, 5)).toEqual(["26", "27", "28", "29", "local"]);
    expect(m.state.get().shown.filter((p) => p.pinned).map((p) => p.tile.key)).toEqual(["26", "27", "28", "29"]);
    expect(m.state.get().report!.pinned).toEqual(["26", "27", "28", "29"]);
    m.togglePin("27");
    expect(m.state.get().pinned).toEqual(["26", "28", "29"]);
    m.setCall({ ...call(30), tiles: call(30).tiles.filter((t) => t.key !== "28") });
    expect(m.state.get().report!.pinned).toEqual(["26", "29"]);
  });

  it("reports page 2's videos on page 2, and pins only on the page that shows them", () => {
    const m = new LayoutModel({ minTileWidth: 200 });
    m.setViewport({ width: 1240, height: 560, dpr: 1 });
    m.setCall(call(30, { "23": { cameraOn: false } }));
    m.togglePin("5");
    expect(m.state.get().report!.pinned).toEqual(["5"]);
    m.nextPage();
    // Page 1: the pin, this device and 18 others (1-4, 6-19); page 2: 20-30 but 23's camera is off.
    const report = m.state.get().report!;
    expect(report.pinned).toEqual([]);
    expect(report.tiles.map((t) => t.feed)).toEqual(["20", "21", "22", "24", "25", "26", "27", "28", "29", "30"]);
    expect(report.videos).toBe(10);
    expect(report.page).toBe(1);
    m.previousPage();
    expect(m.state.get().report).not.toHaveProperty("page");
  });

  it("shows the active speaker large in the speaker view and the others in a paged strip of thumbnails", () => {
    const m = new LayoutModel({ stripHeight: 108 });
    m.setViewport({ width: 1000, height: 700, dpr: 2 });
    m.setMode("speaker");
    m.setCall({ ...call(12), activeSpeaker: "7" });
    const s = m.state.get();
    // strip: 192 px wide thumbnails (108 * 16/9), 5 fit in 1000 px with gaps
    expect(s).toMatchObject({ mode: "speaker", pageSize: 5, pages: 3 });
    // the large tile: as wide as the stage (its 16:9 height fits above the strip)
    expect(s.shown[0]).toMatchObject({ main: true, height: 563, width: 1000 });
    expect(keys(m)).toEqual(["7", "local", "1", "2", "3", "4"]);
    expect(s.report!.tiles[0]).toEqual({ feed: "7", height: 1126 });
    // thumbnails are small in device pixels too: 216 px, a low layer whatever the speaker's
    expect(s.report!.tiles.slice(1).every((t) => t.height === 216)).toBe(true);
    m.nextPage();
    expect(keys(m)).toEqual(["7", "5", "6", "8", "9", "10"]);
  });

  it("puts a pin, else a screen share, before the active speaker in the speaker view", () => {
    const m = new LayoutModel();
    m.setViewport({ width: 1000, height: 700, dpr: 1 });
    m.setMode("speaker");
    m.setCall({ ...call(4, { "3": { screen: true } }), activeSpeaker: "2" });
    expect(keys(m)[0]).toBe("3");
    m.togglePin("4");
    expect(keys(m)[0]).toBe("4");
  });

  it("reports nothing while this device is alone in the call", () => {
    const m = new LayoutModel();
    m.setViewport({ width: 800, height: 450, dpr: 1 });
    m.setCall(call(0));
    expect(m.state.get().report).toBeNull();
    m.setCall(call(1, { "1": { cameraOn: false } }));
    expect(m.state.get().report).toEqual({ videos: 0, pinned: [], tiles: [] });
  });

  it("reports nothing before the stage has a size and changes nothing on the same viewport", () => {
    const m = new LayoutModel();
    m.setCall(call(2));
    let changes = 0;
    m.state.subscribe(() => changes++);
    m.setViewport({ width: 0, height: 0, dpr: 1 });
    expect(changes).toBe(0);
    expect(m.state.get().report).toBeNull();
    m.setViewport({ width: 800, height: 450, dpr: 1 });
    expect(changes).toBe(1);
    m.setViewport({ width: 800, height: 450, dpr: 1 });
    expect(changes).toBe(1);
    expect(m.state.get().report!.videos).toBe(2);
  });
});
