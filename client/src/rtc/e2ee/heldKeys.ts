// Media keys a device holds for senders it cannot use them for yet (not, or no longer, seen in the
// call): bounded per sender, in senders and in total, and for a limited time. Anyone who can send
// this device an Olm message can make it hold a key, so nothing here grows without bound.

/** Keys kept per sending device (a sender rotates; the latest ones are the ones that matter). */
export const MAX_KEYS_PER_SENDER = 4;
/** Senders whose keys are held at once; the one heard from least recently goes first. */
export const MAX_HELD_SENDERS = 32;
/** Keys held at once over all senders; the oldest go first. */
export const MAX_HELD_KEYS = 64;
/** A held key is dropped this long after it arrived (a membership later than this is a rotation's job). */
export const HELD_KEY_TTL_MS = 60_000;

export interface HeldKey {
  index: number;
  key: Uint8Array;
  /** When it arrived (the holder's clock). */
  at: number;
}

export interface HeldKeyLimits {
  perSender: number;
  senders: number;
  total: number;
  ttlMs: number;
}

export const HELD_KEY_LIMITS: HeldKeyLimits = { perSender: MAX_KEYS_PER_SENDER, senders: MAX_HELD_SENDERS, total: MAX_HELD_KEYS, ttlMs: HELD_KEY_TTL_MS };

/** Held keys by sender ("<user>|<device>"), in arrival order; a Map keeps senders in insertion order. */
export class HeldKeys {
  private readonly bySender = new Map<string, HeldKey[]>();
  private readonly limits: HeldKeyLimits;
  private readonly now: () => number;

  constructor(now: () => number, limits: Partial<HeldKeyLimits> = {}) {
    this.now = now;
    this.limits = { ...HELD_KEY_LIMITS, ...limits };
  }

  /** Holds `keys` for `sender` (merged with what is held, the latest `perSender` kept), then applies the bounds. */
  add(sender: string, keys: { index: number; key: Uint8Array }[]): void {
    if (!keys.length) return;
    const at = this.now();
    const merged = [...(this.bySender.get(sender) ?? []), ...keys.map((k) => ({ index: k.index, key: k.key, at }))];
    // One key per index (the later one wins), in arrival order.
    const byIndex = new Map<number, HeldKey>();
    for (const k of merged) {
      byIndex.delete(k.index);
      byIndex.set(k.index, k);
    }
    this.bySender.delete(sender); // re-inserted last: the most recently heard sender
    this.bySender.set(sender, [...byIndex.values()].slice(-this.limits.perSender));
    this.prune();
  }

  /** Takes (and forgets) the keys held for `sender` that are still fresh. */
  take(sender: string): HeldKey[] {
    this.prune();
    const keys = this.bySender.get(sender) ?? [];
    this.bySender.delete(sender);
    return keys;
  }

  senders(): string[] {
    this.prune();
    return [...this.bySender.keys()];
  }

  get size(): number {
    let n = 0;
    for (const keys of this.bySender.values()) n += keys.length;
    return n;
  }

  private prune(): void {
    const oldest = this.now() - this.limits.ttlMs;
    for (const [sender, keys] of this.bySender) {
      const fresh = keys.filter((k) => k.at > oldest);
      if (fresh.length) this.bySender.set(sender, fresh);
      else this.bySender.delete(sender);
    }
    while (this.bySender.size > this.limits.senders) this.bySender.delete(this.bySender.keys().next().value!);
    let total = this.size;
    while (total > this.limits.total) {
      // Drop the oldest key of all.
      let from: string | undefined;
      let at = Infinity;
      for (const [sender, keys] of this.bySender) {
        if (keys[0]!.at < at) {
          at = keys[0]!.at;
          from = sender;
        }
      }
      const keys = this.bySender.get(from!)!;
      keys.shift();
      if (!keys.length) this.bySender.delete(from!);
      total--;
    }
  }
}
