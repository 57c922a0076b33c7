// The media rules of a call, one method per client request: a seat's SFU session is opened once
// (single-flight: a burst of first messages opens one), only while the seat's session is live
// and held by it (checked on every request, and again once the SFU answered), and released with
// everything it opened when the seat goes. A second publish starts the media over on a fresh SFU
// session (Janus takes no new DTLS peer on a live handle); a session the SFU lost (Janus
// restarted) is forgotten and the client told to renegotiate.
import { ParleyError } from "../errors.ts";
import type { CallSession, IceAtHello } from "./callService.ts";
import { CallRoster, withSource, type CallClient, type Member, type VideoSource } from "./callRoster.ts";
import { admitE2ee, type E2eeObserver } from "./e2eeAdmission.ts";
import type { Clock, IceCandidate, MediaStreamInfo, SfuMedia, SfuMediaSession, SfuMediaSnapshot, TrickleTarget } from "./ports.ts";
import { Moderation, type ModerationConfig, type ModerationRecorder } from "./moderation.ts";
import type { Role } from "./roles.ts";
import { SingleFlight } from "./singleFlight.ts";
import type { SfuRoomRecord } from "../store/store.ts";
import { LargeMeetings, LARGE_MEETINGS_DEFAULTS, type LargeMeetingsConfig } from "./largeMeetings.ts";
import { realTimers, type Timers } from "./speakers.ts";
import { FIRST_LAYER, type ViewRequest } from "./viewers.ts";

/** One signalling socket's place in a call. */
export interface Seat {
  readonly session: CallSession;
  /** The Matrix device the client declared in hello ("" if none). */
  readonly deviceId: string;
  readonly client: CallClient;
}

/**
 * A member as a restarted Parley takes it over (recorded in the store, docs/resilience.md): its
 * SFU session to adopt and what the others were told of it.
 */
export interface MemberRecord {
  sfu: SfuMediaSnapshot;
  streams: Member<Seat>["streams"];
  published: boolean;
  videoSource: VideoSource;
  muted: { audio: boolean; video: boolean };
  /** Its whole subscription (which m-line carries which feed). */
  subscribed: { mid: string; kind: "audio" | "video"; feed: string | number }[];
}

export interface CallMediaDeps {
  sfu: SfuMedia;
  sfuRoomOf(callId: string): Promise<SfuRoomRecord | undefined>;
  /** Whether the seat's session is live and still held by this seat. */
  live(seat: Seat): boolean;
  requireE2ee: boolean;
  /** The user's role in the room (governance); undefined: not known yet. */
  roleOf?: (roomId: string, userId: string) => Role | undefined;
  clock: Clock;
  moderation: ModerationConfig;
  /** Large meetings: last-N videos, speakers, bitrate cap (docs/large-meetings.md); defaults if absent. */
  media?: LargeMeetingsConfig | undefined;
  timers?: Timers | undefined;
  /** Something the SFU refused while applying a speaker / video choice. */
  mediaFailed?: (what: string, err: unknown) => void;
  /** Told of each end-to-end encryption check (metrics); optional. */
  observeE2ee?: E2eeObserver | undefined;
  /** Records what a restarted Parley needs of the seat's member (null: it has no SFU session); optional. */
  recordMember?: ((seat: Seat, record: MemberRecord | null) => void) | undefined;
  /** Records the calls' moderation for a restarted Parley; optional. */
  recordModeration?: ModerationRecorder | undefined;
  /** Pre-join subscriptions a call may hold at once (docs/join.md); absent: DEFAULT_PREPARED_PER_CALL, 0: none. */
  preparedPerCall?: number | undefined;
}

/** Pre-join subscriptions per call unless configured (calls.limits.prejoinSubscriptionsPerCall). */
export const DEFAULT_PREPARED_PER_CALL = 20;

