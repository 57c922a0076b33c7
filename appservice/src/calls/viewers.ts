// Each viewer's videos in one call (docs/large-meetings.md): from its last `view`, the speaker
// order and the roster, the last-N choice and the layer of each, applied to its SFU subscription
// as ONE configure per pass carrying only what changed (pause, resume, substream), never a
// renegotiation; audio is never touched. Re-evaluated on the viewer's view, speaker changes,
// roster changes and the viewer's subscription changes; bursts of those fold into one pass per
// tick. After each applied change the viewer is told exactly what it receives (`videos`).
//
// A layer switch is done only when the SFU says so. Janus 1.1.2 asks the publisher for a key
// frame once per `configure` and switches on the target layer's next one; an encoder drops a key
// frame request that comes within 300 ms of the last one it honoured (libwebrtc's
// EncoderRtcpFeedback; another viewer's switch, or a subscription's start), and then the viewer
// stays on the old layer until some later key frame, which may never come. So a switch the SFU
// has not reported within the keyframe interval is asked again (the same `configure`, which
// makes Janus send its PLI again), through the same per-publisher gate, at most
// LAYER_RETRIES times; never for an m-line Janus reported no layer on (a feed that does not
// simulcast: Janus ignores `substream` there, and each ask would cost a key frame).
import type { Clock } from "./ports.ts";
import { KeyframeGate } from "./keyframes.ts";
import { chooseLayers, type Layer } from "./layers.ts";
import { selectVideos, type FeedId, type VideoCandidate } from "./lastN.ts";
import type { SpeakersSnapshot, Timers } from "./speakers.ts";

export interface ViewRequest {
  videos: number;
  pinned: FeedId[];
  tiles: { feed: FeedId; height: number }[];
  downlinkKbps?: number | undefined;
  /** The layout's page (0-based; absent: 0): past the first, the tiles on screen get their videos first. */
  page?: number | undefined;
}

/** One change of a subscribed video m-line, as the SFU's configure takes it. */
export interface VideoChange {
  mid: string;
  send?: boolean;
  substream?: Layer;
}

export interface VideosPush {
  type: "videos";
  videos: { feed: FeedId; layer: Layer }[];
}

/** A viewer as the call sees it: its own feed, its subscription's configure, its pushes. */
export interface Viewer {
  self(): FeedId | undefined;
  configure(changes: VideoChange[]): Promise<void>;
  push(p: VideosPush): void;
}

export interface ViewersConfig {
  /** The operator's cap on videos per viewer. */
  lastN: number;
  /** Estimated kbit/s of simulcast layers 0, 1, 2 (for the downlink budget). */
  layerKbps: readonly [number, number, number];
  /** At most one batch of keyframe-causing changes per publisher per this many ms. */
  keyframeIntervalMs: number;
}

export interface ViewersDeps {
  clock: Clock;
  timers: Timers;
  /** Feeds with video in the call, in join order. */
  candidates(): VideoCandidate[];
  speakers(): SpeakersSnapshot;
  /** A configure the SFU refused (the next change tries again). */
  failed?(err: unknown): void;
}

/** What the SFU does with a subscribed video m-line now. */
interface MidState {
  send: boolean;
  layer: Layer;
}

interface ViewerState {
  viewer: Viewer;
  view: ViewRequest | undefined;
  /** Subscribed video m-lines -> their feed. */
  mids: Map<string, FeedId>;
  /** What the SFU was last told per m-line (absent: never configured: Janus sends layer 2). */
  applied: Map<string, MidState>;
  /** The layer the SFU reports forwarding per m-line (absent: none reported yet). */
  forwarded: Map<string, Layer>;
  /** Switches asked for and not yet reported done: m-line -> the layer, when last asked, how often asked again. */
  unconfirmed: Map<string, { layer: Layer; at: number; retries: number }>;
  busy: boolean;
  dirty: boolean;
  retry: (() => void) | undefined;
  /** The chosen feeds of the last evaluation, in selection order. */
  order: FeedId[];
  lastPush: string;
  /**
   * Taken over from a previous Parley process (docs/resilience.md): what Janus forwards is what
   * that process chose, unknown here. Nothing is sent until the client's view comes; then the
   * choice for it is taken as applied (the same layout chose the same), so no layer switches.
   */
  adopted?: boolean;
}

