// The media handlers of the signalling socket: publish, subscribe, unsubscribe, answer, trickle,
// mute, leave; one small function each. The call's participant list (who publishes which
// streams, who is muted) is Parley's own record, pushed to every socket of the call on change.
import type { CallService } from "../../calls/callService.ts";
import type { SfuMedia, SfuMediaSession, MediaStreamInfo } from "../../calls/ports.ts";
import { ParleyError } from "../../errors.ts";
import type { Participant } from "./protocol.ts";
import type { Connection, HandlerTable } from "./server.ts";

interface Member {
  conn: Connection;
  userId: string;
  deviceId: string;
  media: SfuMediaSession;
  /** Streams announced to the others (set once the SFU has the media). */
  streams: Participant["streams"];
  /** Whether this socket has published on its current SFU session. */
  published: boolean;
  /** What the published video shows. */
  videoSource: "camera" | "screen";
  muted: { audio: boolean; video: boolean };
}

/** Who is in each call, by connection. A call's entry goes when its last member leaves. */
export class CallMembers {
  private readonly calls = new Map<string, Map<Connection, Member>>();

  get(callId: string, conn: Connection): Member | undefined {
    return this.calls.get(callId)?.get(conn);
  }

  add(callId: string, member: Member): void {
    let members = this.calls.get(callId);
    if (!members) this.calls.set(callId, (members = new Map()));
    members.set(member.conn, member);
  }

  remove(callId: string, conn: Connection): Member | undefined {
    const members = this.calls.get(callId);
    const member = members?.get(conn);
    members?.delete(conn);
    if (members && members.size === 0) this.calls.delete(callId);
    return member;
  }

  participants(callId: string): Participant[] {
    return [...(this.calls.get(callId)?.values() ?? [])]
      .filter((m) => m.streams.length > 0)
      .map((m) => ({ user_id: m.userId, device_id: m.deviceId, feed_id: m.media.feedId, streams: m.streams, muted: { ...m.muted } }));
  }

  ownerOfFeed(callId: string, feed: string | number): { user_id: string; device_id: string } {
    for (const m of this.calls.get(callId)?.values() ?? []) {
      if (String(m.media.feedId) === String(feed)) return { user_id: m.userId, device_id: m.deviceId };
    }
    return { user_id: "", device_id: "" };
  }

  broadcast(callId: string): void {
    const participants = this.participants(callId);
    for (const m of this.calls.get(callId)?.values() ?? []) m.conn.send({ type: "participants", participants });
  }

  size(): number {
    return this.calls.size;
  }
}

/** Labels the video streams with what they show (camera or screen). */
function withSource(streams: Participant["streams"], source: "camera" | "screen"): Participant["streams"] {
  return streams.map((s) => (s.kind === "video" ? { ...s, type: source } : s));
}

export interface MediaPolicy {
  /** Refuse publishers and subscribers that do not declare end-to-end encrypted frames. */
  requireE2ee: boolean;
}

/** Janus 1.1.2 checks require_e2ee for publishers only: Parley checks both ends itself. */
function checkE2ee(policy: MediaPolicy, declared: boolean | undefined, role: "publish" | "subscribe"): void {
  if (policy.requireE2ee && declared !== true) {
    throw new ParleyError("M_FORBIDDEN", `this call requires end-to-end encrypted media: ${role} with e2ee: true`);
  }
}

export function mediaHandlers(calls: CallService, sfu: SfuMedia, members: CallMembers, policy: MediaPolicy): HandlerTable {
  /** The caller's member entry, joining the SFU room on first use. */
  async function memberOf(conn: Connection): Promise<Member> {
    const session = conn.session!;
    const existing = members.get(session.callId, conn);
    if (existing) return existing;
    const room = calls.sfuRoomOf(session.callId);
    if (!room) throw new ParleyError("M_NOT_FOUND", "the call has no media room; join again");
    const media = await sfu.open(room, session.userId, (reason) => {
      // The SFU lost this session (e.g. Janus restarted): forget it, so the client's next
      // publish/subscribe (after `renegotiate`) opens a fresh one in the recreated room.
      if (members.get(session.callId, conn)?.media === media) {
        members.remove(session.callId, conn);
        members.broadcast(session.callId);
      }
      void media.close().catch(() => undefined);
      conn.send({ type: "renegotiate", reason });
    });
    const member: Member = { conn, userId: session.userId, deviceId: conn.deviceId ?? "", media, streams: [], published: false, videoSource: "camera", muted: { audio: false, video: false } };
    members.add(session.callId, member);
    return member;
  }

  const withUsers = (callId: string, streams: (MediaStreamInfo & { feed: string | number })[]) =>
    streams.map((s) => ({ ...s, ...members.ownerOfFeed(callId, s.feed) }));

  return {
    publish: async (conn, m) => {
      checkE2ee(policy, m.e2ee, "publish");
      const callId = conn.session!.callId;
      // A second publish on this socket is the client starting its media over (new peer
      // connections): Janus cannot take a new DTLS peer on a live handle, so start a fresh session.
      const previous = members.get(callId, conn);
      if (previous?.published) {
        members.remove(callId, conn);
        members.broadcast(callId);
        await previous.media.close();
      }
      const member = await memberOf(conn);
      const { answerSdp, streams } = await member.media.publish(m.jsep.sdp, {
        simulcast: m.simulcast ?? false,
        // Announce the feed only once Janus has its media: subscribing earlier fails (no such feed).
        onUp: () => {
          if (members.get(callId, conn) !== member) return;
          member.streams = withSource(streams, member.videoSource);
          members.broadcast(callId);
        },
      });
      member.published = true;
      return { jsep: { type: "answer", sdp: answerSdp }, feed_id: member.media.feedId };
    },
    subscribe: async (conn, m) => {
      checkE2ee(policy, m.e2ee, "subscribe");
      const member = await memberOf(conn);
      const { offerSdp, streams } = await member.media.subscribe(m.feeds);
      return { jsep: { type: "offer", sdp: offerSdp }, streams: withUsers(conn.session!.callId, streams) };
    },
    unsubscribe: async (conn, m) => {
      const member = await memberOf(conn);
      const { offerSdp, streams } = await member.media.unsubscribe(m.feeds);
      return { ...(offerSdp ? { jsep: { type: "offer", sdp: offerSdp } } : {}), streams: withUsers(conn.session!.callId, streams) };
    },
    answer: async (conn, m) => {
      checkE2ee(policy, m.e2ee, "subscribe");
      await (await memberOf(conn)).media.answer(m.jsep.sdp);
    },
    trickle: async (conn, m) => {
      await (await memberOf(conn)).media.trickle(m.target, m.candidate);
    },
    mute: async (conn, m) => {
      const member = await memberOf(conn);
      await member.media.mute(m.kind, m.muted);
      member.muted[m.kind] = m.muted;
      members.broadcast(conn.session!.callId);
    },
    source: async (conn, m) => {
      const member = await memberOf(conn);
      member.videoSource = m.source;
      member.streams = withSource(member.streams, m.source);
      members.broadcast(conn.session!.callId);
    },
    leave: async (conn) => {
      const session = conn.session;
      if (!session) return;
      const member = members.remove(session.callId, conn);
      if (member) {
        await member.media.close();
        members.broadcast(session.callId);
      }
    },
  };
}
