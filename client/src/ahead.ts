// Something a join needs, asked for before the join (when the pre-join shows) so that the join
// does not wait for it: the OpenID token (matrix/openid.ts), the call grant (rtc/callApi.ts).

/** A value asked for ahead, taken by the next use. */
export interface AskedAhead<T> {
  /** Asks now, unless a value is held or on its way (a failed ask is asked again). */
  warm(): void;
  /** The value asked ahead, once: still on its way, it is waited for; none, failed or no longer `fresh`: null. */
  take(): Promise<T | null>;
  /** The value asked ahead, as `take` would give it, left for the next `take`. */
  peek(): Promise<T | null>;
  /**
   * `take` without a pause, when the answer is in already: the value (or null, as `take` would
   * give); undefined while it is still on its way (then `take` waits for it).
   */
  takeNow(): T | null | undefined;
}

/** `fresh(value, askedAt, now)`: whether a value asked at `askedAt` may still be used. */
export function askedAhead<T>(ask: () => Promise<T>, fresh: (value: T, askedAt: number, now: number) => boolean, now: () => number = () => Date.now()): AskedAhead<T> {
  let next: { at: number; value: Promise<T | null>; failed: boolean; answer?: { value: T | null } } | undefined;
  /** What `n`'s answer `value` gives: the value while still fresh, else null. */
  const usable = (n: typeof next, value: T | null | undefined) => (n && value && fresh(value, n.at, now()) ? value : null);
  return {
    warm: () => {
      if (next && !next.failed) return;
      const n: NonNullable<typeof next> = { at: now(), value: Promise.resolve(null), failed: false };
      n.value = ask().then(
        (value) => ((n.answer = { value }), value),
        () => {
          n.failed = true;
          n.answer = { value: null };
          return null;
        },
      );
      next = n;
    },
    takeNow: () => {
      const n = next;
      if (n && !n.answer) return undefined;
      next = undefined;
      return usable(n, n?.answer?.value);
    },
    take: async () => {
      const n = next;
      next = undefined;
      return usable(n, n && (await n.value));
    },
    peek: async () => {
      const n = next;
      return usable(n, n && (await n.value));
    },
  };
}
