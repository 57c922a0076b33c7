import { describe, expect, it } from "vitest";
import { HELD_KEY_TTL_MS, HeldKeys, MAX_HELD_KEYS, MAX_HELD_SENDERS, MAX_KEYS_PER_SENDER } from "../../../../client/src/rtc/e2ee/heldKeys.ts";

const k = (index: number) => ({ index, key: new Uint8Array(32).fill(index) });

describe("HeldKeys", () => {
  it("keeps the latest MAX_KEYS_PER_SENDER keys of one sender, one per index", () => {
    const held = new HeldKeys(() => 0);
    for (let i = 0; i < MAX_KEYS_PER_SENDER + 3; i++) held.add("@a:x|A", [k(i)]);
    held.add("@a:x|A", [k(MAX_KEYS_PER_SENDER + 2)]); // the same index again: replaced, not doubled
    const last = MAX_KEYS_PER_SENDER + 2;
    expect(held.take("@a:x|A").map((h) => h.index)).toEqual(Array.from({ length: MAX_KEYS_PER_SENDER }, (_, i) => last - MAX_KEYS_PER_SENDER + 1 + i));
    expect(held.size).toBe(0);
  });

  it("holds at most MAX_HELD_SENDERS senders: the one heard from least recently goes first", () => {
    const held = new HeldKeys(() => 0);
    for (let i = 0; i <= MAX_HELD_SENDERS; i++) held.add(`@s${i}:x|D`, [k(1)]);
    expect(held.senders()).toHaveLength(MAX_HELD_SENDERS);
    expect(held.senders()).not.toContain("@s0:x|D");
    held.add("@s1:x|D", [k(2)]); // heard from again: now the most recent
    held.add("@new:x|D", [k(1)]);
    expect(held.senders()).toContain("@s1:x|D");
    expect(held.senders()).not.toContain("@s2:x|D");
  });

  it("holds at most MAX_HELD_KEYS keys in total: the oldest go first", () => {
    let now = 0;
    const held = new HeldKeys(() => now);
    const senders = Math.ceil((MAX_HELD_KEYS + 1) / MAX_KEYS_PER_SENDER);
    expect(senders).toBeLessThanOrEqual(MAX_HELD_SENDERS);
    for (let s = 0; s < senders; s++) {
      for (let i = 0; i < MAX_KEYS_PER_SENDER; i++) {
        now++;
        held.add(`@s${s}:x|D`, [k(i)]);
      }
    }
    expect(held.size).toBe(MAX_HELD_KEYS);
    expect(held.take(`@s${senders - 1}:x|D`)).toHaveLength(MAX_KEYS_PER_SENDER); // the newest are all there
    expect(held.take("@s0:x|D").map((h) => h.index)).not.toContain(0); // the very first went
  });

  it("drops a key HELD_KEY_TTL_MS after it arrived", () => {
    let now = 1000;
    const held = new HeldKeys(() => now);
    held.add("@a:x|A", [k(1)]);
    now += HELD_KEY_TTL_MS - 1;
    held.add("@a:x|A", [k(2)]);
    expect(held.size).toBe(2);
    now += 1;
    expect(held.take("@a:x|A").map((h) => h.index)).toEqual([2]);
    now += HELD_KEY_TTL_MS;
    held.add("@b:x|B", [k(3)]);
    expect(held.senders()).toEqual(["@b:x|B"]);
  });
});
