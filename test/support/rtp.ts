// What the SFU forwards, as frames: a UDP socket on 127.0.0.1 receiving a Janus `rtp_forward`, the
// RTP header stripped (RFC 3550), VP8 payload descriptors stripped and packets reassembled into
// frames (RFC 7741), Opus payloads taken as frames (RFC 7587).
import { createSocket, type Socket } from "node:dgram";

export interface RtpPacket {
  payloadType: number;
  marker: boolean;
  sequence: number;
  timestamp: number;
  payload: Buffer;
}

/** Parses one RTP packet; null for anything else (RTCP, garbage). */
export function parseRtp(b: Buffer): RtpPacket | null {
  if (b.length < 12 || b[0]! >> 6 !== 2) return null;
  const payloadType = b[1]! & 0x7f;
  if (payloadType >= 72 && payloadType <= 79) return null; // RTCP
  const csrc = b[0]! & 0x0f;
  let offset = 12 + 4 * csrc;
  if (b[0]! & 0x10) {
    if (b.length < offset + 4) return null;
    offset += 4 + 4 * b.readUInt16BE(offset + 2);
  }
  let end = b.length;
  if (b[0]! & 0x20) end -= b[b.length - 1]!; // padding
  if (offset > end) return null;
  return { payloadType, marker: (b[1]! & 0x80) !== 0, sequence: b.readUInt16BE(2), timestamp: b.readUInt32BE(4), payload: b.subarray(offset, end) };
}

/** The VP8 payload descriptor's length and its S bit and partition index (RFC 7741 §4.2). */
function vp8Descriptor(p: Buffer): { length: number; start: boolean } | null {
  if (p.length < 1) return null;
  let i = 1;
  const x = (p[0]! & 0x80) !== 0;
  const start = (p[0]! & 0x10) !== 0 && (p[0]! & 0x07) === 0;
  if (x) {
    const ext = p[i++];
    if (ext === undefined) return null;
    if (ext & 0x80) i += p[i]! & 0x80 ? 2 : 1; // I: picture id, 7 or 15 bits
    if (ext & 0x40) i += 1; // L: TL0PICIDX
    if (ext & 0x30) i += 1; // T/K: TID|Y|KEYIDX
  }
  return i <= p.length ? { length: i, start } : null;
}

/** Reassembles VP8 frames from packets in arrival order (a frame with a lost packet is skipped). */
export function vp8Frames(packets: RtpPacket[]): Buffer[] {
  const frames: Buffer[] = [];
  let parts: Buffer[] = [];
  let timestamp: number | undefined;
  let lastSeq: number | undefined;
  for (const pkt of packets) {
    const d = vp8Descriptor(pkt.payload);
    if (!d) continue;
    if (d.start) {
      parts = [];
      timestamp = pkt.timestamp;
    } else if (pkt.timestamp !== timestamp || lastSeq === undefined || ((lastSeq + 1) & 0xffff) !== pkt.sequence) {
      parts = [];
      timestamp = undefined; // lost the start: wait for the next frame
    }
    lastSeq = pkt.sequence;
    if (timestamp === undefined) continue;
    parts.push(pkt.payload.subarray(d.length));
    if (pkt.marker) {
      frames.push(Buffer.concat(parts));
      parts = [];
      timestamp = undefined;
    }
  }
  return frames;
}

/** A UDP socket on 127.0.0.1 collecting RTP packets until stopped. */
export class RtpCapture {
  readonly packets: RtpPacket[] = [];
  readonly port: number;
  private readonly socket: Socket;

  private constructor(socket: Socket, port: number) {
    this.socket = socket;
    this.port = port;
  }

  static async open(): Promise<RtpCapture> {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, "127.0.0.1", () => resolve());
    });
    const capture = new RtpCapture(socket, socket.address().port);
    socket.on("message", (msg) => {
      const p = parseRtp(msg);
      if (p) capture.packets.push(p);
    });
    return capture;
  }

  /** Drops what was captured so far (e.g. before a key rotation). */
  clear(): void {
    this.packets.length = 0;
  }

  close(): void {
    this.socket.close();
  }
}
