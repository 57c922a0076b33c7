// What moderators do to media, enforced at the SFU (docs/governance.md): a forced mute blocks the
// stream in Janus (`moderate`), whatever the client sends, until a moderator allows it again; the
// client is told, and its own unmute of that source is refused. A stopped screen share is blocked
// the same way until the client shows its camera again. Forced mutes belong to the user in the
// call: every seat of theirs, and every later publish (a reconnect), gets them. Raised hands and
// reactions live here too. Permission checks are the caller's (governance.ts).
//
// Forced mutes, stopped shares and raised hands outlive a Parley restart (docs/resilience.md):
// each change is recorded (per call and user, in the order made), read back by the next process
// before its seats are restored, and forgotten with the call. Janus keeps its `moderate` blocks
// across the restart; without the record the next process would let the muted unmute themselves
// (their client, told nothing forced, asks), and leave a reconnect's new streams unblocked.
import { ParleyError } from "../errors.ts";
import type { ModerationRecord } from "../store/store.ts";
import type { CallPush, CallRoster, Member } from "./callRoster.ts";
import { InOrder } from "./inOrder.ts";
import { TokenBucket, type RateLimit } from "./rateLimit.ts";
import type { Clock } from "./ports.ts";

export type Kind = "audio" | "video";

/** Reactions a client may send (anything else is refused). */
export const REACTIONS = ["👍", "👏", "😂", "❤️", "🎉", "😮", "🤔", "🙏"] as const;

export interface ModerationConfig {
  /** Reactions per user per call (sustained per minute, and at once). */
  reactions: RateLimit;
}

/** Where moderation is recorded for a restarted Parley (the store); its failures are reported, not thrown. */
export interface ModerationRecorder {
  save(record: ModerationRecord): Promise<void>;
  forget(callId: string): Promise<void>;
  failed?(err: unknown): void;
}

interface CallState {
  forced: Map<string, { audio: boolean; video: boolean }>;
  /** Who forced each mute ("user|kind" -> moderator), told again to a reconnecting seat. */
  forcedBy: Map<string, string>;
  hands: Map<string, number>;
  /** Users whose screen share a moderator stopped (blocked until they show the camera). */
  shareStopped: Set<string>;
  reactionBuckets: Map<string, TokenBucket>;
}

export class Moderation<S> {
  private readonly calls = new Map<string, CallState>();
  private readonly roster: () => CallRoster<S>;
  private readonly clock: Clock;
  private readonly cfg: ModerationConfig;

  private readonly recorder: ModerationRecorder | undefined;
  /** Records per call, in the order the changes were made. */
  private readonly recording = new InOrder<string>();

  constructor(cfg: ModerationConfig, deps: { roster: () => CallRoster<S>; clock: Clock; recorder?: ModerationRecorder | undefined }) {
    this.cfg = cfg;
    this.roster = deps.roster;
    this.clock = deps.clock;
    this.recorder = deps.recorder;
  }

  /** Records the user's moderation in the call as it is now (nothing left in it: the row goes). */
  private record(callId: string, userId: string): void {
    const recorder = this.recorder;
    if (!recorder) return;
    const s = this.calls.get(callId);
    const forced = s?.forced.get(userId);
    const record: ModerationRecord = {
      callId,
      userId,
      forcedAudioBy: forced?.audio ? (s?.forcedBy.get(`${userId}|audio`) ?? "") : null,
      forcedVideoBy: forced?.video ? (s?.forcedBy.get(`${userId}|video`) ?? "") : null,
      shareStopped: s?.shareStopped.has(userId) ?? false,
      handAt: s?.hands.get(userId) ?? null,
      updatedAt: this.clock.now(),
    };
    void this.recording.run(callId, () => recorder.save(record)).catch((err: unknown) => recorder.failed?.(err));
  }

  /**
   * What an earlier process recorded (docs/resilience.md), before its seats are restored: forced
   * mutes (and by whom), stopped shares and raised hands hold again.
   */
  restore(records: readonly ModerationRecord[]): void {
    for (const r of records) {
      const s = this.state(r.callId);
      if (r.forcedAudioBy !== null || r.forcedVideoBy !== null) s.forced.set(r.userId, { audio: r.forcedAudioBy !== null, video: r.forcedVideoBy !== null });
      if (r.forcedAudioBy !== null) s.forcedBy.set(`${r.userId}|audio`, r.forcedAudioBy);
      if (r.forcedVideoBy !== null) s.forcedBy.set(`${r.userId}|video`, r.forcedVideoBy);
      if (r.shareStopped) s.shareStopped.add(r.userId);
      if (r.handAt !== null) s.hands.set(r.userId, r.handAt);
    }
  }

  private state(callId: string): CallState {
    let s = this.calls.get(callId);
    if (!s) this.calls.set(callId, (s = { forced: new Map(), forcedBy: new Map(), hands: new Map(), shareStopped: new Set(), reactionBuckets: new Map() }));
    return s;
  }

  forcedOf(callId: string, userId: string): { audio: boolean; video: boolean } {
    return { ...(this.calls.get(callId)?.forced.get(userId) ?? { audio: false, video: false }) };
  }

  handOf(callId: string, userId: string): number | null {
    return this.calls.get(callId)?.hands.get(userId) ?? null;
  }