/**
 * A pre-join's subscription (docs/join.md, "The media connection made in the pre-join"), made on
 * its standby socket: the SFU's offer for the call's feeds, each m-line made not to forward
 * before the offer left, so the client can answer and connect (ICE, DTLS) before Join while
 * nobody's media reaches it. Its real hello seats it (`seatPrepared`) and it forwards from then
 * on; otherwise it is closed (the socket's close, the standby's end, the session's).
 *
 * The offer holds the feeds' audio m-lines only (all of them when no feed has audio): Janus
 * 1.1.2 asks every video publisher of a subscription for a key frame when it connects, paused
 * or not, and the publisher's encoder, which takes one request per 300 ms, then ignored the
 * request of the Join that came within 300 ms of it (docs/join.md, twenty-sixth pass). The
 * videos are `held`. Once the connection is up (after that request), they are added to it,
 * paused, and that renegotiation's offer is pushed on the standby (`onUpdate`) for the client
 * to answer there. A hello before its answer is handed the offer (`seatPrepared`) for the
 * client to answer as the call's; a hello before the connection was up leaves the videos to
 * the seat's first subscribe naming exactly some of them. Either way the videos added resume
 * as their viewer chooses once the client has answered for them, not before.
 */
export interface PreparedMedia {
  readonly sessionKey: string;
  readonly offerSdp: string;
  /** The m-lines of the offer, each with its feed's owner (as a subscribe's answer gives them). */
  readonly streams: (Feeds[number] & { user_id: string; device_id: string })[];
  /** The feeds' video m-lines (their publishers' mids) left out of the offer, for the seat to subscribe to at Join. */
  readonly held: HeldStream[];
  /** The client's answer (the SFU's `start`): nothing is forwarded yet. */
  answer(sdp: string, e2ee: boolean | undefined): Promise<void>;
  trickle(candidate: IceCandidate | null): Promise<void>;
  /** Whether the client's answer was taken and the SFU session is still there (waits for an answer, or the held videos' renegotiation, under way). */
  settled(answering: Promise<unknown> | undefined): Promise<boolean>;
  /** Where the held videos' offer goes while the subscription is on standby (the socket pushes it). */
  onUpdate?: (offer: { sdp: string; streams: PreparedMedia["streams"] }) => void;
  close(): Promise<void>;
  /** A lobby grant's (let in): the ICE servers its grant did not carry, sent with the offer (CallSeats.prepare). */
  ice?: IceAtHello;
}

type Feeds = (MediaStreamInfo & { feed: string | number })[];

/** A publisher's m-line a pre-join's offer left out (PreparedMedia). */
export interface HeldStream {
  feed: string | number;
  mid: string;
}
const heldKey = (feed: string | number, mid: string): string => `${String(feed)}\u0000${mid}`;

export class CallMedia {
  readonly roster: CallRoster<Seat>;
  readonly moderation: Moderation<Seat>;
  readonly large: LargeMeetings<Seat>;
  private readonly opening = new SingleFlight<Seat, Member<Seat>>();
  private readonly deps: CallMediaDeps;
  /** Each member's whole subscription, as the SFU last reported it. */
  private readonly subscriptions = new WeakMap<Member<Seat>, MemberRecord["subscribed"]>();
  /** Pre-join subscriptions open per call (at most preparedPerCall). */
  private readonly preparing = new Map<string, number>();
  /** A seated pre-join's held videos (PreparedMedia) not subscribed yet, by heldKey. */
  private readonly held = new WeakMap<Member<Seat>, Set<string>>();
  /** A subscribe of held videos whose offer the client has yet to answer: what the viewer learns then. */
  private readonly afterAnswer = new WeakMap<Member<Seat>, { streams: Feeds; paused: Set<string> }>();

  constructor(deps: CallMediaDeps) {
    this.deps = deps;
    this.moderation = new Moderation(deps.moderation, { roster: () => this.roster, clock: deps.clock, recorder: deps.recordModeration });
    this.roster = new CallRoster<Seat>((callId, m) => {
      const role = deps.roleOf?.(m.seat.session.roomId, m.userId);
      return {
        ...(role ? { role } : {}),
        hand: this.moderation.handOf(callId, m.userId),
        forced: this.moderation.forcedOf(callId, m.userId),
      };
    }, (callId) => this.large.rosterChanged(callId));
    this.large = new LargeMeetings<Seat>(deps.media ?? LARGE_MEETINGS_DEFAULTS, {
      clock: deps.clock,
      timers: deps.timers ?? realTimers,
      members: (callId) => this.roster.members(callId),
      forced: (callId, userId) => this.moderation.forcedOf(callId, userId),
      failed: (what, err) => deps.mediaFailed?.(what, err),
    });
  }

