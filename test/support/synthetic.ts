// Synthetic call participants for the real stack's tests (werift peer connections, no browser):
// a publisher sending Opus with the audio-level extension and VP8 key frames from timers, and a
// viewer that subscribes (or answers an offer it was given) and counts each m-line's packets.
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RTCRtpHeaderExtensionParameters,
  RtpHeader,
  RtpPacket,
} from "werift";
import { waitFor } from "./matrix.ts";
import type { SignallingClient } from "./signalling.ts";

const AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
const peerConfig = () => ({
  codecs: {
    audio: [new RTCRtpCodecParameters({ mimeType: "audio/opus", clockRate: 48000, channels: 2, payloadType: 111 })],
    video: [new RTCRtpCodecParameters({ mimeType: "video/VP8", clockRate: 90000, payloadType: 96 })],
  },
  headerExtensions: { audio: [new RTCRtpHeaderExtensionParameters({ id: 1, uri: AUDIO_LEVEL })] },
});

/** A VP8 key frame's first packet: payload descriptor (S=1) and a key frame header (RFC 6386 9.1). */
const VP8_KEYFRAME = Buffer.from([0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, ...Array(40).fill(0)]);
const OPUS_FRAME = Buffer.from([0xfc, ...Array(60).fill(0x11)]);

/** A participant that publishes audio (with its level) and video from a timer, as a browser would. */
export class SyntheticPublisher {
  readonly pc = new RTCPeerConnection(peerConfig());
  private readonly audio = new MediaStreamTrack({ kind: "audio" });
  private readonly video = new MediaStreamTrack({ kind: "video" });
  /** When the video sender received a PLI (Janus asking for a keyframe). */
  readonly plis: number[] = [];
  /** dBov magnitude in the audio-level extension: 127 silence, 10 loud speech. */
  level = 127;
  private timers: NodeJS.Timeout[] = [];
  private seq = { audio: 1, video: 1 };
  feed = "";
  answerSdp = "";

  async publish(ws: SignallingClient): Promise<void> {
    this.pc.addTransceiver(this.audio, { direction: "sendonly" });
    const video = this.pc.addTransceiver(this.video, { direction: "sendonly" });
    video.sender.onPictureLossIndication.subscribe(() => void this.plis.push(Date.now()));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await waitFor("ICE gathering", async () => this.pc.iceGatheringState === "complete" || undefined);
    const answer = await ws.request({ type: "publish", jsep: { type: "offer", sdp: this.pc.localDescription!.sdp }, e2ee: true });
    if (answer.type !== "result") throw new Error(`publish refused: ${JSON.stringify(answer)}`);
    this.feed = String(answer.feed_id);
    this.answerSdp = (answer.jsep as { sdp: string }).sdp;
    await this.pc.setRemoteDescription((answer.jsep as { type: "answer"; sdp: string }));
    const t0 = Date.now();
    this.timers.push(setInterval(() => {
      const header = new RtpHeader({
        sequenceNumber: this.seq.audio++ & 0xffff, timestamp: ((Date.now() - t0) * 48) >>> 0, marker: false,
        extensions: [{ id: 1, payload: Buffer.from([0x80 | this.level]) }],
      });
      this.audio.writeRtp(new RtpPacket(header, OPUS_FRAME));
    }, 20));
    this.timers.push(setInterval(() => {
      const header = new RtpHeader({ sequenceNumber: this.seq.video++ & 0xffff, timestamp: ((Date.now() - t0) * 90) >>> 0, marker: true });
      this.video.writeRtp(new RtpPacket(header, VP8_KEYFRAME));
    }, 50));
  }

  async close(): Promise<void> {
    this.timers.forEach(clearInterval);
    await this.pc.close();
  }
}

/** A participant that subscribes to feeds and counts the RTP packets each m-line receives. */
export class SyntheticViewer {
  readonly pc = new RTCPeerConnection(peerConfig());
  /** Subscriber mid -> packets received. */
  readonly packets = new Map<string, number>();
  /** Subscriber mid -> feed and kind (from the subscribe result). */
  readonly streams = new Map<string, { feed: string; kind: string }>();

  async subscribe(ws: SignallingClient, feeds: string[]): Promise<void> {
    const res = await ws.request({ type: "subscribe", e2ee: true, feeds: feeds.map((feed) => ({ feed })) });
    if (res.type !== "result") throw new Error(`subscribe refused: ${JSON.stringify(res)}`);
    await this.answer(ws, res);
  }

  /** Answers an offer of the server's (a subscribe's result, or a standby's `prepared` push) on `ws`. */
  async answer(ws: SignallingClient, offered: Record<string, unknown>): Promise<void> {
    this.pc.ontrack = ({ track, transceiver }) => {
      track.onReceiveRtp.subscribe(() => {
        const mid = transceiver.mid ?? "?";
        this.packets.set(mid, (this.packets.get(mid) ?? 0) + 1);
      });
    };
    for (const s of offered.streams as { mid: string; feed: string; kind: string }[]) this.streams.set(s.mid, { feed: String(s.feed), kind: s.kind });
    await this.pc.setRemoteDescription(offered.jsep as { type: "offer"; sdp: string });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await waitFor("ICE gathering", async () => this.pc.iceGatheringState === "complete" || undefined);
    const ok = await ws.request({ type: "answer", jsep: { type: "answer", sdp: this.pc.localDescription!.sdp }, e2ee: true });
    if (ok.type !== "result") throw new Error(`answer refused: ${JSON.stringify(ok)}`);
  }

  mid(feed: string, kind: "audio" | "video"): string {
    for (const [mid, s] of this.streams) if (s.feed === feed && s.kind === kind) return mid;
    throw new Error(`no ${kind} of ${feed} subscribed`);
  }

  /** Packets per m-line over `ms` (after the counts were taken). */
  async flow(ms: number): Promise<Map<string, number>> {
    const before = new Map(this.packets);
    await new Promise((r) => setTimeout(r, ms));
    return new Map([...this.streams.keys()].map((mid) => [mid, (this.packets.get(mid) ?? 0) - (before.get(mid) ?? 0)]));
  }
}
