// Whether the others' media is arriving, judged from the subscriber's receive stats rather than
// from the signalling state: a dead SFU leaves the socket to Parley open and the peer connections
// "connected" for seconds, while nothing arrives. A remote feed's audio or video moves while its
// inbound-rtp packets, bytes or decoded frames grow. A feed is stale when nothing of it moves for
// `staleMs` though something should (audio unmuted; video unmuted and forwarded to this viewer):
// Opus DTX still sends a packet every 400 ms in silence, so a quiet speaker keeps moving; a muted
// one may send nothing and is not expected to; audio that goes on under a frozen picture still
// says the person is there (and a still screen share sends frames only when the picture changes).
// The call as a whole is "stalled" when nothing from anyone moves while something should (after
// media flowed once in this call, or once every expected feed has had `connectMs` to start), or
// when a media peer connection says its ICE/DTLS is down. Pure: the caller brings the clock.

/** One inbound RTP stream's progress counter (packets + bytes + frames decoded) by track. */
export interface InboundSample {
  track: string;
  kind: "audio" | "video";
  count: number;
}

export interface MediaSample {
  inbound: InboundSample[];
  /** The media peer connections' states (publisher and subscriber; either may be absent). */
  peers: RTCPeerConnectionState[];
}

/** What a remote feed should be sending this viewer now, and the tracks it arrives on. */
export interface ExpectedFeed {
  key: string;
  audio: { track: string | null; expected: boolean };
  video: { track: string | null; expected: boolean };
}

/**
 * alone: nobody else publishes; connecting: media not flowing yet since the call started;
 * flowing: something arrives; quiet: nothing arrives and nothing should (all muted);
 * stalled: nothing arrives that should, or the media connections are down.
 */
export type CallMedia = "alone" | "connecting" | "flowing" | "quiet" | "stalled";

export interface MediaVerdict {
  call: CallMedia;
  /** Feeds (keys) that should be sending and whose media stopped (or never started). */
  stale: ReadonlySet<string>;
  /** Feeds whose media arrived within `staleMs`. */
  flowing: ReadonlySet<string>;
}

/** Without progress for this long, media that should arrive counts as stopped. */
export const STALE_MS = 1250;
/** A feed that never sent anything gets this long (subscribe, ICE, DTLS) before it counts as stale. */
export const CONNECT_MS = 5000;

interface KindState {
  track: string | null;
  count: number;
  lastProgress: number | null;
  /** When this track started or became expected: stale counts from here at the earliest. */
  since: number;
  expected: boolean;
}

export class MediaHealth {
  private readonly staleMs: number;
  private readonly connectMs: number;
  private readonly kinds = new Map<string, KindState>();
  private hadMedia = false;

  constructor(opts: { staleMs?: number; connectMs?: number } = {}) {
    this.staleMs = opts.staleMs ?? STALE_MS;
    this.connectMs = opts.connectMs ?? CONNECT_MS;
  }

  update(now: number, feeds: ExpectedFeed[], sample: MediaSample): MediaVerdict {
    const counts = new Map<string, number>();
    for (const s of sample.inbound) counts.set(s.track, (counts.get(s.track) ?? 0) + s.count);
    const stale = new Set<string>();
    const flowing = new Set<string>();
    const seen = new Set<string>();
    let anyExpected = false;
    let allExpectedStale = true;
    for (const f of feeds) {
      let moving = false;
      let expectedKinds = 0;
      let quietKinds = 0;
      for (const kind of ["audio", "video"] as const) {
        const id = `${f.key}|${kind}`;
        seen.add(id);
        const { track, expected } = f[kind];
        const k = this.advance(id, track, track === null ? undefined : counts.get(track), expected, now);
        const kindMoving = k.lastProgress !== null && now - k.lastProgress < this.staleMs;
        moving ||= kindMoving;
        if (!expected) continue;
        expectedKinds += 1;
        const quietFor = now - Math.max(k.lastProgress ?? -Infinity, k.since);
        if (!kindMoving && quietFor >= (k.lastProgress === null ? this.connectMs : this.staleMs)) quietKinds += 1;
      }
      if (moving) flowing.add(f.key);
      if (!expectedKinds) continue;
      anyExpected = true;
      // Stale: nothing of it arrives (its audio alone still says the person is there).
      if (!moving && quietKinds === expectedKinds) stale.add(f.key);
      else allExpectedStale = false;
    }
    for (const id of this.kinds.keys()) if (!seen.has(id)) this.kinds.delete(id);
    if (flowing.size) this.hadMedia = true;
    const down = sample.peers.some((p) => p === "failed" || p === "disconnected");
    let call: CallMedia;
    if (!feeds.length) call = down ? "stalled" : "alone";
    else if (down) call = "stalled";
    else if (flowing.size) call = "flowing";
    else if (!anyExpected) call = "quiet";
    else call = this.hadMedia || allExpectedStale ? "stalled" : "connecting";
    return { call, stale, flowing };
  }

  private advance(id: string, track: string | null, count: number | undefined, expected: boolean, now: number): KindState {
    let k = this.kinds.get(id);
    if (!k || k.track !== track) {
      // A new track (a new subscription, or the transceiver now carries another feed): its counter
      // so far says nothing about this feed.
      k = { track, count: count ?? 0, lastProgress: null, since: now, expected };
      this.kinds.set(id, k);
      return k;
    }
    if (count !== undefined) {
      if (count > k.count) k.lastProgress = now;
      k.count = count;
    }
    if (expected && !k.expected) k.since = now;
    k.expected = expected;
    return k;
  }
}

/** Each inbound-rtp stream's progress counter, by the id of the track it plays on. */
export function inboundSamples(report: RTCStatsReport | null | undefined): InboundSample[] {
  const out: InboundSample[] = [];
  report?.forEach((s: Record<string, unknown>) => {
    if (s.type !== "inbound-rtp" || typeof s.trackIdentifier !== "string") return;
    if (s.kind !== "audio" && s.kind !== "video") return;
    const count = Number(s.packetsReceived ?? 0) + Number(s.bytesReceived ?? 0) + Number(s.framesDecoded ?? 0);
    out.push({ track: s.trackIdentifier, kind: s.kind, count });
  });
  return out;
}

/** The receive stats of the subscriber and the states of both media peer connections. */
export async function sampleMedia(subscriber: RTCPeerConnection | null, publisher: RTCPeerConnection | null): Promise<MediaSample> {
  const report = await subscriber?.getStats().catch(() => null);
  const peers = [subscriber, publisher].filter((pc): pc is RTCPeerConnection => !!pc).map((pc) => pc.connectionState);
  return { inbound: inboundSamples(report), peers };
}
