// Large meetings, per call (docs/large-meetings.md): the speaker order fed by the SFU's talking
// events and pushed to everyone (`speakers`, coalesced), each viewer's last-N videos and layers
// (calls/viewers.ts), and the publishers' bitrate cap once the call is large. CallMedia tells it
// what happens (a seat's media opened, subscribed, left; a view; any roster change); a call's
// entry, timers and all, goes with its last member.
import type { CallPush, Member } from "./callRoster.ts";
import { LargeCallBitrate, type LargeCallConfig } from "./largeCall.ts";
import type { FeedId, VideoCandidate } from "./lastN.ts";
import type { Clock, SfuMediaSession } from "./ports.ts";
import { Coalescer, SpeakerOrder, type Timers } from "./speakers.ts";
import { CallViewers, type ViewRequest } from "./viewers.ts";

export interface LargeMeetingsConfig {
  /** Videos per viewer at most (the `view` asks for fewer). */
  lastN: number;
  layerKbps: readonly [number, number, number];
  keyframeIntervalMs: number;
  speakerHoldMs: number;
  speakerGapMs: number;
  speakersPushIntervalMs: number;
  recentMax: number;
  largeCall: LargeCallConfig;
}

export const LARGE_MEETINGS_DEFAULTS: LargeMeetingsConfig = {
  lastN: 9,
  layerKbps: [150, 500, 1500],
  keyframeIntervalMs: 1000,
  speakerHoldMs: 1500,
  speakerGapMs: 600,
  speakersPushIntervalMs: 300,
  recentMax: 50,
  largeCall: { from: 10, publisherBitrate: 700_000, liftedBitrate: 2_500_000 },
};

export interface LargeMeetingsDeps<S> {
  clock: Clock;
  timers: Timers;
  /** The call's members, in join order. */
  members(callId: string): Member<S>[];
  /** A moderator's forced mutes of a user. */
  forced(callId: string, userId: string): { audio: boolean; video: boolean };
  /** Something the SFU refused while applying a choice (logged by the caller). */
  failed(what: string, err: unknown): void;
}

interface CallEntry<S> {
  speakers: SpeakerOrder;
  push: Coalescer;
  viewers: CallViewers<S>;
  /** Member -> the unsubscribe of its SFU events (talking, forwarded layers). */
  listening: Map<S, () => void>;
  lastSpeakers: string;
}

const feedOf = (m: { media: Pick<SfuMediaSession, "feedId"> }): FeedId => String(m.media.feedId);

export class LargeMeetings<S> {
  private readonly calls = new Map<string, CallEntry<S>>();
  private readonly bitrate: LargeCallBitrate;
  private readonly cfg: LargeMeetingsConfig;
  private readonly deps: LargeMeetingsDeps<S>;

  constructor(cfg: LargeMeetingsConfig, deps: LargeMeetingsDeps<S>) {
    this.cfg = cfg;
    this.deps = deps;
    this.bitrate = new LargeCallBitrate(cfg.largeCall, (err) => deps.failed("bitrate", err));
  }

  /** A seat's SFU session opened (or was `adopted` from a previous process): it is a viewer now, and its talking events count. */
  joined(callId: string, member: Member<S>, opts: { adopted?: boolean } = {}): void {
    const call = this.call(callId);
    call.viewers.add(member.seat, this.viewerOf(member), opts);
    this.listen(callId, member);
    // A newcomer learns the speakers so far at once, not at the next change.
    const { talking, recent } = call.speakers.snapshot();
    if (talking.length || recent.length) member.client.push({ type: "speakers", talking, recent });
  }

  /**
   * A member's seat changed (its client reattached after a Parley restart): the viewer keeps
   * what it receives and at which layer (nothing is re-applied), its feed stays the speaker's.
   */
  moved(callId: string, from: Member<S>, to: Member<S>): void {
    const call = this.call(callId);
    call.listening.get(from.seat)?.();
    call.listening.delete(from.seat);
    call.viewers.rekey(from.seat, to.seat, this.viewerOf(to));
    this.listen(callId, to);
  }

  private viewerOf(member: Member<S>) {
    return {
      self: () => (member.published ? feedOf(member) : undefined),
      configure: (changes: Parameters<NonNullable<Member<S>["media"]["configureVideos"]>>[0]) => member.media.configureVideos?.(changes) ?? Promise.resolve(),
      push: (p: CallPush) => member.client.push(p),
    };
  }

  /** The member's talking events feed the speaker order; its subscription's layer reports, its viewer. */
  private listen(callId: string, member: Member<S>): void {
    const call = this.call(callId);
    const offTalking = member.media.onTalking?.((talking) => {
      if (talking && this.audioMuted(callId, member)) return;
      if (talking) call.speakers.talking(feedOf(member));
      else call.speakers.stopped(feedOf(member));
    });
    const offLayer = member.media.onLayer?.((mid, layer) => call.viewers.forwarded(member.seat, mid, layer));
    call.listening.set(member.seat, () => {
      offTalking?.();
      offLayer?.();
    });
  }

