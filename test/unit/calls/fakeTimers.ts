// A clock and timers the test moves by hand (calls/speakers.ts Timers seam).
import type { Timers } from "../../../appservice/src/calls/speakers.ts";

export class FakeTime implements Timers {
  now = 1_000;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  readonly clock = { now: () => this.now };

  after(ms: number, fn: () => void): () => void {
    const id = this.seq++;
    this.pending.set(id, { at: this.now + ms, fn });
    return () => this.pending.delete(id);
  }

  /** Moves time forward, running every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      const next = [...this.pending.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at || a[0] - b[0])[0];
      if (!next) break;
      this.pending.delete(next[0]);
      this.now = Math.max(this.now, next[1].at);
      next[1].fn();
    }
    this.now = end;
  }

  get timers(): number {
    return this.pending.size;
  }
}
