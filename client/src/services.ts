// Composition of one call: the concrete network and media services behind the call view model's
// ports, shared by the standalone app (webServices.ts) and the Element widget (widget.ts).
import { MembershipManager, type MembershipTransport } from "./matrix/membership.ts";
import type { OpenIdProvider } from "./matrix/openid.ts";
import type { RoomSummary } from "./matrix/rooms.ts";
import type { RoomFeed } from "./matrix/timeline.ts";
import { CallConnection } from "./rtc/call.ts";
import { browserMediaPort } from "./rtc/devices.ts";
import { noTransforms, type MediaTransformHook } from "./rtc/transforms.ts";
import { CallViewModel, type MembersPort } from "./state/callModel.ts";
import { ChatModel } from "./state/chatModel.ts";
import type { ActiveCall } from "./state/meetingModel.ts";
import type { LocalMediaHandoff } from "./state/prejoinModel.ts";

export function membersOf(feed: RoomFeed): MembersPort {
  return { members: () => feed.members(), onMembers: (fn) => feed.events.on("members", fn) };
}

export interface CallWiring {
  userId: string;
  deviceId: string;
  callApi: string;
  openId: OpenIdProvider;
  membership: MembershipTransport;
  feed: RoomFeed;
  avatars: (mxc: string) => Promise<string | null>;
  transforms?: MediaTransformHook;
  onStage?: (inCall: boolean) => void;
}

/** One call's objects, wired: connection, membership, view model, chat. */
export function wireCall(room: RoomSummary, local: LocalMediaHandoff, w: CallWiring): ActiveCall {
  const media = browserMediaPort();
  let vm: CallViewModel | null = null;
  const connection = new CallConnection({
    callApi: w.callApi,
    room: room.roomId,
    openId: w.openId,
    local: () => vm!.outgoing(),
    transforms: w.transforms ?? noTransforms,
  });
  const membership = new MembershipManager({
    transport: w.membership,
    roomId: room.roomId,
    userId: w.userId,
    deviceId: w.deviceId,
    callApi: w.callApi,
  });
  vm = new CallViewModel({ call: connection, membership, members: membersOf(w.feed), media, avatars: w.avatars, self: { userId: w.userId, ...(room.selfName ? { displayName: room.selfName } : {}) }, local });
  const chat = new ChatModel(w.feed, w.userId);
  const call = vm;
  const online = () => call.networkBack();
  // Closing the tab: fire the delayed leave if there is one (best effort; it fires by itself later).
  const pagehide = () => void membership.leave();
  globalThis.addEventListener?.("online", online);
  globalThis.addEventListener?.("pagehide", pagehide);
  w.onStage?.(true);
  return {
    vm: call,
    chat,
    dispose: () => {
      globalThis.removeEventListener?.("online", online);
      globalThis.removeEventListener?.("pagehide", pagehide);
      call.dispose();
      chat.dispose();
      w.feed.stop();
      w.onStage?.(false);
    },
  };
}
