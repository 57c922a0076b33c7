// One synthetic participant: a werift publisher sending VP8 SSRC simulcast (three layers) and
// Opus with DTX and the RFC 6464 audio level, every frame sealed in Parley's E2EE format; and a
// werift multistream subscriber counting packets, bytes, loss and the simulcast layer arriving on
// each inbound stream. RTP is written straight to werift's DTLS transport (werift's RTCRtpSender
// rewrites the SSRC and cannot send simulcast); werift does ICE, DTLS and SRTP.
import { randomBytes, randomInt } from "node:crypto";
import {
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RtpHeader,
  useAudioLevelIndication,
  useSdesMid,
  type RTCDtlsTransport,
  type RtcpPacket,
  type RtpPacket,
} from "werift";

/** werift's parsed packet as the receive path sees it. */
function seen(p: RtpPacket): RtpSeen {
  return { ssrc: p.header.ssrc, sequence: p.header.sequenceNumber, timestamp: p.header.timestamp, size: p.serializeSize, payload: () => p.payload };
}
import { FrameSealer } from "./frameSeal.ts";
import { growReceiveBuffers, leanReceive, type RtpSeen } from "./leanReceive.ts";
import {
  activeLayers,
  audioLevelByte,
  DEFAULT_LAYERS,
  frameBytes,
  layerOfWidth,
  OPUS_DTX_BYTES,
  OPUS_DTX_EVERY,
  OPUS_TALK_BYTES,
  opusFrame,
  packetizeVp8,
  readVp8Start,
  vp8Frame,
  type LayerSpec,
} from "./media.ts";
import type { Candidate, MediaPlane, Target, ViewRequest } from "./planes.ts";
import { EXT, extmapIds, ssrcOf, ssrcsByMid, withSsrcSimulcast } from "./sdp.ts";
import { ticker } from "./ticker.ts";

const OPUS_PT = 111;
const AUDIO_FRAME_MS = 20;
const VP8_PT = 96;
/** RTCP payload-specific feedback FMT of a receiver's bitrate estimate (REMB, draft-alvestrand-rmcat-remb). */
const REMB_FMT = 15;
/**
 * A key frame request within this long of the last one honoured on the same layer is dropped, as
 * libwebrtc's encoder does (EncoderRtcpFeedback, 300 ms): a receiver that never decodes (Chromium
 * without the sender's key) asks again and again, and each honoured request triples a frame.
 */
const MIN_KEYFRAME_REQUEST_MS = 300;

export interface ParticipantOptions {
  plane: MediaPlane;
  /** This sender's 32-byte media key (the test knows it: receivers could decrypt). */
  mediaKey?: Uint8Array;
  /** Video frames per second on every layer (default 30, as a camera). */
  fps?: number;
  layers?: readonly LayerSpec[];
  /** Send video at all (default true). */
  video?: boolean;
  /** A key frame on every layer this often, besides the ones Janus asks for (default 0: only when asked). */
  keyframeEveryMs?: number;
  /** Key frame requests within this long of the last honoured one on a layer are dropped (default 300, libwebrtc's). */
  keyframeRequestWindowMs?: number;
  /** The `view` this viewer sends once subscribed, and again when the roster changes (default none). */
  view?: { videos: number; tileHeight?: number } | undefined;
  /** Only this local address for ICE (default $PARLEY_MEDIA_ADDR inside scripts/isolated.sh). */
  iceAddress?: string | undefined;
  /**
   * Receive through leanReceive.ts (default true): RTP headers read in the clear, only frame
   * starts decrypted. false: werift's whole SRTP/RTP/receiver stack for every packet.
   */
  leanReceive?: boolean;
  /** Keep the last audio payload (one Opus frame, still E2EE-sealed) per feed, for E2EE checks. */
  keepLastAudio?: boolean;
  /**
   * Follow Janus's bitrate estimate (REMB: a room's or a large call's cap) as a browser's encoder
   * does, sending only the layers it covers (`activeLayers`) (default true). false: every layer always.
   */
  followRemb?: boolean;
}