  /**
   * A seat just said hello: its SFU session opens now, beside the client's own preparations, so
   * its publish and subscribe find it ready, and the participant list it needs to subscribe
   * reaches it at once (not only when something in the call changes). A failure here is the
   * first request's to report (it opens again).
   */
  warm(seat: Seat): void {
    void this.memberOf(seat).catch(() => undefined);
  }

  /**
   * A pre-join's subscription to the call's feeds now, paused (see PreparedMedia); undefined when
   * there is nothing to subscribe to, the call has no SFU room, the call holds `preparedPerCall`
   * already, or the SFU refused (the client subscribes at Join as without). `live`: whether the
   * standby still wants it (else it is closed as it comes).
   */
  async prepare(session: CallSession, live: () => boolean): Promise<PreparedMedia | undefined> {
    const { callId, userId } = session;
    const limit = this.deps.preparedPerCall ?? DEFAULT_PREPARED_PER_CALL;
    const open = this.preparing.get(callId) ?? 0;
    const feeds = this.announced(callId);
    if (open >= limit || feeds.length === 0) return undefined;
    this.preparing.set(callId, open + 1);
    let counted = true;
    const uncount = () => {
      if (!counted) return;
      counted = false;
      const n = (this.preparing.get(callId) ?? 1) - 1;
      if (n > 0) this.preparing.set(callId, n);
      else this.preparing.delete(callId);
    };
    let prepared: Prepared | undefined;
    let media: SfuMediaSession | undefined;
    try {
      const room = await this.deps.sfuRoomOf(callId);
      if (!room || !live()) return void uncount();
      media = await this.deps.sfu.open(room, userId, (reason) => prepared?.lost(reason));
      const mlines = (audio: boolean) => feeds.flatMap((m) => m.streams.filter((s) => (s.kind === "audio") === audio).map((s) => ({ feed: m.media.feedId, mid: s.mid })));
      const audio = mlines(true);
      const held = audio.length ? mlines(false) : [];
      const asked = audio.length ? audio : feeds.map((m) => ({ feed: m.media.feedId, substream: FIRST_LAYER }));
      const { offerSdp, streams } = await media.subscribe(asked, { paused: true });
      if (!offerSdp || !live()) {
        uncount();
        await media.close();
        return undefined;
      }
      const owners = (raw: Feeds) => this.withOwners(session.callId, raw);
      prepared = new Prepared(session.key, media, { sdp: offerSdp, raw: streams, held }, { ...this.deps, owners }, uncount);
      return prepared;
    } catch {
      uncount();
      await media?.close().catch(() => undefined);
      return undefined;
    }
  }

  /**
   * The seat's real hello came on the standby socket that holds `prepared`, answered: its SFU
   * session is the seat's member's now, in the roster like any joiner's, and it forwards from
   * now on: every audio m-line, and the videos its viewer chooses (each resumed with a key frame
   * asked of its publisher). The client's receivers had its call's transforms from its answer.
   * False (and `prepared` closed) when it cannot be: another session's, not answered, lost, or
   * the seat has media already. `update`: the held videos' offer the client has not answered
   * (its hello crossed it): the hello's result hands it over, and its answer is the call's.
   */
  seatPrepared(seat: Seat, prepared: PreparedMedia): false | { update?: { sdp: string; streams: PreparedMedia["streams"] } } {
    const p = prepared as Prepared;
    const { callId } = seat.session;
    if (p.sessionKey !== seat.session.key || !p.usable || !this.deps.live(seat) || this.roster.get(callId, seat)) {
      void p.close();
      return false;
    }
    const { update, answered: answeredStreams, held: stillHeld } = p.state();
    const media = p.handOver((reason) => this.lost(callId, media, reason));
    const member = newMember(seat, media);
    // A feed that left during the pre-join is out of the subscription (Janus dropped its m-lines,
    // and a configure naming one is refused as a whole); the client unsubscribes it.
    const announced = new Set(this.announced(callId).map((m) => String(m.media.feedId)));
    const present = (raw: Feeds) => raw.filter((s) => announced.has(String(s.feed)));
    const streams = present(answeredStreams);
    this.roster.add(callId, member);
    this.large.joined(callId, member);
    // Every m-line was made paused: the viewer resumes the videos it chooses.
    this.subscribedNow(member, streams, new Set(streams.map((s) => s.mid)));
    if (update) this.afterAnswer.set(member, { streams: present(update.raw), paused: new Set(update.raw.map((s) => s.mid)) });
    const held = stillHeld.filter((h) => announced.has(String(h.feed)));
    if (held.length) this.held.set(member, new Set(held.map((h) => heldKey(h.feed, h.mid))));
    const audio = streams.filter((s) => s.kind === "audio").map((s) => ({ mid: s.mid, send: true }));
    if (audio.length) void media.configureVideos?.(audio)?.catch((err: unknown) => this.deps.mediaFailed?.("pre-join audio resume", err));
    this.record(member);
    this.roster.broadcast(callId);
    return update ? { update: { sdp: update.sdp, streams: this.withOwners(callId, update.raw) } } : {};
  }

