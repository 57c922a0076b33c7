// Meeting rooms and calls: the domain rules, independent of Matrix libraries and SQLite.
//  - an alias in Parley's namespace becomes exactly one room, even under concurrent queries,
//    across processes (the homeserver's alias uniqueness) and across a crash (the store's claim);
//  - `!meet` in a room the bot is in starts a call there; `!meet end` ends it;
//  - only users of allowed servers are served; others get a clear refusal.
import type { AliasStore, CallRecord, CallStore } from "../store/store.ts";
import { COMMAND_PREFIX, HELP_TEXT, parseCommand } from "./commands.ts";
import type { FederationPolicy } from "./policy.ts";
import { CALL_MEMBER_EVENT_TYPE, RTC_MEMBER_EVENT_TYPES, type MembershipEvent } from "./rtcMembership.ts";
import { RtcParticipants } from "./rtcParticipants.ts";
import { SingleFlight } from "./singleFlight.ts";
import { RoomAliasInUseError, type Clock, type Homeserver, type IdSource } from "./ports.ts";

export interface MeetingsConfig {
  domain: string;
  aliasPrefix: string;
  publicUrl: string;
  joinRule: "public" | "knock" | "invite";
  encrypted: boolean;
}

export interface MeetingsDeps {
  homeserver: Homeserver;
  store: AliasStore & CallStore;
  policy: FederationPolicy;
  clock: Clock;
  ids: IdSource;
  /** Told when `!meet end` ended a call (close its sessions and SFU room). */
  onCallEnded?: (call: CallRecord) => Promise<void>;
  /** Observes outcomes for metrics; optional. */
  observe?: (what: "room_created" | "command" | "refusal", label: string) => void;
}

const SLUG = /^[a-z0-9][a-z0-9._=-]{0,63}$/;
export const WIDGET_EVENT = "im.vector.modular.widgets";
export const CALL_STATE_EVENT = "org.parley.call";

export class MeetingService {
  private readonly roomCreation = new SingleFlight<string, string>();
  /** MatrixRTC participants per room, folded from membership state events. */
  private readonly rtc = new Map<string, RtcParticipants>();
  private readonly cfg: MeetingsConfig;
  private readonly deps: MeetingsDeps;

  constructor(cfg: MeetingsConfig, deps: MeetingsDeps) {
    this.cfg = cfg;
    this.deps = deps;
  }

  /** The slug of an alias in Parley's namespace, or undefined for any other alias. */
  slugOf(alias: string): string | undefined {
    const prefix = `#${this.cfg.aliasPrefix}`;
    const suffix = `:${this.cfg.domain}`;
    if (!alias.startsWith(prefix) || !alias.endsWith(suffix)) return undefined;
    const slug = alias.slice(prefix.length, alias.length - suffix.length);
    return SLUG.test(slug) ? slug : undefined;
  }

  joinLink(roomIdOrAlias: string): string {
    return `${this.cfg.publicUrl.replace(/\/$/, "")}/#/call/${encodeURIComponent(roomIdOrAlias)}`;
  }

  /**
   * The homeserver asks whether a room alias exists. Returns the room id when Parley made (or
   * re-attached) it, undefined when the alias is not Parley's to make.
   */
  async provisionAlias(alias: string): Promise<string | undefined> {
    const slug = this.slugOf(alias);
    if (slug === undefined) return undefined;
    return this.roomCreation.run(alias, () => this.ensureRoom(alias, slug));
  }

  private async ensureRoom(alias: string, slug: string): Promise<string> {
    const { store, homeserver } = this.deps;
    const existing = store.getAlias(alias);
    if (existing?.state === "ready" && existing.roomId) {
      // The homeserver asked, so the directory lost the alias: point it at our room again.
      await homeserver.setAlias(alias, existing.roomId).catch(async (err: unknown) => {
        if (!(err instanceof RoomAliasInUseError)) throw err;
      });
      return existing.roomId;
    }
    if (!store.claimAlias(alias)) {
      // A claim left by a crash (or another process): the directory knows whether it finished.
      const roomId = await homeserver.resolveAlias(alias);
      if (roomId) {
        store.completeAlias(alias, roomId);
        return roomId;
      }
    }
    try {
      const roomId = await homeserver.createMeetingRoom({
        alias,
        aliasLocalpart: alias.slice(1, alias.length - this.cfg.domain.length - 1),
        name: `Meeting ${slug}`,
        joinRule: this.cfg.joinRule,
        encrypted: this.cfg.encrypted,
        serverAcl: this.deps.policy.serverAcl(),
        callInfo: { version: 1, api: this.cfg.publicUrl, alias },
      });
      store.completeAlias(alias, roomId);
      this.deps.observe?.("room_created", "alias");
      return roomId;
    } catch (err) {
      if (err instanceof RoomAliasInUseError) {
        const roomId = await homeserver.resolveAlias(alias);
        if (roomId) {
          store.completeAlias(alias, roomId);
          return roomId;
        }
      }
      store.releaseAlias(alias);
      throw err;
    }
  }

  /** Claims left by a crash between "create the room" and "remember it": settle them. */
  async reconcilePendingAliases(): Promise<number> {
    const { store, homeserver } = this.deps;
    let settled = 0;
    for (const rec of store.listAliases("creating")) {
      const roomId = await homeserver.resolveAlias(rec.alias);
      if (roomId) store.completeAlias(rec.alias, roomId);
      else store.releaseAlias(rec.alias);
      settled++;
    }
    return settled;
  }

  /** Whether an event type carries MatrixRTC call membership. */
  static isRtcMembershipType(type: string): boolean {
    return type === CALL_MEMBER_EVENT_TYPE || RTC_MEMBER_EVENT_TYPES.includes(type);
  }

