// The clock as a seam: real timers in the browser, fake ones in unit tests.

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Resolves after `ms`, or at once when `signal` aborts (the caller looks at the signal after). */
export function pause(timers: Timers, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      timers.clearTimeout(handle);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const handle = timers.setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** At most `perMinute` takes in any minute (a sliding window over `now`). */
export class MinuteBudget {
  private taken: number[] = [];
  private readonly perMinute: number;
  private readonly now: () => number;

  constructor(perMinute: number, now: () => number = () => Date.now()) {
    this.perMinute = perMinute;
    this.now = now;
  }

  /** One take, or false when this minute's are spent. */
  take(): boolean {
    const now = this.now();
    this.taken = this.taken.filter((t) => now - t < 60_000);
    if (this.taken.length >= this.perMinute) return false;
    this.taken.push(now);
    return true;
  }
}
