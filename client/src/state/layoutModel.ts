// Where the call's tiles go on screen, for calls of any size: a grid cut into pages as large as the
// viewport holds, or the speaker view (one tile large, the others in a paged strip), with up to 4
// pinned tiles first. From the same placement comes what the layout reports to the server in a
// `view` request: how many remote videos it shows, how tall each one is in device pixels, the pins.
import type { FeedId } from "../rtc/protocol.ts";
import { VIEW_LIMITS } from "../rtc/viewProtocol.ts";
import type { CallViewState, Tile } from "./callModel.ts";
import { Store } from "./store.ts";

export type LayoutMode = "grid" | "speaker";

/** The stage's size in CSS pixels and the device pixels per CSS pixel. */
export interface Viewport {
  width: number;
  height: number;
  dpr: number;
}

export interface LayoutOptions {
  /** The narrowest grid tile (CSS px, 16:9): the page holds as many as fit at this width. */
  minTileWidth?: number;
  /** At most this many tiles on one grid page, however large the screen. */
  maxPageSize?: number;
  /** The speaker view's strip: thumbnail height (CSS px). */
  stripHeight?: number;
  gap?: number;
}

export interface PlacedTile {
  tile: Tile;
  /** CSS pixels. */
  width: number;
  height: number;
  /** The speaker view's large tile. */
  main: boolean;
  pinned: boolean;
}

/** What the layout shows of the remote videos: the `view` request's content. */
export interface ViewReport {
  videos: number;
  pinned: FeedId[];
  tiles: { feed: FeedId; height: number }[];
  /** The page on screen, past the first (grid or strip): the server gives its tiles their videos first. */
  page?: number;
}

export interface LayoutState {
  mode: LayoutMode;
  /** 0-based. */
  page: number;
  pages: number;
  /** Tiles one page holds (the grid's tiles, or the speaker view's strip). */
  pageSize: number;
  /** The tiles on screen, in order; in the speaker view the first is the large one. */
  shown: PlacedTile[];
  /** Pinned tile keys, in the order pinned. */
  pinned: string[];
  /** Null until the stage has a size and someone else is in the call (nothing to tell the server yet). */
  report: ViewReport | null;
}

const RATIO = 16 / 9;
const DEFAULTS: Required<LayoutOptions> = { minTileWidth: 200, maxPageSize: 25, stripHeight: 108, gap: 10 };

/** The largest 16:9 tile width that fits n tiles into width x height (gap between tiles). */
export function tileWidth(n: number, width: number, height: number, gap = 10): number {
  let best = 0;
  for (let cols = 1; cols <= Math.max(1, n); cols++) {
    const rows = Math.ceil(Math.max(1, n) / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * RATIO);
    best = Math.max(best, w);
  }
  return Math.max(120, Math.floor(best));
}

/** How many tiles of at least `minWidth` (16:9) fit in width x height; at least 1, at most `max`. */
export function gridPageSize(width: number, height: number, o: Pick<Required<LayoutOptions>, "minTileWidth" | "maxPageSize" | "gap">): number {
  const cols = Math.floor((width + o.gap) / (o.minTileWidth + o.gap));
  const rows = Math.floor((height + o.gap) / (o.minTileWidth / RATIO + o.gap));
  return Math.max(1, Math.min(o.maxPageSize, cols * rows));
}

/** Pinned remote tiles first (in pin order), then this device's tile, then the rest as given. */
export function layoutOrder(tiles: readonly Tile[], pinned: readonly string[]): Tile[] {
  const byKey = new Map(tiles.map((t) => [t.key, t]));
  const first = pinned.map((k) => byKey.get(k)).filter((t): t is Tile => !!t);
  const rest = tiles.filter((t) => !pinned.includes(t.key));
  return [...first, ...rest.filter((t) => t.local), ...rest.filter((t) => !t.local)];
}

/**
 * The remote videos among the placed tiles, as the server wants them reported. On a page past
 * the first (`page`), the server gives the tiles on screen their videos first (page 1 follows the
 * server's own order: a new speaker's video comes without waiting for this report); a pin counts
 * only on the page that shows it, or a page-1 pin would take one of page 2's videos.
 */
export function viewReport(shown: readonly PlacedTile[], pinned: readonly Tile[], dpr: number, page = 0): ViewReport {
  const videos = shown.filter((p) => !p.tile.local && p.tile.feed !== null && p.tile.cameraOn);
  const onScreen = new Set(shown.map((p) => p.tile.key));
  return {
    videos: videos.length,
    pinned: pinned.filter((t) => onScreen.has(t.key)).map((t) => t.feed).filter((f): f is FeedId => f !== null),
    tiles: videos.map((p) => ({ feed: p.tile.feed!, height: Math.round(p.height * dpr) })),
    ...(page > 0 ? { page } : {}),
  };
}

interface Placement {
  pages: number;
  pageSize: number;
  shown: PlacedTile[];
}

function placeGrid(ordered: Tile[], page: number, v: Viewport, o: Required<LayoutOptions>, pinned: ReadonlySet<string>): Placement {
  const pageSize = gridPageSize(v.width, v.height, o);
  const pages = Math.max(1, Math.ceil(ordered.length / pageSize));
  const onPage = ordered.slice(Math.min(page, pages - 1) * pageSize).slice(0, pageSize);
  const w = tileWidth(onPage.length, v.width, v.height, o.gap);
  const shown = onPage.map((tile) => ({ tile, width: w, height: Math.round(w / RATIO), main: false, pinned: pinned.has(tile.key) }));
  return { pages, pageSize, shown };
}