/**
 * The simulcast layer a new video m-line starts on: the subscription asks Janus for it
 * (CallMedia.subscribe), so the first pass configures no substream for a chosen feed at that
 * layer. Janus's own default is 2; a switch from it before the subscriber's PeerConnection is up
 * cost a key frame that reached nobody, and made the encoder drop (300 ms filter) the key frame
 * Janus asks for once the PeerConnection is up ("New subscriber available"): the first picture
 * then waited for the viewer's browser to ask again, about 300 ms later.
 */
export const FIRST_LAYER: Layer = 1;

/** Janus's state of a subscribed video before any configure: forwarded, at the subscription's layer. */
const SUBSCRIBED: MidState = { send: true, layer: FIRST_LAYER };

export class CallViewers<K> {
  private readonly viewers = new Map<K, ViewerState>();
  private readonly dirty = new Set<K>();
  private readonly gate: KeyframeGate;
  private flushTimer: (() => void) | undefined;
  private closed = false;
  private readonly cfg: ViewersConfig;
  private readonly deps: ViewersDeps;

  constructor(cfg: ViewersConfig, deps: ViewersDeps) {
    this.gate = new KeyframeGate(cfg.keyframeIntervalMs, deps.clock);
    this.cfg = cfg;
    this.deps = deps;
  }

  add(key: K, viewer: Viewer, opts: { adopted?: boolean } = {}): void {
    if (this.viewers.has(key)) return;
    this.viewers.set(key, {
      viewer, view: undefined, mids: new Map(), applied: new Map(), forwarded: new Map(), unconfirmed: new Map(),
      busy: false, dirty: false, retry: undefined, order: [], lastPush: "[]",
      ...(opts.adopted ? { adopted: true } : {}),
    });
  }

  /** The viewer's seat changed (a client reattached after a Parley restart): same state, new key and callbacks. */
  rekey(from: K, to: K, viewer: Viewer): void {
    const v = this.viewers.get(from);
    if (!v) return this.add(to, viewer);
    this.viewers.delete(from);
    const wasDirty = this.dirty.delete(from);
    // Its timer names the old key: cancelled, and what it would have done is done for the new one.
    const waiting = v.retry !== undefined;
    v.retry?.();
    this.viewers.set(to, { ...v, viewer, retry: undefined });
    if (wasDirty || waiting) this.schedule(to);
  }

  remove(key: K): void {
    const v = this.viewers.get(key);
    v?.retry?.();
    this.viewers.delete(key);
    this.dirty.delete(key);
  }

  get size(): number {
    return this.viewers.size;
  }

  /** The viewer's layout changed. */
  view(key: K, view: ViewRequest): void {
    const v = this.viewers.get(key);
    if (!v) return;
    v.view = view;
    this.schedule(key);
  }

  /** The viewer's whole subscription now (after a subscribe / unsubscribe). */
  subscribed(key: K, streams: readonly { mid: string; feed: FeedId; kind: "audio" | "video" }[], paused?: ReadonlySet<string>): void {
    const v = this.viewers.get(key);
    if (!v) return;
    v.mids = new Map(streams.filter((s) => s.kind === "video").map((s) => [s.mid, s.feed]));
    for (const mid of [...v.applied.keys()]) if (!v.mids.has(mid)) dropMid(v, mid);
    // M-lines the SFU was told not to forward when they were made (a pre-join's subscription):
    // the chosen ones resume as any paused one does, with the usual key frame limits.
    for (const mid of paused ?? []) if (v.mids.has(mid) && !v.applied.has(mid)) v.applied.set(mid, { send: false, layer: SUBSCRIBED.layer });
    this.schedule(key);
  }

  /** The SFU reports the layer it now forwards on one of the viewer's m-lines. */
  forwarded(key: K, mid: string, layer: Layer): void {
    const v = this.viewers.get(key);
    if (!v) return;
    v.forwarded.set(mid, layer);
    if (v.unconfirmed.get(mid)?.layer === layer) v.unconfirmed.delete(mid);
  }

  /** Speakers, roster or mutes changed: every viewer is chosen for again. */
  invalidate(): void {
    for (const key of this.viewers.keys()) this.schedule(key);
  }

