// Participant: one participant's Janus session on the node hosting its room, with its
// publisher and subscriber handles. Closing it destroys the session, which detaches the handles
// and hangs up their PeerConnections in Janus.
import type { PublisherJoined } from "./publisher.ts";
import { VideoRoomPublisher } from "./publisher.ts";
import type { RoomRef } from "./pool.ts";
import type { JanusSession, SessionCloseReason } from "./session.ts";
import { VideoRoomSubscriber, type StreamRef } from "./subscriber.ts";
import type { Jsep } from "./messages.ts";
import type { SubscriptionStream } from "./videoroom.ts";
import { VIDEOROOM_PLUGIN } from "./videoroom.ts";

export class Participant {
  readonly room: RoomRef;
  readonly participantId: string;
  private readonly session: JanusSession;

  constructor(session: JanusSession, room: RoomRef, participantId: string) {
    this.session = session;
    this.room = room;
    this.participantId = participantId;
  }

  /** The Janus session's id (recorded, so that a restarted Parley can adopt the session). */
  get sessionId(): number {
    return this.session.id;
  }

  /** The publisher handle of an adopted session (joined and publishing already). */
  adoptPublisher(handleId: number): VideoRoomPublisher {
    return new VideoRoomPublisher(this.session.adoptHandle(handleId, VIDEOROOM_PLUGIN));
  }

  /** The subscriber handle of an adopted session. */
  adoptSubscriber(handleId: number): VideoRoomSubscriber {
    return new VideoRoomSubscriber(this.session.adoptHandle(handleId, VIDEOROOM_PLUGIN));
  }

  /** True once closed, or once Janus lost the session (see onLost). */
  get closed(): boolean {
    return this.session.closed;
  }

  /**
   * Attaches a publisher handle and joins the room under the participant's id, without SDP:
   * `publish` with the browser's offer comes next.
   */
  async joinAsPublisher(display: string): Promise<{ publisher: VideoRoomPublisher; joined: PublisherJoined }> {
    const publisher = new VideoRoomPublisher(await this.session.attach(VIDEOROOM_PLUGIN));
    try {
      const joined = await publisher.join({ room: this.room.roomId, id: this.participantId, display });
      return { publisher, joined };
    } catch (err) {
      await publisher.handle.detach();
      throw err;
    }
  }

  /** Attaches a subscriber handle for `streams`; answer the returned offer with `start`. */
  async joinAsSubscriber(
    streams: StreamRef[],
    privateId?: number,
  ): Promise<{ subscriber: VideoRoomSubscriber; offer: Jsep; streams: SubscriptionStream[] }> {
    const subscriber = new VideoRoomSubscriber(await this.session.attach(VIDEOROOM_PLUGIN));
    try {
      const joined = await subscriber.join({ room: this.room.roomId, streams, privateId });
      return { subscriber, ...joined };
    } catch (err) {
      await subscriber.handle.detach();
      throw err;
    }
  }

  /**
   * The session ended without close(): "lost" (Janus restarted, or the node was unreachable
   * longer than reclaim_session_timeout) or "timeout". The client must join again.
   */
  onLost(listener: (reason: Exclude<SessionCloseReason, "destroyed">) => void): () => void {
    const fn = (reason: SessionCloseReason) => {
      if (reason !== "destroyed") listener(reason);
    };
    this.session.events.on("closed", fn);
    return () => this.session.events.off("closed", fn);
  }

  /** Leaves Janus: destroys the session (handles detach, PeerConnections hang up). */
  close(): Promise<void> {
    return this.session.destroy();
  }
}
