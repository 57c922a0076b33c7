// One call from this device: the call API grant, the signalling socket, the publisher and the
// subscriber, kept in step with the server's participant list. A reconnected socket or a
// `renegotiate` push rebuilds both peer connections; ICE failure does too.
import { ParleyClientError, toClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { OpenIdProvider } from "../matrix/openid.ts";
import { Emitter, Store } from "../state/store.ts";
import { markStep } from "../timeline.ts";
import { realTimers, type Timers } from "../timers.ts";
import { joinCall, signallingUrl, type CallGrant } from "./callApi.ts";
import { sampleMedia, type MediaSample } from "./mediaHealth.ts";
import type { FeedId, GovernanceRequest, HelloResult, Participant, Push, ViewRequest } from "./protocol.ts";
import { Publisher } from "./publisher.ts";
import { SignallingClient, type SocketFactory, type SocketLike } from "./signalling.ts";
import { chunksOf, Subscriber, SUBSCRIBE_FEEDS_MAX, type RemoteFeed } from "./subscriber.ts";
import { browserPeerFactory, noTransforms, type MediaTransformHook, type PeerFactory } from "./transforms.ts";

export type CallPhase = "idle" | "joining" | "connected" | "reconnecting" | "ended" | "failed";

export interface RemoteParticipant {
  /** The feed id as a string: the key of this participant's tile. */
  key: string;
  feed: FeedId;
  userId: string;
  /** The publisher's Matrix device ("" if it declared none). */
  deviceId: string;
  muted: { audio: boolean; video: boolean };
  screen: boolean;
  media: RemoteFeed | null;
}

/** Why the server ended this device's session, when a push said so (phase "failed"). */
export interface Eviction {
  errcode: string;
  /** Who did it (a host's end, remove or ban), when the server or the meeting's state said. */
  by: string | null;
  reason: string | null;
}

export interface CallSnapshot {
  phase: CallPhase;
  error: ParleyClientError | null;
  evicted?: Eviction;
  roomId: string | null;
  ownFeed: FeedId | null;
  remotes: RemoteParticipant[];
}

export interface LocalTracks {
  audio: MediaStreamTrack | null;
  video: MediaStreamTrack | null;
  muted: { audio: boolean; video: boolean };
}

export interface CallConnectionOptions {
  callApi: string;
  room: string;
  openId: OpenIdProvider;
  /** A grant asked before Join (the pre-join's), used instead of asking now; null: ask now. */
  grantAhead?: () => CallGrant | null | Promise<CallGrant | null>;
  /** What to send right now (asked again after every reconnect). */
  local: () => LocalTracks;
  peerFactory?: PeerFactory;
  transforms?: MediaTransformHook;
  /** This client's Matrix device, declared to the server (media keys are addressed to it). */
  deviceId?: string;
  /** The server's hello, before any media is sent; media waits for what it returns (the E2EE key mode). */
  onHello?: (hello: HelloResult) => void | Promise<void>;
  socketFactory?: SocketFactory;
  /** The signalling socket opened ahead (the pre-join's standby), if any: the first hello goes out on it. */
  socketAhead?: (url: string) => SocketLike | null;
  /**
   * The subscription answered on that socket in the pre-join (prejoinMedia.ts), asked in the task
   * that takes the socket: used if the hello says the server seated it (`prepared`), else closed.
   * Its receivers must have gone to this call's `transforms` (the same E2EE worker) at its answer.
   */
  subscriberAhead?: () => Subscriber | null;
  timers?: Timers;
  join?: typeof joinCall;
}

export class CallConnection {
  readonly state = new Store<CallSnapshot>({ phase: "idle", error: null, roomId: null, ownFeed: null, remotes: [] });
  private readonly o: Required<Omit<CallConnectionOptions, "socketFactory" | "socketAhead" | "deviceId" | "onHello" | "grantAhead" | "subscriberAhead">> &
    Pick<CallConnectionOptions, "socketFactory" | "socketAhead" | "deviceId" | "onHello" | "grantAhead" | "subscriberAhead">;
  private readonly log = getLogger("call");
  private grant: CallGrant | null = null;
  private signalling: SignallingClient | null = null;
  private publisher: Publisher | null = null;
  private subscriber: Subscriber | null = null;
  private participants: Participant[] = [];
  private readonly subscribed = new Map<string, FeedId>();
  /** Every feed this connection published (a republish gets a new one; a late push may still list the old). */
  private readonly ownFeeds = new Set<string>();
  private syncing: Promise<void> | null = null;
  private resyncWanted = false;
  private generation = 0;
  private restartTimer: unknown;
  /** The media restart running now, and whether another was asked for meanwhile. */
  private restarting: Promise<void> | null = null;
  private restartAgain = false;
  private ended = false;
  private readonly pushes = new Emitter<{ push: Push }>();
  /** Who ended the meeting, from the last `meeting` push (an eviction may not say). */
  private endedBy: string | null = null;

  constructor(opts: CallConnectionOptions) {
    this.o = {
      peerFactory: browserPeerFactory,
      transforms: noTransforms,
      timers: realTimers,
      join: joinCall,
      ...opts,
    };
  }

  async start(): Promise<void> {
    this.state.update({ phase: "joining", error: null });
    let prepared: Subscriber | null = null;
    try {
      // A grant already here is taken without a pause: the socket opens in this same task
      // (before the page draws the call screen), not after it.
      const asked = this.o.grantAhead?.();
      const ahead = asked instanceof Promise ? await asked : asked;
      if (ahead) this.grant = ahead;
      const grant = ahead ?? (await this.freshGrant());
      markStep("grant");
      this.state.update({ roomId: grant.roomId });
      const signalling = new SignallingClient({
        url: signallingUrl(this.o.callApi, grant.signalling),
        session: async (renew) => (renew ? (await this.freshGrant()).session : (this.grant ?? grant).session),
        socketFactory: this.o.socketFactory,
        socketAhead: this.o.socketAhead,
        timers: this.o.timers,
        ...(this.o.deviceId ? { deviceId: this.o.deviceId } : {}),
      });
      this.signalling = signalling;
      signalling.events.on("push", (p) => this.handlePush(p));
      signalling.events.on("ready", ({ hello, reconnected }) => {
        if (!reconnected) return;
        // Parley restarted and kept this client's media (docs/resilience.md): the peer
        // connections go on as they are; only the signalling socket is new.
        if (hello.resumed && this.publisher && !this.ended) this.state.update({ phase: "connected", error: null });
        else void this.restartMedia("the signalling socket reconnected");
      });
      signalling.state.subscribe((s) => {
        if (this.ended) return;
        if (s.phase === "reconnecting") this.state.update({ phase: "reconnecting" });
        if (s.phase === "closed" && s.error) this.fail(s.error);
      });
      // (In this task, as connect() takes the standby socket: no answer goes out on it in between.)
      prepared = this.o.subscriberAhead?.() ?? null;
      const hello = await signalling.connect();
      markStep("hello");
      if (!hello.prepared) {
        prepared?.close();
        prepared = null;
      }
      if (hello.e2ee?.required && !this.o.transforms.e2ee) {
        throw new ParleyClientError("E2EE_UNSUPPORTED", "join", { detail: "the call requires E2EE; no frame transforms here" });
      }
      // Granted in the lobby (or restored by a restarted Parley): the ICE servers come with the hello.
      if (hello.ice && this.grant) this.grant = { ...this.grant, ...hello.ice };
      await this.o.onHello?.(hello);
      markStep("e2ee-ready");
      if (this.ended) return void prepared?.close();
      // The held videos' offer this hello crossed: the call answers it (before anything else of it).
      if (prepared && hello.preparedUpdate) {
        void prepared.renegotiated(hello.preparedUpdate).then(() => markStep("held-answered-at-hello"), () => undefined);
      }
      await this.startMedia(prepared);
      if (!this.ended) this.state.update({ phase: "connected" });
    } catch (err) {
      prepared?.close();
      this.fail(toClientError(err, "join"));
      throw this.state.get().error;
    }
  }

  /** Every push from the server, after the call has acted on it (governance models listen here). */
  onPush(fn: (p: Push) => void): () => void {
    return this.pushes.on("push", fn);
  }

  /** A governance request (hand, reaction, moderation); rejects with the server's error. */
  async send(request: GovernanceRequest | ViewRequest): Promise<void> {
    const s = this.signalling;
    if (!s || this.ended) throw new ParleyClientError("CLOSED", "signalling", { detail: `${request.type} outside a call` });
    // This device's own admit: its media key goes to the user beside the server's invite, not
    // after it (the host's own act: nothing to wait for); a refusal takes the key back.
    const admitting = request.type === "moderate" && request.action.action === "admit" ? request.action.user_id : null;
    if (admitting) this.o.transforms.letIn?.(admitting, "self");
    try {
      await s.request(request);
    } catch (err) {
      if (admitting) this.o.transforms.letInRefused?.(admitting);
      throw err;
    }
  }

  /** Tells the server (and so everyone) about a mute; the track itself is handled by the caller. */
  async setMuted(kind: "audio" | "video", muted: boolean): Promise<void> {
    if (this.state.get().phase !== "connected") return;
    await this.signalling?.request({ type: "mute", kind, muted }).catch((err) => this.log.warn("mute not delivered", { err: String(err) }));
  }

  /** Tells the others what our video shows (their tile marks a screen share). */
  async setVideoSource(source: "camera" | "screen"): Promise<void> {
    if (this.state.get().phase !== "connected") return;
    await this.signalling?.request({ type: "source", kind: "video", source }).catch((err) => this.log.warn("source not delivered", { err: String(err) }));
  }

  /** Sends another track (camera on/off, screen share) without renegotiating. */
  async replaceTrack(kind: "audio" | "video", track: MediaStreamTrack | null): Promise<void> {
    await this.publisher?.replaceTrack(kind, track);
  }

  /** This device's microphone level (0..1): its own tile's speaking mark (remote speakers come from the server). */
  async ownAudioLevel(): Promise<number> {
    return (await this.publisher?.audioLevel()) ?? 0;
  }

  /** The subscriber's receive stats (the view reporter's downlink estimate); null without one. */
  async receiveStats(): Promise<RTCStatsReport | null> {
    return (await this.subscriber?.peer?.getStats().catch(() => null)) ?? null;
  }

  /** Receive stats and peer states of the media connections now (the call view's stale-media check). */
  mediaStats(): Promise<MediaSample> {
    return sampleMedia(this.subscriber?.peer ?? null, this.publisher?.peer ?? null);
  }

  async leave(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.o.timers.clearTimeout(this.restartTimer);
    const s = this.signalling;
    if (s && s.state.get().phase === "open") await s.request({ type: "leave" }, 2000).catch(() => undefined);
    s?.close();
    this.closeMedia();
    this.state.update({ phase: "ended", remotes: [] });
  }

  /** Retry now (the browser went back online). */
  reconnectNow(): void {
    this.signalling?.reconnectNow();
  }

  private async freshGrant(): Promise<CallGrant> {
    const token = await this.o.openId();
    this.grant = await this.o.join(this.o.callApi, { openid_token: token, room: this.o.room });
    return this.grant;
  }

  /** `ahead`: the subscription seated from the pre-join at the hello (forwarding since), taken over here. */
  private async startMedia(ahead: Subscriber | null = null): Promise<void> {
    const signalling = this.signalling!;
    const generation = ++this.generation;
    const iceServers = this.grant?.iceServers ?? [];
    const iceTransportPolicy = this.grant?.iceTransportPolicy ?? "all";
    const common = { signalling, iceServers, iceTransportPolicy, peerFactory: this.o.peerFactory, transforms: this.o.transforms };
    const publisher = new Publisher(common);
    const subscriber = ahead ?? new Subscriber(common);
    this.publisher = publisher;
    this.subscriber = subscriber;
    subscriber.events.on("feeds", () => this.refreshRemotes());
    if (ahead) {
      // Its receivers have this call's transforms since its answer; the server forwards since the hello.
      ahead.adopt(signalling);
      markStep("prepared-media");
      for (const f of ahead.current().values()) this.subscribed.set(String(f.feed), f.feed);
      if (ahead.peer?.connectionState === "connected") markStep("subscriber-connected");
    }
    // Both transceivers are published even without a device, so a camera can be turned on later.
    const local = this.o.local();
    const publishing = (async () => {
      const feed = await publisher.publish({ audio: local.audio, video: local.video });
      markStep("published");
      this.ownFeeds.add(String(feed));
      if (generation !== this.generation) return;
      this.state.update({ ownFeed: feed });
      for (const kind of ["audio", "video"] as const) {
        const muted = kind === "audio" ? local.muted.audio || !local.audio : local.muted.video || !local.video;
        if (muted) await signalling.request({ type: "mute", kind, muted }).catch(() => undefined);
      }
      this.watchPeer(publisher.peer, generation, "publisher");
      this.refreshRemotes();
    })();
    // The others' media does not wait for ours: subscribing runs beside publishing (the feed this
    // device publishes is never among the feeds with streams before its publish has answered),
    // and so do the videos the pre-join's subscription held back.
    const held = ahead ? ahead.subscribeHeld().then((asked) => asked && markStep("held-subscribed")) : undefined;
    await Promise.all([publishing, this.syncFeeds(), held]);
    this.watchPeer(subscriber.peer, generation, "subscriber");
  }

  private closeMedia(): void {
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = null;
    this.subscriber = null;
    this.subscribed.clear();
  }

  /**
   * One restart at a time: what asks during one (a burst of pushes and socket events) gets one
   * more afterwards, not a restart tearing down the one half done.
   */
  private restartMedia(why: string): Promise<void> {
    if (this.restarting) {
      this.restartAgain = true;
      return this.restarting;
    }
    this.restarting = (async () => {
      do {
        this.restartAgain = false;
        await this.restartOnce(why);
      } while (this.restartAgain && !this.ended);
    })().finally(() => {
      this.restarting = null;
    });
    return this.restarting;
  }

  private async restartOnce(why: string): Promise<void> {
    if (this.ended || this.signalling?.state.get().phase !== "open") return;
    this.log.info("publishing and subscribing again", { why });
    this.closeMedia();
    this.state.update({ phase: "reconnecting", ownFeed: null });
    try {
      await this.startMedia();
      if (!this.ended) this.state.update({ phase: "connected", error: null });
    } catch (err) {
      const e = toClientError(err, "signalling");
      this.log.warn("media restart failed", { code: e.code, detail: e.detail });
      if (e.code === "CLOSED") return; // the socket dropped again; its reconnect restarts media
      this.scheduleRestart("the last restart failed", 3000);
    }
  }

  private scheduleRestart(why: string, ms: number): void {
    this.o.timers.clearTimeout(this.restartTimer);
    this.restartTimer = this.o.timers.setTimeout(() => void this.restartMedia(why), ms);
  }

  private watchPeer(pc: RTCPeerConnection | null, generation: number, role: "publisher" | "subscriber"): void {
    if (!pc) return;
    pc.addEventListener("connectionstatechange", () => {
      if (generation !== this.generation || this.ended) return;
      if (pc.connectionState === "connected") markStep(`${role}-connected`);
      if (pc.connectionState === "failed") this.scheduleRestart("ICE failed", 1000);
    });
  }

  private handlePush(p: Push): void {
    switch (p.type) {
      case "participants":
        markStep("participants");
        this.participants = p.participants;
        this.o.transforms.participants?.(
          p.participants.filter((x) => x.device_id).map((x) => ({ userId: x.user_id, deviceId: x.device_id, publishing: x.streams.length > 0 })),
        );
        this.refreshRemotes();
        void this.syncFeeds();
        break;
      case "trickle":
        void (p.target === "publisher" ? this.publisher : this.subscriber)?.addRemoteCandidate(p.candidate);
        return;
      case "arriving":
        this.o.transforms.arriving?.({ userId: p.user_id, deviceId: p.device_id });
        return;
      case "let_in":
        this.o.transforms.letIn?.(p.user_id, "server");
        return;
      case "renegotiate":
        void this.restartMedia(`the server asked (${p.reason || "no reason given"})`);
        return;
      case "evicted": {
        // The signalling client closes the state right after; this only records who and why.
        const by = p.by ?? (p.errcode === "M_NOT_FOUND" ? this.endedBy : null);
        this.state.update({ evicted: { errcode: p.errcode, by, reason: p.reason ?? null } });
        break;
      }
      case "meeting":
        this.endedBy = p.ended?.by ?? null;
        break;
    }
    this.pushes.emit("push", p);
  }

  private subscribeFailures = 0;

  /** Subscribes to new feeds and drops gone ones until the set matches the participant list. */
  private syncFeeds(): Promise<void> {
    if (this.syncing) {
      this.resyncWanted = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      do {
        this.resyncWanted = false;
        const subscriber = this.subscriber;
        if (!subscriber) break;
        const wanted = new Map(
          this.participants.filter((p) => !this.ownFeeds.has(String(p.feed_id)) && p.streams.length > 0).map((p) => [String(p.feed_id), p.feed_id]),
        );
        const gone = [...this.subscribed].filter(([k]) => !wanted.has(k));
        const added = [...wanted].filter(([k]) => !this.subscribed.has(k));
        if (gone.length) {
          for (const [k] of gone) this.subscribed.delete(k);
          await subscriber.unsubscribe(gone.map(([, f]) => f)).catch((err) => this.log.warn("unsubscribe failed", { err: String(err) }));
        }
        for (const [k, f] of added) this.subscribed.set(k, f);
        if (added.length && !(await this.subscribeAdded(subscriber, added))) break;
      } while (this.resyncWanted);
    })().finally(() => {
      this.syncing = null;
    });
    return this.syncing;
  }

  /**
   * Subscribes to the feeds `added` (just put in `subscribed`), at most SUBSCRIBE_FEEDS_MAX a
   * request (the server's limit), in order. False when a request failed: its feeds and those after
   * it are taken out of `subscribed` again (tried again later, or all media restarted); the feeds
   * of the requests before it stay, subscribed.
   */
  private async subscribeAdded(subscriber: Subscriber, added: [string, FeedId][]): Promise<boolean> {
    markStep("subscribe");
    const chunks = chunksOf(added, SUBSCRIBE_FEEDS_MAX);
    for (const [i, chunk] of chunks.entries()) {
      try {
        const now = await subscriber.subscribe(chunk.map(([, f]) => f));
        markStep("subscribed");
        this.subscribeFailures = 0;
        // A feed gone before the server saw the request is left out: the next participant
        // list that still holds it subscribes again.
        for (const [k] of chunk) if (!now.has(k)) this.subscribed.delete(k);
      } catch (err) {
        for (const [k] of chunks.slice(i).flat()) this.subscribed.delete(k);
        this.log.warn("subscribe failed", { err: String(err) });
        if (!(err instanceof ParleyClientError) || err.code === "CLOSED") return false;
        // A feed can vanish or not be ready yet between the participant list and our request:
        // try the subscription again a few times before restarting all media.
        if (++this.subscribeFailures <= 3) {
          this.o.timers.setTimeout(() => void this.syncFeeds(), 1000 * this.subscribeFailures);
        } else {
          this.subscribeFailures = 0;
          this.scheduleRestart("a subscription kept failing", 1000);
        }
        return false;
      }
    }
    return true;
  }

  private refreshRemotes(): void {
    const media = this.subscriber?.current();
    const remotes: RemoteParticipant[] = this.participants
      .filter((p) => p.streams.length > 0 && !this.ownFeeds.has(String(p.feed_id)))
      .map((p) => ({
        key: String(p.feed_id),
        feed: p.feed_id,
        userId: p.user_id,
        deviceId: p.device_id,
        muted: p.muted,
        screen: p.streams.some((s) => s.type === "screen"),
        media: media?.get(String(p.feed_id)) ?? null,
      }));
    this.state.update({ remotes });
  }

  private fail(error: ParleyClientError): void {
    if (this.ended) return;
    this.ended = true;
    // (A refused hello, an eviction, a socket given up on: the screen says it, the log says why.)
    this.log.warn("the call ended", { code: error.code, context: error.context, detail: error.detail });
    this.o.timers.clearTimeout(this.restartTimer);
    this.signalling?.close();
    this.closeMedia();
    this.state.update({ phase: "failed", error, remotes: [] });
  }
}
