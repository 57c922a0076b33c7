// The door to Janus for the call layer: the narrow `Sfu` interface, the types it speaks, and
// createSfu(config.sfu). Nothing here (or anywhere in sfu/) imports Matrix code. Layers, each
// usable on its own: transport.ts -> session.ts -> handle.ts -> videoroom.ts / publisher.ts /
// subscriber.ts; node.ts (one Janus kept connected) -> pool.ts (placement, restarts).
import type { SessionCloseReason } from "./session.ts";
import type { Jsep } from "./messages.ts";
import type { NodeHealth, PoolOptions, RestartListener, RoomOptions, RoomRef } from "./pool.ts";
import { SfuPool } from "./pool.ts";
import type { SfuNodeConfig, SfuNodeOptions } from "./node.ts";
import type { PublisherJoined, VideoRoomPublisher } from "./publisher.ts";
import type { StreamRef, VideoRoomSubscriber } from "./subscriber.ts";
import type { RoomParticipant, RtpForward, SubscriptionStream } from "./videoroom.ts";

export type { NodeHealth, PoolOptions, RestartListener, RoomOptions, RoomRef, SfuNodeConfig, SfuNodeOptions, Jsep, PublisherJoined, StreamRef };
export type { RoomParticipant, RtpForward, SubscriptionStream, SessionCloseReason };
export type { PublishRequest, ConfigureRequest, TalkingEvent } from "./publisher.ts";
export type { TalkDetection } from "./videoroom.ts";
export type { LayerRequest, SubscriptionUpdate, UnsubscribeRef } from "./subscriber.ts";
export type { VideoRoomNotification, RoomPublisher, PublishedStream } from "./videoroom.ts";
export type { PeerEvent } from "./handle.ts";
export type { TrickleCandidate } from "./messages.ts";
export {
  JanusClosedError,
  JanusError,
  JanusReplyError,
  JanusTimeoutError,
  SfuUnavailableError,
  VideoRoomError,
  type VideoRoomErrorKind,
} from "./errors.ts";

/** What the call layer does with a participant's publishing handle. */
export type SfuPublisher = Pick<
  VideoRoomPublisher,
  "publish" | "configure" | "unpublish" | "leave" | "trickle" | "onNotification" | "onPeer" | "onTalking"
>;

/** What the call layer does with a participant's (multistream) subscribing handle. */
export type SfuSubscriber = Pick<
  VideoRoomSubscriber,
  "subscribe" | "unsubscribe" | "start" | "configure" | "leave" | "trickle" | "onNotification" | "onPeer" | "onSubstream"
>;

/** One participant's presence in Janus (a Janus session on the room's node). */
export interface SfuParticipant {
  readonly room: RoomRef;
  readonly participantId: string;
  readonly closed: boolean;
  /** The Janus session's id (what a restarted Parley adopts). */
  readonly sessionId: number;
  /** Handles of an adopted session, by their recorded ids. */
  adoptPublisher(handleId: number): SfuPublisher & { readonly handle: { readonly id: number } };
  adoptSubscriber(handleId: number): SfuSubscriber & { readonly handle: { readonly id: number } };
  /** Joins the room as `participantId` without SDP; then `publish` the browser's offer. */
  joinAsPublisher(display: string): Promise<{ publisher: SfuPublisher & { readonly handle: { readonly id: number } }; joined: PublisherJoined }>;
  /** Subscribes to feeds; answer the returned offer with `subscriber.start(answer)`. */
  joinAsSubscriber(
    streams: StreamRef[],
    privateId?: number,
  ): Promise<{ subscriber: SfuSubscriber & { readonly handle: { readonly id: number } }; offer: Jsep; streams: SubscriptionStream[] }>;
  /** The session ended without close() (Janus restarted or timed it out): the client must rejoin. */
  onLost(listener: (reason: Exclude<SessionCloseReason, "destroyed">) => void): () => void;
  /** Leaves Janus: the session is destroyed, its handles detached, PeerConnections hung up. */
  close(): Promise<void>;
}

/** The SFU as the call layer sees it. Errors: VideoRoomError (by `kind`), SfuUnavailableError, Janus*Error. */
export interface Sfu {
  /** A room for a call (end-to-end encryption required by default) on the least loaded node. */
  createRoom(callId: string, opts?: RoomOptions): Promise<RoomRef>;
  /** Destroys the room; idempotent (a room already gone is fine). */
  destroyRoom(room: RoomRef): Promise<void>;
  /** After nodeRestarted: the lost room again, same id and secret (on another node if its own is down); `opts` for a room this process did not make. */
  recreateRoom(room: RoomRef, opts?: RoomOptions): Promise<RoomRef>;
  kick(room: RoomRef, participantId: string): Promise<void>;
  /** Blocks (or unblocks) forwarding of a publisher's stream `mid` (VideoRoom `moderate`). */
  moderate(room: RoomRef, participantId: string, mid: string, mute: boolean): Promise<void>;
  listParticipants(room: RoomRef): Promise<RoomParticipant[]>;
  /** Forwards a publisher's streams as plain RTP to local UDP ports (what the SFU holds: ciphertext frames under E2EE). */
  rtpForward(room: RoomRef, publisherId: string, host: string, streams: { mid: string; port: number }[]): Promise<RtpForward[]>;
  stopRtpForward(room: RoomRef, publisherId: string, streamId: number): Promise<void>;
  /** Opens a participant's session on the room's node; counts toward that node's load until closed. */
  openParticipant(room: RoomRef, participantId: string): Promise<SfuParticipant>;
  /** A participant's session an earlier Parley process opened (the store recorded its id); throws JanusError 458 if Janus lost it. */
  adoptParticipant(room: RoomRef, participantId: string, sessionId: number): Promise<SfuParticipant>;
  /** A room an earlier Parley process made: counted and recovered as this process's own. */
  adoptRoom(room: RoomRef, callId: string, opts?: RoomOptions): void;
  /** Per node: up/down and the rooms and participants Parley placed there. */
  health(): NodeHealth[];
  /** A node's connection went down (false) or came up (true), as it happens (the health metrics). */
  onNodeState(listener: (nodeId: string, up: boolean) => void): () => void;
  /**
   * A node lost Parley's rooms (it restarted, or was given up as dead): `lostRoomIds` must be
   * recreated; the lost participants' clients are told (onLost) once the promise settles.
   */
  onNodeRestarted(listener: RestartListener): () => void;
  /** Destroys Parley's rooms and sessions, closes every socket and timer; `keepMedia` leaves rooms and sessions to the next process. */
  stop(opts?: { keepMedia?: boolean }): Promise<void>;
}

/** Connects to every node of config.sfu (unreachable nodes keep being retried) and returns the SFU. */
export async function createSfu(config: { nodes: SfuNodeConfig[] }, opts: PoolOptions = {}): Promise<Sfu> {
  return SfuPool.start(config.nodes, opts);
}
