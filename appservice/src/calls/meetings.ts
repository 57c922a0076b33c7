// Meeting rooms and calls: the domain rules, independent of Matrix libraries and SQLite.
//  - an alias in Parley's namespace becomes exactly one room (aliasRooms.ts: limits, convergence);
//  - `!meet` in a room the bot is in starts a call there; `!meet end` ends it, for users whose
//    power level lets them change the call state (org.parley.call);
//  - the bot kicked, banned or gone from a room ends the call there;
//  - only users of allowed servers are served; others get a clear refusal.
import type { AliasStore, CallRecord, CallStore } from "../store/store.ts";
import { AliasRooms, type AliasOutcome, type AliasRoomLimits } from "./aliasRooms.ts";
import { CALL_STATE_EVENT, callStateContent, configuredKeyMode, joinRuleFor, type Access, type KeyPolicy } from "./callState.ts";
import { COMMAND_PREFIX, HELP_TEXT, parseCommand } from "./commands.ts";
import { serverOf, type FederationPolicy } from "./policy.ts";
import { CALL_MEMBER_EVENT_TYPE, RTC_MEMBER_EVENT_TYPES, type MembershipEvent } from "./rtcMembership.ts";
import { RtcParticipants } from "./rtcParticipants.ts";
import type { Clock, Homeserver, IdSource } from "./ports.ts";

export { CALL_STATE_EVENT } from "./callState.ts";

export interface MeetingsConfig {
  domain: string;
  aliasPrefix: string;
  publicUrl: string;
  encrypted: boolean;
  /** The institution's governance defaults for new meetings (meetings.governance). */
  governance: { access: Access; guests: boolean; cohostLevel: number; hasExternalServers: boolean; guestsLobby?: boolean };
  /** Limits on rooms made from aliases (meetings.aliasRooms). */
  aliasRooms: AliasRoomLimits;
  /** Which key mode calls use (calls.e2ee), announced in org.parley.call. */
  e2ee: KeyPolicy;
}

export interface MeetingsDeps {
  homeserver: Homeserver;
  store: AliasStore & CallStore;
  policy: FederationPolicy;
  clock: Clock;
  ids: IdSource;
  /** Told when a call ended (`!meet end`, the bot removed): close its sessions and SFU room. */
  onCallEnded?: (call: CallRecord) => Promise<void>;
  /** Observes outcomes for metrics; optional. */
  observe?: (what: "room_created" | "command" | "refusal" | "alias", label: string) => void;
  /** Told what was settled without a caller to tell (adoptions, ...); optional. */
  note?: (what: string, details: Record<string, unknown>) => void;
}

export const WIDGET_EVENT = "im.vector.modular.widgets";

export class MeetingService {
  /** MatrixRTC participants per room, folded from membership state events. */
  private readonly rtc = new Map<string, RtcParticipants>();
  private readonly aliasRooms: AliasRooms;
  private readonly cfg: MeetingsConfig;
  private readonly deps: MeetingsDeps;

  constructor(cfg: MeetingsConfig, deps: MeetingsDeps) {
    this.cfg = cfg;
    this.deps = deps;
    const observe = (outcome: AliasOutcome) => {
      if (outcome === "created") deps.observe?.("room_created", "alias");
      deps.observe?.("alias", outcome);
    };
    this.aliasRooms = new AliasRooms(
      {
        domain: cfg.domain,
        aliasPrefix: cfg.aliasPrefix,
        joinRule: joinRuleFor(
          { access: cfg.governance.access, locked: false, guests: cfg.governance.guests },
          { externalUsers: cfg.governance.hasExternalServers, guestsLobby: cfg.governance.guestsLobby === true },
        ),
        encrypted: cfg.encrypted,
        limits: cfg.aliasRooms,
        moderatorLevel: cfg.governance.cohostLevel,
        accessRule: cfg.governance.hasExternalServers ? "unrestricted" : "restricted",
      },
      {
        homeserver: deps.homeserver,
        store: deps.store,
        policy: deps.policy,
        clock: deps.clock,
        callState: (alias) => this.callState(undefined, alias, true),
        observe,
        ...(deps.note ? { note: deps.note } : {}),
      },
    );
  }

  /** The slug of an alias in Parley's namespace, or undefined for any other alias. */
  slugOf(alias: string): string | undefined {
    return this.aliasRooms.slugOf(alias);
  }

  joinLink(roomIdOrAlias: string): string {
    return `${this.cfg.publicUrl.replace(/\/$/, "")}/#/call/${encodeURIComponent(roomIdOrAlias)}`;
  }

  /** The org.parley.call content the bot writes in a room (alias rooms carry their alias). */
  private callState(roomId: string | undefined, alias?: string, fresh = false): Record<string, unknown> {
    const keys = configuredKeyMode(this.cfg.e2ee, roomId);
    const { access, guests } = this.cfg.governance;
    return callStateContent({
      api: this.cfg.publicUrl,
      ...(alias ? { alias } : {}),
      keys,
      bot: this.deps.homeserver.botUserId,
      // A new meeting gets the institution's defaults; a `!meet` restates them only at its start.
      ...(fresh ? { settings: { access, guests, locked: false, ended: null } } : {}),
    });
  }