  /** The call ended: its moderation state goes with it. */
  forgetCall(callId: string): void {
    this.moderation.forget(callId);
    this.large.forgetCall(callId);
  }

  async publish(seat: Seat, req: { sdp: string; simulcast: boolean; e2ee: boolean | undefined }): Promise<{ answerSdp: string; feedId: string | number }> {
    admitE2ee(this.deps.requireE2ee, req.e2ee, "publish", this.deps.observeE2ee);
    const callId = seat.session.callId;
    const previous = this.roster.get(callId, seat);
    if (previous?.published) await this.drop(seat, previous);
    const member = await this.memberOf(seat);
    const { answerSdp, streams } = await member.media.publish(req.sdp, {
      simulcast: req.simulcast,
      // Announce the feed only once the SFU has its media: subscribing earlier fails (no such feed).
      onUp: () => {
        if (this.roster.get(callId, seat) !== member) return;
        member.streams = withSource(streams, member.videoSource);
        this.record(member);
        // A forced mute outlives a republish: block the new streams before announcing them.
        void this.moderation
          .onPublished(member, callId)
          .catch(() => undefined)
          .finally(() => this.roster.broadcast(callId));
      },
    });
    member.published = true;
    this.record(member);
    return { answerSdp, feedId: member.media.feedId };
  }

  /**
   * Subscribes to the requested feeds that are announced now (a member's streams are listed only
   * once the SFU has its media); a feed that is gone (its publisher left or lost its SFU session)
   * is left out, not an error: the answer's streams say what was subscribed, and no offer comes
   * when nothing was. A feed vanishing between this check and the SFU is checked once more.
   */
  async subscribe(seat: Seat, feeds: { feed: string | number; mid?: string | undefined }[], e2ee: boolean | undefined): Promise<{ offerSdp?: string | undefined; streams: Feeds }> {
    admitE2ee(this.deps.requireE2ee, e2ee, "subscribe", this.deps.observeE2ee);
    const member = await this.memberOf(seat);
    const callId = seat.session.callId;
    for (let attempt = 1; ; attempt++) {
      const announced = new Set(this.announced(callId).map((m) => String(m.media.feedId)));
      const present = feeds.filter((f) => announced.has(String(f.feed)));
      if (present.length === 0) return { streams: [] };
      // The videos a pre-join held back (PreparedMedia), asked for at Join: added paused, each
      // resumed as its viewer chooses once the client has the m-line (its answer), so that the key
      // frame asked with the resume is not forwarded before the client can take it.
      const held = this.held.get(member);
      const asksHeld = held !== undefined && present.every((f) => f.mid !== undefined && held.has(heldKey(f.feed, f.mid)));
      try {
        const before = new Set((this.subscriptions.get(member) ?? []).map((s) => s.mid));
        const { offerSdp, streams } = await member.media.subscribe(present.map((f) => ({ ...f, substream: FIRST_LAYER })), asksHeld ? { paused: true } : undefined);
        // An earlier one's videos not answered yet (a client out of turn) stay paused until chosen.
        const pending = this.takeAfterAnswer(member);
        if (asksHeld) for (const f of present) held.delete(heldKey(f.feed, f.mid!));
        const added = streams.filter((s) => !before.has(s.mid)).map((s) => s.mid);
        const paused = new Set([...(pending?.paused ?? []), ...(asksHeld ? added : [])]);
        if (asksHeld && offerSdp) this.afterAnswer.set(member, { streams, paused });
        else this.subscribedNow(member, streams, paused);
        return { offerSdp, streams: this.withOwners(seat, streams) };
      } catch (err) {
        if (attempt >= 2 || !(err instanceof ParleyError && err.errcode === "M_NOT_FOUND")) throw err;
      }
    }
  }

