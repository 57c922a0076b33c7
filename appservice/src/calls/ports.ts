// The seams the domain talks through. Implementations live in matrix/ (homeserver) and
// store/ (persistence); unit tests give fakes.
import type { SfuRoomRecord } from "../store/store.ts";
import type { ServerAclContent } from "./policy.ts";

export interface MeetingRoomSpec {
  /** Full alias, "#meet-team:example.org". */
  alias: string;
  /** Alias localpart without '#' and domain, "meet-team". */
  aliasLocalpart: string;
  name: string;
  joinRule: "public" | "knock" | "invite";
  encrypted: boolean;
  /** Power levels a co-host needs for moderation (invite, kick, ban, org.parley.moderate). */
  moderatorLevel: number;
  /** Tchap's im.vector.room.access_rules: "unrestricted" when external users may come in. */
  accessRule?: "restricted" | "unrestricted" | undefined;
  serverAcl: ServerAclContent;
  /** Content of the org.parley.call state event. */
  callInfo: Record<string, unknown>;
}

export interface Notice {
  text: string;
  html?: string;
}

export interface WidgetSpec {
  widgetId: string;
  url: string;
  name: string;
  data: Record<string, unknown>;
}

export class RoomAliasInUseError extends Error {
  constructor(alias: string) {
    super(`alias ${alias} is already in use`);
    this.name = "RoomAliasInUseError";
  }
}

/** The homeserver gave no answer, or failed on its side (5xx): it may have acted anyway. */
export class OutcomeUnknownError extends Error {
  constructor(what: string, options?: ErrorOptions) {
    super(`${what}: the homeserver's outcome is unknown`, options);
    this.name = "OutcomeUnknownError";
  }
}

export interface StateEventFacts {
  sender: string;
  content: Record<string, unknown>;
}

/** A member of a room as its m.room.member state says. */
export interface RoomMemberFacts {
  userId: string;
  displayName: string | undefined;
  avatarUrl: string | undefined;
  /** The knock's (or leave's) reason, when given. */
  reason: string | undefined;
  /** When the membership event was sent (ms). */
  since: number;
}

export type MembershipAct = "invite" | "kick" | "ban";

/**
 * The profile an invite's membership carries (`displayname`, `avatar_url`), as the user's own
 * knock stated it. Given, the homeserver does not ask the user's server for it (Synapse: two
 * federation profile queries, one for each it lacks, before the invite can go).
 */
export interface InviteProfile {
  displayName: string;
  avatarUrl?: string | undefined;
}

export interface Homeserver {
  readonly botUserId: string;
  /** Creates a meeting room with its alias; throws RoomAliasInUseError if the alias exists,
   *  OutcomeUnknownError when the room may exist although the call failed. */
  createMeetingRoom(spec: MeetingRoomSpec): Promise<string>;
  resolveAlias(alias: string): Promise<string | undefined>;
  /** Points an existing room's alias at it again (after it was removed from the directory). */
  setAlias(alias: string, roomId: string): Promise<void>;
  /** Removes an alias from the directory (absent already is fine). */
  deleteAlias(alias: string): Promise<void>;
  joinRoom(roomId: string): Promise<void>;
  leaveRoom(roomId: string, reason: string): Promise<void>;
  /** Sends a notice; the same txnId never posts twice. */
  sendNotice(roomId: string, notice: Notice, txnId: string): Promise<void>;
  /** Sends an `org.matrix.dummy_event` (clients show nothing): its prev_events join the room's
   *  forward extremities, so a server that joined concurrently with an event fetches that event.
   *  The same txnId never sends twice. */
  mergeForks(roomId: string, txnId: string): Promise<void>;
  /** Whether the user's (default: the bot's) power level lets them send this state event type
   *  in the room (m.room.power_levels, and the creators of room versions where they are privileged). */
  canSendState(roomId: string, eventType: string, userId?: string): Promise<boolean>;
  /** A state event of the room as the bot sees it; undefined when absent (throws when the bot may not read it). */
  stateEvent(roomId: string, eventType: string, stateKey?: string): Promise<StateEventFacts | undefined>;
  /** Sends a state event as the bot. */
  putState(roomId: string, eventType: string, content: Record<string, unknown>, stateKey?: string): Promise<void>;
  putWidget(roomId: string, widget: WidgetSpec): Promise<void>;
  /** The user's membership in the room as the bot sees it ("join", "leave", "ban", ...). */
  getMembership(roomId: string, userId: string): Promise<string | undefined>;
  removeWidget(roomId: string, widgetId: string): Promise<void>;
  /** The room's members with this membership (the bot must be joined). */
  members(roomId: string, membership: "join" | "knock" | "invite"): Promise<RoomMemberFacts[]>;
  /** Invites, kicks or bans a user as the bot, with a reason (naming who asked for it); an invite with the profile their knock stated, if known. */
  membershipAct(roomId: string, act: MembershipAct, userId: string, reason: string, profile?: InviteProfile): Promise<void>;
}

export interface Clock {
  now(): number;
}

export interface IdSource {
  callId(): string;
  /** An unguessable bearer token (at least 256 bits). */
  sessionToken(): string;
}

/** Checks a Matrix OpenID token against the user's own homeserver. */
export interface OpenIdVerifier {
  verify(token: string, claimedServerName: string): Promise<{ userId: string }>;
}

