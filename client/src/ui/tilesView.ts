// The call's tiles as the layout model places them: the grid page or the speaker view (one tile
// large, a strip of thumbnails), the page controls, the grid/speaker switch, the "who is talking"
// strip and a pin on each remote tile. Every remote participant's audio plays whatever page shows,
// from elements outside the tiles. A tile shows its video only once a frame of it has arrived, the
// avatar until then (no black frame when the server starts forwarding it). Tiles are kept by key
// and updated in place so video elements never restart.
//
// Test ids (stable, for the browser tests):
//   tile                  one participant's tile (also .tile); data-key (feed id or "local"),
//                         data-video "on"|"off" (video forwarded and showing), data-layer 0|1|2,
//                         data-stale "true" while its media stopped arriving (.stale)
//   tile-stale            "Reconnecting…" on a tile whose media stopped arriving
//   tile-pin              pin/unpin on a remote tile (aria-pressed)
//   talking-strip         "Talking: <names>" (hidden when nobody talks)
//   page-prev, page-next  the grid's (or the strip's) pages;  page-label: "Page 2 of 3"
//   layout-toggle         grid view / speaker view (aria-pressed: the speaker view)
//   remote-audio          the audio elements of every remote participant
import type { Tile } from "../state/callModel.ts";
import type { PlacedTile } from "../state/layoutModel.ts";
import type { ActiveCall } from "../state/meetingModel.ts";
import { h, hueOf, icon, setAttr, setText, setToggle } from "./dom.ts";
import { ICONS } from "./icons.ts";
import { markStep } from "../timeline.ts";

interface TileEls {
  root: HTMLElement;
  video: HTMLVideoElement;
  avatar: HTMLElement;
  name: HTMLElement;
  muted: HTMLElement;
  hand: HTMLElement;
  stale: HTMLElement;
  pin: HTMLButtonElement | null;
  userId: string;
  localTrack: MediaStreamTrack | null;
  avatarUrl: string | null;
  /** A frame has been painted since the video was last turned on. */
  painted: boolean;
  videoOn: boolean;
}

export interface TilesView {
  grid: HTMLElement;
  /** The talking strip, pages and the layout switch, above the tiles. */
  bar: HTMLElement;
  /** The remote audio (not shown). */
  audio: HTMLElement;
  dispose(): void;
}

/** The longest a tile keeps its avatar waiting for the first frame of a video turned on. */
const FIRST_FRAME_MS = 2000;

type FrameVideo = HTMLVideoElement & { requestVideoFrameCallback?: (cb: () => void) => number };

