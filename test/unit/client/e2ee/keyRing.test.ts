import { describe, expect, it } from "vitest";
import {
  clearBytesForCodec,
  decryptFrame,
  encryptFrame,
} from "../../../../client/src/rtc/e2ee/frameCrypto.ts";
import { IvSequence, KeyRing, generateMediaKey } from "../../../../client/src/rtc/e2ee/keyRing.ts";

const opus = clearBytesForCodec("audio", "opus");

function frame(seed: number): Uint8Array {
  return Uint8Array.from({ length: 60 }, (_, i) => (seed * 17 + i) & 0xff);
}

/** Encrypts like a sender would: with the ring's current key and index. */
async function send(ring: KeyRing, ivs: IvSequence, data: Uint8Array): Promise<Uint8Array> {
  const cur = ring.currentKey;
  if (cur === undefined) throw new Error("no current key");
  return encryptFrame(data, { key: cur.key, keyIndex: cur.index, clearBytes: 1, iv: ivs.next() });
}

describe("IvSequence", () => {
  it("gives salt || big-endian counter, unique over 10,000 frames", () => {
    const seq = new IvSequence(new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const iv = seq.next();
      expect(iv.length).toBe(12);
      const hex = Buffer.from(iv).toString("hex");
      if (i === 0) expect(hex).toBe("deadbeef0000000000000000");
      if (i === 258) expect(hex).toBe("deadbeef0000000000000102");
      seen.add(hex);
    }
    expect(seen.size).toBe(10_000);
  });

  it("uses a random salt by default", () => {
    const a = new IvSequence();
    const b = new IvSequence();
    expect(a.salt.length).toBe(4);
    // 2^-32 chance of a false failure.
    expect(Buffer.from(a.salt).equals(Buffer.from(b.salt))).toBe(false);
  });

  it("throws before the counter could wrap", () => {
    const seq = new IvSequence(new Uint8Array(4), (1n << 64n) - 2n);
    expect(seq.remaining).toBe(2n);
    expect(Buffer.from(seq.next()).toString("hex")).toBe("00000000fffffffffffffffe");
    expect(Buffer.from(seq.next()).toString("hex")).toBe("00000000ffffffffffffffff");
    expect(seq.remaining).toBe(0n);
    expect(() => seq.next()).toThrow(RangeError);
    expect(() => seq.next()).toThrow(RangeError);
  });

  it("rejects a salt that is not 4 bytes", () => {
    expect(() => new IvSequence(new Uint8Array(3))).toThrow(RangeError);
  });
});

