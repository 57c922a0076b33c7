// A token bucket: `burst` tokens at most, refilled at `perMinute`. Clock-driven (no timers), so
// a unit test moves time by hand.
import type { Clock } from "./ports.ts";

export interface RateLimit {
  perMinute: number;
  burst: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly perMs: number;
  private readonly burst: number;
  private readonly clock: Clock;

  constructor(opts: { perMinute: number; burst: number }, clock: Clock) {
    this.burst = opts.burst;
    this.perMs = opts.perMinute / 60_000;
    this.tokens = opts.burst;
    this.clock = clock;
    this.last = clock.now();
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + Math.max(0, now - this.last) * this.perMs);
    this.last = now;
  }

  /** Takes a token; returns 0 when taken, else the milliseconds until one is available. */
  take(): number {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return this.perMs > 0 ? Math.ceil((1 - this.tokens) / this.perMs) : Number.POSITIVE_INFINITY;
  }
}
