// Who is in each call, by seat (one signalling socket's place in a call): the participant list
// (who publishes which streams, who is muted) is Parley's own record, pushed to every seat of
// the call on each change. A call's entry goes when its last member leaves.
import type { MediaStreamInfo, SfuMediaSession } from "./ports.ts";

export type VideoSource = "camera" | "screen";

export interface Participant {
  user_id: string;
  device_id: string;
  feed_id: string | number;
  streams: { mid: string; kind: "audio" | "video"; type?: VideoSource }[];
  muted: { audio: boolean; video: boolean };
  /** Meeting governance (docs/governance.md): the user's role, raised hand (since, ms), forced mutes. */
  role?: "host" | "cohost" | "participant";
  hand?: number | null;
  forced?: { audio: boolean; video: boolean };
}

/** What governance adds to a participant's entry. */
export type Annotate<S> = (callId: string, member: Member<S>) => Pick<Participant, "role" | "hand" | "forced">;

/** What the call pushes to a seat's client (governance pushes: docs/governance.md). */
export type CallPush =
  | { type: "participants"; participants: Participant[] }
  | { type: "renegotiate"; reason: string }
  | { type: "moderated"; kind: "audio" | "video"; muted: boolean; by: string }
  | { type: "stop_share"; by: string }
  | { type: "reaction"; user_id: string; emoji: string }
  | { type: "meeting"; [k: string]: unknown }
  | { type: "lobby"; waiting: unknown[] }
  // Large meetings (docs/large-meetings.md): who talks, and which videos this viewer receives.
  | { type: "speakers"; talking: string[]; recent: string[] }
  | { type: "videos"; videos: { feed: string; layer: 0 | 1 | 2 }[] }
  // A device in the pre-join (its session granted ahead, its keys up): send it the media key now.
  | { type: "arriving"; user_id: string; device_id: string }
  // A user let in from the lobby (invited after their knock), told at once: each device sends
  // their devices its media key once its own homeserver confirms the invite (keyShare.ts).
  | { type: "let_in"; user_id: string };

export interface CallClient {
  push(event: CallPush): void;
}

export interface Member<S> {
  seat: S;
  userId: string;
  deviceId: string;
  client: CallClient;
  media: SfuMediaSession;
  /** Streams announced to the others (set once the SFU has the media). */
  streams: Participant["streams"];
  /** Whether this seat has published on its current SFU session. */
  published: boolean;
  /** What the published video shows. */
  videoSource: VideoSource;
  muted: { audio: boolean; video: boolean };
}

export class CallRoster<S> {
  private readonly calls = new Map<string, Map<S, Member<S>>>();
  private readonly annotate: Annotate<S> | undefined;
  /** Told after every broadcast (any change of the participant list). */
  private readonly changed: ((callId: string) => void) | undefined;

  constructor(annotate?: Annotate<S>, changed?: (callId: string) => void) {
    this.annotate = annotate;
    this.changed = changed;
  }

  /** The members of a call (every seat with an SFU session). */
  members(callId: string): Member<S>[] {
    return [...(this.calls.get(callId)?.values() ?? [])];
  }

  /** Members of a call who are this user (one per seat). */
  membersOf(callId: string, userId: string): Member<S>[] {
    return this.members(callId).filter((m) => m.userId === userId);
  }

  get(callId: string, seat: S): Member<S> | undefined {
    return this.calls.get(callId)?.get(seat);
  }

  add(callId: string, member: Member<S>): void {
    let members = this.calls.get(callId);
    if (!members) this.calls.set(callId, (members = new Map()));
    members.set(member.seat, member);
  }

  remove(callId: string, seat: S): Member<S> | undefined {
    const members = this.calls.get(callId);
    const member = members?.get(seat);
    members?.delete(seat);
    if (members && members.size === 0) this.calls.delete(callId);
    return member;
  }

  participants(callId: string): Participant[] {
    // Everyone with media in the call, publishing or not yet (streams: []): the participant list
    // shows them all (hands, roles); clients make tiles and subscriptions from those with streams.
    return [...(this.calls.get(callId)?.values() ?? [])]
      .map((m) => ({
        user_id: m.userId, device_id: m.deviceId, feed_id: m.media.feedId, streams: m.streams, muted: { ...m.muted },
        ...this.annotate?.(callId, m),
      }));
  }

  ownerOfFeed(callId: string, feed: string | number): { user_id: string; device_id: string } {
    for (const m of this.calls.get(callId)?.values() ?? []) {
      if (String(m.media.feedId) === String(feed)) return { user_id: m.userId, device_id: m.deviceId };
    }
    return { user_id: "", device_id: "" };
  }

  broadcast(callId: string): void {
    const participants = this.participants(callId);
    for (const m of this.calls.get(callId)?.values() ?? []) m.client.push({ type: "participants", participants });
    this.changed?.(callId);
  }

  /** Every call with members. */
  callIds(): string[] {
    return [...this.calls.keys()];
  }

  /** Calls with at least one member. */
  size(): number {
    return this.calls.size;
  }
}

/** Labels the video streams with what they show (camera or screen). */
export function withSource(streams: (MediaStreamInfo & { type?: VideoSource })[], source: VideoSource): Participant["streams"] {
  return streams.map((s) => (s.kind === "video" ? { ...s, type: source } : s));
}
