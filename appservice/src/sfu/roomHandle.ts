// What every VideoRoom participant handle does alike, publisher or subscriber: leave, trickle,
// and listen to room notifications and peer events.
import type { JanusPluginHandle, PeerEvent } from "./handle.ts";
import type { Jsep, TrickleCandidate } from "./messages.ts";
import { call, listen, okSchema, type VideoRoomNotification } from "./videoroom.ts";

export class VideoRoomHandle {
  readonly handle: JanusPluginHandle;

  constructor(handle: JanusPluginHandle) {
    this.handle = handle;
  }

  async leave(): Promise<void> {
    await call(this.handle, { request: "leave" }, okSchema, "async");
  }

  /** The browser's ICE candidates (`null`: gathering completed). */
  trickle(candidates: TrickleCandidate | TrickleCandidate[] | null): Promise<void> {
    return this.handle.trickle(candidates);
  }

  /** Room notifications: publishers arriving, leaving, unpublishing, kicked; updated streams; the room destroyed. */
  onNotification(listener: (n: VideoRoomNotification, jsep: Jsep | undefined) => void): () => void {
    return listen(this.handle, listener);
  }

  onPeer(listener: (e: PeerEvent) => void): () => void {
    return this.handle.onPeer(listener);
  }
}