  /**
   * The homeserver asks whether a room alias exists. Returns the room id when Parley made (or
   * re-attached) it, undefined when the alias is not Parley's to make; throws AliasRefusedError
   * when a limit refuses a new room.
   */
  async provisionAlias(alias: string): Promise<string | undefined> {
    return this.aliasRooms.provision(alias);
  }

  /** Claims left by a crash between "create the room" and "remember it": settle them. */
  async reconcilePendingAliases(): Promise<number> {
    return this.aliasRooms.reconcilePending();
  }

  /**
   * A user (not the bot) joined a room the bot is in: an alias room without a record is adopted.
   * A user of another server joining a call room gets the forks merged: an event sent here while
   * their server's join was on its way (a MatrixRTC membership, typically) was sent to the servers
   * in the room then, not to theirs, and their join does not reference it; their server fetches it
   * only when a later event does (Synapse skips that fetch while the room's state is partial
   * after a fast join; the web client covers that case on its side, see keyShare.ts).
   */
  async onMemberJoined(roomId: string, userId?: string, eventId?: string): Promise<void> {
    await this.aliasRooms.onMemberJoined(roomId);
    if (!userId || !eventId || !isRemote(userId, this.cfg.domain)) return;
    const { store } = this.deps;
    if (!(await store.activeCall(roomId)) && (await store.aliasOfRoom(roomId))?.state !== "ready") return;
    await this.deps.homeserver.mergeForks(roomId, `parley-merge-${eventId}`);
  }

  /** The bot left, was kicked or banned: the call there ends, its sessions close. */
  async onBotRemoved(roomId: string, by: string, eventId: string): Promise<CallRecord | undefined> {
    this.rtc.delete(roomId);
    const { store, clock } = this.deps;
    let ended = await store.endCall(roomId, { by, at: clock.now(), eventId });
    if (!ended) {
      const last = await store.lastCall(roomId);
      if (!last || last.endEventId !== eventId) return undefined;
      ended = last; // a redelivery: finish closing what the first attempt may have left
    }
    await this.deps.onCallEnded?.(ended);
    return ended;
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
        return reply(await this.status(roomId));
      case "unknown":
        return reply(`Unknown command '${COMMAND_PREFIX} ${command.word}'.\n${HELP_TEXT}`);
      case "start":
        return reply(...(await this.startCall(roomId, sender, eventId)));
      case "end":
        return reply(await this.endCall(roomId, sender, eventId));
    }
  }

  private async status(roomId: string): Promise<string> {
    const call = await this.deps.store.activeCall(roomId);
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
    let call = await store.activeCall(roomId);
    if (call && call.startEventId !== eventId) return running;
    if (!call) {
      const callId = ids.callId();
      const widgetId = (await homeserver.canSendState(roomId, WIDGET_EVENT)) ? `parley-${callId}` : null;
      call = await store.startCall({
        callId, roomId, origin: "command", startedBy: sender, startedAt: clock.now(), startEventId: eventId, widgetId,
      });
      if (!call) return running;
    }
    // The call state tells clients where the call API is and which key mode the call uses.
    // Without the power to send it, clients find the API from the join link (asking the user to
    // confirm its host) and use participant keys.
    const announced = await homeserver.canSendState(roomId, CALL_STATE_EVENT);
    if (announced) {
      // The meeting's governance settings stay (a `!meet` in a meeting room starts it again: `ended` goes).
      const before = (await homeserver.stateEvent(roomId, CALL_STATE_EVENT))?.content ?? {};
      const kept = Object.fromEntries(Object.entries(before).filter(([k]) => ["access", "locked", "guests"].includes(k)));
      await homeserver.putState(roomId, CALL_STATE_EVENT, { ...this.callState(roomId, (await store.aliasOfRoom(roomId))?.alias), ...kept });
    }
    if (call.widgetId) await homeserver.putWidget(roomId, this.widgetFor(call));
    const note = announced
      ? ""
      : ` (Parley may not set ${CALL_STATE_EVENT} in this room: clients ask you to confirm ${hostOf(this.cfg.publicUrl)}, and keys are the participants'.)`;
    return [
      `Call started by ${sender}. Join: ${link}${note}`,
      `Call started by ${escapeHtml(sender)}. <a href="${link}">Join the call</a>${escapeHtml(note)}`,
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

  /** Ends the call (for a sender who may change the call state); a redelivered `!meet end`
   *  finishes removing the widget. */
  private async endCall(roomId: string, sender: string, eventId: string): Promise<string> {
    const { store, clock, homeserver } = this.deps;
    const last = await store.lastCall(roomId);
    if (!last || (last.endedAt !== null && last.endEventId !== eventId)) return "No call is running in this room.";
    if (last.endedAt === null && !(await homeserver.canSendState(roomId, CALL_STATE_EVENT, sender))) {
      this.deps.observe?.("refusal", "end");
      return `Sorry ${sender}, ending the call needs the power level to change the call state (${CALL_STATE_EVENT}) in this room.`;
    }
    const ended = (await store.endCall(roomId, { by: sender, at: clock.now(), eventId })) ?? last;
    if (ended.widgetId) await homeserver.removeWidget(roomId, ended.widgetId);
    await this.deps.onCallEnded?.(ended);
    return `Call ended by ${ended.endedBy ?? sender}.`;
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function isRemote(userId: string, domain: string): boolean {
  const server = serverOf(userId);
  return server !== undefined && server !== domain; // not a user id: nobody to merge anything for
}
