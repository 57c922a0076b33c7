// Where a synthetic participant's signalling goes. ParleyPlane: exactly the web client's path
// (client/src/rtc/{callApi,signalling,publisher,subscriber}.ts): an OpenID token from its own
// Synapse user -> POST /_parley/v1/calls/join -> signalling WebSocket, hello with a device id ->
// publish -> subscribe to every other feed from the `participants` pushes -> answer -> trickle,
// and the `view` request of the last-N protocol. JanusPlane: the same media straight on Janus's
// VideoRoom (appservice/src/sfu's Janus client, no Parley process), for the bench's baseline.
import type { RoomRef, Sfu, SfuParticipant, SfuPublisher, SfuSubscriber } from "../../appservice/src/sfu/index.ts";
import { SignalError, SignalSocket, type Message } from "./signal.ts";

export type Target = "publisher" | "subscriber";
export type Candidate = { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null } | null;

export interface SubscribedStream {
  feed: string;
  mid: string;
  kind: "audio" | "video";
}

/** The last-N `view` request (the agreed wire protocol). */
export interface ViewRequest {
  videos: number;
  pinned?: string[];
  tiles?: { feed: string; height: number }[];
  downlink_kbps?: number;
}

export interface MediaPlane {
  publish(offerSdp: string): Promise<{ answerSdp: string; feed: string }>;
  /** Adds feeds to this participant's one subscription; an offer to answer when m-lines changed. */
  subscribe(feeds: string[]): Promise<{ offerSdp?: string; streams: SubscribedStream[] }>;
  /** Drops feeds that left; an offer to answer when m-lines changed. */
  unsubscribe(feeds: string[]): Promise<{ offerSdp?: string }>;
  answer(sdp: string): Promise<void>;
  trickle(target: Target, candidate: Candidate): Promise<void>;
  /** Sends the viewer's layout; resolves false when the other side refused or does not know it. */
  view(v: ViewRequest): Promise<boolean>;
  /** Candidates from the SFU. */
  onCandidate(fn: (target: Target, candidate: Candidate) => void): void;
  /** Every feed publishing in the call (this participant's own included), on each change. */
  onFeeds(fn: (feeds: string[]) => void): void;
  /** Server pushes by type (Parley: "speakers", "videos"; Janus: none). */
  onPush(type: string, fn: (m: Message) => void): void;
  leave(): Promise<void>;
}

const feedKey = (f: unknown) => String(f);

/** The agreed layer rule without hysteresis: no tile 0, below 200 px 0, below 480 px 1, else 2. */
export function layerForHeight(height: number | undefined): 0 | 1 | 2 {
  if (height === undefined || height < 200) return 0;
  return height < 480 ? 1 : 2;
}

export interface ParleyJoin {
  /** Parley's call API base URL. */
  callApi: string;
  /** Room id or alias of the meeting. */
  room: string;
  /** A fresh OpenID token of the participant's Matrix user. */
  openIdToken: () => Promise<unknown>;
  deviceId: string;
}

export class ParleyPlane implements MediaPlane {
  private readonly ws: SignalSocket;
  /** The latest push of each type since hello: the server sends the participant list (and the
   * speakers) as soon as the seat is open, before this participant has published and listens. */
  private readonly latest = new Map<string, Message>();

  private constructor(ws: SignalSocket) {
    this.ws = ws;
    for (const type of ["participants", "speakers", "videos"]) ws.on(type, (m) => this.latest.set(type, m));
  }

