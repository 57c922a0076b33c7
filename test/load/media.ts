// Synthetic media that looks right to Janus without being decodable: VP8 frames with a real frame
// tag and key frame header (RFC 6386 §9.1, what Janus's keyframe detection reads), packetized with
// a VP8 payload descriptor carrying a 15-bit picture id (RFC 7741 §4.2, what Janus's simulcast
// rewriting updates); Opus frames of 20 ms with a TOC byte (RFC 6716 §3.1) and the RFC 6464
// audio-level header extension (voice activity + level, what Janus's talking events average).
// The receiving side reads the same headers back: key frames and their width give the layer.

/** Simulcast layers as the web client sends them: 0 low (1/4 size), 1 medium (1/2), 2 high. */
export interface LayerSpec {
  width: number;
  height: number;
  kbps: number;
}

export const DEFAULT_LAYERS: readonly LayerSpec[] = [
  { width: 320, height: 180, kbps: 150 },
  { width: 640, height: 360, kbps: 500 },
  { width: 1280, height: 720, kbps: 1500 },
];

/**
 * A layer starts only if the bitrate left after the layers below it covers this share of its own
 * (libwebrtc's simulcast allocator enables a layer from its minimum bitrate; its defaults for VP8
 * put that near 0.3-0.4 of the layer's target: 150 of 500 kbit/s at 360p, 600 of 1500 at 720p).
 */
export const LAYER_MIN_SHARE = 0.4;

/**
 * How many layers, from the lowest, a sender keeps on under a receiver's bitrate estimate (REMB, in
 * bit/s), as libwebrtc's encoder does: always the lowest; each next one while the bitrate covers
 * the layers below at their rate plus LAYER_MIN_SHARE of its own.
 */
export function activeLayers(layers: readonly LayerSpec[], bitsPerSecond: number): number {
  const kbps = bitsPerSecond / 1000;
  let below = 0;
  let active = 0;
  for (const layer of layers) {
    if (active > 0 && below + layer.kbps * LAYER_MIN_SHARE > kbps) break;
    below += layer.kbps;
    active++;
  }
  return Math.max(1, active);
}

/** The largest RTP payload we make (Chrome's VP8 packetizer stays near 1200 with SRTP overhead). */
export const MAX_RTP_PAYLOAD = 1100;
const VP8_DESCRIPTOR_LENGTH = 4;

/** Bytes of one frame of a layer at `fps` (a key frame is 3 times larger, as encoders make them). */
export function frameBytes(layer: LayerSpec, fps: number, key: boolean): number {
  const bytes = Math.max(16, Math.round((layer.kbps * 1000) / 8 / fps));
  return key ? bytes * 3 : bytes;
}

/**
 * One synthetic VP8 frame: a valid frame tag (key bit, version 0, shown, first partition size) and,
 * on key frames, the start code and the dimensions; the rest filler. The first partition size is
 * kept inside the frame.
 */
export function vp8Frame(opts: { key: boolean; width: number; height: number; bytes: number; fill: number }): Buffer {
  const bytes = Math.max(opts.key ? 10 : 3, opts.bytes);
  const frame = Buffer.alloc(bytes, opts.fill & 0xff);
  const header = opts.key ? 10 : 3;
  const firstPartition = Math.min(bytes - header, 0x7ffff);
  const tag = (opts.key ? 0 : 1) | (1 << 4) | (firstPartition << 5);
  frame[0] = tag & 0xff;
  frame[1] = (tag >> 8) & 0xff;
  frame[2] = (tag >> 16) & 0xff;
  if (opts.key) {
    frame[3] = 0x9d;
    frame[4] = 0x01;
    frame[5] = 0x2a;
    frame.writeUInt16LE(opts.width & 0x3fff, 6);
    frame.writeUInt16LE(opts.height & 0x3fff, 8);
  }
  return frame;
}

/** Splits a (possibly encrypted) VP8 frame into RTP payloads, each with a 4-byte descriptor. */
export function packetizeVp8(frame: Uint8Array, pictureId: number): Buffer[] {
  const room = MAX_RTP_PAYLOAD - VP8_DESCRIPTOR_LENGTH;
  const count = Math.max(1, Math.ceil(frame.length / room));
  const size = Math.ceil(frame.length / count); // equal parts, as libwebrtc does
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const part = frame.subarray(i * size, Math.min(frame.length, (i + 1) * size));
    const p = Buffer.allocUnsafe(VP8_DESCRIPTOR_LENGTH + part.length);
    p[0] = 0x80 | (i === 0 ? 0x10 : 0); // X, S on the first packet, partition 0
    p[1] = 0x80; // I: picture id present
    p[2] = 0x80 | ((pictureId >> 8) & 0x7f); // M: 15-bit picture id
    p[3] = pictureId & 0xff;
    p.set(part, VP8_DESCRIPTOR_LENGTH);
    out.push(p);
  }
  return out;
}

/** What a received VP8 RTP payload starts: a key frame of `width` x `height`, or nothing new. */
export function readVp8Start(payload: Uint8Array): { key: boolean; width: number; height: number } | null {
  if (payload.length < 1) return null;
  let i = 1;
  const b0 = payload[0]!;
  if (!(b0 & 0x10) || (b0 & 0x07) !== 0) return null; // not the start of partition 0
  if (b0 & 0x80) {
    const ext = payload[i++] ?? 0;
    if (ext & 0x80) i += (payload[i] ?? 0) & 0x80 ? 2 : 1;
    if (ext & 0x40) i += 1;
    if (ext & 0x30) i += 1;
  }
  const tag = payload[i];
  if (tag === undefined) return null;
  if (tag & 0x01) return { key: false, width: 0, height: 0 };
  if (payload.length < i + 10 || payload[i + 3] !== 0x9d || payload[i + 4] !== 0x01 || payload[i + 5] !== 0x2a) return null;
  const width = (payload[i + 6]! | (payload[i + 7]! << 8)) & 0x3fff;
  const height = (payload[i + 8]! | (payload[i + 9]! << 8)) & 0x3fff;
  return { key: true, width, height };
}

/** The layer whose width a key frame has (-1: none of them). */
export function layerOfWidth(width: number, layers: readonly LayerSpec[] = DEFAULT_LAYERS): number {
  return layers.findIndex((l) => l.width === width);
}

/** Opus TOC byte for 20 ms frames (config 15: hybrid fullband 20 ms, mono, one frame). */
export const OPUS_TOC = 15 << 3;
/** Bytes of a talking Opus frame (about 32 kbit/s) and of a DTX comfort-noise frame. */
export const OPUS_TALK_BYTES = 80;
export const OPUS_DTX_BYTES = 3;
/** With DTX, Opus sends one frame every 400 ms during silence (20 frames of 20 ms). */
export const OPUS_DTX_EVERY = 20;

export function opusFrame(bytes: number, fill: number): Buffer {
  const frame = Buffer.alloc(Math.max(1, bytes), fill & 0xff);
  frame[0] = OPUS_TOC;
  return frame;
}

/**
 * RFC 6464 one-byte payload: V (voice activity) in the top bit, the level in -dBov (0 loudest,
 * 127 silence) below. Janus averages the level over `audio_active_packets` packets and calls a
 * participant talking when the average is below `audio_level_average`.
 */
export function audioLevelByte(talking: boolean, level = talking ? 20 : 127): Buffer {
  return Buffer.from([(talking ? 0x80 : 0) | Math.max(0, Math.min(127, Math.round(level)))]);
}

export function parseAudioLevelByte(b: number): { voice: boolean; level: number } {
  return { voice: (b & 0x80) !== 0, level: b & 0x7f };
}
