import { describe, expect, it } from "vitest";
import { FrameCipher, MAX_HELD_FRAMES, participantId, type CipherStatus, type EncodedFrameLike } from "../../../../client/src/rtc/e2ee/cipher.ts";
import { TRAILER_LENGTH, ratchetMediaKey } from "../../../../client/src/rtc/e2ee/frameCrypto.ts";
import { RATCHET_WINDOW } from "../../../../client/src/rtc/e2ee/keyRing.ts";

const ALICE = participantId("@alice:a", "ADEV");
const BOB = participantId("@bob:b", "BDEV");
const key = (seed: number) => Uint8Array.from({ length: 32 }, (_, i) => (seed * 7 + i) & 0xff);

function vp8Frame(keyFrame: boolean, n = 120): EncodedFrameLike & { type: string } {
  const data = Uint8Array.from({ length: n }, (_, i) => (i * 13 + 5) & 0xff);
  data[0] = keyFrame ? 0x10 : 0x11;
  return { data: data.buffer, type: keyFrame ? "key" : "delta" };
}

const bytes = (f: EncodedFrameLike) => new Uint8Array(f.data);

function pair(mode: "participant" | "provisioned" = "participant") {
  let now = 0;
  const statuses: CipherStatus[] = [];
  const alice = new FrameCipher({ self: ALICE, mode });
  const bob = new FrameCipher({ self: BOB, mode, onStatus: (s) => statuses.push(s), now: () => now, failureHoldMs: 500 });
  bob.bindReceiver("r1", ALICE);
  return { alice, bob, statuses, advance: (ms: number) => (now += ms) };
}

describe("FrameCipher", () => {
  it("drops frames while it has no key to send with: nothing leaves in the clear", async () => {
    const { alice } = pair();
    expect(await alice.encrypt(vp8Frame(true), "video")).toBe(false);
  });

  it("encrypts with the sender's key (VP8 header clear) and the receiver decrypts back to the original", async () => {
    const { alice, bob, statuses } = pair();
    await alice.setOwnKey(0, key(1), true);
    await bob.setKey(ALICE, 0, key(1));
    const frame = vp8Frame(true);
    const original = bytes(frame).slice();
    expect(await alice.encrypt(frame, "video")).toBe(true);
    const wire = bytes(frame);
    expect(wire.length).toBe(original.length + 16 + TRAILER_LENGTH);
    expect([...wire.subarray(0, 10)]).toEqual([...original.subarray(0, 10)]);
    expect([...wire.subarray(10, 40)]).not.toEqual([...original.subarray(10, 40)]);
    expect(await bob.decrypt("r1", frame, "video")).toBe(true);
    expect([...bytes(frame)]).toEqual([...original]);
    expect(statuses).toEqual([{ participant: ALICE, state: "ok", keyIndex: 0 }]);
  });

  it("names the participant whose frames stop decrypting, once the failure lasts", async () => {
    const { alice, bob, statuses, advance } = pair();
    await alice.setOwnKey(0, key(1), true);
    await bob.setKey(ALICE, 0, key(2)); // the wrong key
    for (let i = 0; i < 3; i++) {
      const f = vp8Frame(false);
      await alice.encrypt(f, "video");
      expect(await bob.decrypt("r1", f, "video")).toBe(false);
      advance(300);
    }
    expect(statuses).toEqual([{ participant: ALICE, state: "bad-tag", keyIndex: 0 }]);
  });

  it("a receiver bound to nobody, or a participant forgotten, decrypts nothing", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    await bob.setKey(ALICE, 0, key(1));
    const f = vp8Frame(true);
    await alice.encrypt(f, "video");
    expect(await bob.decrypt("r-unknown", { ...f }, "video")).toBe(false);
    bob.forget(ALICE);
    expect(await bob.decrypt("r1", f, "video")).toBe(false);
  });

  it("a rotated key is used only from useOwnKey on; frames under the old index still decrypt", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    await alice.setOwnKey(1, key(2), false);
    const old = vp8Frame(false);
    await alice.encrypt(old, "video");
    expect(bytes(old).at(-1)).toBe(0);
    alice.useOwnKey(1);
    const fresh = vp8Frame(false);
    await alice.encrypt(fresh, "video");
    expect(bytes(fresh).at(-1)).toBe(1);
    await bob.setKey(ALICE, 0, key(1));
    expect(await bob.decrypt("r1", old, "video")).toBe(true);
    expect(await bob.decrypt("r1", fresh, "video")).toBe(false); // key 1 not received yet
    await bob.setKey(ALICE, 1, key(2));
    const fresh2 = vp8Frame(false);
    await alice.encrypt(fresh2, "video");
    expect(await bob.decrypt("r1", fresh2, "video")).toBe(true);
  });

  it("Opus frames keep their TOC byte clear", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    await bob.setKey(ALICE, 0, key(1));
    const data = Uint8Array.from({ length: 60 }, (_, i) => i + 1);
    const f: EncodedFrameLike = { data: data.buffer.slice(0) };
    await alice.encrypt(f, "audio");
    expect(bytes(f)[0]).toBe(1);
    expect(await bob.decrypt("r1", f, "audio")).toBe(true);
    expect([...bytes(f)]).toEqual([...data]);
  });

  it("provisioned mode: one call key, but each sender's frames are under its own derived key", async () => {
    const { alice, bob } = pair("provisioned");
    await alice.setCallKey(0, key(9), true);
    await bob.setCallKey(0, key(9), true);
    const f = vp8Frame(true);
    await alice.encrypt(f, "video");
    expect(await bob.decrypt("r1", { ...f }, "video")).toBe(true);
    // The same frame attributed to another sender (same call key, other identity) fails.
    bob.bindReceiver("r1", participantId("@mallory:m", "MDEV"));
    expect(await bob.decrypt("r1", f, "video")).toBe(false);
  });

  it("provisioned mode: participants that appear after a call key get it too", async () => {
    const alice = new FrameCipher({ self: ALICE, mode: "provisioned" });
    const bob = new FrameCipher({ self: BOB, mode: "provisioned" });
    await bob.setCallKey(3, key(4), true);
    await alice.setCallKey(3, key(4), true);
    bob.bindReceiver("r9", ALICE); // ring made after the key
    await new Promise((r) => setTimeout(r, 20)); // its derivation runs in the background
    const f = vp8Frame(false);
    await alice.encrypt(f, "video");
    expect(await bob.decrypt("r9", f, "video")).toBe(true);
  });
});

