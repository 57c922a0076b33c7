import { describe, expect, it } from "vitest";
import {
  FRAME_KEY_INFO,
  FRAME_KEY_SALT,
  IV_LENGTH,
  TAG_LENGTH,
  TRAILER_LENGTH,
  clearBytesForCodec,
  clearPrefixLength,
  decryptFrame,
  deriveFrameKey,
  encryptFrame,
  isVp8KeyFrame,
  type DecryptResult,
} from "../../../../client/src/rtc/e2ee/frameCrypto.ts";
import { IvSequence } from "../../../../client/src/rtc/e2ee/keyRing.ts";

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed + i * 31) & 0xff;
  return out;
}

function rawKey(seed: number): Uint8Array {
  return bytes(32, seed);
}

/** A VP8 key frame: bit 0 of byte 0 clear, start code 9d 01 2a at bytes 3..5. */
function vp8KeyFrame(n = 200): Uint8Array {
  const f = bytes(n, 7);
  f[0] = 0x50; // even: key frame
  f.set([0x9d, 0x01, 0x2a], 3);
  return f;
}

function vp8DeltaFrame(n = 120): Uint8Array {
  const f = bytes(n, 11);
  f[0] = 0x31; // odd: delta frame
  return f;
}

function opusFrame(n = 80): Uint8Array {
  const f = bytes(n, 3);
  f[0] = 0x78; // TOC byte
  return f;
}

const vp8 = clearBytesForCodec("video", "vp8");
const opus = clearBytesForCodec("audio", "opus");

function expectOk(r: DecryptResult): Uint8Array {
  if (!r.ok) throw new Error(`decryption failed: ${r.reason}`);
  return r.data;
}

describe("wire constants", () => {
  it("uses the documented HKDF salt and info", () => {
    expect(FRAME_KEY_SALT.length).toBe(16);
    expect(new TextDecoder().decode(FRAME_KEY_SALT)).toBe("ParleyFrameKey01");
    expect(new TextDecoder().decode(FRAME_KEY_INFO)).toBe("parley frame key v1");
    expect(TRAILER_LENGTH).toBe(13);
  });
});

describe("clearPrefixLength / isVp8KeyFrame", () => {
  it("reads the VP8 key-frame bit", () => {
    expect(isVp8KeyFrame(vp8KeyFrame())).toBe(true);
    expect(isVp8KeyFrame(vp8DeltaFrame())).toBe(false);
    expect(isVp8KeyFrame(new Uint8Array(0))).toBe(false);
  });
  it("gives 10/3 for VP8, 1 for Opus and 0 for anything else", () => {
    expect(clearPrefixLength("video", "vp8", true)).toBe(10);
    expect(clearPrefixLength("video", "vp8", false)).toBe(3);
    expect(clearPrefixLength("video", "video/VP8", false)).toBe(3);
    expect(clearPrefixLength("audio", "opus", false)).toBe(1);
    expect(clearPrefixLength("audio", "opus", true)).toBe(1);
    expect(clearPrefixLength("video", "h264", true)).toBe(0);
    expect(clearPrefixLength("video", "vp9", false)).toBe(0);
    expect(clearPrefixLength("audio", "pcmu", false)).toBe(0);
  });
});