/** What one inbound stream (one subscriber m-line) received. */
export interface InboundStats {
  feed: string;
  mid: string;
  kind: "audio" | "video";
  packets: number;
  bytes: number;
  /** Sequence numbers never seen (before any retransmission). */
  lost: number;
  keyframes: number;
  /** The simulcast layer of the last key frame (from its width), null before one. */
  layer: number | null;
}

export interface ParticipantStats {
  /** `plisDropped`: key frame requests that came within keyframeRequestWindowMs of an honoured one. */
  sent: { packets: number; bytes: number; keyframes: number; plis: number; plisDropped: number; layers: number; remb: number | null };
  inbound: InboundStats[];
  /** Subscriptions (subscribe, answer) that failed, and the last reason. */
  errors: number;
  lastError: string | null;
}

interface Inbound extends InboundStats {
  firstSeq: number;
  highestSeq: number;
  lastTimestamp: number;
}

const peerConfig = (iceAddress: string | undefined) => ({
  bundlePolicy: "max-bundle" as const,
  iceUseIpv6: false,
  ...(iceAddress ? { iceInterfaceAddresses: { udp4: iceAddress } } : {}),
  codecs: {
    audio: [
      new RTCRtpCodecParameters({ mimeType: "audio/opus", clockRate: 48000, channels: 2, payloadType: OPUS_PT, parameters: "minptime=10;useinbandfec=1;usedtx=1" }),
    ],
    video: [
      new RTCRtpCodecParameters({
        mimeType: "video/VP8",
        clockRate: 90000,
        payloadType: VP8_PT,
        rtcpFeedback: [{ type: "nack" }, { type: "nack", parameter: "pli" }, { type: "ccm", parameter: "fir" }],
      }),
    ],
  },
  headerExtensions: { audio: [useSdesMid(), useAudioLevelIndication()], video: [useSdesMid()] },
});

export class SyntheticParticipant {
  feed = "";
  /** The last `speakers` and `videos` pushes from the server (null before one). */
  speakers: { talking: string[]; recent: string[] } | null = null;
  videos: { feed: string; layer: number }[] | null = null;
  /** False once the server refused a `view` (a server without last-N yet). */
  viewAccepted: boolean | null = null;
  /** The last `view` the server accepted (null: none yet). */
  acceptedView: ViewRequest | null = null;
  private readonly o: Required<Omit<ParticipantOptions, "view" | "iceAddress" | "mediaKey">> & Pick<ParticipantOptions, "view" | "iceAddress">;
  private readonly sealer: FrameSealer;
  private readonly pub: RTCPeerConnection;
  private sub: RTCPeerConnection | null = null;
  private pubTransport: RTCDtlsTransport | null = null;
  private readonly videoSsrcs: number[];
  private audioSsrc = 0;
  private readonly seq: number[];
  private readonly audio = { seq: randomInt(0xffff), ts: randomInt(0xffffffff), frame: 0, next: 0 };
  private readonly video = { ts: randomInt(0xffffffff), pictureId: randomInt(0x7fff), next: 0, frames: 0, keyNext: [true, true, true], lastKey: 0, lastRequest: [-Infinity, -Infinity, -Infinity] };
  private ext = { audioMid: 0, audioLevel: 0, videoMid: 0, audioMidValue: Buffer.alloc(0), videoMidValue: Buffer.alloc(0) };
  private talking = false;
  private readonly sent = { packets: 0, bytes: 0, keyframes: 0, plis: 0, plisDropped: 0, layers: 0, remb: null as number | null };
  private errors = 0;
  private lastError: string | null = null;
  private readonly inbound = new Map<number, Inbound>();
  private readonly retired: Inbound[] = [];
  private readonly mids = new Map<string, { feed: string; kind: "audio" | "video" }>();
  private ssrcMap = new Map<number, { mid: string; kind: "audio" | "video" }>();
  private readonly subscribed = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private pendingCandidates: { target: Target; c: Candidate }[] = [];
  private remoteReady = { publisher: false, subscriber: false };
  private untick: (() => void) | null = null;
  private viewTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private knownFeeds: string[] = [];
  /** With keepLastAudio: feed -> the last audio RTP payload received (an encrypted Opus frame). */
  readonly lastAudio = new Map<string, Buffer>();

