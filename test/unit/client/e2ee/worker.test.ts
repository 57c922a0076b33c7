// The E2EE worker's key frame on a key switch (client/src/rtc/e2ee/worker.ts): loaded into this
// test's global scope as a worker would be, driven by its two entry points (rtctransform, message).
import { beforeAll, describe, expect, it, vi } from "vitest";
import { FrameCipher, type CipherStats, type EncodedFrameLike } from "../../../../client/src/rtc/e2ee/cipher.ts";
import type { ToWorker, TransformOptions } from "../../../../client/src/rtc/e2ee/workerProtocol.ts";

interface FakeTransformer {
  readable: ReadableStream;
  writable: WritableStream;
  options: TransformOptions;
  generateKeyFrame?: () => Promise<unknown>;
  sendKeyFrameRequest?: () => Promise<void>;
}
interface Scope {
  postMessage: (m: unknown) => void;
  onmessage: ((ev: { data: ToWorker }) => void) | null;
  onrtctransform: ((ev: { transformer: FakeTransformer }) => void) | null;
}
const scope = globalThis as unknown as Scope;
const SELF = "@a:x|DEV";
const errors: unknown[] = [];
const released: unknown[] = [];

beforeAll(async () => {
  scope.postMessage = (m) => {
    if ((m as { type?: string }).type === "error") errors.push(m);
    if ((m as { type?: string }).type === "released") released.push(m);
  };
  await import("../../../../client/src/rtc/e2ee/worker.ts");
});

/** A transform the browser would hand the worker: frames never come (none are needed here). */
function transformer(options: Omit<TransformOptions, "self" | "mode">): FakeTransformer {
  const t: FakeTransformer = {
    readable: new ReadableStream(),
    writable: new WritableStream(),
    options: { ...options, self: SELF, mode: "participant" },
    generateKeyFrame: vi.fn(async () => 0),
    sendKeyFrameRequest: vi.fn(async () => undefined),
  };
  scope.onrtctransform!({ transformer: t });
  return t;
}

const send = (m: ToWorker) => scope.onmessage!({ data: m });
const key = (n: number) => new Uint8Array(32).fill(n);

describe("the E2EE worker", () => {
  it("makes a key frame on every video sender when this device switches to a new key at once (a ratchet for joiners), not at the first key nor for a key used later", async () => {
    send({ type: "init", self: SELF, mode: "participant" });
    const camera = transformer({ operation: "encrypt", kind: "video" });
    const screen = transformer({ operation: "encrypt", kind: "video" });
    const mic = transformer({ operation: "encrypt", kind: "audio" });
    const remote = transformer({ operation: "decrypt", kind: "video", receiverId: "r1", participant: "@b:x|B" });
    const keyFrames = () => [camera, screen, mic, remote].map((t) => (t.generateKeyFrame as ReturnType<typeof vi.fn>).mock.calls.length);

    // The call's first key (the encoder starts with a key frame anyway), then a fresh key after a
    // leave, used only later (its receivers have it before): no key frame for either.
    send({ type: "setOwnKey", index: 0, key: key(1), use: true });
    send({ type: "setOwnKey", index: 1, key: key(2), use: false });
    // The ratchet for joiners: used at once. The counts are totals, so they also show that the
    // two keys before made none.
    send({ type: "setOwnKey", index: 2, key: key(3), use: true });
    await vi.waitFor(() => expect(keyFrames()).toEqual([1, 1, 0, 0]));
    expect(errors).toEqual([]);
  });

  it("asks a remote sender for a key frame when its key comes and nothing of it was held; passes a held key frame on instead", async () => {
    send({ type: "init", self: SELF, mode: "participant" });
    const requests = (t: FakeTransformer) => (t.sendKeyFrameRequest as ReturnType<typeof vi.fn>).mock.calls.length;
    const idle = transformer({ operation: "decrypt", kind: "video", receiverId: "r2", participant: "@c:x|C" });
    send({ type: "setKey", participant: "@c:x|C", index: 0, key: key(5) });
    await vi.waitFor(() => expect(requests(idle)).toBe(1));
    expect(released).toEqual([]);

    // Dave's key frame arrives before his key: held, then passed on as the key is set.
    const dave = new FrameCipher({ self: "@d:x|D", mode: "participant" });
    await dave.setOwnKey(0, key(6), true);
    const frame: EncodedFrameLike = { data: new Uint8Array(100).fill(0x10).buffer, type: "key" };
    await dave.encrypt(frame, "video");
    const out: EncodedFrameLike[] = [];
    const held: FakeTransformer = {
      readable: new ReadableStream({ start: (c) => c.enqueue(frame) }),
      writable: new WritableStream({ write: (f: EncodedFrameLike) => void out.push(f) }),
      options: { operation: "decrypt", kind: "video", receiverId: "r3", participant: "@d:x|D", self: SELF, mode: "participant" },
      sendKeyFrameRequest: vi.fn(async () => undefined),
    };
    scope.onrtctransform!({ transformer: held });
    const stats = () => (globalThis as unknown as { __parleyE2eeStats: CipherStats }).__parleyE2eeStats;
    await vi.waitFor(() => expect(stats().failed["no-key"]).toBeGreaterThan(0));
    send({ type: "setKey", participant: "@d:x|D", index: 0, key: key(6) });
    await vi.waitFor(() => expect(out).toHaveLength(1));
    expect(new Uint8Array(out[0]!.data)).toEqual(new Uint8Array(100).fill(0x10));
    expect(requests(held)).toBe(0);
    expect(released).toEqual([{ type: "released", frames: 1 }]); // the page marks it (held-released)
    expect(errors).toEqual([]);
  });
});