describe("KeyRing", () => {
  it("derives and stores keys by index", async () => {
    const ring = new KeyRing();
    expect(ring.current).toBeUndefined();
    expect(ring.currentKey).toBeUndefined();
    await ring.set(5, generateMediaKey());
    expect(ring.get(5)).toBeDefined();
    expect(ring.get(4)).toBeUndefined();
    expect(ring.has(5)).toBe(true);
    expect(ring.size).toBe(1);
    expect(ring.current).toBeUndefined(); // set does not choose the sending key
    ring.setCurrent(5);
    expect(ring.currentKey?.index).toBe(5);
    expect(() => ring.setCurrent(6)).toThrow();
    await expect(ring.set(256, generateMediaKey())).rejects.toThrow(RangeError);
    await expect(ring.set(1, new Uint8Array(31))).rejects.toThrow(RangeError);
    expect(ring.has(1)).toBe(false);
  });

  it("rotates to the next index without switching until setCurrent", async () => {
    const ring = new KeyRing();
    expect(await ring.rotate(generateMediaKey())).toBe(0);
    ring.setCurrent(0);
    expect(await ring.rotate(generateMediaKey())).toBe(1);
    expect(ring.current).toBe(0);
    // A second rotation before switching takes another index.
    expect(await ring.rotate(generateMediaKey())).toBe(2);
    ring.setCurrent(2);
    expect(ring.current).toBe(2);
    expect(ring.nextIndex).toBe(3);
  });

  it("continues from an index set explicitly (e.g. a received key)", async () => {
    const ring = new KeyRing();
    await ring.set(254, generateMediaKey());
    expect(await ring.rotate(generateMediaKey())).toBe(255);
    expect(await ring.rotate(generateMediaKey())).toBe(0);
  });

  it("decrypts out of order: a frame under the previous index still decrypts after a rotation", async () => {
    const sender = new KeyRing();
    const receiver = new KeyRing();
    const ivs = new IvSequence();
    const k0 = generateMediaKey();
    await sender.set(0, k0);
    sender.setCurrent(0);
    await receiver.set(0, k0);

    const old = await send(sender, ivs, frame(1));

    const k1 = generateMediaKey();
    const i1 = await sender.rotate(k1);
    await receiver.set(i1, k1); // distributed over Olm
    sender.setCurrent(i1);
    const fresh = await send(sender, ivs, frame(2));

    // The new frame arrives first, the old one late.
    const r1 = await decryptFrame(fresh, receiver.lookup, opus);
    expect(r1).toMatchObject({ ok: true, keyIndex: 1 });
    expect(r1.ok && r1.data).toEqual(frame(2));
    const r0 = await decryptFrame(old, receiver.lookup, opus);
    expect(r0).toMatchObject({ ok: true, keyIndex: 0 });
    expect(r0.ok && r0.data).toEqual(frame(1));

    // A frame under an index the receiver does not hold yet: no-key, until it arrives.
    const k2 = generateMediaKey();
    sender.setCurrent(await sender.rotate(k2));
    const early = await send(sender, ivs, frame(3));
    expect(await decryptFrame(early, receiver.lookup, opus)).toEqual({ ok: false, reason: "no-key", keyIndex: 2 });
    await receiver.set(2, k2);
    expect((await decryptFrame(early, receiver.lookup, opus)).ok).toBe(true);

    // Dropping an old key makes its frames no-key.
    receiver.delete(0);
    expect(await decryptFrame(old, receiver.lookup, opus)).toEqual({ ok: false, reason: "no-key", keyIndex: 0 });
  });

  it("treats a key replaced at the same index after 256 rotations as a different key", async () => {
    const sender = new KeyRing();
    const receiver = new KeyRing();
    const ivs = new IvSequence();
    const first = generateMediaKey();
    await sender.set(0, first);
    sender.setCurrent(0);
    await receiver.set(0, first);
    const old = await send(sender, ivs, frame(1));

    let index = 0;
    let last = first;
    for (let i = 0; i < 256; i++) {
      last = generateMediaKey();
      index = await sender.rotate(last);
      sender.setCurrent(index);
    }
    expect(index).toBe(0);
    await receiver.set(0, last);
    const fresh = await send(sender, ivs, frame(2));

    expect(await decryptFrame(old, receiver.lookup, opus)).toEqual({ ok: false, reason: "bad-tag", keyIndex: 0 });
    expect((await decryptFrame(fresh, receiver.lookup, opus)).ok).toBe(true);
  });

  it("keeps the later of two concurrent sets at one index", async () => {
    const ring = new KeyRing();
    const a = generateMediaKey();
    const b = generateMediaKey();
    const ivs = new IvSequence();
    await Promise.all([ring.set(3, a), ring.set(3, b)]);
    const expected = new KeyRing();
    await expected.set(3, b);
    expected.setCurrent(3);
    const enc = await send(expected, ivs, frame(1));
    expect((await decryptFrame(enc, ring.lookup, opus)).ok).toBe(true);
  });

  it("forgets everything on clear", async () => {
    const ring = new KeyRing();
    await ring.set(1, generateMediaKey());
    ring.setCurrent(1);
    ring.clear();
    expect(ring.size).toBe(0);
    expect(ring.current).toBeUndefined();
    expect(ring.nextIndex).toBe(0);
  });
});
