// The hook where frame encryption attaches (next issue): every RTCRtpSender and RTCRtpReceiver
// the publisher and subscriber create passes through here exactly once, before media flows.
// An implementation sets `sender.transform = new RTCRtpScriptTransform(worker, {...})` (or uses
// createEncodedStreams, which needs `encodedInsertableStreams: true` in peerConfig).
import type { FeedId } from "./protocol.ts";

export interface ReceiverInfo {
  kind: "audio" | "video";
  feed: FeedId;
  userId: string;
  mid: string;
}

export interface MediaTransformHook {
  /** Extra RTCPeerConnection configuration for both peer connections. */
  peerConfig?: Partial<RTCConfiguration>;
  attachSender?(sender: RTCRtpSender, kind: "audio" | "video"): void;
  attachReceiver?(receiver: RTCRtpReceiver, info: ReceiverInfo): void;
  /** A receiver's mid now carries another feed (Janus reuses m-lines): re-key it. */
  receiverReassigned?(receiver: RTCRtpReceiver, info: ReceiverInfo): void;
}

/** No transforms: frames pass as they are (until E2EE lands). */
export const noTransforms: MediaTransformHook = {};

export type PeerFactory = (config: RTCConfiguration) => RTCPeerConnection;
export const browserPeerFactory: PeerFactory = (config) => new RTCPeerConnection(config);

/** Closes a peer connection made by a PeerFactory, without late candidate callbacks. */
export function closePeer(pc: RTCPeerConnection | null): void {
  if (!pc) return;
  pc.onicecandidate = null;
  pc.close();
}
