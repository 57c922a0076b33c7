// At most one batch of keyframe-causing changes per publisher per interval
// (docs/large-meetings.md). Janus 1.1.2 sends the publisher a PLI, unthrottled, for every
// subscriber stream resumed (`send: true`) or switched to another simulcast substream. So the
// changes of one re-evaluation pass that need a feed's keyframe go out together (Janus's one
// VideoRoom thread handles them back to back: their PLIs reach the encoder within one frame and
// make one keyframe), and later ones for that feed wait until the interval is over.
import type { Clock } from "./ports.ts";
import type { FeedId } from "./lastN.ts";

export class KeyframeGate {
  private readonly released = new Map<FeedId, { at: number; pass: number }>();
  private pass = 0;
  private readonly intervalMs: number;
  private readonly clock: Clock;

  constructor(intervalMs: number, clock: Clock) {
    this.intervalMs = intervalMs;
    this.clock = clock;
  }

  /** A new evaluation pass: feeds released in it may be asked again within it. */
  beginPass(): void {
    this.pass++;
  }

  /** Whether a keyframe-causing change for `feed` may go now (and, if so, counts it). */
  take(feed: FeedId): boolean {
    const now = this.clock.now();
    const last = this.released.get(feed);
    if (last && last.pass !== this.pass && now - last.at < this.intervalMs) return false;
    if (!last || last.pass !== this.pass) this.released.set(feed, { at: now, pass: this.pass });
    return true;
  }

  /** Milliseconds until `feed` may be asked again (0: now). */
  waitFor(feed: FeedId): number {
    const last = this.released.get(feed);
    return last ? Math.max(0, last.at + this.intervalMs - this.clock.now()) : 0;
  }

  forget(feed: FeedId): void {
    this.released.delete(feed);
  }
}
