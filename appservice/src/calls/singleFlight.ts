// One piece of work per key at a time: callers asking while it runs share its result.
export class SingleFlight<K, V> {
  private readonly pending = new Map<K, Promise<V>>();

  run(key: K, work: () => Promise<V>): Promise<V> {
    let p = this.pending.get(key);
    if (!p) {
      p = work().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  /** Whether work for `key` is under way. */
  running(key: K): boolean {
    return this.pending.has(key);
  }
}
