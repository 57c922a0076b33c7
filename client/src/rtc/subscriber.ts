// The subscriber: ONE receive-only RTCPeerConnection for every remote feed (multistream). Each
// subscribe/unsubscribe is a renegotiation the server starts with an offer; they run one at a
// time. After each, the transceivers are matched to feeds by mid and listeners get the tracks.
import { ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import { markStep } from "../timeline.ts";
import { Emitter } from "../state/store.ts";
import { parseSubscribeResult, type CandidateInit, type FeedId, type HeldStream, type Jsep, type SubscribedStream } from "./protocol.ts";
import type { Requester } from "./publisher.ts";
import { closePeer, noTransforms, type MediaTransformHook, type PeerFactory } from "./transforms.ts";

/** Feeds (or m-lines) one subscribe or unsubscribe may name (the server's limit). */
export const SUBSCRIBE_FEEDS_MAX = 64;

/** `items` in runs of at most `size`, in order. */
export function chunksOf<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

export interface RemoteFeed {
  feed: FeedId;
  userId: string;
  /** One stable stream per feed: tracks come and go inside it, video elements keep it. */
  stream: MediaStream;
  audio: MediaStreamTrack | null;
  video: MediaStreamTrack | null;
}

/** The mid -> stream table after an operation (pure: unit-tested). */
export function applyStreams(
  current: ReadonlyMap<string, SubscribedStream>,
  op: { removed?: FeedId[] },
  streams: SubscribedStream[],
): Map<string, SubscribedStream> {
  const next = new Map(current);
  if (op.removed) {
    const gone = new Set(op.removed.map(String));
    for (const [mid, s] of next) if (gone.has(String(s.feed))) next.delete(mid);
  }
  for (const s of streams) next.set(s.mid, s);
  return next;
}

export interface SubscriberOptions {
  signalling: Requester;
  iceServers: RTCIceServer[];
  /** "relay" when the call API says media must go through its TURN relay. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  peerFactory: PeerFactory;
  transforms?: MediaTransformHook;
}

export class Subscriber {
  readonly events = new Emitter<{ feeds: ReadonlyMap<string, RemoteFeed> }>();
  private o: Required<SubscriberOptions>;
  private readonly log = getLogger("subscriber");
  private pc: RTCPeerConnection | null = null;
  private mids = new Map<string, SubscribedStream>();
  private readonly feeds = new Map<string, RemoteFeed>();
  private readonly receiverOwners = new WeakMap<RTCRtpReceiver, string>();
  private queue: Promise<unknown> = Promise.resolve();
  private localCandidates: CandidateInit[] | null = [];
  private remoteCandidates: CandidateInit[] = [];
  private closed = false;
  /** The video m-lines its prepared offer left out, until the call subscribes to them (`subscribeHeld`). */
  private held: HeldStream[] = [];
  /** The last offer whose answer the server took. */
  private answeredOffer: string | null = null;

  constructor(opts: SubscriberOptions) {
    this.o = { transforms: noTransforms, iceTransportPolicy: "all", ...opts };
  }

  /**
   * The SFU's offer made before anyone asked (the standby's `prepared` push, every m-line paused):
   * answered as a subscribe's, so that ICE and DTLS are up before Join. `held`: the videos it left
   * out, for the call to subscribe to once it has taken this subscriber (`subscribeHeld`).
   */
  prepared(raw: Record<string, unknown>, held: HeldStream[] = []): Promise<void> {
    this.held = held;
    return this.enqueue(() => this.apply(raw, {})).then(() => undefined);
  }

  /**
   * The server's renegotiation of the prepared subscription: the videos it held back, added
   * (paused) once the connection was up, pushed on the standby (or handed over by the hello it
   * crossed). Answered as a subscribe's; the videos are no longer the call's to subscribe to.
   */
  renegotiated(raw: Record<string, unknown>): Promise<void> {
    this.held = [];
    const sdp = (raw.jsep as { sdp?: unknown } | undefined)?.sdp;
    // The same offer twice (pushed, then handed over by the hello): answered once.
    return this.enqueue(() => (sdp !== undefined && sdp === this.answeredOffer ? Promise.resolve() : this.apply(raw, {}))).then(() => undefined);
  }

  /**
   * The call's subscribe to the videos its prepared offer held back (docs/join.md, twenty-sixth
   * pass), each m-line by its publisher's mid, at most SUBSCRIBE_FEEDS_MAX a request; once. The
   * server resumes the ones its viewer chooses when the answer is in. False: none was held.
   */
  subscribeHeld(): Promise<boolean> {
    const held = this.held;
    this.held = [];
    if (held.length === 0) return Promise.resolve(false);
    return Promise.all(chunksOf(held, SUBSCRIBE_FEEDS_MAX).map((chunk) => this.enqueue(() => this.subscribeNow(chunk.map((h) => ({ feed: h.feed, mid: h.mid })))))).then(() => true);
  }

  /**
   * The call takes this (prepared) subscriber: its requests go on the call's signalling from now
   * on. Its receivers went to the transforms at its answer: Chromium runs a receiver's frames
   * through a transform set after its stream was made (here, at negotiation) only from its next
   * stream, so the call's transforms must be the ones it was made with.
   */
  adopt(signalling: Requester): void {
    this.o = { ...this.o, signalling };
    this.syncTracks();
  }

  /**
   * Resolves with the feeds now subscribed: the server leaves out a feed that is gone. At most
   * SUBSCRIBE_FEEDS_MAX feeds: the call sends more in several (CallConnection.subscribeAdded, which
   * keeps those a refused request did not reach apart).
   */
  subscribe(feeds: FeedId[]): Promise<Set<string>> {
    return this.enqueue(async () => {
      await this.subscribeNow(feeds.map((feed) => ({ feed })));
      return new Set([...this.mids.values()].map((s) => String(s.feed)));
    }).then((subscribed) => subscribed ?? new Set<string>());
  }

  /** Unsubscribes, in requests of at most SUBSCRIBE_FEEDS_MAX feeds (the server's limit), in order. */
  unsubscribe(feeds: FeedId[]): Promise<void> {
    return Promise.all(
      chunksOf(feeds, SUBSCRIBE_FEEDS_MAX).map((chunk) =>
        this.enqueue(async () => {
          const raw = await this.o.signalling.request({ type: "unsubscribe", feeds: chunk });
          await this.apply(raw, { removed: chunk });
        }),
      ),
    ).then(() => undefined);
  }

  /** One subscribe request and its renegotiation (in the queue). */
  private async subscribeNow(feeds: { feed: FeedId; mid?: string }[]): Promise<void> {
    const raw = await this.o.signalling.request({ type: "subscribe", feeds, ...(this.o.transforms.e2ee ? { e2ee: true } : {}) });
    await this.apply(raw, {});
  }

  async addRemoteCandidate(candidate: CandidateInit): Promise<void> {
    if (!this.pc?.remoteDescription) {
      this.remoteCandidates.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate ?? undefined).catch((err) => this.log.warn("bad remote candidate", { err: String(err) }));
  }

  current(): ReadonlyMap<string, RemoteFeed> {
    return this.feeds;
  }

  get peer(): RTCPeerConnection | null {
    return this.pc;
  }

  close(): void {
    this.closed = true;
    closePeer(this.pc);
    this.pc = null;
    this.feeds.clear();
    this.mids.clear();
  }

  private enqueue<T>(op: () => Promise<T>): Promise<T | undefined> {
    const run = this.queue.then(() => (this.closed ? undefined : op()));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private ensurePeer(): RTCPeerConnection {
    if (this.pc) return this.pc;
    const pc = this.o.peerFactory({ iceServers: this.o.iceServers, iceTransportPolicy: this.o.iceTransportPolicy, bundlePolicy: "max-bundle", ...this.o.transforms.peerConfig });
    pc.onicecandidate = (ev) => {
      const c: CandidateInit = ev.candidate ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex } : null;
      if (c && !c.candidate) return;
      if (this.localCandidates) this.localCandidates.push(c);
      else this.sendCandidate(c);
    };
    this.pc = pc;
    return pc;
  }

  private async apply(raw: Record<string, unknown>, op: { removed?: FeedId[] }): Promise<void> {
    const errors: string[] = [];
    const result = parseSubscribeResult(raw, errors);
    if (!result) throw new ParleyClientError("BAD_RESPONSE", "signalling", { detail: errors.join("; ") });
    if (this.closed) return;
    this.mids = applyStreams(this.mids, op, result.streams);
    if (result.jsep) await this.answer(result.jsep);
    this.syncTracks();
  }

  private async answer(offer: Jsep<"offer">): Promise<void> {
    markStep("sub-offer");
    const pc = this.ensurePeer();
    await pc.setRemoteDescription(offer);
    // Transforms go on before any frame arrives: Chromium routes a receiver's frames through a
    // transform set later only from its next stream, so its first frames would skip decryption.
    this.bindReceivers();
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    markStep("sub-answer");
    const answered = this.o.signalling.request({
      type: "answer",
      jsep: { type: "answer", sdp: pc.localDescription?.sdp ?? answer.sdp ?? "" },
      ...(this.o.transforms.e2ee ? { e2ee: true } : {}),
    });
    // This device's candidates go right behind the answer, not after Janus's reply to it: the
    // subscription exists on the server, and Janus holds a trickle that comes before the answer
    // it belongs to until that answer is in (its pending trickles), then checks at once.
    const queued = this.localCandidates;
    this.localCandidates = null;
    for (const c of queued ?? []) this.sendCandidate(c);
    // (A standby request the call's socket took over resolves with nothing: not known to be taken.)
    if ((await answered).type === "result") this.answeredOffer = offer.sdp;
    for (const c of this.remoteCandidates.splice(0)) await this.addRemoteCandidate(c);
  }

  /** Hands each receiver to the transforms, once, and again when its mid carries another feed. */
  private bindReceivers(): void {
    for (const t of this.pc?.getTransceivers() ?? []) {
      const s = t.mid !== null ? this.mids.get(t.mid) : undefined;
      if (!s || t.currentDirection === "stopped") continue;
      const key = String(s.feed);
      const info = { kind: s.kind, feed: s.feed, userId: s.user_id, deviceId: s.device_id, mid: s.mid };
      const owner = this.receiverOwners.get(t.receiver);
      if (owner === undefined) this.o.transforms.attachReceiver?.(t.receiver, info);
      else if (owner !== key) this.o.transforms.receiverReassigned?.(t.receiver, info);
      this.receiverOwners.set(t.receiver, key);
    }
  }

  /** Matches receivers to feeds by mid and updates each feed's stream in place. */
  private syncTracks(): void {
    const pc = this.pc;
    this.bindReceivers();
    const want = new Map<string, { userId: string; audio: MediaStreamTrack | null; video: MediaStreamTrack | null }>();
    for (const t of pc?.getTransceivers() ?? []) {
      const s = t.mid !== null ? this.mids.get(t.mid) : undefined;
      if (!s || t.currentDirection === "inactive" || t.currentDirection === "stopped") continue;
      const key = String(s.feed);
      const entry = want.get(key) ?? { userId: s.user_id, audio: null, video: null };
      entry[s.kind] = t.receiver.track;
      want.set(key, entry);
    }
    for (const [key, feed] of this.feeds) {
      if (!want.has(key)) {
        for (const tr of feed.stream.getTracks()) feed.stream.removeTrack(tr);
        this.feeds.delete(key);
      }
    }
    for (const [key, w] of want) {
      let feed = this.feeds.get(key);
      if (!feed) {
        const s = [...this.mids.values()].find((m) => String(m.feed) === key)!;
        feed = { feed: s.feed, userId: w.userId, stream: new MediaStream(), audio: null, video: null };
        this.feeds.set(key, feed);
      }
      for (const kind of ["audio", "video"] as const) {
        const track = w[kind];
        const old = feed[kind];
        if (old === track) continue;
        if (old) feed.stream.removeTrack(old);
        if (track) feed.stream.addTrack(track);
        feed[kind] = track;
      }
    }
    this.events.emit("feeds", this.feeds);
  }

  private sendCandidate(candidate: CandidateInit): void {
    if (this.closed) return;
    this.o.signalling
      .request({ type: "trickle", target: "subscriber", candidate })
      .catch((err) => this.log.debug("trickle not delivered", { err: String(err) }));
  }
}