  constructor(opts: ParticipantOptions) {
    this.o = {
      fps: 30,
      layers: DEFAULT_LAYERS,
      video: true,
      keyframeEveryMs: 0,
      keyframeRequestWindowMs: MIN_KEYFRAME_REQUEST_MS,
      leanReceive: true,
      keepLastAudio: false,
      followRemb: true,
      iceAddress: process.env.PARLEY_MEDIA_ADDR || undefined,
      ...opts,
    };
    this.sealer = new FrameSealer(opts.mediaKey ?? randomBytes(32));
    this.pub = new RTCPeerConnection(peerConfig(this.o.iceAddress));
    this.videoSsrcs = this.o.layers.map(() => randomInt(1, 0xffffffff));
    this.seq = this.o.layers.map(() => randomInt(0xffff));
    this.sent.layers = this.o.layers.length;
  }

  /** Publishes, then follows the roster: subscribes to every other feed as it appears. */
  async join(): Promise<void> {
    const plane = this.o.plane;
    plane.onCandidate((target, c) => void this.remoteCandidate(target, c));
    plane.onPush("speakers", (m) => {
      this.speakers = { talking: (m.talking as unknown[]).map(String), recent: (m.recent as unknown[]).map(String) };
    });
    plane.onPush("videos", (m) => {
      this.videos = (m.videos as { feed: unknown; layer: number }[]).map((v) => ({ feed: String(v.feed), layer: v.layer }));
    });
    this.pub.addTransceiver("audio", { direction: "sendonly" });
    this.pub.addTransceiver("video", { direction: "sendonly" });
    const offer = await this.pub.createOffer();
    await this.pub.setLocalDescription(offer);
    await this.gathered(this.pub);
    const local = this.pub.localDescription!.sdp;
    this.audioSsrc = ssrcOf(local, "audio")!;
    const cname = randomBytes(6).toString("hex");
    const sent = this.o.video ? withSsrcSimulcast(local, this.videoSsrcs, cname) : local;
    const { answerSdp, feed } = await plane.publish(sent);
    this.feed = feed;
    await this.pub.setRemoteDescription({ type: "answer", sdp: answerSdp });
    this.remoteReady.publisher = true;
    await this.flushCandidates();
    // The offer carried every candidate (werift gathers host candidates at once): say so, as the
    // web client's null candidate does.
    void plane.trickle("publisher", null);
    const audioExt = extmapIds(answerSdp, "audio");
    const videoExt = extmapIds(answerSdp, "video");
    const midOf = (kind: "audio" | "video") => this.pub.getTransceivers().find((t) => t.kind === kind)?.mid ?? "";
    this.ext = {
      audioMid: audioExt.get(EXT.mid) ?? 0,
      audioLevel: audioExt.get(EXT.audioLevel) ?? 0,
      videoMid: videoExt.get(EXT.mid) ?? 0,
      audioMidValue: Buffer.from(midOf("audio")),
      videoMidValue: Buffer.from(midOf("video")),
    };
    await this.connected(this.pub);
    this.pubTransport = this.pub.getTransceivers()[0]!.sender.dtlsTransport;
    this.pubTransport.onRtcp.subscribe((p) => this.onPublisherRtcp(p));
    // Each participant on its own phase, as real senders are: no synchronized bursts.
    this.video.next = performance.now() + Math.random() * (1000 / this.o.fps);
    this.audio.next = performance.now() + Math.random() * AUDIO_FRAME_MS;
    this.untick = ticker.add((now) => this.tick(now));
    plane.onFeeds((feeds) => {
      this.knownFeeds = feeds;
      void this.follow(feeds);
    });
  }

  /** Talking: full Opus frames every 20 ms with voice activity; silent: a DTX frame every 400 ms. */
  talk(on: boolean): void {
    this.talking = on;
  }

  /** Sends a `view` now (the roster-driven one follows `opts.view`). */
  async view(v: ViewRequest): Promise<boolean> {
    const ok = await this.o.plane.view(v);
    this.viewAccepted = ok;
    if (ok) this.acceptedView = v;
    return ok;
  }

