// One 5 ms clock for every synthetic participant of a process (one timer instead of one per
// participant): each tick calls every sender with the current time; senders keep their own
// schedules and phases (audio every 20 ms, video frames when due).
type Tick = (now: number) => void;

const TICK_MS = 5;

class Ticker {
  private readonly fns = new Set<Tick>();
  private timer: NodeJS.Timeout | undefined;

  add(fn: Tick): () => void {
    this.fns.add(fn);
    this.timer ??= setInterval(() => {
      const now = performance.now();
      for (const f of this.fns) f(now);
    }, TICK_MS);
    return () => {
      this.fns.delete(fn);
      if (this.fns.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }
}

export const ticker = new Ticker();