  async unsubscribe(seat: Seat, feeds: (string | number)[]): Promise<{ offerSdp?: string | undefined; streams: Feeds }> {
    this.assertLive(seat);
    // Without an SFU session (none yet, or it was lost) nothing is subscribed: none is opened for this.
    const member = this.roster.get(seat.session.callId, seat);
    if (!member) return { streams: [] };
    const { offerSdp, streams } = await member.media.unsubscribe(feeds);
    // Held videos still waiting for their answer stay paused (the viewer resumes them, as chosen).
    this.subscribedNow(member, streams, this.takeAfterAnswer(member)?.paused);
    return { offerSdp, streams: this.withOwners(seat, streams) };
  }

  async answer(seat: Seat, sdp: string, e2ee: boolean | undefined): Promise<void> {
    admitE2ee(this.deps.requireE2ee, e2ee, "subscribe", this.deps.observeE2ee);
    const member = await this.memberOf(seat);
    await member.media.answer(sdp);
    if (!this.afterAnswer.has(member) || this.roster.get(seat.session.callId, seat) !== member) return;
    const pending = this.takeAfterAnswer(member)!;
    this.subscribedNow(member, pending.streams, pending.paused);
  }

  /** The held videos' subscribe waiting for the client's answer, no longer waiting. */
  private takeAfterAnswer(member: Member<Seat>): { streams: Feeds; paused: Set<string> } | undefined {
    const pending = this.afterAnswer.get(member);
    this.afterAnswer.delete(member);
    return pending;
  }

  async trickle(seat: Seat, target: TrickleTarget, candidate: IceCandidate | null): Promise<void> {
    await (await this.memberOf(seat)).media.trickle(target, candidate);
  }

  async mute(seat: Seat, kind: "audio" | "video", muted: boolean): Promise<void> {
    this.moderation.assertMayUnmute(seat.session.callId, seat.session.userId, kind, muted);
    const member = await this.memberOf(seat);
    await member.media.mute(kind, muted);
    member.muted[kind] = muted;
    this.record(member);
    this.roster.broadcast(seat.session.callId);
  }

  async source(seat: Seat, source: VideoSource): Promise<void> {
    const member = await this.memberOf(seat);
    member.videoSource = source;
    member.streams = withSource(member.streams, source);
    await this.moderation.onSource(member, seat.session.callId, source);
    this.record(member);
    this.roster.broadcast(seat.session.callId);
  }

  /** The viewer's layout: how many videos, pinned feeds, tile heights, downlink (docs/large-meetings.md). */
  async view(seat: Seat, view: ViewRequest): Promise<void> {
    await this.memberOf(seat);
    this.large.view(seat.session.callId, seat, view);
  }

  /** The seat leaves the call's media (a `leave`, or the seat ended): its SFU session is closed. */
  async release(seat: Seat): Promise<void> {
    const member = this.roster.get(seat.session.callId, seat);
    if (member) await this.drop(seat, member);
  }

  private async drop(seat: Seat, member: Member<Seat>): Promise<void> {
    if (this.roster.get(seat.session.callId, seat) === member) {
      this.large.left(seat.session.callId, member);
      this.roster.remove(seat.session.callId, seat);
      this.roster.broadcast(seat.session.callId);
      // The session lives on without an SFU session (it publishes again); an ended one's record goes with it.
      if (this.deps.live(seat)) this.deps.recordMember?.(seat, null);
    }
    await member.media.close();
  }