  /** A moderator mutes (or allows again) a user's `kind` in the call. Returns the seats reached. */
  async setForced(callId: string, userId: string, kind: Kind, muted: boolean, by: string): Promise<number> {
    const s = this.state(callId);
    const forced = { ...this.forcedOf(callId, userId), [kind]: muted };
    if (forced.audio || forced.video) s.forced.set(userId, forced);
    else s.forced.delete(userId);
    if (muted) s.forcedBy.set(`${userId}|${kind}`, by);
    else s.forcedBy.delete(`${userId}|${kind}`);
    this.record(callId, userId);
    const members = this.roster().membersOf(callId, userId);
    for (const m of members) {
      // A stopped share keeps the video blocked even when a forced video mute is lifted.
      const block = muted || (kind === "video" && s.shareStopped.has(userId));
      await m.media.moderate(kind, block);
      if (muted) m.muted[kind] = true;
      m.client.push({ type: "moderated", kind, muted, by });
    }
    this.roster().broadcast(callId);
    return members.length;
  }

  /** A new seat of a user (a reconnect) is told the forced mutes that still hold, and by whom. */
  replay(callId: string, userId: string, push: (p: CallPush) => void): void {
    const s = this.calls.get(callId);
    const forced = s?.forced.get(userId);
    if (!s || !forced) return;
    for (const kind of ["audio", "video"] as const) {
      if (forced[kind]) push({ type: "moderated", kind, muted: true, by: s.forcedBy.get(`${userId}|${kind}`) ?? "" });
    }
  }

  /** Users in the call (mute all). */
  usersInCall(callId: string): string[] {
    return [...new Set(this.roster().members(callId).map((m) => m.userId))];
  }

  /** A moderator stops a user's screen share: the video is blocked until they switch to the camera. */
  async stopShare(callId: string, userId: string, by: string): Promise<number> {
    const sharing = this.roster().membersOf(callId, userId).filter((m) => m.videoSource === "screen");
    if (sharing.length === 0) return 0;
    this.state(callId).shareStopped.add(userId);
    this.record(callId, userId);
    for (const m of sharing) {
      await m.media.moderate("video", true);
      m.client.push({ type: "stop_share", by });
    }
    return sharing.length;
  }

  /** A client's own mute request: unmuting a forced-muted source is refused. */
  assertMayUnmute(callId: string, userId: string, kind: Kind, muted: boolean): void {
    if (!muted && this.forcedOf(callId, userId)[kind]) {
      throw new ParleyError("M_FORBIDDEN", `your ${kind === "audio" ? "microphone" : "camera"} was muted by a moderator; ask them to allow it`);
    }
  }

  /** A client switched what its video shows: back on the camera after a stopped share, the block goes. */
  async onSource(member: Member<S>, callId: string, source: "camera" | "screen"): Promise<void> {
    const s = this.calls.get(callId);
    if (!s?.shareStopped.has(member.userId)) return;
    if (source === "screen") return void (await member.media.moderate("video", true));
    s.shareStopped.delete(member.userId);
    this.record(callId, member.userId);
    if (!this.forcedOf(callId, member.userId).video) await member.media.moderate("video", false);
  }

  /** A member's publisher is up (a new publish, a reconnect): the user's blocks apply to it too. */
  async onPublished(member: Member<S>, callId: string): Promise<void> {
    const forced = this.forcedOf(callId, member.userId);
    const stopped = this.calls.get(callId)?.shareStopped.has(member.userId) ?? false;
    if (forced.audio) await member.media.moderate("audio", true);
    if (forced.video || (stopped && member.videoSource === "screen")) await member.media.moderate("video", true);
    if (forced.audio) member.muted.audio = true;
    if (forced.video) member.muted.video = true;
  }

  raiseHand(callId: string, userId: string, raised: boolean): void {
    const hands = this.state(callId).hands;
    if (raised) hands.set(userId, hands.get(userId) ?? this.clock.now());
    else hands.delete(userId);
    this.record(callId, userId);
    this.roster().broadcast(callId);
  }

  react(callId: string, userId: string, emoji: string): void {
    if (!(REACTIONS as readonly string[]).includes(emoji)) throw new ParleyError("M_INVALID_PARAM", `reactions are one of ${REACTIONS.join(" ")}`);
    const buckets = this.state(callId).reactionBuckets;
    let bucket = buckets.get(userId);
    if (!bucket) buckets.set(userId, (bucket = new TokenBucket(this.cfg.reactions, this.clock)));
    if (bucket.take() > 0) throw new ParleyError("M_LIMIT_EXCEEDED", `at most ${this.cfg.reactions.burst} reactions at once, ${this.cfg.reactions.perMinute} a minute`);
    for (const m of this.roster().members(callId)) m.client.push({ type: "reaction", user_id: userId, emoji });
  }

  /** The call ended: nothing of it stays. */
  forget(callId: string): void {
    // A call with no moderation has no rows either (rows are written from, and restored into, this state).
    const had = this.calls.delete(callId);
    const recorder = this.recorder;
    if (had && recorder) void this.recording.run(callId, () => recorder.forget(callId)).catch((err: unknown) => recorder.failed?.(err));
  }

  /** Calls with moderation state (tests: a closed call leaves none). */
  size(): number {
    return this.calls.size;
  }
}
