// The hook where frame encryption attaches (e2ee/e2eeMedia.ts): every RTCRtpSender and
// RTCRtpReceiver the publisher and subscriber create passes through here exactly once.
// An implementation sets `sender.transform = new RTCRtpScriptTransform(worker, {...})` (or uses
// createEncodedStreams, which needs `encodedInsertableStreams: true` in peerConfig).
import type { FeedId } from "./protocol.ts";

export interface ReceiverInfo {
  kind: "audio" | "video";
  feed: FeedId;
  userId: string;
  /** The publisher's Matrix device ("" if it declared none): whose media key decrypts it. */
  deviceId: string;
  mid: string;
}

/** Who said a user was let in from the lobby: the server's push, or this device's own admit. */
export type LetInBy = "server" | "self";

/** A device in the call, from the SFU's participant list. */
export interface PublishingDevice {
  userId: string;
  deviceId: string;
  /** False: in the call's media (Parley admitted its session), not publishing yet. Absent: publishing. */
  publishing?: boolean;
}

export interface MediaTransformHook {
  /** Declared to the server with publish, subscribe and answer: frames are end-to-end encrypted. */
  e2ee?: boolean;
  /** Extra RTCPeerConnection configuration for both peer connections. */
  peerConfig?: Partial<RTCConfiguration>;
  attachSender?(sender: RTCRtpSender, kind: "audio" | "video"): void;
  attachReceiver?(receiver: RTCRtpReceiver, info: ReceiverInfo): void;
  /** A receiver's mid now carries another feed (Janus reuses m-lines): re-key it. */
  receiverReassigned?(receiver: RTCRtpReceiver, info: ReceiverInfo): void;
  /** A device in the pre-join, as the server announces it (its session granted ahead): keys may go to it now. */
  arriving?(device: PublishingDevice): void;
  /**
   * A user let in from the lobby. `server`: as the server tells it (`let_in`), keys may go to them
   * once their invite is confirmed; `self`: by this device's own admit, as it is asked of the
   * server (the act is this user's own: nothing to confirm; a refusal comes as letInRefused).
   */
  letIn?(userId: string, by: LetInBy): void;
  /** The server refused this device's own admit of `userId` (told as letIn `self` before). */
  letInRefused?(userId: string): void;
  /** The server's participant list changed: the devices in the call's media (with a device id), publishing or not yet. */
  participants?(devices: PublishingDevice[]): void;
}

/** No transforms: frames pass as they are (tests, and calls whose server does not require E2EE). */
export const noTransforms: MediaTransformHook = {};

export type PeerFactory = (config: RTCConfiguration) => RTCPeerConnection;
export const browserPeerFactory: PeerFactory = (config) => new RTCPeerConnection(config);

/** Closes a peer connection made by a PeerFactory, without late candidate callbacks. */
export function closePeer(pc: RTCPeerConnection | null): void {
  if (!pc) return;
  pc.onicecandidate = null;
  pc.close();
}