  /**
   * A member an earlier Parley process had (recorded in the store): its SFU session is adopted
   * and it is in the roster again, under a stand-in seat until its client reattaches (`moved`)
   * or its session ends. False when the SFU no longer has the session (the client renegotiates
   * once it reattaches).
   */
  async adopt(seat: Seat, record: MemberRecord): Promise<boolean> {
    const { callId, userId } = seat.session;
    const room = await this.deps.sfuRoomOf(callId);
    if (!room || !this.deps.sfu.adopt) return false;
    let media: SfuMediaSession | undefined;
    try {
      media = await this.deps.sfu.adopt(room, userId, record.sfu, (reason) => this.lost(callId, media, reason));
    } catch {
      return false;
    }
    const member: Member<Seat> = {
      seat, userId, deviceId: seat.deviceId, client: seat.client, media, streams: record.streams,
      published: record.published, videoSource: record.videoSource, muted: { ...record.muted },
    };
    this.roster.add(callId, member);
    this.large.joined(callId, member, { adopted: true });
    if (record.subscribed.length) this.subscribedNow(member, record.subscribed);
    // The user's forced mutes (restored first) block its streams again: Janus kept them, unless
    // the previous process stopped between recording a mute and asking Janus for it.
    if (record.published) await this.moderation.onPublished(member, callId).catch(() => undefined);
    this.roster.broadcast(callId);
    return true;
  }

  /** The stand-in seat's member now belongs to the client's new seat: same SFU session, nothing renegotiated. */
  moved(from: Seat, to: Seat): boolean {
    const callId = from.session.callId;
    const old = this.roster.get(callId, from);
    if (!old) return false;
    this.roster.remove(callId, from);
    const member: Member<Seat> = { ...old, seat: to, client: to.client, deviceId: to.deviceId || old.deviceId };
    this.roster.add(callId, member);
    this.large.moved(callId, old, member);
    const subscribed = this.subscriptions.get(old);
    if (subscribed) this.subscriptions.set(member, subscribed);
    const held = this.held.get(old);
    if (held) this.held.set(member, held);
    const pending = this.afterAnswer.get(old);
    if (pending) this.afterAnswer.set(member, pending);
    this.record(member);
    this.roster.broadcast(callId);
    return true;
  }

  /** `paused`: m-lines the SFU was told not to forward when they were made (a pre-join's). */
  private subscribedNow(member: Member<Seat>, streams: MemberRecord["subscribed"], paused?: ReadonlySet<string>): void {
    this.subscriptions.set(member, streams.map((s) => ({ mid: s.mid, kind: s.kind, feed: s.feed })));
    this.large.subscribed(member.seat.session.callId, member.seat, streams, paused);
    this.record(member);
  }

  /** Writes what a restarted Parley needs of the member (while it holds its seat's session). */
  private record(member: Member<Seat>): void {
    const recordMember = this.deps.recordMember;
    if (!recordMember || this.roster.get(member.seat.session.callId, member.seat) !== member) return;
    const sfu = member.media.snapshot?.();
    if (!sfu) return;
    recordMember(member.seat, {
      sfu, streams: member.streams, published: member.published, videoSource: member.videoSource, muted: { ...member.muted },
      subscribed: this.subscriptions.get(member) ?? [],
    });
  }

  /**
   * The SFU lost a member's session (e.g. Janus restarted; the SFU tells only once the room exists
   * again), whichever seat holds it now: forget it, so the client's next publish/subscribe (after
   * `renegotiate`) opens a fresh one in the recreated room. A session no member holds any more
   * (the client already started over on another) is only closed: nothing to tell anyone.
   */
  private lost(callId: string, media: SfuMediaSession | undefined, reason: string): void {
    // Lost before the SFU's answer reached here: the caller's first request on it fails instead.
    if (!media) return;
    const member = this.roster.members(callId).find((m) => m.media === media);
    if (!member) return void media.close().catch(() => undefined);
    void this.drop(member.seat, member).catch(() => undefined);
    // A restart loses every session of the node at once: the client hears after all of them were
    // dropped, with a participant list holding none of their dead feeds (it would subscribe to
    // those again otherwise).
    queueMicrotask(() => {
      member.client.push({ type: "participants", participants: this.roster.participants(callId) });
      member.client.push({ type: "renegotiate", reason });
    });
  }