  static async connect(j: ParleyJoin): Promise<ParleyPlane> {
    const base = j.callApi.replace(/\/+$/, "");
    const res = await fetch(`${base}/_parley/v1/calls/join`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ openid_token: await j.openIdToken(), room: j.room }),
      signal: AbortSignal.timeout(30_000),
    });
    const grant = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok || typeof grant.session !== "string" || typeof grant.signalling !== "string") {
      throw new Error(`join refused: ${res.status} ${JSON.stringify(grant)}`);
    }
    const url = new URL(grant.signalling, base + "/");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = await SignalSocket.open(url.toString());
    await ws.request({ type: "hello", session: grant.session, device_id: j.deviceId });
    return new ParleyPlane(ws);
  }

  async publish(offerSdp: string): Promise<{ answerSdp: string; feed: string }> {
    const r = await this.ws.request({ type: "publish", jsep: { type: "offer", sdp: offerSdp }, simulcast: true, e2ee: true });
    const jsep = r.jsep as { sdp?: unknown } | undefined;
    if (typeof jsep?.sdp !== "string" || r.feed_id === undefined) throw new Error("publish result without jsep/feed_id");
    return { answerSdp: jsep.sdp, feed: feedKey(r.feed_id) };
  }

  async subscribe(feeds: string[]): Promise<{ offerSdp?: string; streams: SubscribedStream[] }> {
    const r = await this.ws.request({ type: "subscribe", feeds: feeds.map((feed) => ({ feed })), e2ee: true });
    const jsep = r.jsep as { sdp?: unknown } | undefined;
    const streams = ((r.streams as Record<string, unknown>[] | undefined) ?? []).map((s) => ({
      feed: feedKey(s.feed),
      mid: String(s.mid),
      kind: s.kind === "video" ? ("video" as const) : ("audio" as const),
    }));
    return { ...(typeof jsep?.sdp === "string" ? { offerSdp: jsep.sdp } : {}), streams };
  }

  async unsubscribe(feeds: string[]): Promise<{ offerSdp?: string }> {
    const r = await this.ws.request({ type: "unsubscribe", feeds });
    const jsep = r.jsep as { sdp?: unknown } | undefined;
    return typeof jsep?.sdp === "string" ? { offerSdp: jsep.sdp } : {};
  }

  async answer(sdp: string): Promise<void> {
    await this.ws.request({ type: "answer", jsep: { type: "answer", sdp }, e2ee: true });
  }

  async trickle(target: Target, candidate: Candidate): Promise<void> {
    await this.ws.request({ type: "trickle", target, candidate }).catch(() => undefined);
  }

  async view(v: ViewRequest): Promise<boolean> {
    try {
      await this.ws.request({ type: "view", ...v });
      return true;
    } catch (err) {
      if (err instanceof SignalError && err.errcode !== "CLOSED" && err.errcode !== "TIMEOUT") return false;
      throw err;
    }
  }

  onCandidate(fn: (target: Target, candidate: Candidate) => void): void {
    this.ws.on("trickle", (m) => fn(m.target === "subscriber" ? "subscriber" : "publisher", (m.candidate ?? null) as Candidate));
  }

  onFeeds(fn: (feeds: string[]) => void): void {
    this.onPush("participants", (m) => {
      const list = (m.participants as { feed_id?: unknown; streams?: unknown[] }[] | undefined) ?? [];
      fn(list.filter((p) => p.feed_id !== undefined && (p.streams?.length ?? 0) > 0).map((p) => feedKey(p.feed_id)));
    });
  }

  /** Pushes of `type` from now on, starting with the latest one already here. */
  onPush(type: string, fn: (m: Message) => void): void {
    this.ws.on(type, fn);
    const last = this.latest.get(type);
    if (last) fn(last);
  }

  async leave(): Promise<void> {
    if (!this.ws.closed) await this.ws.request({ type: "leave" }, 3000).catch(() => undefined);
    this.ws.close();
  }
}

/** The publishers of one Janus room the baseline's participants share (in one process). */
export class FeedRegistry {
  private readonly feeds: string[] = [];
  private readonly listeners = new Set<(feeds: string[]) => void>();

  add(feed: string): void {
    if (this.feeds.includes(feed)) return;
    this.feeds.push(feed);
    for (const fn of this.listeners) fn([...this.feeds]);
  }

  remove(feed: string): void {
    const i = this.feeds.indexOf(feed);
    if (i >= 0) this.feeds.splice(i, 1);
    for (const fn of this.listeners) fn([...this.feeds]);
  }

  list(): string[] {
    return [...this.feeds];
  }

  on(fn: (feeds: string[]) => void): () => void {
    this.listeners.add(fn);
    if (this.feeds.length) fn([...this.feeds]);
    return () => this.listeners.delete(fn);
  }
}

export class JanusPlane implements MediaPlane {
  private publisher: SfuPublisher | null = null;
  private subscriber: SfuSubscriber | null = null;
  private feed = "";
  private readonly off: (() => void)[] = [];
  private candidateFn: (target: Target, candidate: Candidate) => void = () => undefined;
  /** Subscriber video m-lines: mid -> feed. */
  private readonly videoMids = new Map<string, string>();

  private readonly participant: SfuParticipant;
  /** Who publishes: a registry shared in this thread, or (null) Janus's own publisher events. */
  private readonly registry: FeedRegistry;
  private readonly fromJanus: boolean;
  private readonly id: string;

  private constructor(participant: SfuParticipant, registry: FeedRegistry | null, id: string) {
    this.participant = participant;
    this.registry = registry ?? new FeedRegistry();
    this.fromJanus = registry === null;
    this.id = id;
  }

  /** `registry` null: learn the room's publishers from Janus (participants in other threads). */
  static async connect(sfu: Sfu, room: RoomRef, registry: FeedRegistry | null, id: string): Promise<JanusPlane> {
    return new JanusPlane(await sfu.openParticipant(room, id), registry, id);
  }

