// A small observable value: the whole state of one screen's view model. Views subscribe and
// re-render; nothing here knows about the DOM.

export type Listener<T> = (value: T, previous: T) => void;

export class Store<T> {
  private value: T;
  private readonly listeners = new Set<Listener<T>>();

  constructor(initial: T) {
    this.value = initial;
  }

  get(): T {
    return this.value;
  }

  /** Replaces the value (or derives it from the current one) and notifies when it changed. */
  set(next: T | ((current: T) => T)): void {
    const previous = this.value;
    const value = typeof next === "function" ? (next as (current: T) => T)(previous) : next;
    if (Object.is(value, previous)) return;
    this.value = value;
    for (const l of [...this.listeners]) l(value, previous);
  }

  /** Shallow-merges a patch into an object value. */
  update(patch: Partial<T>): void {
    this.set((current) => ({ ...current, ...patch }));
  }

  /**
   * Shallow-merges a patch, and notifies only if a field changed as data (samePlain): a view model
   * rebuilt from scratch on every input (a push, a sample, a member) redraws nothing when the
   * rebuild came out the same.
   */
  patch(patch: Partial<T>): void {
    const current = this.value as Record<string, unknown>;
    if (Object.entries(patch).every(([k, v]) => samePlain(current[k], v))) return;
    this.update(patch);
  }

  /** Calls `listener` on every change (and once now when `immediate`); returns the unsubscribe. */
  subscribe(listener: Listener<T>, immediate = false): () => void {
    this.listeners.add(listener);
    if (immediate) listener(this.value, this.value);
    return () => this.listeners.delete(listener);
  }
}

/**
 * Whether `a` and `b` are the same as data: arrays and plain objects by their contents, anything
 * else (numbers, strings, a MediaStream, a track) by identity.
 */
export function samePlain(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => samePlain(x, b[i]));
  if (!isPlain(a) || !isPlain(b)) return false;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && samePlain(a[k], b[k]));
}

function isPlain(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** A typed event emitter for the I/O seams (signalling pushes, media tracks, timeline events). */
export class Emitter<Events extends Record<string, unknown>> {
  private readonly handlers = new Map<keyof Events, Set<(payload: never) => void>>();

  on<K extends keyof Events>(event: K, handler: (payload: Events[K]) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler as (payload: never) => void);
    return () => set.delete(handler as (payload: never) => void);
  }

  /** Whether anyone listens to `event`. */
  has<K extends keyof Events>(event: K): boolean {
    return (this.handlers.get(event)?.size ?? 0) > 0;
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    for (const h of [...(this.handlers.get(event) ?? [])]) (h as (p: Events[K]) => void)(payload);
  }

  clear(): void {
    this.handlers.clear();
  }
}