describe("FrameCipher: video that arrives before its key", () => {
  /** Alice's encrypted frames: a key frame, then `deltas` deltas, each tagged by its position. */
  async function sent(alice: FrameCipher, deltas: number, keyFrameFirst = true) {
    const frames: (EncodedFrameLike & { type: string })[] = [];
    for (let i = 0; i <= deltas; i++) {
      const f = vp8Frame(keyFrameFirst && i === 0, 100 + i);
      await alice.encrypt(f, "video");
      frames.push(f);
    }
    return frames;
  }

  it("is held from its key frame on and passed on, decrypted and in order, with the first frame after the key", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    const [k, d1, d2, d3] = await sent(alice, 3);
    expect(await bob.receive("r1", k!, "video")).toEqual([]);
    expect(await bob.receive("r1", d1!, "video")).toEqual([]);
    expect(await bob.receive("r1", d2!, "video")).toEqual([]);
    await bob.setKey(ALICE, 0, key(1));
    const out = await bob.receive("r1", d3!, "video");
    expect(out.map((f) => bytes(f).length)).toEqual([100, 101, 102, 103]); // decrypted back to their sizes, in order
    expect(out[0]!.type).toBe("key");
    expect(bob.stats).toMatchObject({ decrypted: 4, released: 3 });
    // Nothing is held any more.
    const [, next] = await sent(alice, 1);
    expect(await bob.receive("r1", next!, "video")).toHaveLength(1);
  });

  it("through its transform, passes what it held on as the key is set (releaseFor), before any next frame", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    const [k, d1] = await sent(alice, 1);
    bob.bindReceiver("r1", ALICE);
    const t = bob.decryptTransform("r1", "video");
    const reader = t.readable.getReader();
    const writer = t.writable.getWriter();
    const first = reader.read(); // pulls: the transform takes frames
    await writer.write(k!);
    await writer.write(d1!);
    expect(await bob.releaseFor(BOB)).toBe(0); // someone else's key: nothing
    expect(await bob.releaseFor(ALICE)).toBe(0); // no key yet: still held
    await bob.setKey(ALICE, 0, key(1));
    expect(await bob.releaseFor(ALICE)).toBe(2);
    const second = await reader.read();
    expect([(await first).value!, second.value!].map((f) => bytes(f).length)).toEqual([100, 101]);
    expect((await first).value!.type).toBe("key");
    expect(await bob.releaseFor(ALICE)).toBe(0); // nothing held any more
    expect(bob.stats.released).toBe(2);
  });

  it("holds nothing before a key frame, nor past MAX_HELD_FRAMES (the next key frame starts again)", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    const deltas = await sent(alice, 2, false);
    for (const f of deltas) expect(await bob.receive("r1", f, "video")).toEqual([]);
    const long = await sent(alice, MAX_HELD_FRAMES + 1);
    for (const f of long) expect(await bob.receive("r1", f, "video")).toEqual([]);
    await bob.setKey(ALICE, 0, key(1));
    const [, after] = await sent(alice, 1);
    expect(await bob.receive("r1", after!, "video")).toHaveLength(1); // only itself
    expect(bob.stats.released).toBe(0);
  });

  it("holds no audio, and releases nothing under a wrong key", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    const opus = { data: Uint8Array.from([0x78, 1, 2, 3, 4, 5, 6, 7]).buffer } as EncodedFrameLike;
    await alice.encrypt(opus, "audio");
    expect(await bob.receive("r1", opus, "audio")).toEqual([]);
    const [k, d1] = await sent(alice, 1);
    expect(await bob.receive("r1", k!, "video")).toEqual([]);
    await bob.setKey(ALICE, 0, key(9)); // not Alice's
    expect(await bob.receive("r1", d1!, "video")).toEqual([]);
    expect(bob.stats.released).toBe(0);
  });

  it("a receiver moved to another participant, or a participant forgotten, drops what it held", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(0, key(1), true);
    const [k, d1] = await sent(alice, 1);
    await bob.receive("r1", k!, "video");
    bob.bindReceiver("r1", BOB);
    bob.bindReceiver("r1", ALICE);
    await bob.setKey(ALICE, 0, key(1));
    expect(await bob.receive("r1", d1!, "video")).toHaveLength(1);
    expect(bob.stats.released).toBe(0);
  });
});