  async publish(offerSdp: string): Promise<{ answerSdp: string; feed: string }> {
    const { publisher, joined } = await this.participant.joinAsPublisher(this.id);
    this.publisher = publisher;
    if (this.fromJanus) {
      // Janus names the publishers already up at join, then each new one once its media is up.
      for (const p of joined.publishers) this.registry.add(p.id);
      this.off.push(
        publisher.onNotification((n) => {
          for (const p of n.publishers ?? []) this.registry.add(p.id);
          const gone = n.unpublished ?? n.leaving;
          if (gone && gone !== "ok") this.registry.remove(gone);
        }),
      );
    }
    this.off.push(
      publisher.onPeer((e) => {
        if (e.kind === "trickle") this.candidateFn("publisher", toCandidate(e.candidate));
        // Janus lets subscribers join a feed only once its PeerConnection is up (else 428).
        if (e.kind === "webrtcup" && !this.feed) {
          this.feed = this.id;
          if (!this.fromJanus) this.registry.add(this.id);
        }
      }),
    );
    const { answer } = await publisher.publish({ jsep: { type: "offer", sdp: offerSdp }, e2ee: true, ridOrder: "lmh" });
    return { answerSdp: answer.sdp, feed: this.id };
  }

  async subscribe(feeds: string[]): Promise<{ offerSdp?: string; streams: SubscribedStream[] }> {
    const refs = feeds.map((feed) => ({ feed }));
    let offer: string | undefined;
    let raw: { mid: string; type: string; feed_id?: string | undefined }[];
    if (!this.subscriber) {
      const joined = await this.participant.joinAsSubscriber(refs);
      this.subscriber = joined.subscriber;
      this.off.push(joined.subscriber.onPeer((e) => e.kind === "trickle" && this.candidateFn("subscriber", toCandidate(e.candidate))));
      offer = joined.offer.sdp;
      raw = joined.streams;
    } else {
      const update = await this.subscriber.subscribe(refs);
      offer = update.offer?.sdp;
      raw = update.streams;
    }
    const streams = raw
      .filter((s) => s.feed_id !== undefined && (s.type === "audio" || s.type === "video"))
      .map((s) => ({ feed: String(s.feed_id), mid: s.mid, kind: s.type as "audio" | "video" }));
    for (const s of streams) if (s.kind === "video") this.videoMids.set(s.mid, s.feed);
    return { ...(offer ? { offerSdp: offer } : {}), streams };
  }

  async unsubscribe(feeds: string[]): Promise<{ offerSdp?: string }> {
    if (!this.subscriber) return {};
    const update = await this.subscriber.unsubscribe(feeds.map((feed) => ({ feed })));
    for (const [mid, feed] of this.videoMids) if (feeds.includes(feed)) this.videoMids.delete(mid);
    return update.offer ? { offerSdp: update.offer.sdp } : {};
  }

  async answer(sdp: string): Promise<void> {
    await this.subscriber?.start({ type: "answer", sdp }, true);
  }

  async trickle(target: Target, candidate: Candidate): Promise<void> {
    const h = target === "publisher" ? this.publisher : this.subscriber;
    const c = candidate ? { candidate: candidate.candidate, sdpMid: candidate.sdpMid ?? undefined, sdpMLineIndex: candidate.sdpMLineIndex ?? undefined } : null;
    await h?.trickle(c as never).catch(() => undefined);
  }

  /**
   * Plain Janus has no last-N: the baseline makes Janus forward what Parley did, so both forward
   * the same streams. The first `videos` other feeds in join order get video at the layer of their
   * tile's height, the others' video m-lines are paused (no cap here: the bench chooses `videos`).
   */
  async view(v: ViewRequest): Promise<boolean> {
    if (!this.subscriber) return true;
    const heights = new Map((v.tiles ?? []).map((t) => [t.feed, t.height]));
    const chosen = new Set(this.registry.list().filter((f) => f !== this.id).slice(0, v.videos));
    const layers = [...this.videoMids].map(([mid, feed]) =>
      chosen.has(feed) ? { mid, substream: layerForHeight(heights.get(feed)), send: true } : { mid, send: false },
    );
    if (layers.length) await this.subscriber.configure(layers);
    return true;
  }

  onCandidate(fn: (target: Target, candidate: Candidate) => void): void {
    this.candidateFn = fn;
  }

  onFeeds(fn: (feeds: string[]) => void): void {
    this.off.push(this.registry.on(fn));
  }

  onPush(): void {}

  async leave(): Promise<void> {
    for (const off of this.off.splice(0)) off();
    if (this.feed && !this.fromJanus) this.registry.remove(this.feed);
    await this.participant.close().catch(() => undefined);
  }
}

function toCandidate(c: unknown): Candidate {
  const r = (c ?? {}) as Record<string, unknown>;
  if (r.completed === true || typeof r.candidate !== "string") return null;
  return { candidate: r.candidate, sdpMid: typeof r.sdpMid === "string" ? r.sdpMid : null, sdpMLineIndex: typeof r.sdpMLineIndex === "number" ? r.sdpMLineIndex : null };
}