describe("encryptFrame / decryptFrame", () => {
  const cases = [
    { name: "VP8 key frame", frame: vp8KeyFrame(), clear: 10, clearBytesFor: vp8 },
    { name: "VP8 delta frame", frame: vp8DeltaFrame(), clear: 3, clearBytesFor: vp8 },
    { name: "Opus frame", frame: opusFrame(), clear: 1, clearBytesFor: opus },
    { name: "unknown codec", frame: bytes(64, 5), clear: 0, clearBytesFor: clearBytesForCodec("video", "h264") },
  ];
  for (const c of cases) {
    it(`round-trips a ${c.name} with the clear prefix unchanged`, async () => {
      const key = await deriveFrameKey(rawKey(1));
      const iv = new IvSequence().next();
      expect(c.clearBytesFor(c.frame)).toBe(c.clear);
      const original = c.frame.slice();
      const enc = await encryptFrame(c.frame, { key, keyIndex: 7, clearBytes: c.clear, iv });

      expect(c.frame).toEqual(original); // input untouched
      expect(enc.length).toBe(c.frame.length + TAG_LENGTH + TRAILER_LENGTH);
      expect(enc.subarray(0, c.clear)).toEqual(c.frame.subarray(0, c.clear));
      const body = enc.subarray(c.clear, c.frame.length);
      expect(body).not.toEqual(c.frame.subarray(c.clear));
      expect(enc.subarray(enc.length - TRAILER_LENGTH, enc.length - 1)).toEqual(iv);
      expect(enc[enc.length - 1]).toBe(7);

      const r = await decryptFrame(enc, (i) => (i === 7 ? key : undefined), c.clearBytesFor);
      expect(r.ok && r.keyIndex).toBe(7);
      expect(expectOk(r)).toEqual(c.frame);
    });
  }

  it("round-trips a frame that is only its clear prefix", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const frame = opusFrame(1);
    const enc = await encryptFrame(frame, { key, keyIndex: 0, clearBytes: 1, iv: new IvSequence().next() });
    expect(enc.length).toBe(1 + TAG_LENGTH + TRAILER_LENGTH);
    expect(expectOk(await decryptFrame(enc, () => key, opus))).toEqual(frame);
  });

  it("round-trips an empty frame (Chromium's Opus encoder hands the transform some under DTX): sent as tag and trailer, prefix 0", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const empty = new Uint8Array(0);
    const clearBytes = Math.min(clearPrefixLength("audio", "opus", false), empty.length); // as cipher.ts encrypts
    const enc = await encryptFrame(empty, { key, keyIndex: 0, clearBytes, iv: new IvSequence().next() });
    expect(enc.length).toBe(TAG_LENGTH + TRAILER_LENGTH);
    expect(expectOk(await decryptFrame(enc, () => key, opus))).toEqual(empty);
    expect(expectOk(await decryptFrame(enc, () => key, vp8))).toEqual(empty);
    // One byte short of that is still too short.
    expect(await decryptFrame(enc.subarray(1), () => key, opus)).toMatchObject({ ok: false, reason: "too-short" });
  });

  it("works on views into larger buffers", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const big = new Uint8Array(300);
    big.set(vp8DeltaFrame(100), 50);
    const view = big.subarray(50, 150);
    const enc = await encryptFrame(view, { key, keyIndex: 1, clearBytes: 3, iv: new IvSequence().next() });
    const padded = new Uint8Array(enc.length + 20);
    padded.set(enc, 10);
    const r = await decryptFrame(padded.subarray(10, 10 + enc.length), () => key, vp8);
    expect(expectOk(r)).toEqual(view);
  });

  it("authenticates the clear prefix: any flipped prefix byte is bad-tag", async () => {
    const key = await deriveFrameKey(rawKey(1));
    for (const [frame, clear, fn] of [
      [vp8KeyFrame(), 10, vp8],
      [vp8DeltaFrame(), 3, vp8],
      [opusFrame(), 1, opus],
    ] as const) {
      const enc = await encryptFrame(frame, { key, keyIndex: 0, clearBytes: clear, iv: new IvSequence().next() });
      for (let i = 0; i < clear; i++) {
        const tampered = enc.slice();
        tampered[i] = (tampered[i] ?? 0) ^ 0x04; // keeps the VP8 key-frame bit
        expect(await decryptFrame(tampered, () => key, fn)).toEqual({ ok: false, reason: "bad-tag", keyIndex: 0 });
      }
      // Flipping the VP8 key-frame bit changes the prefix length the receiver computes: still fails.
      if (fn === vp8) {
        const flipped = enc.slice();
        flipped[0] = (flipped[0] ?? 0) ^ 0x01;
        const r = await decryptFrame(flipped, () => key, fn);
        expect(r.ok).toBe(false);
      }
    }
  });

  it("rejects altered ciphertext, tag or IV as bad-tag", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const enc = await encryptFrame(opusFrame(), { key, keyIndex: 3, clearBytes: 1, iv: new IvSequence().next() });
    for (const pos of [1, enc.length - TRAILER_LENGTH - 1, enc.length - TRAILER_LENGTH, enc.length - 2]) {
      const tampered = enc.slice();
      tampered[pos] = (tampered[pos] ?? 0) ^ 0x80;
      expect(await decryptFrame(tampered, () => key, opus)).toEqual({ ok: false, reason: "bad-tag", keyIndex: 3 });
    }
  });

  it("reports a wrong key as bad-tag", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const other = await deriveFrameKey(rawKey(2));
    const enc = await encryptFrame(vp8DeltaFrame(), { key, keyIndex: 4, clearBytes: 3, iv: new IvSequence().next() });
    expect(await decryptFrame(enc, () => other, vp8)).toEqual({ ok: false, reason: "bad-tag", keyIndex: 4 });
  });

  it("reports an unknown key index as no-key", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const enc = await encryptFrame(vp8DeltaFrame(), { key, keyIndex: 200, clearBytes: 3, iv: new IvSequence().next() });
    const asked: number[] = [];
    const r = await decryptFrame(enc, (i) => (asked.push(i), undefined), vp8);
    expect(r).toEqual({ ok: false, reason: "no-key", keyIndex: 200 });
    expect(asked).toEqual([200]);
  });

  it("reports truncated frames as too-short and never throws", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const frame = vp8KeyFrame(40);
    const enc = await encryptFrame(frame, { key, keyIndex: 9, clearBytes: 10, iv: new IvSequence().next() });
    const min = 10 + TAG_LENGTH + TRAILER_LENGTH;
    // The VP8 key frame's minimum: shorter than prefix + tag + trailer is too-short.
    const exact = await encryptFrame(frame.subarray(0, 10), { key, keyIndex: 9, clearBytes: 10, iv: new IvSequence().next() });
    expect(exact.length).toBe(min);
    expect(expectOk(await decryptFrame(exact, () => key, vp8))).toEqual(frame.subarray(0, 10));
    expect(await decryptFrame(exact.subarray(1), () => key, vp8)).toMatchObject({ ok: false, reason: "too-short" });
    expect(await decryptFrame(enc.subarray(0, min - 1), () => key, vp8)).toMatchObject({
      ok: false,
      reason: "too-short",
    });
    for (const n of [0, 1, 5, TRAILER_LENGTH, TRAILER_LENGTH + TAG_LENGTH - 1]) {
      expect(await decryptFrame(enc.subarray(0, n), () => key, vp8)).toEqual({ ok: false, reason: "too-short" });
    }
    // Cut in the middle of the ciphertext: the trailer is then garbage, which is bad-tag or no-key.
    const cut = await decryptFrame(enc.subarray(0, enc.length - 5), () => key, vp8);
    expect(cut.ok).toBe(false);
  });

  it("does not throw when the prefix callback or lookup misbehave", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const enc = await encryptFrame(opusFrame(), { key, keyIndex: 1, clearBytes: 1, iv: new IvSequence().next() });
    const throwing = (): number => {
      throw new Error("boom");
    };
    expect(await decryptFrame(enc, () => key, throwing)).toEqual({ ok: false, reason: "too-short", keyIndex: 1 });
    expect(await decryptFrame(enc, () => key, () => -1)).toEqual({ ok: false, reason: "too-short", keyIndex: 1 });
    expect(await decryptFrame(enc, () => key, () => 1.5)).toEqual({ ok: false, reason: "too-short", keyIndex: 1 });
    const badLookup = (): CryptoKey => {
      throw new Error("boom");
    };
    expect(await decryptFrame(enc, badLookup, opus)).toEqual({ ok: false, reason: "no-key", keyIndex: 1 });
  });

  it("rejects invalid encryption options", async () => {
    const key = await deriveFrameKey(rawKey(1));
    const iv = new IvSequence().next();
    const frame = opusFrame(4);
    await expect(encryptFrame(frame, { key, keyIndex: 256, clearBytes: 1, iv })).rejects.toThrow(RangeError);
    await expect(encryptFrame(frame, { key, keyIndex: -1, clearBytes: 1, iv })).rejects.toThrow(RangeError);
    await expect(encryptFrame(frame, { key, keyIndex: 0, clearBytes: 5, iv })).rejects.toThrow(RangeError);
    await expect(encryptFrame(frame, { key, keyIndex: 0, clearBytes: 1, iv: iv.subarray(1) })).rejects.toThrow(
      RangeError,
    );
  });
});