  /**
   * A publisher left: its keyframe window goes, and so do the viewers' m-lines of it (Janus drops
   * them from the subscriptions, and a configure naming a gone m-line is refused as a whole).
   */
  forgetFeed(feed: FeedId): void {
    this.gate.forget(feed);
    for (const v of this.viewers.values()) {
      for (const [mid, f] of v.mids) {
        if (f !== feed) continue;
        v.mids.delete(mid);
        dropMid(v, mid);
      }
    }
  }

  close(): void {
    this.closed = true;
    this.flushTimer?.();
    this.flushTimer = undefined;
    for (const v of this.viewers.values()) v.retry?.();
    this.viewers.clear();
    this.dirty.clear();
  }

  private schedule(key: K): void {
    if (this.closed) return;
    this.dirty.add(key);
    this.flushTimer ??= this.deps.timers.after(0, () => {
      this.flushTimer = undefined;
      this.flush();
    });
  }

  /** One pass over the viewers that changed: their keyframe-causing changes form one batch per feed. */
  private flush(): void {
    this.gate.beginPass();
    const keys = [...this.dirty];
    this.dirty.clear();
    for (const key of keys) {
      const v = this.viewers.get(key);
      if (!v) continue;
      if (v.busy) v.dirty = true;
      else this.evaluate(key, v);
    }
  }

  private evaluate(key: K, v: ViewerState): void {
    v.retry?.();
    v.retry = undefined;
    if (v.adopted) {
      if (!v.view) return;
      v.adopted = false;
      const chosen = this.desired(v);
      v.order = [...chosen.keys()];
      for (const [mid, feed] of v.mids) {
        const layer = chosen.get(feed);
        v.applied.set(mid, layer === undefined ? { send: false, layer: SUBSCRIBED.layer } : { send: true, layer });
      }
      return this.pushIfChanged(v);
    }
    const desired = this.desired(v);
    v.order = [...desired.keys()];
    const changes: VideoChange[] = [];
    const next = new Map<string, MidState>();
    let waitMs = 0;
    for (const [mid, feed] of v.mids) {
      const want = desired.get(feed);
      const known = v.applied.get(mid);
      const now = known ?? SUBSCRIBED;
      if (want === undefined) {
        if (now.send) changes.push({ mid, send: false });
        next.set(mid, { send: false, layer: now.layer });
        continue;
      }
      const resume = !now.send;
      const switchLayer = want !== now.layer;
      if (!resume && !switchLayer) {
        next.set(mid, now);
        const asked = v.unconfirmed.get(mid);
        if (!asked || asked.layer !== want) continue;
        // Asked for, not reported done after a keyframe interval: ask again (Janus sends its PLI again).
        const due = asked.at + this.cfg.keyframeIntervalMs - this.deps.clock.now();
        if (due > 0) {
          waitMs = Math.max(waitMs, due);
          continue;
        }
        // Janus reports layers only for a feed that simulcasts (from its first key frame on): no
        // report by now, no layers to switch between (it ignores `substream` and sends all).
        if (!v.forwarded.has(mid) || asked.retries >= LAYER_RETRIES) {
          v.unconfirmed.delete(mid);
          continue;
        }
        if (!this.gate.take(feed)) {
          waitMs = Math.max(waitMs, this.gate.waitFor(feed));
          continue;
        }
        asked.retries++;
        asked.at = this.deps.clock.now();
        changes.push({ mid, substream: want });
        continue;
      }
      // A never-configured m-line is new: Janus asks its keyframe anyway ("Subscriber start").
      if (known !== undefined && !this.gate.take(feed)) {
        waitMs = Math.max(waitMs, this.gate.waitFor(feed));
        continue;
      }
      changes.push({ mid, ...(resume ? { send: true } : {}), ...(switchLayer ? { substream: want } : {}) });
      next.set(mid, { send: true, layer: want });
    }
    if (waitMs > 0) v.retry = this.deps.timers.after(waitMs, () => this.schedule(key));
    if (changes.length === 0) {
      for (const [mid, s] of next) v.applied.set(mid, s);
      this.pushIfChanged(v);
      return;
    }
    v.busy = true;
    v.viewer.configure(changes).then(
      () => {
        for (const [mid, s] of next) if (v.mids.has(mid)) v.applied.set(mid, s);
        this.expectLayers(key, v, changes);
        this.pushIfChanged(v);
      },
      (err: unknown) => this.deps.failed?.(err),
    ).finally(() => {
      v.busy = false;
      if (v.dirty && this.viewers.get(key) === v) {
        v.dirty = false;
        this.schedule(key);
      }
    });
  }