export function tilesView(call: ActiveCall): TilesView {
  const { vm, layout } = call;
  const grid = h("div", { class: "grid", role: "list", "aria-label": "Participants" });
  const lineBreak = h("div", { class: "line-break", "aria-hidden": "true" });
  const talking = h("p", { class: "talking", "data-testid": "talking-strip", role: "status", "aria-live": "polite", hidden: true });
  const prev = h("button", { type: "button", class: "pager-btn", "data-testid": "page-prev", title: "Previous page", "aria-label": "Previous page", onclick: () => layout.previousPage() }, icon(ICONS.previous));
  const next = h("button", { type: "button", class: "pager-btn", "data-testid": "page-next", title: "Next page", "aria-label": "Next page", onclick: () => layout.nextPage() }, icon(ICONS.next));
  const pageLabel = h("span", { class: "page-label", "data-testid": "page-label" });
  const pager = h("div", { class: "pager", role: "group", "aria-label": "Pages" }, prev, pageLabel, next);
  const toggle = h("button", {
    type: "button",
    class: "toggle layout-toggle",
    "data-testid": "layout-toggle",
    onclick: () => layout.setMode(layout.state.get().mode === "grid" ? "speaker" : "grid"),
  });
  const bar = h("div", { class: "stage-bar" }, talking, h("span", { class: "spacer" }), pager, toggle);
  const audio = h("div", { class: "remote-audio", "data-testid": "remote-audio", hidden: true });

  const tiles = new Map<string, TileEls>();
  const audios = new Map<string, HTMLAudioElement>();

  const showVideo = (e: TileEls) => {
    const shows = e.videoOn && e.painted;
    // Laid out but transparent until its first frame: a hidden element would never paint one.
    e.video.hidden = !e.videoOn;
    e.video.classList.toggle("unpainted", !e.painted);
    e.root.classList.toggle("video-off", !shows);
    e.root.dataset.video = shows ? "on" : "off";
  };
  /** The video shows from its next painted frame (the avatar stays until then, FIRST_FRAME_MS at most). */
  const awaitFrame = (e: TileEls, local: boolean) => {
    const v = e.video as FrameVideo;
    if (!v.requestVideoFrameCallback) return void (e.painted = true);
    e.painted = false;
    const painted = (presented: boolean) => {
      clearTimeout(fallback);
      // The join's timeline (timeline.ts, once per join): the tile's first remote picture on screen
      // (one frame callback per request), also when it comes after FIRST_FRAME_MS (the video was
      // shown by then: a slow machine's first join).
      if (presented && !local && e.videoOn) markStep("remote-painted");
      if (e.painted || !e.videoOn) return;
      e.painted = true;
      showVideo(e);
    };
    const fallback = setTimeout(() => painted(false), FIRST_FRAME_MS);
    v.requestVideoFrameCallback(() => painted(true));
  };

  const make = (t: Tile): TileEls => {
    const video = h("video", { autoplay: true, playsInline: true, muted: true, class: "tile-video", hidden: true });
    const avatar = h("div", { class: "avatar", "aria-hidden": "true" });
    const name = h("span", { class: "tile-name" });
    const muted = h("span", { class: "tile-muted", title: "Microphone muted" }, icon(ICONS.mutedSmall));
    const hand = h("span", { class: "hand", title: "Hand raised", hidden: true }, icon(ICONS.hand));
    const stale = h("span", { class: "tile-stale", "data-testid": "tile-stale", role: "status", hidden: true }, "Reconnecting…");
    const pin = t.local ? null : h("button", { type: "button", class: "tile-pin", "data-testid": "tile-pin", onclick: () => layout.togglePin(t.key) }, icon(ICONS.pin));
    const root = h("div", { class: "tile", role: "listitem", "data-testid": "tile" }, avatar, video, stale, h("div", { class: "tile-label" }, hand, muted, name), pin);
    root.dataset.key = t.key;
    return { root, video, avatar, name, muted, hand, stale, pin, userId: t.userId, localTrack: null, avatarUrl: "", painted: false, videoOn: false };
  };

  const render = (p: PlacedTile): TileEls => {
    const t = p.tile;
    let e = tiles.get(t.key);
    if (!e) tiles.set(t.key, (e = make(t)));
    e.root.classList.toggle("speaking", t.speaking);
    e.root.classList.toggle("local", t.local);
    e.root.classList.toggle("screen", t.screen);
    e.root.classList.toggle("undecryptable", t.undecryptable);
    e.root.classList.toggle("stale", t.stale);
    e.root.dataset.stale = String(t.stale);
    e.stale.hidden = !t.stale;
    e.root.classList.toggle("main", p.main);
    e.root.classList.toggle("pinned", p.pinned);
    e.root.style.width = `${p.width}px`;
    if (t.layer === null) delete e.root.dataset.layer;
    else e.root.dataset.layer = String(t.layer);
    // Text and attributes written only when they change: every store update renders every tile
    // shown, and a text written again is a text node replaced and laid out again.
    setAttr(
      e.root,
      "aria-label",
      `${t.name}${p.pinned ? ", pinned" : ""}${t.screen ? ", sharing screen" : ""}${t.audioMuted ? ", muted" : ""}${t.speaking ? ", speaking" : ""}${t.undecryptable ? ", media can't be decrypted" : ""}${t.stale ? ", media not arriving" : ""}`,
    );
    setText(e.name, t.name);
    e.muted.hidden = !t.audioMuted;
    if (e.pin) {
      const title = p.pinned ? `Unpin ${t.name}` : `Pin ${t.name}`;
      setAttr(e.pin, "aria-pressed", String(p.pinned));
      setAttr(e.pin, "title", title);
      setAttr(e.pin, "aria-label", title);
    }
    if (t.local) {
      if (e.localTrack !== t.localVideo) {
        e.localTrack = t.localVideo;
        e.video.srcObject = t.localVideo ? new MediaStream([t.localVideo]) : null;
      }
    } else if (e.video.srcObject !== t.stream) e.video.srcObject = t.stream;
    if (t.videoOn && !e.videoOn) awaitFrame(e, t.local);
    e.videoOn = t.videoOn;
    showVideo(e);
    if (e.avatarUrl !== t.avatarUrl) {
      e.avatarUrl = t.avatarUrl;
      e.avatar.replaceChildren(t.avatarUrl ? h("img", { src: t.avatarUrl, alt: "" }) : h("span", { class: "initials" }, t.initials));
      if (!t.avatarUrl) e.avatar.dataset.hue = String(hueOf(t.userId));
    }
    return e;
  };

  // Raised hands show on the tiles too (the governance model knows them, per person).
  const markHands = () => {
    const raised = new Set(call.governance.state.get().people.filter((p) => p.hand !== null).map((p) => p.userId));
    for (const e of tiles.values()) e.hand.hidden = !raised.has(e.userId);
  };

  const offLayout = layout.state.subscribe((s) => {
    const seen = new Set<string>();
    const ordered: HTMLElement[] = [];
    for (const p of s.shown) {
      seen.add(p.tile.key);
      ordered.push(render(p).root);
      if (p.main) ordered.push(lineBreak);
    }
    for (const [key, e] of tiles) {
      if (seen.has(key)) continue;
      e.video.srcObject = null;
      tiles.delete(key);
    }
    // Reorder only when needed: moving a playing video element restarts it in some browsers.
    const current = [...grid.children];
    if (current.length !== ordered.length || ordered.some((n, i) => current[i] !== n)) grid.replaceChildren(...ordered);
    grid.classList.toggle("speaker", s.mode === "speaker");
    pager.hidden = s.pages <= 1;
    setText(pageLabel, `Page ${s.page + 1} of ${s.pages}`);
    prev.disabled = s.page === 0;
    next.disabled = s.page >= s.pages - 1;
    setToggle(toggle, {
      pressed: s.mode === "speaker",
      label: s.mode === "speaker" ? "Speaker" : "Grid",
      icon: s.mode === "speaker" ? ICONS.speakerView : ICONS.grid,
      action: s.mode === "speaker" ? "Show everyone in a grid" : "Show the speaker large",
    });
    markHands();
  }, true);

  // Audio for everyone in the call, on screen or not.
  const offVm = vm.state.subscribe((s) => {
    const remotes = s.tiles.filter((t) => !t.local);
    const keys = new Set(remotes.map((t) => t.key));
    for (const [key, el] of audios) {
      if (keys.has(key)) continue;
      el.srcObject = null;
      el.remove();
      audios.delete(key);
    }
    for (const t of remotes) {
      let el = audios.get(t.key);
      if (!el) {
        audios.set(t.key, (el = h("audio", { autoplay: true })));
        el.dataset.key = t.key;
        audio.append(el);
      }
      if (el.srcObject !== t.stream) el.srcObject = t.stream;
    }
    talking.textContent = s.talking.length ? `Talking: ${s.talking.join(", ")}` : "";
    talking.hidden = !s.talking.length;
  }, true);

  const resize = new ResizeObserver(() => {
    const { width, height } = grid.getBoundingClientRect();
    layout.setViewport({ width, height, dpr: globalThis.devicePixelRatio || 1 });
  });
  resize.observe(grid);
  const offHands = call.governance.state.subscribe(markHands);

  return {
    grid,
    bar,
    audio,
    dispose: () => {
      resize.disconnect();
      offLayout();
      offVm();
      offHands();
      for (const e of tiles.values()) e.video.srcObject = null;
      for (const el of audios.values()) el.srcObject = null;
    },
  };
}