/** The SFU as the call layer needs it: one room per active call. */
export interface SfuRooms {
  createRoom(callId: string): Promise<SfuRoomRecord>;
  destroyRoom(room: SfuRoomRecord): Promise<void>;
  /** Whether the room still exists on its node (a restarted node has lost it). */
  roomExists(room: SfuRoomRecord): Promise<boolean>;
}

export type TrickleTarget = "publisher" | "subscriber";
export interface IceCandidate {
  candidate: string;
  sdpMid?: string | null | undefined;
  sdpMLineIndex?: number | null | undefined;
}

export interface MediaStreamInfo {
  mid: string;
  kind: "audio" | "video";
}

/** One participant's media on the SFU: a publisher and one multistream subscriber. */
/**
 * What a restarted Parley needs to take over a participant's SFU session, which outlives the
 * process (docs/resilience.md): recorded in the store, JSON as it is.
 */
export interface SfuMediaSnapshot {
  /** The SFU's session id. */
  session: number;
  feedId: string;
  publisher?: { handle: number; privateId: number; streams: MediaStreamInfo[] } | undefined;
  subscriber?: { handle: number } | undefined;
}

export interface SfuMediaSession {
  /** The participant's id in the SFU room (its feed, once it publishes). */
  readonly feedId: string | number;
  /** What to record for a restarted Parley to adopt this session (absent: it cannot be adopted). */
  snapshot?(): SfuMediaSnapshot;
  /** Publishes; `onUp` fires once the SFU has the publisher's media (others may subscribe then). */
  publish(
    offerSdp: string,
    opts: { simulcast: boolean; onUp: () => void },
  ): Promise<{ answerSdp: string; streams: MediaStreamInfo[] }>;
  /** No offer when nothing changed (every feed was subscribed already). `substream`: the simulcast
   *  layer a new video m-line starts on (absent: the SFU's default, the highest). `paused`: every
   *  new m-line is made not to forward before the offer is returned, so nothing flows on it once
   *  answered until `configureVideos` resumes it (a pre-join's, and the videos it held back: docs/join.md). */
  subscribe(
    feeds: { feed: string | number; mid?: string | undefined; substream?: 0 | 1 | 2 | undefined }[],
    opts?: { paused?: boolean },
  ): Promise<{ offerSdp?: string | undefined; streams: (MediaStreamInfo & { feed: string | number })[] }>;
  unsubscribe(feeds: (string | number)[]): Promise<{ offerSdp?: string | undefined; streams: (MediaStreamInfo & { feed: string | number })[] }>;
  /**
   * Makes the subscription to whole `feeds` before anyone asks (the seat's hello): the first
   * `subscribe` asking for exactly these gets its offer without waiting for the SFU; any other
   * first `subscribe` drops it and subscribes as without. Nothing flows before the client answers.
   */
  prepareSubscription?(feeds: { feed: string | number; substream?: 0 | 1 | 2 | undefined }[]): void;
  /** The client's answer to the subscriber offer. */
  answer(answerSdp: string): Promise<void>;
  trickle(target: TrickleTarget, candidate: IceCandidate | null): Promise<void>;
  mute(kind: "audio" | "video", muted: boolean): Promise<void>;
  /** A moderator's block on the published `kind` (the SFU stops forwarding it whatever the client
   *  sends) or its lifting; nothing published yet: nothing to do (the caller re-applies on publish). */
  moderate(kind: "audio" | "video", muted: boolean): Promise<void>;
  /** Leaves the SFU room and frees the handles; safe to call twice. */
  close(): Promise<void>;
  /** Large meetings (docs/large-meetings.md): the SFU's talking / stopped-talking of this participant's audio. */
  onTalking?(listener: (talking: boolean) => void): () => void;
  /**
   * Whether the SFU's talk detection holds this publisher as talking now, its audio arriving. It
   * keeps that state while the stream is muted and says nothing when the stream comes back as
   * loud as it left: an unmuted feed talking again is known by this, not by an event.
   */
  talkingNow?(): boolean;
  /** Pauses, resumes or switches the simulcast layer of subscribed video m-lines, in one request, without renegotiation. */
  configureVideos?(changes: { mid: string; send?: boolean; substream?: 0 | 1 | 2 }[]): Promise<void>;
  /** The simulcast layer the SFU now forwards on a subscribed video m-line (on each switch). */
  onLayer?(listener: (mid: string, layer: 0 | 1 | 2) => void): () => void;
  /**
   * The subscription's connection is up (ICE, DTLS), told after the SFU asked its video
   * publishers for key frames as it does then: an m-line added later is not asked for one.
   */
  onSubscriberUp?(listener: () => void): () => void;
  /** Caps the published bitrate (bit/s) the SFU asks the browser for. */
  setBitrate?(bitsPerSecond: number): Promise<void>;
}

export interface SfuMedia {
  /** Joins the SFU room as `display` (a user id); `onEnded` fires if the SFU drops the session. */
  open(room: SfuRoomRecord, display: string, onEnded: (reason: string) => void): Promise<SfuMediaSession>;
  /** Takes over a session an earlier Parley process opened; rejects if the SFU no longer has it. */
  adopt?(room: SfuRoomRecord, display: string, snapshot: SfuMediaSnapshot, onEnded: (reason: string) => void): Promise<SfuMediaSession>;
  /** Counts a room an earlier Parley process made as this one's (its recovery, its node's load). */
  adoptRoom?(room: SfuRoomRecord, callId: string): void;
}