  /**
   * After a configure: each m-line it switched or resumed should now forward its layer. Those
   * the SFU has not reported on are looked at again after a keyframe interval (or sooner, when
   * the viewer's retry timer is set already: that pass waits again for what is not yet due).
   */
  private expectLayers(key: K, v: ViewerState, changes: VideoChange[]): void {
    for (const c of changes) {
      if (c.send === false) {
        v.unconfirmed.delete(c.mid);
        continue;
      }
      const layer = v.applied.get(c.mid)?.layer;
      if (layer === undefined || v.forwarded.get(c.mid) === layer) {
        v.unconfirmed.delete(c.mid);
        continue;
      }
      const asked = v.unconfirmed.get(c.mid);
      if (!asked || asked.layer !== layer) v.unconfirmed.set(c.mid, { layer, at: this.deps.clock.now(), retries: 0 });
    }
    if (v.unconfirmed.size > 0) v.retry ??= this.deps.timers.after(this.cfg.keyframeIntervalMs, () => this.schedule(key));
  }

  /** The chosen feeds of this viewer, with their layers, in selection order. */
  private desired(v: ViewerState): Map<FeedId, Layer> {
    const subscribed = new Set(v.mids.values());
    const candidates = this.deps.candidates().filter((c) => subscribed.has(c.feed));
    const view = v.view ?? { videos: this.cfg.lastN, pinned: [], tiles: [] };
    const speakers = this.deps.speakers();
    const feeds = selectVideos({
      candidates, self: v.viewer.self(), pinned: view.pinned, talking: speakers.speaking, recent: speakers.recent, videos: view.videos, cap: this.cfg.lastN,
      // Page 1 shows the server's own order (speakers first, so a speaker's video comes at once);
      // a later page shows other people, whose tiles must get their videos.
      ...(view.page ? { shown: new Set(view.tiles.map((t) => t.feed)) } : {}),
    });
    const previous = new Map<FeedId, Layer>();
    for (const [mid, s] of v.applied) if (s.send) previous.set(v.mids.get(mid)!, s.layer);
    // Before any view: layer 1 for all (the protocol's default); after one, the tiles decide.
    const heights = new Map(v.view ? view.tiles.map((t) => [t.feed, t.height] as const) : feeds.map((f) => [f, LAYER1_HEIGHT] as const));
    return chooseLayers({ feeds, heights, previous, downlinkKbps: view.downlinkKbps, layerKbps: this.cfg.layerKbps });
  }

  private pushIfChanged(v: ViewerState): void {
    const videos: { feed: FeedId; layer: Layer }[] = [];
    const listed = new Set<FeedId>();
    for (const feed of v.order) {
      for (const [mid, f] of v.mids) {
        const s = v.applied.get(mid);
        if (f === feed && s?.send && !listed.has(feed)) {
          listed.add(feed);
          videos.push({ feed, layer: s.layer });
        }
      }
    }
    // Anything still forwarded that is no longer chosen (a resume or pause waiting) is listed too.
    for (const [mid, f] of v.mids) {
      const s = v.applied.get(mid) ?? SUBSCRIBED;
      if (s.send && !listed.has(f)) {
        listed.add(f);
        videos.push({ feed: f, layer: s.layer });
      }
    }
    const text = JSON.stringify(videos);
    if (text === v.lastPush) return;
    v.lastPush = text;
    v.viewer.push({ type: "videos", videos });
  }
}

/** A subscribed m-line went (unsubscribed, or its publisher left): nothing of it is kept. */
function dropMid(v: ViewerState, mid: string): void {
  v.applied.delete(mid);
  v.forwarded.delete(mid);
  v.unconfirmed.delete(mid);
}

/** How often an unreported layer switch is asked again (then left to Janus and the next change). */
const LAYER_RETRIES = 5;

/** A height that the layer rule maps to layer 1 (the default before any view). */
const LAYER1_HEIGHT = 300;
