import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { clearBytesForCodec, decryptFrame, deriveFrameKey } from "../../../client/src/rtc/e2ee/frameCrypto.ts";
import { FrameSealer } from "../../load/frameSeal.ts";
import {
  activeLayers,
  audioLevelByte,
  DEFAULT_LAYERS,
  frameBytes,
  layerOfWidth,
  MAX_RTP_PAYLOAD,
  opusFrame,
  packetizeVp8,
  parseAudioLevelByte,
  readVp8Start,
  vp8Frame,
} from "../../load/media.ts";

describe("synthetic VP8", () => {
  it("key frames carry the start code and the layer's dimensions, read back from the first packet", () => {
    const frame = vp8Frame({ key: true, width: 640, height: 360, bytes: 5000, fill: 7 });
    expect(frame[0]! & 1).toBe(0);
    expect([...frame.subarray(3, 6)]).toEqual([0x9d, 0x01, 0x2a]);
    const packets = packetizeVp8(frame, 0x1234);
    expect(packets.length).toBe(Math.ceil(5000 / (MAX_RTP_PAYLOAD - 4)));
    expect(packets.every((p) => p.length <= MAX_RTP_PAYLOAD)).toBe(true);
    expect(readVp8Start(packets[0]!)).toEqual({ key: true, width: 640, height: 360 });
    expect(readVp8Start(packets[1]!)).toBeNull(); // not a frame start
    expect(layerOfWidth(640)).toBe(1);
    expect(layerOfWidth(123)).toBe(-1);
  });

  it("delta frames have the key bit set and a 15-bit picture id in the descriptor", () => {
    const [p] = packetizeVp8(vp8Frame({ key: false, width: 0, height: 0, bytes: 300, fill: 1 }), 0x7abc);
    expect(readVp8Start(p!)).toEqual({ key: false, width: 0, height: 0 });
    expect(p![0]).toBe(0x90);
    expect(((p![2]! & 0x7f) << 8) | p![3]!).toBe(0x7abc);
  });

  it("frame sizes follow the layer's bitrate; key frames are larger", () => {
    expect(frameBytes(DEFAULT_LAYERS[0]!, 30, false)).toBe(625);
    expect(frameBytes(DEFAULT_LAYERS[2]!, 30, true)).toBe(3 * 6250);
  });
});

describe("layers under a bitrate estimate (REMB), as libwebrtc's encoder keeps them", () => {
  it("a large call's 700 kbit/s cap keeps the low and medium layers; the lifted 2.5 Mbit/s all three; the lowest always", () => {
    expect(activeLayers(DEFAULT_LAYERS, 700_000)).toBe(2); // 150 + 500, and 650 + 0.4 x 1500 > 700
    expect(activeLayers(DEFAULT_LAYERS, 1_250_000)).toBe(3);
    expect(activeLayers(DEFAULT_LAYERS, 1_249_000)).toBe(2);
    expect(activeLayers(DEFAULT_LAYERS, 2_500_000)).toBe(3);
    expect(activeLayers(DEFAULT_LAYERS, 300_000)).toBe(1);
    expect(activeLayers(DEFAULT_LAYERS, 10_000)).toBe(1);
    // The tests' light layers (60/150/400) fit under the cap whole.
    const light = [{ width: 320, height: 180, kbps: 60 }, { width: 640, height: 360, kbps: 150 }, { width: 1280, height: 720, kbps: 400 }];
    expect(activeLayers(light, 700_000)).toBe(3);
  });
});

describe("audio level (RFC 6464)", () => {
  it("marks voice and level", () => {
    expect(parseAudioLevelByte(audioLevelByte(true)[0]!)).toEqual({ voice: true, level: 20 });
    expect(parseAudioLevelByte(audioLevelByte(false)[0]!)).toEqual({ voice: false, level: 127 });
  });
});

describe("FrameSealer", () => {
  it("makes frames the client's frameCrypto decrypts, with the codec prefix in the clear", async () => {
    const mediaKey = randomBytes(32);
    const sealer = new FrameSealer(mediaKey, 3);
    const key = await deriveFrameKey(mediaKey);
    const lookup = (i: number) => (i === 3 ? key : undefined);
    const video = vp8Frame({ key: true, width: 320, height: 180, bytes: 900, fill: 9 });
    const sealedVideo = sealer.seal(video, "video", true);
    expect(sealedVideo.subarray(0, 10)).toEqual(video.subarray(0, 10));
    const v = await decryptFrame(sealedVideo, lookup, clearBytesForCodec("video", "vp8"));
    expect(v.ok && Buffer.from(v.data).equals(video)).toBe(true);
    const audio = opusFrame(80, 5);
    const a = await decryptFrame(sealer.seal(audio, "audio"), lookup, clearBytesForCodec("audio", "opus"));
    expect(a.ok && Buffer.from(a.data).equals(audio)).toBe(true);
  });

  it("never repeats an IV and fails under another key", async () => {
    const sealer = new FrameSealer(randomBytes(32));
    const f = opusFrame(10, 1);
    const ivs = new Set([sealer.seal(f, "audio"), sealer.seal(f, "audio")].map((s) => s.subarray(-13, -1).toString("hex")));
    expect(ivs.size).toBe(2);
    const other = await deriveFrameKey(randomBytes(32));
    const r = await decryptFrame(sealer.seal(f, "audio"), () => other, clearBytesForCodec("audio", "opus"));
    expect(r).toMatchObject({ ok: false, reason: "bad-tag" });
  });
});
