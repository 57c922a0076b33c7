// Composition of one call: the concrete network and media services behind the call view model's
// ports, shared by the standalone app (webServices.ts) and the Element widget (widget.ts).
import { MembershipManager, type MembershipTransport, type OwnMembershipView } from "./matrix/membership.ts";
import type { OpenIdProvider } from "./matrix/openid.ts";
import type { RoomSummary } from "./matrix/rooms.ts";
import type { RoomFeed } from "./matrix/timeline.ts";
import { CallConnection } from "./rtc/call.ts";
import type { CallGrant } from "./rtc/callApi.ts";
import type { Push } from "./rtc/protocol.ts";
import type { SocketLike } from "./rtc/signalling.ts";
import type { Subscriber } from "./rtc/subscriber.ts";
import { browserMediaPort } from "./rtc/devices.ts";
import { CallEncryption, type KeyChannel } from "./rtc/e2ee/callEncryption.ts";
import { browserTransformApi, createE2eeWorker, E2eeMedia } from "./rtc/e2ee/e2eeMedia.ts";
import { noTransforms, type MediaTransformHook } from "./rtc/transforms.ts";
import { ViewReporter } from "./rtc/view.ts";
import { CallDevicesModel } from "./state/callDevices.ts";
import { CallViewModel, type MembersPort } from "./state/callModel.ts";
import { ChatModel } from "./state/chatModel.ts";
import { GovernanceModel } from "./state/governanceModel.ts";
import { LayoutModel } from "./state/layoutModel.ts";
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
  /** The grant the pre-join asked for ahead (the standalone client's); none: the join asks. */
  grantAhead?: () => CallGrant | null | Promise<CallGrant | null>;
  /** The signalling socket the pre-join opened ahead (on standby), if any. */
  socketAhead?: (url: string) => SocketLike | null;
  /** The subscription the pre-join answered on that socket, if any (CallConnectionOptions.subscriberAhead). */
  subscriberAhead?: () => Subscriber | null;
  /** The call's E2EE made in the pre-join (that subscription's receivers went to it), if any: used instead of a new one. */
  e2eeMedia?: () => E2eeMedia | null;
  membership: MembershipTransport;
  /** The room's call memberships as this page syncs them: a membership the room loses during the call is published again. */
  observed?: OwnMembershipView;
  feed: RoomFeed;
  avatars: (mxc: string) => Promise<string | null>;
  transforms?: MediaTransformHook;
  /** Where media keys travel (Olm to-device) and who is in the call; none: no E2EE from here. */
  keys?: () => Promise<KeyChannel>;
  /** The room's join, when the call starts before it answers (let in from the lobby): the membership waits for it. */
  roomJoined?: Promise<unknown>;
  /** What the call membership waits for: this device's keys on the homeserver (default: `keys`). */
  keysUploaded?: () => Promise<void>;
  onStage?: (inCall: boolean) => void;
  /** The meeting's link to hand out (none inside Element). */
  shareLink?: string;
  /** The feed is someone else's (it outlives this call): the call does not stop it. */
  keepFeed?: boolean;
  /** The lobby's knockers as the call's Parley lists them to a host: this device readies its Olm sessions with them now. */
  knockers?: (userIds: string[]) => void;
}

/** The call's E2EE, when this browser can transform frames and there is a key channel. */
function callEncryption(room: RoomSummary, w: CallWiring): CallEncryption | null {
  const api = browserTransformApi();
  const made = w.e2eeMedia?.() ?? null;
  if (!api || !w.keys) {
    made?.dispose();
    return null;
  }
  const media = made ?? new E2eeMedia({ userId: w.userId, deviceId: w.deviceId, worker: createE2eeWorker(), scriptTransform: api.scriptTransform });
  return new CallEncryption(media, {
    roomId: room.roomId,
    userId: w.userId,
    deviceId: w.deviceId,
    channel: w.keys,
    ...(room.callContent !== undefined ? { roomState: room.callContent } : {}),
  });
}