describe("deriveFrameKey", () => {
  it("is deterministic: the same raw key and IV give the same ciphertext", async () => {
    const iv = new IvSequence(new Uint8Array([1, 2, 3, 4])).next();
    const frame = vp8KeyFrame();
    const a = await encryptFrame(frame, { key: await deriveFrameKey(rawKey(42)), keyIndex: 0, clearBytes: 10, iv });
    const b = await encryptFrame(frame, { key: await deriveFrameKey(rawKey(42)), keyIndex: 0, clearBytes: 10, iv });
    expect(a).toEqual(b);
  });

  it("separates keys: a different raw key gives different ciphertext and bad-tag", async () => {
    const iv = new IvSequence(new Uint8Array([1, 2, 3, 4])).next();
    const frame = vp8KeyFrame();
    const k1 = await deriveFrameKey(rawKey(42));
    const k2 = await deriveFrameKey(rawKey(43));
    const a = await encryptFrame(frame, { key: k1, keyIndex: 0, clearBytes: 10, iv });
    const b = await encryptFrame(frame, { key: k2, keyIndex: 0, clearBytes: 10, iv });
    expect(a).not.toEqual(b);
    expect(await decryptFrame(a, () => k2, vp8)).toEqual({ ok: false, reason: "bad-tag", keyIndex: 0 });
  });

  it("makes a non-extractable AES-GCM-128 key and refuses other key sizes", async () => {
    const key = await deriveFrameKey(rawKey(1));
    expect(key.extractable).toBe(false);
    expect(key.algorithm).toMatchObject({ name: "AES-GCM", length: 128 });
    expect([...key.usages].sort()).toEqual(["decrypt", "encrypt"]);
    await expect(globalThis.crypto.subtle.exportKey("raw", key)).rejects.toThrow();
    await expect(deriveFrameKey(new Uint8Array(16))).rejects.toThrow(RangeError);
  });

  it("matches an independent HKDF computation (known answer)", async () => {
    // HKDF via HMAC by hand (RFC 5869) as a cross-check of the documented parameters.
    const subtle = globalThis.crypto.subtle;
    const hmac = async (k: Uint8Array<ArrayBuffer>, d: Uint8Array<ArrayBuffer>) =>
      new Uint8Array(
        await subtle.sign("HMAC", await subtle.importKey("raw", k, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]), d),
      );
    const raw = new Uint8Array(rawKey(9));
    const prk = await hmac(FRAME_KEY_SALT, raw);
    const t1 = await hmac(prk, new Uint8Array([...FRAME_KEY_INFO, 1]));
    const expected = await subtle.importKey("raw", t1.slice(0, 16), "AES-GCM", false, ["encrypt"]);
    const iv = new Uint8Array(IV_LENGTH);
    const frame = opusFrame();
    const a = await encryptFrame(frame, { key: await deriveFrameKey(raw), keyIndex: 0, clearBytes: 1, iv });
    const b = await encryptFrame(frame, { key: expected, keyIndex: 0, clearBytes: 1, iv });
    expect(a).toEqual(b);
  });
});