  /** Every request of a seat checks this first: its session is live and still held by it. */
  assertLive(seat: Seat): void {
    if (!this.deps.live(seat)) throw new ParleyError("M_FORBIDDEN", "this session has ended or moved to another connection");
  }

  /** The seat's member entry, opening its SFU session on first use (once, however many ask). */
  private async memberOf(seat: Seat): Promise<Member<Seat>> {
    this.assertLive(seat);
    const existing = this.roster.get(seat.session.callId, seat);
    if (existing) return existing;
    return this.opening.run(seat, () => this.open(seat));
  }

  private async open(seat: Seat): Promise<Member<Seat>> {
    const { callId, userId } = seat.session;
    const room = await this.deps.sfuRoomOf(callId);
    if (!room) throw new ParleyError("M_NOT_FOUND", "the call has no media room; join again");
    // The SFU lost this session (e.g. Janus restarted): see lost().
    const opened: { media?: SfuMediaSession } = {};
    const media = await this.deps.sfu.open(room, userId, (reason) => this.lost(callId, opened.media, reason));
    opened.media = media;
    if (!this.deps.live(seat)) {
      // The seat ended while the SFU was answering: release what was just opened.
      await media.close();
      throw new ParleyError("M_FORBIDDEN", "this session has ended or moved to another connection");
    }
    const member = newMember(seat, media);
    this.roster.add(callId, member);
    this.large.joined(callId, member);
    this.record(member);
    // Everyone sees the newcomer (no streams yet); the newcomer sees everyone it may subscribe to.
    this.roster.broadcast(callId);
    // ...and will ask for every one of them: the SFU makes that subscription's offer meanwhile
    // (docs/join.md, "The subscription made at hello"). Nothing flows before the client answers it.
    const feeds = this.announced(callId).filter((m) => m !== member);
    if (feeds.length) media.prepareSubscription?.(feeds.map((m) => ({ feed: m.media.feedId, substream: FIRST_LAYER })));
    return member;
  }

  /** The call's members whose streams are announced (the SFU has their media): what may be subscribed to. */
  private announced(callId: string): Member<Seat>[] {
    return this.roster.members(callId).filter((m) => m.streams.length > 0);
  }

  private withOwners(seat: Seat | string, streams: Feeds) {
    const callId = typeof seat === "string" ? seat : seat.session.callId;
    return streams.map((s) => ({ ...s, ...this.roster.ownerOfFeed(callId, s.feed) }));
  }
}

/** A seat's member as it enters the roster with its SFU session: nothing published, nothing muted. */
function newMember(seat: Seat, media: SfuMediaSession): Member<Seat> {
  return {
    seat, userId: seat.session.userId, deviceId: seat.deviceId, client: seat.client, media, streams: [], published: false, videoSource: "camera", muted: { audio: false, video: false },
  };
}

/** What a pre-join's subscription needs of its call: the E2EE check of its answer, and its m-lines' owners. */
type PreparedDeps = Pick<CallMediaDeps, "requireE2ee" | "observeE2ee"> & { owners: (raw: Feeds) => PreparedMedia["streams"] };

/** A pre-join's subscription until its seat takes it or it is closed (see PreparedMedia). */
class Prepared implements PreparedMedia {
  readonly sessionKey: string;
  readonly offerSdp: string;
  readonly streams: PreparedMedia["streams"];
  readonly held: HeldStream[];
  onUpdate?: PreparedMedia["onUpdate"];
  ice?: IceAtHello;
  /** The m-lines as the SFU gave them, as far as the client answered for them. */
  private answeredStreams: Feeds;
  /** The held videos' renegotiation: under way at the SFU, then its offer until answered. */
  private updating: Promise<void> | undefined;
  private update: { sdp: string; raw: Feeds } | undefined;
  private addedHeld = false;
  private media: SfuMediaSession | undefined;
  private answered = false;
  private gone = false;
  /** A hello came for it (`settled`): no renegotiation starts any more. */
  private seating = false;
  private onLost: ((reason: string) => void) | undefined;
  private readonly offUp: (() => void) | undefined;
  private readonly deps: PreparedDeps;
  private readonly uncount: () => void;

