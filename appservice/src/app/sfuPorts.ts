// The call layer's SFU ports (calls/ports.ts) over the Janus door (sfu/). Composition only:
// the call layer never sees Janus types, the SFU never sees Matrix ones.
import { randomBytes } from "node:crypto";
import type { IceCandidate, MediaStreamInfo, SfuMedia, SfuMediaSession, SfuMediaSnapshot, SfuRooms, TrickleTarget } from "../calls/ports.ts";
import { ParleyError } from "../errors.ts";
import { JanusClosedError, SfuUnavailableError, VideoRoomError } from "../sfu/errors.ts";
import type { RoomRef, Sfu, SubscriptionStream, TalkDetection, TrickleCandidate } from "../sfu/index.ts";
import type { SfuRoomRecord } from "../store/store.ts";

const toRef = (r: SfuRoomRecord): RoomRef => ({ node: r.node, roomId: r.room, secret: r.secret });
const NO_SUCH_ROOM = 426;

function kindOf(type: string): MediaStreamInfo["kind"] | undefined {
  return type === "audio" || type === "video" ? type : undefined;
}

function subscribed(streams: SubscriptionStream[]): (MediaStreamInfo & { feed: string })[] {
  return streams.flatMap((s) => {
    const kind = kindOf(s.type);
    return kind && s.feed_id ? [{ feed: s.feed_id, mid: s.mid, kind }] : [];
  });
}

/** Turns SFU failures into what a client can act on. */
async function sfuCall<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof SfuUnavailableError || err instanceof JanusClosedError) {
      throw new ParleyError("M_UNAVAILABLE", "the media server is unavailable; retry shortly");
    }
    if (err instanceof VideoRoomError && err.code === NO_SUCH_ROOM) throw new ParleyError("M_NOT_FOUND", "the media room is gone; join again");
    if (err instanceof VideoRoomError && err.kind === "NO_SUCH_FEED") throw new ParleyError("M_NOT_FOUND", `${what}: that feed is no longer published`);
    if (err instanceof VideoRoomError) throw new ParleyError("M_INVALID_PARAM", `${what} refused by the media server: ${err.reason}`);
    throw err;
  }
}

export interface SfuPortOptions {
  /** Janus rooms refuse publishers whose frames are not end-to-end encrypted. */
  requireE2ee: boolean;
  /** ICE candidates held per participant while its publisher/subscriber handle is not made yet. */
  maxEarlyCandidates: number;
  /** Large meetings (docs/large-meetings.md): talk detection and Opus DTX of the rooms made. */
  talking?: TalkDetection | undefined;
  opusDtx?: boolean | undefined;
  /** Janus rooms take at most this many publishers (a call's session limit). */
  publishers?: number | undefined;
}

/** The call layer's SFU ports, and the restart recovery's way to make a lost room again. */
export type SfuPorts = SfuRooms & SfuMedia & { recreateRoom(room: SfuRoomRecord): Promise<SfuRoomRecord> };

export function sfuPorts(sfu: Sfu, opts: SfuPortOptions): SfuPorts {
  const roomOptions = { requireE2ee: opts.requireE2ee, talking: opts.talking, opusDtx: opts.opusDtx, publishers: opts.publishers };
  return {
    async recreateRoom(room) {
      const r = await sfu.recreateRoom(toRef(room), roomOptions);
      return { node: r.node, room: r.roomId, secret: r.secret };
    },
    async createRoom(callId) {
      const r = await sfuCall("room creation", () =>
        sfu.createRoom(callId, roomOptions),
      );
      return { node: r.node, room: r.roomId, secret: r.secret };
    },
    async destroyRoom(room) {
      await sfu.destroyRoom(toRef(room));
    },
    async roomExists(room) {
      try {
        await sfu.listParticipants(toRef(room));
        return true;
      } catch (err) {
        if (err instanceof VideoRoomError && err.code === NO_SUCH_ROOM) return false;
        if (err instanceof SfuUnavailableError) return false;
        throw err;
      }
    },
    async open(room, display, onEnded) {
      const participantId = `p-${randomBytes(8).toString("hex")}`;
      const participant = await sfuCall("joining", () => sfu.openParticipant(toRef(room), participantId));
      participant.onLost((reason) => onEnded(`media session ${reason}`));
      return mediaSession(participant, display, opts, (mid, mute) => sfu.moderate(participant.room, participantId, mid, mute));
    },
    async adopt(room, display, snapshot, onEnded) {
      const participant = await sfu.adoptParticipant(toRef(room), snapshot.feedId, snapshot.session);
      participant.onLost((reason) => onEnded(`media session ${reason}`));
      return mediaSession(participant, display, opts, (mid, mute) => sfu.moderate(participant.room, snapshot.feedId, mid, mute), snapshot);
    },
    adoptRoom(room, callId) {
      sfu.adoptRoom(toRef(room), callId, roomOptions);
    },
  };
}