  /** A MatrixRTC membership event (join, update or leave) in a room the bot is in. */
  onRtcMembership(roomId: string, event: MembershipEvent): ReturnType<RtcParticipants["apply"]> {
    let participants = this.rtc.get(roomId);
    if (!participants) this.rtc.set(roomId, (participants = new RtcParticipants()));
    const change = participants.apply(event, this.deps.clock.now());
    if (participants.size === 0) this.rtc.delete(roomId);
    return change;
  }

  /** A user left the room: they are in none of its calls either. */
  onRoomLeft(roomId: string, userId: string): void {
    const participants = this.rtc.get(roomId);
    participants?.removeUser(userId);
    if (participants?.size === 0) this.rtc.delete(roomId);
  }

  /** The bot was invited somewhere: join if the inviter's server is allowed, else decline. */
  async onBotInvited(roomId: string, inviter: string): Promise<"joined" | "refused"> {
    const { policy, homeserver } = this.deps;
    if (!policy.allowsUser(inviter)) {
      this.deps.observe?.("refusal", "invite");
      await homeserver.leaveRoom(
        roomId,
        `Parley on ${this.cfg.domain} accepts invites only from users of: ${policy.describe()}`,
      );
      return "refused";
    }
    await homeserver.joinRoom(roomId);
    return "joined";
  }

  /** A text message in a room the bot is in. `eventId` makes replies idempotent. */
  async onMessage(roomId: string, sender: string, body: unknown, eventId: string): Promise<void> {
    if (sender === this.deps.homeserver.botUserId) return;
    const command = parseCommand(body);
    if (!command) return;
    const reply = (text: string, html?: string) =>
      this.deps.homeserver.sendNotice(roomId, html ? { text, html } : { text }, `parley-${eventId}`);
    if (!this.deps.policy.allowsUser(sender)) {
      this.deps.observe?.("refusal", "command");
      await reply(
        `Sorry ${sender}, Parley on ${this.cfg.domain} serves only users of: ${this.deps.policy.describe()}.`,
      );
      return;
    }
    this.deps.observe?.("command", command.kind);
    switch (command.kind) {
      case "help":
        return reply(HELP_TEXT);
      case "status":
        return reply(this.status(roomId));
      case "unknown":
        return reply(`Unknown command '${COMMAND_PREFIX} ${command.word}'.\n${HELP_TEXT}`);
      case "start":
        return reply(...(await this.startCall(roomId, sender, eventId)));
      case "end":
        return reply(await this.endCall(roomId, sender, eventId));
    }
  }

  private status(roomId: string): string {
    const call = this.deps.store.activeCall(roomId);
    const participants = this.rtc.get(roomId);
    const now = this.deps.clock.now();
    participants?.prune(now);
    const who = participants && participants.size > 0 ? participants.describe(now) : "nobody";
    if (!call) return `No call is running in this room. In a call here: ${who}.`;
    return `A call is running (started by ${call.startedBy}): ${this.joinLink(roomId)}\nIn the call: ${who}.`;
  }

  /** Starts a call; when `eventId` already started the active call (a redelivery after a
   *  failure), finishes what that attempt left undone instead of refusing. */
  private async startCall(roomId: string, sender: string, eventId: string): Promise<[string, string]> {
    const { store, homeserver, clock, ids } = this.deps;
    const link = this.joinLink(roomId);
    const running: [string, string] = [
      `A call is already running here: ${link}`,
      `A call is already running here: <a href="${link}">join it</a>`,
    ];
    let call = store.activeCall(roomId);
    if (call && call.startEventId !== eventId) return running;
    if (!call) {
      const callId = ids.callId();
      const widgetId = (await homeserver.canSendState(roomId, WIDGET_EVENT)) ? `parley-${callId}` : null;
      call = store.startCall({
        callId, roomId, origin: "command", startedBy: sender, startedAt: clock.now(), startEventId: eventId, widgetId,
      });
      if (!call) return running;
    }
    if (call.widgetId) await homeserver.putWidget(roomId, this.widgetFor(call));
    return [
      `Call started by ${sender}. Join: ${link}`,
      `Call started by ${escapeHtml(sender)}. <a href="${link}">Join the call</a>`,
    ];
  }

  private widgetFor(call: CallRecord): { widgetId: string; url: string; name: string; data: Record<string, unknown> } {
    const base = this.cfg.publicUrl.replace(/\/$/, "");
    return {
      widgetId: call.widgetId ?? `parley-${call.callId}`,
      // $matrix_* are filled in by the Matrix client (widget URL template variables).
      url: `${base}/widget.html?roomId=$matrix_room_id&userId=$matrix_user_id&deviceId=$org.matrix.msc3819.matrix_device_id&callId=${encodeURIComponent(call.callId)}`,
      name: "Parley call",
      data: { callId: call.callId, api: base },
    };
  }

  /** Ends the call; a redelivered `!meet end` finishes removing the widget. */
  private async endCall(roomId: string, sender: string, eventId: string): Promise<string> {
    const { store, clock, homeserver } = this.deps;
    let ended = store.endCall(roomId, { by: sender, at: clock.now(), eventId });
    if (!ended) {
      const last = store.lastCall(roomId);
      if (last?.endEventId !== eventId) return "No call is running in this room.";
      ended = last;
    }
    if (ended.widgetId) await homeserver.removeWidget(roomId, ended.widgetId);
    await this.deps.onCallEnded?.(ended);
    return `Call ended by ${ended.endedBy ?? sender}.`;
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