  /** The seat's whole subscription now. */
  subscribed(callId: string, seat: S, streams: readonly { mid: string; feed: string | number; kind: "audio" | "video" }[], paused?: ReadonlySet<string>): void {
    this.calls.get(callId)?.viewers.subscribed(seat, streams.map((s) => ({ mid: s.mid, feed: String(s.feed), kind: s.kind })), paused);
  }

  view(callId: string, seat: S, view: ViewRequest): void {
    this.calls.get(callId)?.viewers.view(seat, view);
  }

  /** The seat's SFU session closed. */
  left(callId: string, member: Member<S>): void {
    const call = this.calls.get(callId);
    if (!call) return;
    call.listening.get(member.seat)?.();
    call.listening.delete(member.seat);
    call.viewers.remove(member.seat);
    call.speakers.remove(feedOf(member));
    call.viewers.forgetFeed(feedOf(member));
    if (call.viewers.size === 0) this.forgetCall(callId);
  }

  /** Anything in the roster changed (publish, leave, mutes, screen share): re-choose, re-cap. */
  rosterChanged(callId: string): void {
    const call = this.calls.get(callId);
    if (!call) return;
    const members = this.deps.members(callId);
    // Janus stops its talk detection for a muted stream without a stopped-talking, keeping its
    // state: Parley stops a muted feed, and one unmuted that Janus still holds as talking talks
    // again (Janus says nothing when it comes back as loud: docs/large-meetings.md).
    for (const m of members) {
      if (this.audioMuted(callId, m)) call.speakers.silenced(feedOf(m));
      else if (m.media.talkingNow?.()) call.speakers.talking(feedOf(m));
    }
    call.viewers.invalidate();
    this.bitrate.apply(
      members.map((m) => ({ key: m.media, published: m.published, setBitrate: (b: number) => m.media.setBitrate?.(b) ?? Promise.resolve() })),
      members.length,
    );
  }

  forgetCall(callId: string): void {
    const call = this.calls.get(callId);
    if (!call) return;
    this.calls.delete(callId);
    call.speakers.close();
    call.push.close();
    call.viewers.close();
    for (const off of call.listening.values()) off();
  }

  /** Calls at or past the large-call size now (metrics). */
  largeCalls(): number {
    let n = 0;
    for (const callId of this.calls.keys()) if (this.deps.members(callId).length >= this.cfg.largeCall.from) n++;
    return n;
  }

  /** Calls with state (tests: a closed call leaves none). */
  size(): number {
    return this.calls.size;
  }

  private audioMuted(callId: string, m: Member<S>): boolean {
    return m.muted.audio || this.deps.forced(callId, m.userId).audio;
  }

  private call(callId: string): CallEntry<S> {
    const existing = this.calls.get(callId);
    if (existing) return existing;
    const { clock, timers } = this.deps;
    const entry: CallEntry<S> = {
      speakers: new SpeakerOrder({ holdMs: this.cfg.speakerHoldMs, gapMs: this.cfg.speakerGapMs, recentMax: this.cfg.recentMax }, { clock, timers }, (what) => {
        entry.push.poke();
        if (what === "order") entry.viewers.invalidate();
      }),
      push: new Coalescer(this.cfg.speakersPushIntervalMs, { clock, timers }, () => this.pushSpeakers(callId, entry)),
      viewers: new CallViewers<S>(
        { lastN: this.cfg.lastN, layerKbps: this.cfg.layerKbps, keyframeIntervalMs: this.cfg.keyframeIntervalMs },
        {
          clock,
          timers,
          candidates: () => this.candidates(callId),
          speakers: () => entry.speakers.snapshot(),
          failed: (err) => this.deps.failed("configure", err),
        },
      ),
      listening: new Map(),
      lastSpeakers: "",
    };
    this.calls.set(callId, entry);
    return entry;
  }

  private candidates(callId: string): VideoCandidate[] {
    return this.deps.members(callId).flatMap((m) =>
      m.streams.some((s) => s.kind === "video")
        ? [{ feed: feedOf(m), videoMuted: m.muted.video || this.deps.forced(callId, m.userId).video, screen: m.videoSource === "screen" }]
        : [],
    );
  }

  private pushSpeakers(callId: string, entry: CallEntry<S>): void {
    const { talking, recent } = entry.speakers.snapshot();
    const push: CallPush = { type: "speakers", talking, recent };
    const text = JSON.stringify(push);
    if (text === entry.lastSpeakers) return;
    entry.lastSpeakers = text;
    for (const m of this.deps.members(callId)) m.client.push(push);
  }
}
