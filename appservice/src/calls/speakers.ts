// Who speaks in a call, from the SFU's talking / stopped-talking events (docs/large-meetings.md).
// `talking` is what the SFU says now; a feed becomes a *speaker* (front of `recent`, and first
// among the videos everyone receives) only once it has talked for `holdMs` without stopping, so
// a one-word interjection shows in the "who is talking" strip but reorders nobody's videos.
// Changes reach the clients coalesced: at most one `speakers` push per `pushIntervalMs`.
import type { Clock } from "./ports.ts";
import type { FeedId } from "./lastN.ts";

/** A timer seam (calls/ takes no real timers in unit tests): runs fn after ms; returns a cancel. */
export interface Timers {
  after(ms: number, fn: () => void): () => void;
}

export const realTimers: Timers = {
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

export interface SpeakerConfig {
  /** Talking this long without a stop makes a feed the newest speaker. */
  holdMs: number;
  /** Longest `recent` list. */
  recentMax: number;
}

export interface SpeakersSnapshot {
  /** Feeds the SFU reports talking now, newest first. */
  talking: FeedId[];
  /** Feeds that talk now and have held the floor past holdMs, newest speaker first. */
  speaking: FeedId[];
  /** Speakers, most recent first (at most recentMax). */
  recent: FeedId[];
}

export class SpeakerOrder {
  /** Talking feeds, by when they started (insertion order: oldest first). */
  private readonly talkingSince = new Map<FeedId, number>();
  private readonly pendingHold = new Map<FeedId, () => void>();
  private readonly speakingSet = new Set<FeedId>();
  private recentList: FeedId[] = [];
  private readonly cfg: SpeakerConfig;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly changed: (what: "talking" | "order") => void;

  /** `changed("order")` when the speaker order moved (videos to re-choose), ("talking") for the strip only. */
  constructor(cfg: SpeakerConfig, deps: { clock: Clock; timers: Timers }, changed: (what: "talking" | "order") => void) {
    this.cfg = cfg;
    this.clock = deps.clock;
    this.timers = deps.timers;
    this.changed = changed;
  }

  talking(feed: FeedId): void {
    if (this.talkingSince.has(feed)) return;
    this.talkingSince.set(feed, this.clock.now());
    if (this.cfg.holdMs <= 0) this.promote(feed);
    else this.pendingHold.set(feed, this.timers.after(this.cfg.holdMs, () => this.promote(feed)));
    this.changed("talking");
  }

  stopped(feed: FeedId): void {
    if (!this.talkingSince.delete(feed)) return;
    this.pendingHold.get(feed)?.();
    this.pendingHold.delete(feed);
    const wasSpeaking = this.speakingSet.delete(feed);
    this.changed(wasSpeaking ? "order" : "talking");
  }

  /** The feed left the call: gone from every list. */
  remove(feed: FeedId): void {
    const inRecent = this.recentList.includes(feed);
    this.stopped(feed);
    if (inRecent) {
      this.recentList = this.recentList.filter((f) => f !== feed);
      this.changed("order");
    }
  }

  snapshot(): SpeakersSnapshot {
    const talking = [...this.talkingSince.keys()].reverse();
    return { talking, speaking: this.recentList.filter((f) => this.speakingSet.has(f)), recent: [...this.recentList] };
  }

  /** Cancels the hold timers (the call ended). */
  close(): void {
    for (const cancel of this.pendingHold.values()) cancel();
    this.pendingHold.clear();
  }

  private promote(feed: FeedId): void {
    this.pendingHold.delete(feed);
    if (!this.talkingSince.has(feed)) return;
    this.speakingSet.add(feed);
    this.recentList = [feed, ...this.recentList.filter((f) => f !== feed)].slice(0, this.cfg.recentMax);
    this.changed("order");
  }
}

/**
 * Runs `fn` soon after `poke()`: at once (next tick) if the last run is older than intervalMs,
 * else when the interval is over; pokes in between fold into that one run.
 */
export class Coalescer {
  private last = Number.NEGATIVE_INFINITY;
  private cancel: (() => void) | undefined;
  private readonly intervalMs: number;
  private readonly deps: { clock: Clock; timers: Timers };
  private readonly fn: () => void;

  constructor(intervalMs: number, deps: { clock: Clock; timers: Timers }, fn: () => void) {
    this.intervalMs = intervalMs;
    this.deps = deps;
    this.fn = fn;
  }

  poke(): void {
    if (this.cancel) return;
    const wait = Math.max(0, this.last + this.intervalMs - this.deps.clock.now());
    this.cancel = this.deps.timers.after(wait, () => {
      this.cancel = undefined;
      this.last = this.deps.clock.now();
      this.fn();
    });
  }

  close(): void {
    this.cancel?.();
    this.cancel = undefined;
  }
}