describe("FrameCipher: the sender's ratchet (a join into an older key)", () => {
  /** Alice ratchets `steps` times from `raw` at `from` and sends with the result; returns it. */
  async function ratchetedSender(alice: FrameCipher, raw: Uint8Array, from: number, steps: number) {
    let k = raw;
    for (let i = 0; i < steps; i++) k = await ratchetMediaKey(k);
    const index = (from + steps) % 256;
    await alice.setOwnKey(index, k, true);
    return { index, key: k };
  }

  async function encrypted(alice: FrameCipher, keyFrame = false) {
    const f = vp8Frame(keyFrame);
    expect(await alice.encrypt(f, "video")).toBe(true);
    return f;
  }

  it("a member who holds the key before derives the next ones (two joins in a row, and across index 255)", async () => {
    const { alice, bob, statuses } = pair();
    await alice.setOwnKey(254, key(1), true);
    await bob.setKey(ALICE, 254, key(1));
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(true);
    await ratchetedSender(alice, key(1), 254, 1);
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(true);
    await ratchetedSender(alice, key(1), 254, 3); // index 1, after 255 and 0
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(true);
    expect(statuses.map((s) => s.state)).toEqual(["ok"]);
    expect(bob.stats.failed["bad-tag"]).toBe(0);
  });

  it("a joiner given the ratcheted key cannot read frames under the key before it", async () => {
    const { alice, bob } = pair();
    await alice.setOwnKey(3, key(1), true);
    const before = await encrypted(alice);
    const next = await ratchetedSender(alice, key(1), 3, 1);
    await bob.setKey(ALICE, next.index, next.key);
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(true);
    expect(await bob.decrypt("r1", before, "video")).toBe(false);
    expect(bob.stats.failed["no-key"]).toBe(1);
  });

  it("no further than RATCHET_WINDOW steps", async () => {
    const { alice, bob } = pair();
    await bob.setKey(ALICE, 0, key(1));
    await ratchetedSender(alice, key(1), 0, RATCHET_WINDOW + 1);
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(false);
    expect(bob.stats.failed["no-key"]).toBe(1);
  });

  it("a fresh key (a leave) is not guessed: its frames wait as having no key, held video decrypts once it comes", async () => {
    const { alice, bob, statuses, advance } = pair();
    await alice.setOwnKey(0, key(1), true);
    await bob.setKey(ALICE, 0, key(1));
    await alice.setOwnKey(1, key(9), true); // fresh, not the ratchet of key(1)
    const k = await encrypted(alice, true);
    const d = await encrypted(alice);
    advance(2000);
    expect(await bob.receive("r1", k, "video")).toEqual([]);
    expect(await bob.receive("r1", d, "video")).toEqual([]);
    expect(bob.stats.failed).toMatchObject({ "no-key": 2, "bad-tag": 0 });
    await bob.setKey(ALICE, 1, key(9));
    expect(await bob.receive("r1", await encrypted(alice), "video")).toHaveLength(3);
    expect(statuses.every((s) => s.state !== "bad-tag")).toBe(true);
  });

  it("a member that missed a fresh key ratchets from it once it comes", async () => {
    const { alice, bob } = pair();
    await bob.setKey(ALICE, 0, key(1));
    // Alice: a fresh key at 1 (Bob's copy is late), then a join ratchets it to 2.
    const two = await ratchetedSender(alice, key(9), 1, 1);
    expect(two.index).toBe(2);
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(false); // guessed from key 0: wrong
    await bob.setKey(ALICE, 1, key(9));
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(true);
  });

  it("provisioned mode does not ratchet (the call key comes from the bot)", async () => {
    const { alice, bob } = pair("provisioned");
    await alice.setCallKey(0, key(1), true);
    await bob.setCallKey(0, key(1), true);
    const next = await ratchetMediaKey(key(1));
    await alice.setCallKey(1, next, true);
    expect(await bob.decrypt("r1", await encrypted(alice), "video")).toBe(false);
  });
});