  /** The feeds this participant subscribes to now. */
  subscriptions(): string[] {
    return [...this.subscribed];
  }

  /** Resolves when every feed in `feeds` is subscribed and its answer sent. */
  async settled(): Promise<void> {
    await this.queue;
  }

  stats(): ParticipantStats {
    const inbound: InboundStats[] = [];
    for (const s of [...this.retired, ...this.inbound.values()]) {
      const expected = s.packets ? ((s.highestSeq - s.firstSeq + 1) | 0) : 0;
      inbound.push({ feed: s.feed, mid: s.mid, kind: s.kind, packets: s.packets, bytes: s.bytes, lost: Math.max(0, expected - s.packets), keyframes: s.keyframes, layer: s.layer });
    }
    return { sent: { ...this.sent }, inbound, errors: this.errors, lastError: this.lastError };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.untick?.();
    clearTimeout(this.viewTimer);
    await this.o.plane.leave().catch(() => undefined);
    await Promise.all([this.pub.close(), this.sub?.close()].map((p) => Promise.resolve(p).catch(() => undefined)));
  }

  // ---- subscribing ----

  private follow(feeds: string[]): void {
    if (!this.feed) return;
    const now = new Set(feeds);
    // Feeds that left are unsubscribed, as the web client's syncFeeds does.
    const gone = [...this.subscribed].filter((f) => !now.has(f));
    if (gone.length) {
      for (const f of gone) this.subscribed.delete(f);
      this.enqueue(async () => {
        const r = await this.o.plane.unsubscribe(gone);
        for (const [mid, s] of this.mids) if (gone.includes(s.feed)) this.mids.delete(mid);
        if (r.offerSdp) await this.answer(r.offerSdp);
      });
    }
    const added = feeds.filter((f) => f !== this.feed && !this.subscribed.has(f));
    if (added.length === 0) return;
    for (const f of added) this.subscribed.add(f);
    this.enqueue(async () => {
      for (let i = 0; i < added.length; i += 64) {
        const r = await this.o.plane.subscribe(added.slice(i, i + 64));
        for (const s of r.streams) this.mids.set(s.mid, { feed: s.feed, kind: s.kind });
        this.retireReused();
        if (r.offerSdp) await this.answer(r.offerSdp);
      }
      this.scheduleView();
    });
  }

  private enqueue(op: () => Promise<void>): void {
    const run = this.queue.then(() => (this.closed ? undefined : op()));
    this.queue = run.catch((err) => {
      if (this.closed) return;
      this.errors++;
      this.lastError = String(err);
    });
  }