  constructor(
    sessionKey: string,
    media: SfuMediaSession,
    offer: { sdp: string; raw: Feeds; held: HeldStream[] },
    deps: PreparedDeps,
    uncount: () => void,
  ) {
    this.sessionKey = sessionKey;
    this.media = media;
    this.offerSdp = offer.sdp;
    this.answeredStreams = offer.raw;
    this.streams = deps.owners(offer.raw);
    this.held = offer.held;
    this.deps = deps;
    this.uncount = uncount;
    // Janus tells the connection up after its setup_media asked the subscription's video
    // publishers for key frames (none: the videos are held), so they are added then.
    if (offer.held.length) this.offUp = media.onSubscriberUp?.(() => this.addHeld());
  }

  /** Answered, and neither closed, lost nor handed over. */
  get usable(): boolean {
    return this.answered && !this.gone && this.media !== undefined;
  }

  /** What the seat takes over: the m-lines answered for, the held videos' offer not answered, the videos still held. */
  state(): { answered: Feeds; update: { sdp: string; raw: Feeds } | undefined; held: HeldStream[] } {
    return { answered: this.answeredStreams, update: this.update, held: this.addedHeld ? [] : this.held };
  }

  async answer(sdp: string, e2ee: boolean | undefined): Promise<void> {
    admitE2ee(this.deps.requireE2ee, e2ee, "subscribe", this.deps.observeE2ee);
    const media = this.media;
    if (!media || this.gone) throw new ParleyError("M_NOT_FOUND", "the prepared subscription is gone; subscribe once seated");
    if (!this.answered) {
      await media.answer(sdp);
      this.answered = true;
      return;
    }
    // The held videos' offer (once): its answer, like a subscribe's.
    const update = this.update;
    if (!update) throw new ParleyError("M_INVALID_PARAM", "the prepared subscription is answered already");
    this.update = undefined;
    try {
      await media.answer(sdp);
    } catch (err) {
      this.update = update; // (still to answer: a hello waiting for this hands it to the call)
      throw err;
    }
    this.answeredStreams = update.raw;
  }

  async trickle(candidate: IceCandidate | null): Promise<void> {
    const media = this.media;
    if (!media || this.gone) throw new ParleyError("M_NOT_FOUND", "the prepared subscription is gone; subscribe once seated");
    await media.trickle("subscriber", candidate);
  }

  async settled(answering: Promise<unknown> | undefined): Promise<boolean> {
    this.seating = true;
    if (answering) await answering.catch(() => undefined);
    if (this.updating) await this.updating;
    return this.usable;
  }

  /**
   * The connection is up: the held videos are added, paused (no key frame asked), and their
   * offer goes to `onUpdate`. Not once a hello came for it (the seat's first subscribe adds
   * them); one that fails leaves them held.
   */
  private addHeld(): void {
    if (!this.answered) return; // (an up before the answer: not this subscription's connection)
    this.offUp?.();
    const media = this.media;
    if (this.updating || !media || this.gone || this.seating) return;
    this.updating = (async () => {
      const { offerSdp, streams } = await media.subscribe(this.held.map((h) => ({ ...h, substream: FIRST_LAYER })), { paused: true });
      this.addedHeld = true;
      if (!offerSdp) return;
      this.update = { sdp: offerSdp, raw: streams };
      this.onUpdate?.({ sdp: offerSdp, streams: this.deps.owners(streams) });
    })().catch(() => undefined);
  }

  /** The SFU lost the session: before the hand-over it is only closed; after, the seat's (`onLost`). */
  lost(reason: string): void {
    if (this.onLost) return this.onLost(reason);
    void this.close();
  }

  /** The SFU session is the seat's from now on (its loss told to `onLost`); closing this no longer closes it. */
  handOver(onLost: (reason: string) => void): SfuMediaSession {
    const media = this.media!;
    this.offUp?.();
    this.media = undefined;
    this.onLost = onLost;
    this.uncount();
    return media;
  }

  async close(): Promise<void> {
    if (this.gone) return;
    this.gone = true;
    this.offUp?.();
    const media = this.media;
    this.media = undefined;
    this.uncount();
    await media?.close().catch(() => undefined);
  }
}
