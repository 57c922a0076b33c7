// @vitest-environment happy-dom
// The call's tiles in a DOM (happy-dom; fake timers): a video shows only from its first presented
// frame (the avatar until then, FIRST_FRAME_MS at most), the join's `remote-painted` mark comes
// with a remote tile's first presented frame even after that fallback (a slow machine's first
// join, which once left the benchmark without a mark), tiles are updated in place, and every
// remote participant has an audio element whatever the page shows. The browser suite sees the
// same view with real media; this is its logic alone.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CallViewState, Tile } from "../../../client/src/state/callModel.ts";
import type { LayoutState, PlacedTile } from "../../../client/src/state/layoutModel.ts";
import type { ActiveCall } from "../../../client/src/state/meetingModel.ts";
import { Store } from "../../../client/src/state/store.ts";
import { markStep } from "../../../client/src/timeline.ts";
import { tilesView } from "../../../client/src/ui/tilesView.ts";
import { fakeTile } from "./callFakes.ts";

/** The videos' pending requestVideoFrameCallback callbacks: calling one presents a frame. */
let frames: Map<HTMLVideoElement, (() => void)[]>;

beforeEach(() => {
  // Timers only: the User Timing marks stay real.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
  frames = new Map();
  Object.defineProperty(HTMLVideoElement.prototype, "requestVideoFrameCallback", {
    configurable: true,
    value(this: HTMLVideoElement, cb: () => void) {
      frames.set(this, [...(frames.get(this) ?? []), cb]);
      return frames.get(this)!.length;
    },
  });
  performance.clearMarks();
  markStep("join"); // a new join's timeline: each step marks once again
});

afterEach(() => {
  vi.useRealTimers();
  delete (HTMLVideoElement.prototype as { requestVideoFrameCallback?: unknown }).requestVideoFrameCallback;
});

/** Video off unless said (as a tile before its media). */
const tile = (key: string, over: Partial<Tile> = {}): Tile => fakeTile(key, { videoOn: false, ...over });

function setup(initial: Tile[]) {
  const placed = (tiles: Tile[]): PlacedTile[] => tiles.map((t) => ({ tile: t, width: 320, height: 180, main: false, pinned: false }));
  const layoutState = new Store<LayoutState>({ mode: "grid", page: 0, pages: 1, pageSize: 25, shown: placed(initial), pinned: [], report: null });
  const vmState = new Store<Pick<CallViewState, "tiles" | "talking">>({ tiles: initial, talking: [] });
  const call = {
    vm: { state: vmState },
    layout: { state: layoutState, setViewport: vi.fn(), previousPage: vi.fn(), nextPage: vi.fn(), setMode: vi.fn(), togglePin: vi.fn() },
    governance: { state: new Store({ people: [] as { userId: string; hand: number | null }[] }) },
  } as unknown as ActiveCall;
  const view = tilesView(call);
  const show = (tiles: Tile[]) => {
    vmState.set({ tiles, talking: [] });
    layoutState.update({ shown: placed(tiles) });
  };
  const el = (key: string) => view.grid.querySelector<HTMLElement>(`[data-key="${key}"]`)!;
  const video = (key: string) => el(key).querySelector("video")!;
  const present = (key: string) => {
    const pending = frames.get(video(key)) ?? [];
    frames.delete(video(key));
    for (const cb of pending) cb();
  };
  const painted = () => performance.getEntriesByName("parley:remote-painted").length;
  return { view, show, el, video, present, painted };
}

describe("tilesView", () => {
  it("shows a remote video from its first presented frame, the avatar until then, and marks the join's first picture once", () => {
    const t = setup([tile("local"), tile("7")]);
    expect(t.el("7").dataset.video).toBe("off");
    t.show([tile("local"), tile("7", { videoOn: true })]);
    // Forwarded, but no frame yet: laid out, transparent, the avatar showing.
    expect(t.video("7").hidden).toBe(false);
    expect(t.video("7").classList.contains("unpainted")).toBe(true);
    expect(t.el("7").dataset.video).toBe("off");
    expect(t.painted()).toBe(0);
    t.present("7");
    expect(t.el("7").dataset.video).toBe("on");
    expect(t.video("7").classList.contains("unpainted")).toBe(false);
    expect(t.painted()).toBe(1);
    // The fallback timer was cleared: nothing more at 2 s.
    vi.advanceTimersByTime(5000);
    expect(t.painted()).toBe(1);
  });

  it("after FIRST_FRAME_MS without a frame shows the video anyway, and still marks the first picture when a frame comes", () => {
    const t = setup([tile("7", { videoOn: true })]);
    vi.advanceTimersByTime(1999);
    expect(t.el("7").dataset.video).toBe("off");
    vi.advanceTimersByTime(1);
    expect(t.el("7").dataset.video).toBe("on");
    expect(t.painted()).toBe(0); // shown by the fallback, not painted
    t.present("7");
    expect(t.painted()).toBe(1);
  });

  it("marks no first remote picture for this device's own tile, nor for a video turned off before its frame", () => {
    const t = setup([tile("local", { videoOn: true }), tile("7", { videoOn: true })]);
    t.present("local");
    expect(t.el("local").dataset.video).toBe("on");
    t.show([tile("local", { videoOn: true }), tile("7", { videoOn: false })]);
    t.present("7");
    expect(t.painted()).toBe(0);
    expect(t.el("7").dataset.video).toBe("off");
    expect(t.video("7").hidden).toBe(true);
  });

  it("a video turned off and on again waits for a frame again (no black frame when the server forwards it again)", () => {
    const t = setup([tile("7", { videoOn: true })]);
    t.present("7");
    t.show([tile("7", { videoOn: false })]);
    t.show([tile("7", { videoOn: true })]);
    expect(t.el("7").dataset.video).toBe("off");
    t.present("7");
    expect(t.el("7").dataset.video).toBe("on");
  });

  it("updates tiles in place (the same video element), drops a tile that left, and keeps an audio element per remote", () => {
    const t = setup([tile("local"), tile("7"), tile("8")]);
    const seven = t.video("7");
    t.show([tile("local"), tile("8", { audioMuted: true }), tile("7", { name: "Seven" })]);
    expect(t.video("7")).toBe(seven);
    expect(t.el("7").querySelector(".tile-name")!.textContent).toBe("Seven");
    expect([...t.view.grid.children].map((n) => (n as HTMLElement).dataset.key)).toEqual(["local", "8", "7"]);
    expect(t.el("8").getAttribute("aria-label")).toBe("8, muted");
    expect([...t.view.audio.querySelectorAll("audio")].map((a) => a.dataset.key)).toEqual(["7", "8"]);
    t.show([tile("local"), tile("8")]);
    expect(t.view.grid.querySelector('[data-key="7"]')).toBeNull();
    expect([...t.view.audio.querySelectorAll("audio")].map((a) => a.dataset.key)).toEqual(["8"]);
    t.view.dispose();
  });
});