/**
 * The knockers of each `lobby` push (Parley's lobby, which a host's socket hears of as the knock
 * reaches Parley, before the knock's event is in this page's sync) handed to `knockers`: the
 * feed's Olm preparation (roomFeed.ts prepareKnockers). Returns the unsubscribe.
 */
export function knockersFromLobby(call: { onPush(fn: (p: Push) => void): () => void }, knockers: (userIds: string[]) => void): () => void {
  return call.onPush((p) => {
    if (p.type === "lobby" && p.waiting.length) knockers(p.waiting.map((e) => e.user_id));
  });
}

/** One call's objects, wired: connection, membership, view model, chat. */
export function wireCall(room: RoomSummary, local: LocalMediaHandoff, w: CallWiring): ActiveCall {
  const media = browserMediaPort();
  let vm: CallViewModel | null = null;
  const encryption = callEncryption(room, w);
  const connection = new CallConnection({
    callApi: w.callApi,
    room: room.roomId,
    openId: w.openId,
    ...(w.grantAhead ? { grantAhead: w.grantAhead } : {}),
    ...(w.socketAhead ? { socketAhead: w.socketAhead } : {}),
    ...(w.subscriberAhead ? { subscriberAhead: w.subscriberAhead } : {}),
    local: () => vm!.outgoing(),
    transforms: encryption?.media ?? w.transforms ?? noTransforms,
    deviceId: w.deviceId,
    onHello: (hello) => encryption?.begin(hello.e2ee),
  });
  const manager = new MembershipManager({
    transport: w.membership,
    roomId: room.roomId,
    userId: w.userId,
    deviceId: w.deviceId,
    callApi: w.callApi,
    ...(w.observed ? { observed: w.observed } : {}),
  });
  // With E2EE, announce the device only once its keys are uploaded (the others encrypt to it at
  // once): not after the room's first sync, which a quick Join comes before.
  const membership = {
    join: async () => {
      await (w.keysUploaded ?? w.keys)?.().catch(() => undefined);
      // (A join that fails ends the call: meetingModel.ts. Its state event would be refused.)
      await w.roomJoined;
      await manager.join();
    },
    leave: () => manager.leave(),
  };
  const self = { userId: w.userId, ...(room.selfName ? { displayName: room.selfName } : {}) };
  const members = membersOf(w.feed);
  // Who ended the meeting, when the eviction does not say: the room's org.parley.call.
  const keys = w.keys;
  const callState = keys ? async () => (await keys()).callState() : null;
  vm = new CallViewModel({ call: connection, membership, members, media, avatars: w.avatars, encryption: encryption?.state ?? null, self, local, callState });
  const chat = new ChatModel(w.feed, w.userId);
  const call = vm;
  const governance = new GovernanceModel({ call: connection, members, avatars: w.avatars, self, shareLink: w.shareLink ?? null });
  const devices = new CallDevicesModel(media, call);
  // Last-N: the layout places the tiles, and the server hears what it shows.
  const layout = new LayoutModel();
  const offLayout = call.state.subscribe((s) => layout.setCall(s), true);
  const views = new ViewReporter({ call: connection, layout: layout.state });
  const online = () => call.networkBack();
  const offLobby = w.knockers ? knockersFromLobby(connection, w.knockers) : undefined;
  // Closing the tab: fire the delayed leave if there is one (best effort; it fires by itself later).
  const pagehide = () => void membership.leave();
  globalThis.addEventListener?.("online", online);
  globalThis.addEventListener?.("pagehide", pagehide);
  w.onStage?.(true);
  return {
    vm: call,
    chat,
    governance,
    devices,
    layout,
    dispose: () => {
      views.stop();
      offLayout();
      offLobby?.();
      globalThis.removeEventListener?.("online", online);
      globalThis.removeEventListener?.("pagehide", pagehide);
      devices.dispose();
      governance.dispose();
      call.dispose();
      encryption?.stop();
      chat.dispose();
      if (!w.keepFeed) w.feed.stop();
      w.onStage?.(false);
    },
  };
}
