// The publisher: one send-only RTCPeerConnection carrying the microphone and the camera (or the
// screen, swapped in with replaceTrack). Both transceivers exist from the start, so muting, turning
// the camera off and sharing the screen never need a renegotiation.
import { ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import { parsePublishResult, type CandidateInit, type ClientRequest, type FeedId } from "./protocol.ts";
import { withOpusDtx } from "./sdp.ts";
import { closePeer, noTransforms, type MediaTransformHook, type PeerFactory } from "./transforms.ts";

export type Requester = { request(message: ClientRequest): Promise<Record<string, unknown>> };

/**
 * Janus's simulcast layout: low (1/4), medium (1/2), high, in that order, as the server declares it
 * to Janus (rid_order "lmh"): Janus's substream 0 is then the low layer, as last-N's layers mean.
 */
export const SIMULCAST_ENCODINGS: RTCRtpEncodingParameters[] = [
  { rid: "l", active: true, maxBitrate: 120_000, scaleResolutionDownBy: 4 },
  { rid: "m", active: true, maxBitrate: 400_000, scaleResolutionDownBy: 2 },
  { rid: "h", active: true, maxBitrate: 1_200_000 },
];

export interface PublisherOptions {
  signalling: Requester;
  iceServers: RTCIceServer[];
  /** "relay" when the call API says media must go through its TURN relay. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  peerFactory: PeerFactory;
  transforms?: MediaTransformHook;
  simulcast?: boolean;
}

export class Publisher {
  private readonly o: Required<PublisherOptions>;
  private readonly log = getLogger("publisher");
  private pc: RTCPeerConnection | null = null;
  private readonly senders: Partial<Record<"audio" | "video", RTCRtpSender>> = {};
  /** Local candidates wait until the server has our offer (it handles messages concurrently). */
  private localCandidates: CandidateInit[] | null = [];
  private remoteCandidates: CandidateInit[] = [];
  private closed = false;
  feedId: FeedId | null = null;

  constructor(opts: PublisherOptions) {
    this.o = { transforms: noTransforms, simulcast: true, iceTransportPolicy: "all", ...opts };
  }

  async publish(tracks: { audio: MediaStreamTrack | null; video: MediaStreamTrack | null }): Promise<FeedId> {
    const pc = this.o.peerFactory({ iceServers: this.o.iceServers, iceTransportPolicy: this.o.iceTransportPolicy, bundlePolicy: "max-bundle", ...this.o.transforms.peerConfig });
    this.pc = pc;
    pc.onicecandidate = (ev) => this.onLocalCandidate(ev.candidate);
    const stream = new MediaStream([tracks.audio, tracks.video].filter((t): t is MediaStreamTrack => !!t));
    const audio = pc.addTransceiver(tracks.audio ?? "audio", { direction: "sendonly", streams: [stream] });
    const video = pc.addTransceiver(tracks.video ?? "video", {
      direction: "sendonly",
      streams: [stream],
      ...(this.o.simulcast ? { sendEncodings: SIMULCAST_ENCODINGS.map((e) => ({ ...e })) } : {}),
    });
    this.senders.audio = audio.sender;
    this.senders.video = video.sender;
    this.o.transforms.attachSender?.(audio.sender, "audio");
    this.o.transforms.attachSender?.(video.sender, "video");

    const offer = await pc.createOffer();
    await pc.setLocalDescription({ type: "offer", sdp: withOpusDtx(offer.sdp ?? "") });
    const raw = await this.o.signalling.request({
      type: "publish",
      jsep: { type: "offer", sdp: pc.localDescription?.sdp ?? offer.sdp ?? "" },
      simulcast: this.o.simulcast,
      ...(this.o.transforms.e2ee ? { e2ee: true } : {}),
    });
    const result = parsePublishResult(raw);
    if (!result) throw new ParleyClientError("BAD_RESPONSE", "signalling", { detail: "publish result without jsep answer/feed_id" });
    if (this.closed) throw new ParleyClientError("CLOSED", "signalling", { detail: "publisher closed while publishing" });
    await pc.setRemoteDescription(result.jsep);
    this.feedId = result.feed_id;
    for (const c of this.remoteCandidates.splice(0)) await this.addRemoteCandidate(c);
    const queued = this.localCandidates ?? [];
    this.localCandidates = null;
    for (const c of queued) this.sendCandidate(c);
    return result.feed_id;
  }

  /** Swaps what a sender carries (null sends nothing): mute, camera off, screen share. */
  async replaceTrack(kind: "audio" | "video", track: MediaStreamTrack | null): Promise<void> {
    const sender = this.senders[kind];
    if (sender && sender.track !== track) await sender.replaceTrack(track);
  }

  async addRemoteCandidate(candidate: CandidateInit): Promise<void> {
    const pc = this.pc;
    if (!pc || !pc.remoteDescription) {
      this.remoteCandidates.push(candidate);
      return;
    }
    await pc.addIceCandidate(candidate ?? undefined).catch((err) => this.log.warn("bad remote candidate", { err: String(err) }));
  }

  /** The microphone's level as the sender sees it (0..1), for the active speaker. */
  async audioLevel(): Promise<number> {
    const sender = this.senders.audio;
    if (!sender?.track || !sender.track.enabled) return 0;
    let level = 0;
    const stats = await this.pc?.getStats(sender.track).catch(() => undefined);
    stats?.forEach((s: { type?: string; kind?: string; audioLevel?: number }) => {
      if (s.type === "media-source" && s.kind === "audio" && typeof s.audioLevel === "number") level = s.audioLevel;
    });
    return level;
  }

  get connectionState(): RTCPeerConnectionState | "new" {
    return this.pc?.connectionState ?? "new";
  }

  get peer(): RTCPeerConnection | null {
    return this.pc;
  }

  close(): void {
    this.closed = true;
    closePeer(this.pc);
    this.pc = null;
  }

  private onLocalCandidate(c: RTCIceCandidate | null): void {
    const init: CandidateInit = c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null;
    if (init && !init.candidate) return; // Chrome's empty end-of-generation marker; null follows
    if (this.localCandidates) this.localCandidates.push(init);
    else this.sendCandidate(init);
  }

  private sendCandidate(candidate: CandidateInit): void {
    if (this.closed) return;
    this.o.signalling
      .request({ type: "trickle", target: "publisher", candidate })
      .catch((err) => this.log.debug("trickle not delivered", { err: String(err) }));
  }
}
