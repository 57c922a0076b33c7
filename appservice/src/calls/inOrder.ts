// Work per key runs one piece at a time, in the order it was asked for (a failure does not stop
// what follows). The store answers asynchronously: a read-then-write about one guest must not
// interleave with the next one about the same guest.
export class InOrder<K> {
  private readonly tails = new Map<K, Promise<unknown>>();

  run<T>(key: K, work: () => Promise<T>): Promise<T> {
    const next = (this.tails.get(key) ?? Promise.resolve()).catch(() => undefined).then(work);
    this.tails.set(key, next);
    // The map keeps only keys with work queued.
    void next.catch(() => undefined).finally(() => {
      if (this.tails.get(key) === next) this.tails.delete(key);
    });
    return next;
  }
}