type Participant = Awaited<ReturnType<Sfu["openParticipant"]>>;
type Publisher = Awaited<ReturnType<Participant["joinAsPublisher"]>>["publisher"];
type Subscriber = Awaited<ReturnType<Participant["joinAsSubscriber"]>>["subscriber"];

function mediaSession(
  participant: Participant,
  display: string,
  opts: SfuPortOptions,
  moderate: (mid: string, mute: boolean) => Promise<void>,
  adopted?: SfuMediaSnapshot,
): SfuMediaSession {
  let publisher: Publisher | undefined;
  let privateId: number | undefined = adopted?.publisher?.privateId;
  const layerListeners = new Set<(mid: string, layer: 0 | 1 | 2) => void>();
  /** Told when the subscriber's connection is up (Janus's webrtcup, sent after its setup_media). */
  const subscriberUpListeners = new Set<() => void>();
  const wireSubscriber = (s: Subscriber): Subscriber => {
    s.onSubstream((mid, layer) => {
      for (const l of layerListeners) l(mid, layer);
    });
    s.onPeer((e) => {
      if (e.kind === "webrtcup") for (const l of [...subscriberUpListeners]) l();
    });
    return s;
  };
  let subscriber: Subscriber | undefined = adopted?.subscriber && wireSubscriber(participant.adoptSubscriber(adopted.subscriber.handle));
  type Joined = Awaited<ReturnType<Participant["joinAsSubscriber"]>>;
  /** The subscription made before the client asked (prepareSubscription), with the feeds it holds. */
  let prepared: { key: string; joined: Promise<Joined | undefined> } | undefined;
  /** Whole feeds on one layer, in any order: what a prepared subscription is matched by. */
  const feedsKey = (feeds: { feed: string | number; mid?: string | undefined; substream?: number | undefined }[]): string | undefined =>
    feeds.some((f) => f.mid !== undefined) ? undefined : feeds.map((f) => `${f.feed}/${f.substream ?? ""}`).sort().join(",");
  /** The prepared subscription if it holds exactly `feeds`; otherwise it is dropped. */
  const takePrepared = async (feeds: { feed: string; mid?: string | undefined; substream?: number | undefined }[]): Promise<Joined | undefined> => {
    const p = prepared;
    prepared = undefined;
    const joined = p && (await p.joined);
    if (!joined) return undefined;
    if (p.key === feedsKey(feeds)) return joined;
    await joined.subscriber.leave().catch(() => undefined);
    return undefined;
  };
  let publishedMids: MediaStreamInfo[] = adopted?.publisher?.streams ?? [];
  // Candidates can arrive while the handle they belong to is still being made.
  const early: Record<TrickleTarget, (TrickleCandidate | null)[]> = { publisher: [], subscriber: [] };
  const flush = async (target: TrickleTarget, to: Publisher | Subscriber) => {
    for (const c of early[target].splice(0)) await to.trickle(c);
  };
  const toJanus = (c: IceCandidate | null): TrickleCandidate | null =>
    c === null ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
  let closed = false;
  const up = publisherUp();
  const talkingListeners = new Set<(talking: boolean) => void>();
  const talking = (t: boolean) => {
    for (const l of talkingListeners) l(t);
  };
  // What Janus's talk detection last said. Janus changes its own state only on audio packets and
  // says only changes: after a gap in the audio (below), it still holds this state, and when the
  // packets come back it says nothing more if they are as loud as before.
  let janusTalking = false;
  /** Audio packets arriving (Janus's `media` events for audio); none after a hangup. */
  let audioFlowing = true;
  const wirePublisher = (p: Publisher, onUp: () => void) => {
    p.onPeer((e) => {
      if (e.kind === "webrtcup") up.webrtcUp(onUp);
      if (e.kind === "media" && e.info.receiving && e.info.type) up.receiving(e.info.type, publishedMids, onUp);
      if (e.kind === "media" && e.info.type === "audio") {
        audioFlowing = e.info.receiving;
        // No audio packets for Janus's no_media_timer: whatever talk detection said, nobody talks.
        if (!e.info.receiving) talking(false);
        // The audio is back: Janus's state is what it was before the gap (a stalled sender that was
        // talking is talking again, with no new `talking` event from Janus to say so).
        else if (janusTalking) talking(true);
      }
      if (e.kind === "hangup" || e.kind === "detached") {
        up.cancel();
        janusTalking = false;
        audioFlowing = false;
        talking(false);
      }
    });
    p.onTalking((e) => {
      janusTalking = e.talking;
      talking(e.talking);
    });
  };
  if (adopted?.publisher) {
    // Its media is up and announced already: nothing more to announce.
    publisher = participant.adoptPublisher(adopted.publisher.handle);
    wirePublisher(publisher, () => {});
  }

  return {
    feedId: participant.participantId,
    snapshot() {
      return {
        session: participant.sessionId,
        feedId: participant.participantId,
        ...(publisher && privateId !== undefined ? { publisher: { handle: publisher.handle.id, privateId, streams: publishedMids } } : {}),
        ...(subscriber ? { subscriber: { handle: subscriber.handle.id } } : {}),
      };
    },
    async publish(offerSdp, { simulcast, onUp }) {
      if (!publisher) {
        const joined = await sfuCall("joining", () => participant.joinAsPublisher(display));
        publisher = joined.publisher;
        privateId = joined.joined.privateId;
        wirePublisher(publisher, onUp);
      }
      const p = publisher;
      const { answer, streams } = await sfuCall("publishing", () =>
        p.publish({ jsep: { type: "offer", sdp: offerSdp }, e2ee: opts.requireE2ee, ridOrder: simulcast ? "lmh" : undefined, opusDtx: opts.opusDtx }),
      );
      await flush("publisher", p);
      publishedMids = streams.flatMap((s) => {
        const kind = kindOf(s.type);
        return kind ? [{ mid: s.mid, kind }] : [];
      });
      up.check(publishedMids, onUp);
      return { answerSdp: answer.sdp ?? "", streams: publishedMids };
    },
    prepareSubscription(feeds) {
      if (subscriber || prepared || closed || feeds.length === 0) return;
      const refs = feeds.map((f) => ({ feed: String(f.feed), substream: f.substream }));
      // A failure (a feed gone meanwhile) leaves it to the client's own subscribe.
      prepared = { key: feedsKey(refs)!, joined: participant.joinAsSubscriber(refs, privateId).catch(() => undefined) };
    },
    async subscribe(feeds, subscribeOpts) {
      const refs = feeds.map((f) => ({ feed: String(f.feed), mid: f.mid, substream: f.substream }));
      if (!subscriber) {
        const joined = (await takePrepared(refs)) ?? (await sfuCall("subscribing", () => participant.joinAsSubscriber(refs, privateId)));
        // Janus's `join` takes no per-stream `send`; a `configure` before `start` does, and `start`
        // keeps it (it only unpauses the subscription as a whole).
        if (subscribeOpts?.paused && joined.streams.length) {
          const s = joined.subscriber;
          await sfuCall("pausing", () => s.configure(joined.streams.map((st) => ({ mid: st.mid, send: false })))).catch(async (err: unknown) => {
            await s.leave().catch(() => undefined);
            throw err;
          });
        }
        subscriber = wireSubscriber(joined.subscriber);
        await flush("subscriber", subscriber);
        return { offerSdp: joined.offer.sdp ?? "", streams: subscribed(joined.streams) };
      }
      const s = subscriber;
      // Paused here: each new m-line is made not forwarding by the `subscribe` itself (per stream).
      const update = await sfuCall("subscribing", () => s.subscribe(subscribeOpts?.paused ? refs.map((r) => ({ ...r, send: false as const })) : refs));
      // No offer: nothing to renegotiate (every feed asked for was subscribed already).
      return { offerSdp: update.offer?.sdp, streams: subscribed(update.streams) };
    },
    async unsubscribe(feeds) {
      if (!subscriber) return { streams: [] };
      const s = subscriber;
      const update = await sfuCall("unsubscribing", () => s.unsubscribe(feeds.map((f) => ({ feed: String(f) }))));
      return { offerSdp: update.offer?.sdp, streams: subscribed(update.streams) };
    },
    async answer(answerSdp) {
      if (!subscriber) throw new ParleyError("M_INVALID_PARAM", "no subscription to answer; subscribe first");
      const s = subscriber;
      await sfuCall("answer", () => s.start({ type: "answer", sdp: answerSdp }, opts.requireE2ee));
    },
    async trickle(target, candidate) {
      const handle = target === "publisher" ? publisher : subscriber;
      if (handle) return void (await handle.trickle(toJanus(candidate)));
      if (early.publisher.length + early.subscriber.length >= opts.maxEarlyCandidates) {
        throw new ParleyError("M_LIMIT_EXCEEDED", `at most ${opts.maxEarlyCandidates} ICE candidates before publish/subscribe`);
      }
      early[target].push(toJanus(candidate));
    },
    async mute(kind, muted) {
      if (!publisher) return;
      const mids = publishedMids.filter((s) => s.kind === kind).map((s) => ({ mid: s.mid, send: !muted }));
      const p = publisher;
      if (mids.length) await sfuCall("mute", () => p.configure({ streams: mids }));
    },
    async moderate(kind, muted) {
      for (const s of publishedMids.filter((m) => m.kind === kind)) await sfuCall("moderation", () => moderate(s.mid, muted));
    },
    onTalking(listener) {
      talkingListeners.add(listener);
      return () => talkingListeners.delete(listener);
    },
    talkingNow: () => janusTalking && audioFlowing,
    onLayer(listener) {
      layerListeners.add(listener);
      return () => layerListeners.delete(listener);
    },
    onSubscriberUp(listener) {
      subscriberUpListeners.add(listener);
      return () => subscriberUpListeners.delete(listener);
    },
    async configureVideos(changes) {
      const s = subscriber;
      if (!s || changes.length === 0) return;
      await sfuCall("video choice", () => s.configure(changes));
    },
    async setBitrate(bitsPerSecond) {
      const p = publisher;
      if (!p) return;
      await sfuCall("bitrate", () => p.configure({ bitrate: bitsPerSecond }));
    },
    async close() {
      if (closed) return;
      talkingListeners.clear();
      layerListeners.clear();
      subscriberUpListeners.clear();
      closed = true;
      up.cancel();
      const unclaimed = prepared && (await prepared.joined);
      prepared = undefined;
      await Promise.allSettled([publisher?.leave(), subscriber?.leave(), unclaimed?.subscriber.leave()]);
      await participant.close();
    },
  };
}

/**
 * When to announce a new publisher: once Janus receives every published kind (audio and video),
 * since a subscription made earlier can miss a stream. webrtcup plus a grace period is the
 * fallback for a kind that never reports (a track muted from the start).
 */
function publisherUp(graceMs = 2000) {
  const receiving = new Set<string>();
  let announced = false;
  let grace: ReturnType<typeof setTimeout> | undefined;
  const announce = (onUp: () => void) => {
    if (announced) return;
    announced = true;
    clearTimeout(grace);
    onUp();
  };
  const check = (mids: MediaStreamInfo[], onUp: () => void) => {
    if (mids.length > 0 && mids.every((m) => receiving.has(m.kind))) announce(onUp);
  };
  return {
    webrtcUp(onUp: () => void) {
      grace ??= setTimeout(() => announce(onUp), graceMs);
    },
    receiving(kind: string, mids: MediaStreamInfo[], onUp: () => void) {
      receiving.add(kind);
      check(mids, onUp);
    },
    check,
    cancel() {
      clearTimeout(grace);
    },
  };
}
