// The standalone app's meeting services: the user's own homeserver over the C-S API, a
// matrix-js-sdk sync loop for chat and members, authenticated media for avatars.
import { SyncedRoomFeed } from "./matrix/roomFeed.ts";
import { prepareDeviceCrypto, uploadDeviceKeysAhead } from "./matrix/deviceCrypto.ts";
import { guardedOpenId, isTrusted, type CallAnnouncement, type CallTrust } from "./matrix/callTrust.ts";
import { serverNameOf } from "./matrix/discovery.ts";
import { MatrixHttp } from "./matrix/http.ts";
import { awaitAdmission, knockRoom, linkServer, previewRoom, withdrawKnock, type InviteState } from "./matrix/knock.ts";
import { AvatarCache, homeserverThumbnails } from "./matrix/media.ts";
import { homeserverMembershipTransport } from "./matrix/membership.ts";
import { homeserverOpenId, prefetchingOpenId } from "./matrix/openid.ts";
import { CALL_STATE_EVENT, joinRoom, roomSummary, summaryOf } from "./matrix/rooms.ts";
import type { MatrixSession } from "./matrix/session.ts";
import { announceArriving, DEFAULT_SIGNALLING_PATH, grantAhead, joinCall, signallingUrl, type GrantAhead } from "./rtc/callApi.ts";
import { browserTransformApi, createE2eeWorker, E2eeMedia, warmE2eeWorker } from "./rtc/e2ee/e2eeMedia.ts";
import { keyModeFromCallState } from "./rtc/e2ee/keyMode.ts";
import { StandbySocket } from "./rtc/signalling.ts";
import { PrejoinSubscription } from "./rtc/prejoinMedia.ts";
import { browserMediaPort } from "./rtc/devices.ts";
import { wireCall } from "./services.ts";
import type { MeetingServices } from "./state/meetingModel.ts";
import { PrejoinModel } from "./state/prejoinModel.ts";

/**
 * `isOwnMeeting`: whether a link names one of this Parley's own meetings (an alias of its
 * namespace), whose call this Parley hosts (meetingInfo.ts isOwnMeetingAlias).
 */
