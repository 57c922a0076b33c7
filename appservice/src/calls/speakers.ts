// Who speaks in a call, from the SFU's talking / stopped-talking events (docs/large-meetings.md).
// `talking` is what the SFU says now; a feed becomes a *speaker* (front of `recent`, and first
// among the videos everyone receives) only once its turn has lasted `holdMs`, so a one-word
// interjection shows in the "who is talking" strip but reorders nobody's videos. A turn survives
// pauses shorter than `gapMs` (between words: Janus's short detection window reports them).
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
  /** Talking this long (pauses shorter than gapMs included) makes a feed the newest speaker. */
  holdMs: number;
  /** A pause shorter than this (between words, a breath) does not end a feed's turn. */
  gapMs: number;
  /** Longest `recent` list. */
  recentMax: number;
}

export interface SpeakersSnapshot {
  /** Feeds the SFU reports talking now, newest first. */
  talking: FeedId[];
  /** Feeds whose turn goes on and who held the floor past holdMs, newest speaker first. */
  speaking: FeedId[];
  /** Speakers, most recent first (at most recentMax). */
  recent: FeedId[];
}

/** A feed's turn: from its first talking event until a pause longer than gapMs. */
interface Turn {
  talkingNow: boolean;
  /** holdMs passed during a pause: it becomes a speaker when it talks again within the gap. */
  due: boolean;
  cancelHold: (() => void) | undefined;
  cancelGap: (() => void) | undefined;
}

export class SpeakerOrder {
  /** Turns going on, by when they started (insertion order: oldest first). */
  private readonly turns = new Map<FeedId, Turn>();
  private readonly speakingSet = new Set<FeedId>();
  private recentList: FeedId[] = [];
  private readonly cfg: SpeakerConfig;
  private readonly timers: Timers;
  private readonly changed: (what: "talking" | "order") => void;

  /** `changed("order")` when the speaker order moved (videos to re-choose), ("talking") for the strip only. */
  constructor(cfg: SpeakerConfig, deps: { clock: Clock; timers: Timers }, changed: (what: "talking" | "order") => void) {
    this.cfg = cfg;
    this.timers = deps.timers;
    this.changed = changed;
  }

  talking(feed: FeedId): void {
    const turn = this.turns.get(feed);
    if (turn) {
      if (turn.talkingNow) return;
      turn.talkingNow = true;
      turn.cancelGap?.();
      turn.cancelGap = undefined;
      this.changed("talking");
      if (turn.due) this.promote(feed);
      return;
    }
    const t: Turn = { talkingNow: true, due: false, cancelHold: undefined, cancelGap: undefined };
    this.turns.set(feed, t);
    this.changed("talking");
    if (this.cfg.holdMs <= 0) return this.promote(feed);
    t.cancelHold = this.timers.after(this.cfg.holdMs, () => {
      t.cancelHold = undefined;
      if (t.talkingNow) this.promote(feed);
      else t.due = true;
    });
  }

  /** The SFU says the feed stopped: its turn ends unless it talks again within gapMs. */
  stopped(feed: FeedId): void {
    const turn = this.turns.get(feed);
    if (!turn?.talkingNow) return;
    turn.talkingNow = false;
    this.changed("talking");
    if (this.cfg.gapMs <= 0) return this.endTurn(feed);
    turn.cancelGap = this.timers.after(this.cfg.gapMs, () => this.endTurn(feed));
  }

  /** The feed cannot be talking (its audio is muted): its turn ends now. */
  silenced(feed: FeedId): void {
    const turn = this.turns.get(feed);
    if (!turn) return;
    if (turn.talkingNow) {
      turn.talkingNow = false;
      this.changed("talking");
    }
    this.endTurn(feed);
  }

  /** The feed left the call: gone from every list. */
  remove(feed: FeedId): void {
    this.silenced(feed);
    if (this.recentList.includes(feed)) {
      this.recentList = this.recentList.filter((f) => f !== feed);
      this.changed("order");
    }
  }

  snapshot(): SpeakersSnapshot {
    const talking = [...this.turns].filter(([, t]) => t.talkingNow).map(([f]) => f).reverse();
    return { talking, speaking: this.recentList.filter((f) => this.speakingSet.has(f)), recent: [...this.recentList] };
  }

  /** Cancels every timer (the call ended). */
  close(): void {
    for (const t of this.turns.values()) {
      t.cancelHold?.();
      t.cancelGap?.();
    }
    this.turns.clear();
  }

  private endTurn(feed: FeedId): void {
    const turn = this.turns.get(feed);
    if (!turn) return;
    turn.cancelHold?.();
    turn.cancelGap?.();
    this.turns.delete(feed);
    if (this.speakingSet.delete(feed)) this.changed("order");
  }

  private promote(feed: FeedId): void {
    const turn = this.turns.get(feed);
    if (!turn) return;
    turn.due = false;
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