  private async answer(offerSdp: string): Promise<void> {
    let pc = this.sub;
    if (!pc) {
      pc = this.sub = new RTCPeerConnection(peerConfig(this.o.iceAddress));
    }
    const first = !this.remoteReady.subscriber;
    this.ssrcMap = ssrcsByMid(offerSdp);
    await pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
    if (first) {
      const dtls = pc.getTransceivers()[0]!.receiver.dtlsTransport;
      if (!(this.o.leanReceive && leanReceive(dtls, (p) => this.onRtp(p)))) {
        dtls.onRtp.subscribe((p) => this.onRtp(seen(p)));
        dtls.onStateChange.subscribe((state) => state === "connected" && growReceiveBuffers(dtls));
      }
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await this.gathered(pc);
    await this.o.plane.answer(pc.localDescription!.sdp);
    if (!this.remoteReady.subscriber) void this.o.plane.trickle("subscriber", null);
    this.remoteReady.subscriber = true;
    await this.flushCandidates();
  }

  /** Janus reuses a freed m-line for a new feed: the old feed's counts stay, under `retired`. */
  private retireReused(): void {
    for (const [ssrc, s] of this.inbound) {
      if (this.mids.get(s.mid)?.feed === s.feed) continue;
      this.retired.push(s);
      this.inbound.delete(ssrc);
    }
  }

  private scheduleView(): void {
    const v = this.o.view;
    if (!v || this.closed) return;
    clearTimeout(this.viewTimer);
    this.viewTimer = setTimeout(() => {
      const others = this.knownFeeds.filter((f) => f !== this.feed).slice(0, 200);
      const tiles = v.tileHeight !== undefined ? others.map((feed) => ({ feed, height: v.tileHeight! })) : undefined;
      void this.view({ videos: v.videos, ...(tiles ? { tiles } : {}) }).catch(() => undefined);
    }, 300);
  }

  private onRtp(p: RtpSeen): void {
    let s = this.inbound.get(p.ssrc);
    if (!s) {
      const where = this.ssrcMap.get(p.ssrc);
      const owner = where ? this.mids.get(where.mid) : undefined;
      if (!where || !owner) return; // RTX or an SSRC of a stream we no longer hold
      s = { feed: owner.feed, mid: where.mid, kind: where.kind, packets: 0, bytes: 0, lost: 0, keyframes: 0, layer: null, firstSeq: p.sequence, highestSeq: p.sequence, lastTimestamp: -1 };
      this.inbound.set(p.ssrc, s);
    }
    s.packets++;
    s.bytes += p.size;
    // Extend the 16-bit sequence number around the highest one seen.
    const delta = ((p.sequence - (s.highestSeq & 0xffff) + 0x8000) & 0xffff) - 0x8000;
    if (delta > 0) s.highestSeq += delta;
    if (s.kind === "audio" && this.o.keepLastAudio) {
      const payload = p.payload();
      if (payload) this.lastAudio.set(s.feed, Buffer.from(payload));
    }
    // Only a frame's first packet can say key frame (and its size): decrypt just those.
    if (s.kind === "video" && p.timestamp !== s.lastTimestamp) {
      s.lastTimestamp = p.timestamp;
      const payload = p.payload();
      const start = payload ? readVp8Start(payload) : null;
      if (start?.key) {
        s.keyframes++;
        const layer = layerOfWidth(start.width, this.o.layers);
        s.layer = layer >= 0 ? layer : null;
      }
    }
  }

  // ---- ICE ----

  private async remoteCandidate(target: Target, c: Candidate): Promise<void> {
    if (!this.remoteReady[target]) return void this.pendingCandidates.push({ target, c });
    const pc = target === "publisher" ? this.pub : this.sub;
    if (c?.candidate) await pc?.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined }).catch(() => undefined);
  }

  private async flushCandidates(): Promise<void> {
    const ready = this.pendingCandidates.filter((p) => this.remoteReady[p.target]);
    this.pendingCandidates = this.pendingCandidates.filter((p) => !this.remoteReady[p.target]);
    for (const p of ready) await this.remoteCandidate(p.target, p.c);
  }

  /** werift gathers host candidates in milliseconds; the offer then carries them all. */
  private gathered(pc: RTCPeerConnection): Promise<void> {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const { unSubscribe } = pc.iceGatheringStateChange.subscribe((s) => {
        if (s === "complete") {
          unSubscribe();
          resolve();
        }
      });
    });
  }

  private connected(pc: RTCPeerConnection, timeoutMs = 20_000): Promise<void> {
    if (pc.connectionState === "connected") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`publisher not connected within ${timeoutMs} ms (${pc.connectionState})`)), timeoutMs);
      const { unSubscribe } = pc.connectionStateChange.subscribe((s) => {
        if (s === "connected") {
          clearTimeout(timer);
          unSubscribe();
          resolve();
        }
      });
    });
  }

  // ---- sending ----

  private onPublisherRtcp(p: RtcpPacket): void {
    if (p.type !== 206) return;
    const fb = (p as { feedback?: { count?: number; mediaSsrc?: number; fir?: { ssrc: number }[]; bitrate?: bigint } }).feedback;
    if (fb?.count === REMB_FMT && fb.bitrate !== undefined) return this.onRemb(Number(fb.bitrate));
    const ssrcs = fb?.count === 4 ? (fb.fir ?? []).map((e) => e.ssrc) : fb?.count === 1 ? [fb.mediaSsrc ?? 0] : [];
    for (const ssrc of ssrcs) {
      const layer = this.videoSsrcs.indexOf(ssrc);
      if (layer >= 0) {
        this.sent.plis++;
        const now = performance.now();
        if (now - this.video.lastRequest[layer]! < this.o.keyframeRequestWindowMs) {
          this.sent.plisDropped++;
          continue;
        }
        this.video.lastRequest[layer] = now;
        this.video.keyNext[layer] = true;
      }
    }
  }

  /** A layer turned on starts with a key frame, as an encoder's does. */
  private onRemb(bitsPerSecond: number): void {
    this.sent.remb = bitsPerSecond;
    if (!this.o.followRemb) return;
    const active = activeLayers(this.o.layers, bitsPerSecond);
    for (let i = this.sent.layers; i < active; i++) this.video.keyNext[i] = true;
    this.sent.layers = active;
  }

  private tick(now: number): void {
    if (this.closed || !this.pubTransport) return;
    for (let n = 0; this.audio.next <= now && n < 3; n++) {
      this.sendAudio();
      this.audio.next += AUDIO_FRAME_MS;
    }
    if (this.audio.next <= now) this.audio.next = now + AUDIO_FRAME_MS;
    const frameMs = 1000 / this.o.fps;
    if (this.o.video) {
      let frames = 0;
      while (this.video.next <= now && frames++ < 3) {
        this.sendVideoFrame(now);
        this.video.next += frameMs;
      }
      if (this.video.next <= now) this.video.next = now + frameMs; // fell behind: skip, as an encoder would
    }
  }

  private sendAudio(): void {
    const a = this.audio;
    a.ts = (a.ts + 960) >>> 0;
    a.frame++;
    if (!this.talking && a.frame % OPUS_DTX_EVERY !== 0) return;
    const frame = this.sealer.seal(opusFrame(this.talking ? OPUS_TALK_BYTES : OPUS_DTX_BYTES, a.frame), "audio");
    const extensions = [];
    if (this.ext.audioMid) extensions.push({ id: this.ext.audioMid, payload: this.ext.audioMidValue });
    if (this.ext.audioLevel) extensions.push({ id: this.ext.audioLevel, payload: audioLevelByte(this.talking) });
    a.seq = (a.seq + 1) & 0xffff;
    this.write(new RtpHeader({ payloadType: OPUS_PT, sequenceNumber: a.seq, timestamp: a.ts, ssrc: this.audioSsrc, marker: false, extensions, extensionProfile: 0xbede }), frame);
  }

  private sendVideoFrame(now: number): void {
    const v = this.video;
    v.frames++;
    v.ts = (v.ts + Math.round(90000 / this.o.fps)) >>> 0;
    v.pictureId = (v.pictureId + 1) & 0x7fff;
    const periodic = this.o.keyframeEveryMs > 0 && now - v.lastKey >= this.o.keyframeEveryMs;
    if (periodic) v.lastKey = now;
    this.o.layers.forEach((layer, i) => {
      if (i >= this.sent.layers) return;
      const key = v.keyNext[i]! || periodic;
      v.keyNext[i] = false;
      if (key) this.sent.keyframes++;
      const raw = vp8Frame({ key, width: layer.width, height: layer.height, bytes: frameBytes(layer, this.o.fps, key), fill: v.frames });
      const packets = packetizeVp8(this.sealer.seal(raw, "video", key), v.pictureId);
      packets.forEach((payload, k) => {
        this.seq[i] = (this.seq[i]! + 1) & 0xffff;
        const extensions = this.ext.videoMid ? [{ id: this.ext.videoMid, payload: this.ext.videoMidValue }] : [];
        const header = new RtpHeader({ payloadType: VP8_PT, sequenceNumber: this.seq[i]!, timestamp: v.ts, ssrc: this.videoSsrcs[i]!, marker: k === packets.length - 1, extensions, extensionProfile: 0xbede });
        this.write(header, payload);
      });
    });
  }

  private write(header: RtpHeader, payload: Buffer): void {
    this.sent.packets++;
    this.sent.bytes += payload.length;
    void this.pubTransport!.sendRtp(payload, header);
  }
}
