// A fake RTCPeerConnection just deep enough for the publisher, subscriber and call: transceivers
// with mids, descriptions, candidates. A subscriber offer's SDP lists its m-lines as
// "a=fake-mid:<mid>:<kind>" so the fake can create receivers for them.
import { FakeTrack } from "./fakes.ts";

export class FakeMediaStream {
  private tracks: FakeTrack[];
  constructor(tracks: FakeTrack[] = []) {
    this.tracks = [...tracks];
  }
  addTrack(t: FakeTrack) {
    if (!this.tracks.includes(t)) this.tracks.push(t);
  }
  removeTrack(t: FakeTrack) {
    this.tracks = this.tracks.filter((x) => x !== t);
  }
  getTracks() {
    return [...this.tracks];
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === "video");
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === "audio");
  }
}

export class FakeTransceiver {
  mid: string | null = null;
  currentDirection: string | null = null;
  readonly sender: { track: FakeTrack | null; replaceTrack(t: FakeTrack | null): Promise<void> };
  readonly receiver: { track: FakeTrack };
  readonly init: { direction?: string; sendEncodings?: unknown[] } | undefined;
  readonly kind: "audio" | "video";
  constructor(kind: "audio" | "video", track: FakeTrack | null, init?: { direction?: string; sendEncodings?: unknown[] }) {
    this.kind = kind;
    this.init = init;
    const sender = {
      track,
      replaceTrack: async (t: FakeTrack | null) => {
        sender.track = t;
      },
    };
    this.sender = sender;
    this.receiver = { track: new FakeTrack(kind) };
  }
}

export class FakePeer extends EventTarget {
  static all: FakePeer[] = [];
  readonly config: RTCConfiguration;
  readonly transceivers: FakeTransceiver[] = [];
  localDescription: { type: string; sdp: string } | null = null;
  remoteDescription: { type: string; sdp: string } | null = null;
  onicecandidate: ((ev: { candidate: unknown }) => void) | null = null;
  connectionState = "new";
  closed = false;
  readonly remoteCandidates: unknown[] = [];

  constructor(config: RTCConfiguration) {
    super();
    this.config = config;
    FakePeer.all.push(this);
  }

  addTransceiver(trackOrKind: FakeTrack | "audio" | "video", init?: { direction?: string; sendEncodings?: unknown[] }) {
    const kind = typeof trackOrKind === "string" ? trackOrKind : trackOrKind.kind;
    const t = new FakeTransceiver(kind, typeof trackOrKind === "string" ? null : trackOrKind, init);
    t.mid = String(this.transceivers.length);
    this.transceivers.push(t);
    return t;
  }
  async createOffer() {
    // Chromium's Opus line as it offers it (the publisher adds DTX).
    const audio = this.transceivers.some((t) => t.kind === "audio") ? "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1" : "";
    return { type: "offer", sdp: `v=0\r\nfake publisher offer ${this.transceivers.length}${audio}` };
  }
  async createAnswer() {
    return { type: "answer", sdp: "v=0\r\nfake answer" };
  }
  async setLocalDescription(d: { type: string; sdp: string }) {
    this.localDescription = d;
    if (d.type === "answer") for (const t of this.transceivers) t.currentDirection = "recvonly";
  }
  async setRemoteDescription(d: { type: string; sdp: string }) {
    this.remoteDescription = d;
    if (d.type !== "offer") return;
    for (const m of d.sdp.matchAll(/a=fake-mid:([^:]+):(audio|video)/g)) {
      if (this.transceivers.some((t) => t.mid === m[1])) continue;
      const t = new FakeTransceiver(m[2] as "audio" | "video", null);
      t.mid = m[1]!;
      this.transceivers.push(t);
    }
  }
  async addIceCandidate(c?: unknown) {
    this.remoteCandidates.push(c ?? null);
  }
  getTransceivers() {
    return this.transceivers;
  }
  async getStats() {
    return new Map<string, unknown>();
  }
  close() {
    this.closed = true;
  }
  /** The browser found a local candidate. */
  candidate(c: string | null) {
    this.onicecandidate?.({ candidate: c === null ? null : { candidate: c, sdpMid: "0", sdpMLineIndex: 0 } });
  }
  setState(s: string) {
    this.connectionState = s;
    this.dispatchEvent(new Event("connectionstatechange"));
  }
}

export function offerFor(streams: { mid: string; kind: string }[]): { type: "offer"; sdp: string } {
  return { type: "offer", sdp: `v=0\r\n${streams.map((s) => `a=fake-mid:${s.mid}:${s.kind}`).join("\r\n")}` };
}

export const peerFactory = (config: RTCConfiguration) => new FakePeer(config) as unknown as RTCPeerConnection;
