// Routes events from appservice transactions to the domain. One event kind, one small handler.
import type { Governance } from "../calls/governance.ts";
import { MeetingService } from "../calls/meetings.ts";
import { getLogger } from "../log.ts";
import type { MembershipCause } from "./appserviceHttp.ts";
import { describeZodError, memberEvent, messageEvent, rtcMembershipEvent, stateEvent, type RawEvent } from "./events.ts";

type Handler = (event: RawEvent) => Promise<void>;

export class EventRouter {
  private readonly handlers: Record<string, Handler>;
  private readonly log = getLogger("matrix.router");
  private readonly meetings: MeetingService;

  /**
   * `onMembershipLost(roomId, userId, membership, cause)`: a user's membership is no longer "join".
   * `onJoined(roomId, userId)`: a user (not the bot) joined, told before anything else is done with it.
   */
  constructor(
    meetings: MeetingService,
    botUserId: string,
    onMembershipLost: (roomId: string, userId: string, membership: string, cause?: MembershipCause) => void = () => undefined,
    governance?: Pick<Governance, "onMembership" | "onRoomState" | "forgetRoom">,
    onJoined: (roomId: string, userId: string) => void = () => undefined,
  ) {
    this.meetings = meetings;
    const stateChanged = async (raw: RawEvent) => {
      const parsed = stateEvent.safeParse(raw);
      if (!parsed.success) return this.reject(raw, describeZodError(parsed.error));
      governance?.onRoomState(parsed.data.room_id, parsed.data.type);
    };
    this.handlers = {
      "m.room.power_levels": stateChanged,
      "m.room.join_rules": stateChanged,
      "org.parley.call": stateChanged,
      "m.room.member": async (raw) => {
        const parsed = memberEvent.safeParse(raw);
        if (!parsed.success) return this.reject(raw, describeZodError(parsed.error));
        const ev = parsed.data;
        const membership = ev.content.membership;
        if (ev.state_key === botUserId) {
          if (membership === "invite") {
            const outcome = await meetings.onBotInvited(ev.room_id, ev.sender);
            this.log.info({ roomId: ev.room_id, inviter: ev.sender, outcome }, "bot invited");
          } else if (membership === "leave" || membership === "ban") {
            // Kicked, banned or gone: the bot can no longer vouch for anyone there.
            const ended = await meetings.onBotRemoved(ev.room_id, ev.sender, ev.event_id);
            governance?.forgetRoom(ev.room_id);
            this.log.info({ roomId: ev.room_id, by: ev.sender, membership, callId: ended?.callId }, "bot removed from a room");
          }
          return;
        }
        if (membership === "join") {
          onJoined(ev.room_id, ev.state_key);
          await meetings.onMemberJoined(ev.room_id, ev.state_key, ev.event_id);
        } else {
          meetings.onRoomLeft(ev.room_id, ev.state_key);
          onMembershipLost(ev.room_id, ev.state_key, ev.content.membership, {
            by: ev.sender,
            ...(ev.content.reason ? { reason: ev.content.reason.slice(0, 500) } : {}),
          });
        }
        const c = ev.content;
        // Governance's follow-ups (an institution member's knock admitted, a host named) are
        // best effort: a failure is logged and the host can still act; the transaction stands.
        await governance
          ?.onMembership(
            ev.room_id,
            { userId: ev.state_key, displayName: c.displayname, avatarUrl: c.avatar_url, reason: c.reason, since: ev.origin_server_ts ?? 0 },
            membership,
          )
          .catch((err: unknown) => this.log.warn({ err, roomId: ev.room_id, userId: ev.state_key, membership }, "governance follow-up failed"));
      },
      "m.room.message": async (raw) => {
        const parsed = messageEvent.safeParse(raw);
        if (!parsed.success) return this.reject(raw, describeZodError(parsed.error));
        const ev = parsed.data;
        if (ev.content.msgtype !== "m.text") return;
        await meetings.onMessage(ev.room_id, ev.sender, ev.content.body, ev.event_id);
      },
    };
  }

  private reject(raw: RawEvent, why: string): void {
    this.log.warn({ eventId: raw.event_id, type: raw.type, why }, "ignoring malformed event");
  }

  async route(event: RawEvent): Promise<void> {
    if (typeof event.type !== "string") return;
    const handler = this.handlers[event.type];
    if (handler) return handler(event);
    if (MeetingService.isRtcMembershipType(event.type)) this.rtcMembership(event);
  }

  private rtcMembership(raw: RawEvent): void {
    const parsed = rtcMembershipEvent.safeParse(raw);
    if (!parsed.success) return this.reject(raw, describeZodError(parsed.error));
    const change = this.meetings.onRtcMembership(parsed.data.room_id, parsed.data);
    if (change.kind === "invalid") this.reject(raw, change.errors.join("; "));
  }
}