function placeSpeaker(ordered: Tile[], main: Tile | undefined, page: number, v: Viewport, o: Required<LayoutOptions>, pinned: ReadonlySet<string>): Placement {
  const rest = ordered.filter((t) => t !== main);
  const stripW = Math.round(o.stripHeight * RATIO);
  const pageSize = Math.max(1, Math.floor((v.width + o.gap) / (stripW + o.gap)));
  const pages = Math.max(1, Math.ceil(rest.length / pageSize));
  const strip = rest.slice(Math.min(page, pages - 1) * pageSize).slice(0, pageSize);
  const mainH = Math.max(0, Math.min(v.height - (strip.length ? o.stripHeight + o.gap : 0), v.width / RATIO));
  const shown: PlacedTile[] = [
    ...(main ? [{ tile: main, width: Math.round(mainH * RATIO), height: Math.round(mainH), main: true, pinned: pinned.has(main.key) }] : []),
    ...strip.map((tile) => ({ tile, width: stripW, height: o.stripHeight, main: false, pinned: pinned.has(tile.key) })),
  ];
  return { pages, pageSize, shown };
}

/**
 * The layout of one call screen. Inputs: the call's tiles (already in speaker order), the
 * viewport, the user's mode, page and pins; output: what shows where, and the view report.
 */
export class LayoutModel {
  readonly state: Store<LayoutState>;
  private readonly o: Required<LayoutOptions>;
  private call: Pick<CallViewState, "tiles" | "activeSpeaker"> = { tiles: [], activeSpeaker: null };
  private viewport: Viewport = { width: 0, height: 0, dpr: 1 };
  private mode: LayoutMode = "grid";
  private page = 0;
  private pins: string[] = [];

  constructor(opts: LayoutOptions = {}) {
    this.o = { ...DEFAULTS, ...opts };
    this.state = new Store<LayoutState>({ mode: "grid", page: 0, pages: 1, pageSize: 1, shown: [], pinned: [], report: null });
  }

  /** The call's tiles changed (people, speakers, forwarded videos). */
  setCall(call: Pick<CallViewState, "tiles" | "activeSpeaker">): void {
    if (call.tiles === this.call.tiles && call.activeSpeaker === this.call.activeSpeaker) return;
    this.call = { tiles: call.tiles, activeSpeaker: call.activeSpeaker };
    this.recompute();
  }

  setViewport(v: Viewport): void {
    const next = { width: Math.max(0, v.width), height: Math.max(0, v.height), dpr: v.dpr > 0 ? v.dpr : 1 };
    if (next.width === this.viewport.width && next.height === this.viewport.height && next.dpr === this.viewport.dpr) return;
    this.viewport = next;
    this.recompute();
  }

  setMode(mode: LayoutMode): void {
    if (mode === this.mode) return;
    this.mode = mode;
    this.page = 0;
    this.recompute();
  }

  nextPage(): void {
    this.goTo(this.page + 1);
  }

  previousPage(): void {
    this.goTo(this.page - 1);
  }

  /** Pins a remote tile (its video always among the chosen ones) or unpins it; at most 4 pins, the oldest goes. */
  togglePin(key: string): void {
    const tile = this.call.tiles.find((t) => t.key === key);
    if (this.pins.includes(key)) this.pins = this.pins.filter((k) => k !== key);
    else if (tile && !tile.local) this.pins = [...this.pins, key].slice(-VIEW_LIMITS.maxPinned);
    else return;
    this.recompute();
  }

  private goTo(page: number): void {
    const clamped = Math.max(0, Math.min(this.state.get().pages - 1, page));
    if (clamped === this.page) return;
    this.page = clamped;
    this.recompute();
  }

  private recompute(): void {
    const tiles = this.call.tiles;
    // A pinned participant who left is unpinned.
    this.pins = this.pins.filter((k) => tiles.some((t) => t.key === k));
    const pinnedSet = new Set(this.pins);
    const ordered = layoutOrder(tiles, this.pins);
    const remotes = ordered.filter((t) => !t.local);
    const main =
      this.mode === "speaker"
        ? (remotes.find((t) => t.key === this.pins[0]) ?? remotes.find((t) => t.screen) ?? remotes.find((t) => t.key === this.call.activeSpeaker) ?? remotes[0] ?? ordered[0])
        : undefined;
    const placed = this.mode === "speaker" ? placeSpeaker(ordered, main, this.page, this.viewport, this.o, pinnedSet) : placeGrid(ordered, this.page, this.viewport, this.o, pinnedSet);
    this.page = Math.min(this.page, placed.pages - 1);
    const pinnedTiles = this.pins.map((k) => tiles.find((t) => t.key === k)!);
    this.state.set({
      mode: this.mode,
      page: this.page,
      pages: placed.pages,
      pageSize: placed.pageSize,
      shown: placed.shown,
      pinned: [...this.pins],
      // Nothing to tell the server before the stage has a size, or while nobody else is in the call.
      report: this.viewport.width && this.viewport.height && tiles.some((t) => !t.local) ? viewReport(placed.shown, pinnedTiles, this.viewport.dpr, this.page) : null,
    });
  }
}
