// The standalone app's meeting services: the user's own homeserver over the C-S API, a
// matrix-js-sdk sync loop for chat and members, authenticated media for avatars.
import { SyncedRoomFeed } from "./matrix/chat.ts";
import { MatrixHttp } from "./matrix/http.ts";
import { AvatarCache, homeserverThumbnails } from "./matrix/media.ts";
import { homeserverMembershipTransport } from "./matrix/membership.ts";
import { homeserverOpenId } from "./matrix/openid.ts";
import { callApiBase, joinRoom, roomSummary } from "./matrix/rooms.ts";
import type { MatrixSession } from "./matrix/session.ts";
import { browserMediaPort } from "./rtc/devices.ts";
import { wireCall } from "./services.ts";
import type { MeetingServices } from "./state/meetingModel.ts";
import { PrejoinModel } from "./state/prejoinModel.ts";

export function webMeetingServices(session: MatrixSession, origin: string): MeetingServices {
  const http = new MatrixHttp(session.homeserverUrl, session.accessToken);
  const avatars = new AvatarCache(homeserverThumbnails(http));
  return {
    openRoom: async (target) => roomSummary(http, await joinRoom(http, target), target, session.userId),
    prejoin: () => new PrejoinModel(browserMediaPort()),
    call: (room, local) => {
      const feed = new SyncedRoomFeed(session, http, room.roomId, { crypto: true });
      return wireCall(room, local, {
        userId: session.userId,
        deviceId: session.deviceId,
        callApi: callApiBase(room, origin),
        openId: homeserverOpenId(http, session.userId),
        membership: homeserverMembershipTransport(http),
        feed,
        keys: async () => {
          await feed.whenStarted();
          return { transport: feed.keyTransport(), members: feed.callMembers(), callState: async () => feed.callState() };
        },
        avatars: avatars.get,
      });
    },
  };
}