export function webMeetingServices(
  session: MatrixSession,
  trust: CallTrust,
  isNewMeeting: (target: string) => Promise<boolean>,
  isOwnMeeting: (target: string) => boolean = () => false,
): MeetingServices {
  // A meeting is opening: the device's crypto starts and its keys go up while the room is joined
  // (or the knock waits in the lobby), not when the pre-join shows.
  prepareDeviceCrypto(session);
  const http = new MatrixHttp(session.homeserverUrl, session.accessToken);
  const avatars = new AvatarCache(homeserverThumbnails(http));
  // The room's sync loop and crypto start with the pre-join, not with the call:
  // the device's keys are up and its first sync done while the user looks at their preview, so the
  // call's media keys can travel as soon as it joins (the join's slowest part for a new device).
  // The feed lasts as long as the meeting: a call left and joined again finds it running (its
  // keys, its Olm sessions, its sync). Closing the meeting stops it.
  // A knock waiting in the lobby starts it too: its sync, crypto and keys in the lobby, the
  // room-bound rest once the room is joined (roomFeed.ts).
  let warm: { roomId: string; feed: SyncedRoomFeed } | undefined;
  const feedFor = (roomId: string, knocking = false) => {
    if (warm?.roomId !== roomId) {
      warm?.feed.stop();
      warm = { roomId, feed: new SyncedRoomFeed(session, http, roomId, { crypto: true, knocking }) };
      const feed = warm.feed;
      void feed.start().catch(() => undefined); // the call's chat reports a failure
    }
    return warm.feed;
  };
  // What the join asks of the homeserver first is asked when the pre-join shows: the OpenID token
  // (one, used by the next join) and whether delayed events exist (the membership's first request);
  // and the call's E2EE worker is started.
  const openId = prefetchingOpenId(homeserverOpenId(http, session.userId));
  const membership = homeserverMembershipTransport(http);
  const warmJoin = () => {
    openId.warm();
    void membership.supportsDelayed();
    warmE2eeWorker();
  };
  // The call's grant too, from a call API the user trusts already (docs/join.md, "The grant in
  // the pre-join"): Join then starts at the signalling socket. Its OpenID token is the prefetched
  // one; another is fetched for a join that cannot use this grant (too old, refused). And the
  // signalling socket, opened beside that grant and put on standby with its session: Join's hello
  // then goes out at once, with no socket to open on a page busy drawing the call (docs/join.md,
  // twelfth pass). Opened at Parley's usual path; a grant naming another closes it.
  let ahead: { key: string; grant: GrantAhead; socket?: StandbySocket; media?: PrejoinSubscription; e2ee?: E2eeMedia } | undefined;
  /** Drops what the pre-join made ahead for its call and no call took. */
  const dropAhead = (a: typeof ahead) => {
    a?.socket?.close();
    a?.media?.close();
    a?.e2ee?.dispose();
    if (a) {
      delete a.socket;
      delete a.media;
      delete a.e2ee;
    }
  };
  const aheadFor = (api: string, roomId: string) => {
    const key = `${api}|${roomId}`;
    if (ahead?.key !== key) {
      const ask = async () => {
        const token = await openId();
        openId.warm();
        return joinCall(api, { openid_token: token, room: roomId, ahead: true });
      };
      dropAhead(ahead);
      ahead = { key, grant: grantAhead(ask) };
    }
    return ahead;
  };
  const grantFor = (api: string, roomId: string) => aheadFor(api, roomId).grant;
  /** `callContent`: the room's org.parley.call as the pre-join read it (its key mode); absent, no media connection is made ahead. */
  const standbyFor = (api: string, roomId: string, callContent?: unknown) => {
    const a = aheadFor(api, roomId);
    // The media connection too (docs/join.md, seventeenth pass): the subscription to the call's
    // feeds, answered and connected here, paused in the SFU until Join. Its receivers go to the
    // call's own E2EE (made now, taken by the call at Join) as it is answered. Only with frame
    // transforms that need no peer configuration (RTCRtpScriptTransform), and a key mode read.
    const scriptTransform = browserTransformApi()?.scriptTransform;
    const mode = callContent === undefined ? null : keyModeFromCallState(callContent);
    const media = () =>
      scriptTransform && mode && !("error" in mode)
        ? new PrejoinSubscription(async () => {
            const g = await a.grant.peek();
            if (!g || ahead !== a) return null;
            if (!a.e2ee) {
              a.e2ee = new E2eeMedia({ userId: session.userId, deviceId: session.deviceId, worker: createE2eeWorker(), scriptTransform });
              a.e2ee.setMode(mode.keys);
            }
            return { iceServers: g.iceServers, iceTransportPolicy: g.iceTransportPolicy, transforms: a.e2ee };
          })
        : undefined;
    if (a.socket?.alive) {
      // One open stays (one refused or closed is opened again). A lobby grant's, opened while
      // knocking (no media for a knocker), asks for the media connection on the same socket once
      // the invite shows the call's key mode (docs/join.md, twenty-second pass).
      if (a.media) return;
      const later = media();
      if (later && a.socket.prepareNow(later)) {
        a.media = later;
        later.bind(a.socket);
      }
      return;
    }
    const url = signallingUrl(api, DEFAULT_SIGNALLING_PATH);
    const token = a.grant.peek().then((g) => (g && signallingUrl(api, g.signalling) === url ? g.session : null));
    a.media?.close();
    delete a.media;
    const made = media();
    if (made) a.media = made;
    a.socket = new StandbySocket(url, token, undefined, a.media);
    a.media?.bind(a.socket);
  };
  /** What the pre-join made ahead for the call, handed over once: the call's from then on. */
  const takeAhead = <K extends "socket" | "media" | "e2ee">(k: K): NonNullable<typeof ahead>[K] | undefined => {
    const made = ahead?.[k];
    if (ahead) delete ahead[k];
    return made;
  };
  /** The standby socket for `url`, once (null if none is open for it); what is left is closed. */
  const takeStandby = (url: string) => takeAhead("socket")?.take(url) ?? null;
  /** The subscription answered on the standby socket (asked in the task that takes the socket), once. */
  const takePrepared = () => takeAhead("media")?.take() ?? null;
  /** The call's E2EE made in the pre-join (the prepared subscription's receivers went to it), once. */
  const takeE2ee = () => takeAhead("e2ee") ?? null;
  /** The call's grant asked now, if the call API `call` names is one the user trusts already. */
  const warmGrant = (call: CallAnnouncement | null, roomId: string, callContent?: unknown) => {
    const host = trust.decide(call);
    if (!isTrusted(host)) return;
    grantFor(host.api, roomId).warm();
    standbyFor(host.api, roomId, callContent);
  };
  /**
   * The call's Parley tells the devices in the call that this device is about to join, once the
   * grant asked ahead came and this device's keys are up (`arriving`): they send it their media
   * keys then, with no Olm message of this device's to wait for. A call started before the keys
   * were up (a quick Join) still says it: the devices that could not encrypt to the device at its
   * hello (unknown to their crypto then) send their keys again at once, not after their next sync
   * shows its new keys. Not once `shown` is aborted (another pre-join, or the meeting closed).
   */
  const announceArrival = (api: string, roomId: string, feed: SyncedRoomFeed, shown: AbortSignal) => {
    void (async () => {
      const g = await grantFor(api, roomId).peek();
      if (!g) return;
      await feed.whenKeysUploaded();
      if (!shown.aborted) await announceArriving(api, g.session, session.deviceId);
    })().catch(() => undefined);
  };
  /** Joins the meeting's room (its id). A feed already running (a knock's, whose keys went up in the lobby) keeps its uploads off the join. */
  const joinTarget = (target: string, invited?: string): Promise<string> => {
    const join = () => joinRoom(http, target, serverNameOf(session.userId), undefined, invited ? { roomId: invited } : {});
    return warm ? warm.feed.joining(join) : join();
  };
  /** Where each meeting link's alias resolved in its preview (as the alias's own server says). */
  const previewed = new Map<string, string>();
  /** The server each room's knock went through: the one that answered it with the knock's stripped state. */
  const knockedVia = new Map<string, string>();
  /** The invite that let this user in from the lobby, as its stripped state shows the room (knock.ts inviteState). */
  let letIn: { roomId: string; state: InviteState } | undefined;
  /** Ends the pre-join's Olm announcement (not sent once the call has started). */
  let prejoinShown: AbortController | undefined;
  /** Ends the arrival's announcement through Parley (not once another pre-join began). */
  let arrivalShown: AbortController | undefined;
  /** A new pre-join (or a knock let in): the previous one's announcements end. */
  const newPrejoin = (): { shown: AbortSignal; arrival: AbortSignal } => {
    prejoinShown?.abort();
    arrivalShown?.abort();
    prejoinShown = new AbortController();
    arrivalShown = new AbortController();
    return { shown: prejoinShown.signal, arrival: arrivalShown.signal };
  };
  return {
    dispose: () => {
      prejoinShown?.abort();
      arrivalShown?.abort();
      warm?.feed.stop();
      warm = undefined;
      dropAhead(ahead);
    },
    isNewMeeting,
    openRoom: async (target) => {
      // A meeting of the user's own server (its alias there): that server is in the room already
      // (the meeting's bot is), so the join is its own, with no federation on the way, and the
      // race deviceCrypto.ts tells of cannot happen: the device's keys go up at once, beside the
      // join, not once the room's feed starts after it (300-500 ms later on a slow machine).
      if (target.startsWith("#") && linkServer(target) === serverNameOf(session.userId)) uploadDeviceKeysAhead(session);
      // Let in from the lobby: the invited room is joined by its id.
      const roomId = await joinTarget(target, letIn?.roomId);
      // One of this Parley's own meetings: its call is hosted here, at the origin that served this
      // page (trusted as such, callTrust.ts), so its grant is asked as soon as the room is joined,
      // beside the room's state reads below (120-250 ms before the pre-join would ask it). The
      // grant gates the device's `arriving`, and so when the call's devices send it their media
      // keys. Should the room announce another call API, the pre-join asks that one instead.
      const here = isOwnMeeting(target) ? trust.decide(null) : null;
      if (here && isTrusted(here)) grantFor(here.api, roomId).warm();
      const invite = letIn?.roomId === roomId ? letIn.state : undefined;
      letIn = undefined;
      // Let in from the lobby: the room as its invite showed it, when that announces the call
      // (vouched for by the inviting server), not read again (five state reads, 40-200 ms after
      // the join). Its key mode is checked against the synced room before any key travels
      // (callEncryption.ts); the rest is what the page shows.
      if (invite?.call) return summaryOf(invite.events, roomId, target, trust, session.userId);
      return roomSummary(http, roomId, target, trust, session.userId);
    },
    // Let in with the call announced: the room as its invite showed it now, the join beside it.
    letInRoom: (target) => {
      const invite = letIn;
      if (!invite?.state.call) return null;
      letIn = undefined;
      return { room: summaryOf(invite.state.events, invite.roomId, target, trust, session.userId), joined: joinTarget(target, invite.roomId) };
    },
    knock: {
      preview: async (target) => {
        // Asked only once the room's join was refused: the device's keys may go up now.
        uploadDeviceKeysAhead(session);
        const p = await previewRoom(http, target);
        if (p.kind === "summary" && target.startsWith("#")) previewed.set(target, p.roomId);
        return p;
      },
      // Through the server the link names (the alias's, or the room id's), by room id: that server
      // answers the knock, so the call it announces in the knock's stripped state counts when it
      // vouches for its sender (knock.ts knockCall). Otherwise as the homeserver routes it.
      knock: async (target, reason) => {
        const server = linkServer(target);
        const room = target.startsWith("#") ? previewed.get(target) : target;
        if (!server || !room) return knockRoom(http, target, reason);
        const roomId = await knockRoom(http, room, reason, [server]);
        knockedVia.set(roomId, server);
        return roomId;
      },
      // The wait in the lobby is time for the room's sync loop and crypto, and for the device's
      // keys: let in, the room's join arrives in a sync already running, and the others can make
      // Olm sessions with the device as soon as it joins (the join keeps clear of the upload).
      // Let in: the call's grant is asked beside the room's join (its hello needs the join), from
      // a call API the invite's stripped state names and the user trusts already.
      wait: (roomId, signal) => {
        const feed = feedFor(roomId, true);
        // (No announcement is no hint: not the serving Parley's call, as for a room without one.)
        // Let in, the device is announced as from a pre-join (the knocker's own Olm announcement
        // needs the room's state, which it sees only once joined): the devices in the call answer
        // it as they answer the admission, now that its keys are up.
        const invited = (state: InviteState) => {
          letIn = { roomId, state };
          if (!state.call) return;
          // With the call's announcement as the invite shows it (vouched for: its key mode), the
          // lobby's standby socket gives way to one that asks for the pre-join's media connection
          // (a knocker's grant gets one once let in): a Join after the let-in finds it connected.
          // (Asked in the lobby already when the knock's stripped state named the key mode.)
          warmGrant(state.call, roomId, callContentOf(state));
          const host = trust.decide(state.call);
          const { arrival } = newPrejoin();
          if (isTrusted(host)) announceArrival(host.api, roomId, feed, arrival);
        };
        // Still knocking, the call's grant is asked (and its socket opened) from the lobby when the
        // knock's stripped state announces a call API the user trusts already: Parley checks the
        // OpenID token now and seats the session only once the user is let in (a lobby grant,
        // docs/governance.md), so that the call starts at its hello when the invite comes.
        const via = knockedVia.get(roomId);
        // With the call's key mode as that state shows it, the standby asks for the pre-join's
        // media connection at once: Parley makes it, paused, once a host lets the user in (as
        // the invite goes out), so that it is connected when the invite shows here
        // (docs/governance.md, "Media ready in the lobby").
        const onKnock = via ? { onKnock: { server: via, knocking: (call: CallAnnouncement, content: unknown) => warmGrant(call, roomId, content) } } : {};
        // The answer comes in the feed's own sync (one loop for the device: knock.ts says why).
        return awaitAdmission(http, roomId, { signal, tap: feed.syncTap(), onInvite: { userId: session.userId, invited }, ...onKnock });
      },
      withdraw: (roomId) => withdrawKnock(http, roomId),
    },
    // Asking to join: the preview and the devices beside the wait, and the OpenID token the call
    // will want fetched now (the room's feed waits for the join: see knock above).
    lobbyPrejoin: () => {
      warmJoin();
      return new PrejoinModel(browserMediaPort());
    },
    prejoin: (room, kept) => {
      // The call's devices hear that this one is about to join and send it their media keys now:
      // those the grant asked ahead lists as soon as the device's keys are up, not only once the
      // room's first sync shows its members (after a quick Join).
      const { shown, arrival } = newPrejoin();
      warmJoin();
      warmGrant(room.call, room.roomId, room.callContent ?? null);
      const host = trust.decide(room.call);
      const grant = isTrusted(host) ? grantFor(host.api, room.roomId).peek() : Promise.resolve(null);
      const feed = feedFor(room.roomId);
      void feed.announcePrejoin(shown, { callState: room.callContent, devices: grant.then((g) => g?.devices ?? null) });
      // The call's Parley tells the devices in the call too.
      if (isTrusted(host)) announceArrival(host.api, room.roomId, feed, arrival);
      const consent = { host: room.host, confirm: () => trust.confirm(room.call) };
      if (!kept) return new PrejoinModel(browserMediaPort(), consent);
      kept.setConsent(consent);
      return kept;
    },
    call: (room, local, joined) => {
      // (The pre-join's Olm announcement ends here: the hello tells the call. Its arrival through
      // Parley goes on: see announceArrival.)
      prejoinShown?.abort();
      const host = trust.decide(room.call);
      const feed = feedFor(room.roomId);
      return wireCall(room, local, {
        keepFeed: true, // the meeting's (stopped by dispose above)
        userId: session.userId,
        deviceId: session.deviceId,
        // Nothing is sent to an untrusted host (the OpenID guard fails the call first).
        callApi: isTrusted(host) ? host.api : "",
        openId: guardedOpenId(host, openId),
        // An answer already in is taken without a pause: the signalling socket then opens before
        // the call screen is drawn (20-30 ms of the Join handler), not after.
        ...(isTrusted(host)
          ? {
              grantAhead: () => {
                const g = grantFor(host.api, room.roomId);
                return g.takeNow() ?? g.take();
              },
              socketAhead: takeStandby,
              subscriberAhead: takePrepared,
              e2eeMedia: takeE2ee,
            }
          : {}),
        membership,
        observed: feed.callMembers(),
        knockers: (userIds) => feed.prepareKnockers(userIds),
        feed,
        keysUploaded: () => feed.whenKeysUploaded(),
        ...(joined ? { roomJoined: joined } : {}),
        // The key exchange starts before the room's first sync is processed: the host's key that
        // came in it (or in the pre-join) is used as soon as the SFU shows the host publishing.
        // The synced room's key mode is checked against the one read at open when it comes.
        keys: async () => {
          await feed.whenKeysCanFlow();
          const callState = async () => {
            await feed.whenKeysCanTravel();
            return feed.callState();
          };
          return { transport: feed.keyTransport(), members: feed.callMembers(), callState };
        },
        avatars: avatars.get,
        // The page's own address is the meeting's link (…/#/call/<target>).
        shareLink: globalThis.location?.href,
      });
    },
  };
}

/** The call's announcement in an invite's stripped state (vouched for, inviteState), its content; undefined if none. */
function callContentOf(state: InviteState): unknown {
  return state.events.find((e) => e.type === CALL_STATE_EVENT && e.state_key === "")?.content;
}
