// Meeting governance (docs/governance.md): roles read from the room, who becomes host, the lobby
// (Matrix knocks), admission to calls (locked, ended), and every host action, each checked against
// the room's power levels before Parley's bot does the Matrix act or the SFU enforces it.
// Decisions are read fresh from the room; the cache only feeds what clients are shown (roles in
// the participant list), refreshed by the state events that arrive in transactions.
import { ParleyError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { AliasStore, CallRecord, CallStore } from "../store/store.ts";
import { CALL_STATE_EVENT, joinRuleFor, keyModeOf, meetingSettings, withSettings, type Access, type MeetingSettings, type RoomKeyMode } from "./callState.ts";
import type { CallPush } from "./callRoster.ts";
import type { Kind, Moderation } from "./moderation.ts";
import { serverOf, ServerSet } from "./policy.ts";
import { GUEST_MARK } from "./guests.ts";
import type { Clock, Homeserver, InviteProfile, RoomMemberFacts } from "./ports.ts";
import { HOST_LEVEL, RoomPower, type Action, type Role } from "./roles.ts";

export interface GovernanceConfig {
  domain: string;
  cohostLevel: number;
  /** first_local_joiner: a local user joining an alias meeting without a joined host becomes host;
   *  listed: only hostUsers become hosts (each when they join). */
  hosts: "first_local_joiner" | "listed";
  hostUsers: readonly string[];
  /** Servers whose users join *institution* meetings directly (besides this one). */
  trustedServers: readonly string[];
  /** Servers whose users are external: always through the lobby, never power above 0. */
  externalServers: readonly string[];
  /** Localpart prefix of Parley's guest users (never power, never auto-admitted). */
  guestPrefix: string;
  /** The institution takes guests (guests.mode: lobby): meetings that allow them always knock. */
  guestsLobby?: boolean;
  defaults: { access: Access; guests: boolean };
}

export type ModerateAction =
  | { action: "mute" | "allow"; user_id: string; kind: Kind }
  | { action: "mute_all"; kind: Kind }
  | { action: "stop_share" | "lower_hand"; user_id: string }
  | { action: "remove" | "ban"; user_id: string; reason?: string | undefined }
  | { action: "end" }
  | { action: "admit" | "deny"; user_id: string }
  | { action: "admit_all" }
  | { action: "set_role"; user_id: string; role: "cohost" | "participant" }
  | { action: "settings"; access?: Access | undefined; locked?: boolean | undefined; guests?: boolean | undefined };

/** Who acts, from which call. */
export interface Actor {
  userId: string;
  roomId: string;
  callId: string;
}

export interface LobbyEntry {
  user_id: string;
  display_name: string;
  avatar_url: string | null;
  server: string;
  reason: string | null;
  since: number;
}

/** Where governance pushes reach: the seats of a room's call. */
export interface SeatsOfRoom {
  /** Pushes to each seat of the room; `push(userId)` says what that seat's user gets (or nothing). */
  pushEach(roomId: string, push: (userId: string) => CallPush | undefined): void;
}

export interface GovernanceDeps {
  homeserver: Pick<Homeserver, "botUserId" | "stateEvent" | "putState" | "members" | "membershipAct" | "removeWidget">;
  store: Pick<AliasStore & CallStore, "aliasOfRoom" | "activeCall" | "endCall" | "lastCall">;
  clock: Clock;
  moderation: Pick<Moderation<unknown>, "setForced" | "stopShare" | "raiseHand" | "usersInCall">;
  seats: SeatsOfRoom;
  /** Closes every session of the call and its SFU room. */
  endCall(call: CallRecord): Promise<void>;
  /** The meeting was ended for all (guests' accounts go sooner); optional. */
  onMeetingEnded?: (roomId: string) => void;
  /** Persists an audit event (the attendance and audit log); optional. */
  audit?: (event: { action: string; roomId: string; callId?: string; actor?: string; target?: string; outcome?: string; details?: Record<string, unknown> }) => void;
  /** Counts actions by outcome (metrics); optional. */
  observe?: (action: Action | "auto_admit" | "host_assigned" | "host_promoted", outcome: "ok" | "refused") => void;
  /**
   * The call's sessions told of an admission as its invite goes out (`ahead`: the knocker's
   * paused pre-join media may be made while the invite crosses federation) and of that invite's
   * failure (`failed`); optional (CallService.letInAhead, letInFailed).
   */
  letIn?: { ahead(roomId: string, userId: string): void; failed(roomId: string, userId: string): void };
  /** Told of each knock decided, by a host or by the access policy, and how long it waited (metrics); optional. */
  observeLobby?: ((decision: "admitted" | "denied", by: "host" | "auto", waitedMs: number) => void) | undefined;
}

interface RoomFacts {
  power: RoomPower;
  settings: MeetingSettings;
  content: Record<string, unknown>;
  /** When they were read (the governance clock). */
  at: number;
}

/**
 * How old the room's facts a hello's admission may use (a session granted ahead, admitted with
 * fresh facts at its grant): a change Parley hears of in a transaction drops them at once
 * (`onRoomState`), so this bounds only a change whose transaction is late.
 */
export const HELLO_FACTS_MAX_AGE_MS = 10_000;

export class Governance {
  private readonly cfg: GovernanceConfig;
  private readonly deps: GovernanceDeps;
  private readonly trusted: ServerSet;
  private readonly external: ServerSet;
  private readonly cache = new Map<string, RoomFacts>();
  private readonly loading = new Map<string, Promise<RoomFacts>>();
  private readonly lobbies = new Map<string, Map<string, LobbyEntry>>();
  /** Each waiting knock's own profile ("room|user"), as its invite carries it (`inviteProfile`). */
  private readonly knockProfiles = new Map<string, InviteProfile>();
  /**
   * Knockers whose answer (an invite, a leave, a ban) was seen as its transaction arrived, before
   * the transactions queued ahead of it were processed (`answeredOnArrival`), by room and user: a
   * knock of theirs the queue still holds is older than that answer, and is not put back in the
   * lobby. Cleared when the queue reaches a membership of theirs that is not a knock.
   */
  private readonly answeredEarly = new Set<string>();
  private readonly lobbySeeded = new Map<string, Promise<void>>();
  /** Who asked the bot to remove or ban a user ("room|user" -> actor), until the eviction reads it. */
  private readonly actedFor = new Map<string, { by: string; reason: string | undefined }>();
  /** One membership decision at a time per room (two first joiners must not both become host). */
  private readonly serial = new Map<string, Promise<unknown>>();
  private readonly log = getLogger("calls.governance");

  constructor(cfg: GovernanceConfig, deps: GovernanceDeps) {
    this.cfg = cfg;
    this.deps = deps;
    this.trusted = new ServerSet([cfg.domain, ...cfg.trustedServers]);
    this.external = new ServerSet(cfg.externalServers);
  }

  // ---- reading the room ----

  /** The room's power and settings, read now (what every decision uses). */
  async facts(roomId: string): Promise<RoomFacts> {
    const { homeserver } = this.deps;
    const [create, pl, call] = await Promise.all([
      homeserver.stateEvent(roomId, "m.room.create"),
      homeserver.stateEvent(roomId, "m.room.power_levels"),
      homeserver.stateEvent(roomId, CALL_STATE_EVENT),
    ]);
    const facts: RoomFacts = {
      power: new RoomPower({ create, powerLevels: pl?.content }, { cohostLevel: this.cfg.cohostLevel, botUserId: homeserver.botUserId }),
      settings: meetingSettings(call?.content, this.cfg.defaults),
      content: call?.content ?? {},
      at: this.deps.clock.now(),
    };
    this.cache.set(roomId, facts);
    return facts;
  }

  /** The room's facts as last read, if less than `maxAgeMs` old (a change heard of drops them); else read now. */
  private async recentFacts(roomId: string, maxAgeMs: number): Promise<RoomFacts> {
    const cached = this.cache.get(roomId);
    return cached && this.deps.clock.now() - cached.at < maxAgeMs ? cached : this.facts(roomId);
  }

  /** The room's key mode for a hello, from its `org.parley.call` as read lately (HELLO_FACTS_MAX_AGE_MS). */
  keyMode(roomId: string): Promise<RoomKeyMode> {
    return keyModeOf(async () => (await this.recentFacts(roomId, HELLO_FACTS_MAX_AGE_MS)).content);
  }

  /** The role shown for a user (from the cache; a miss loads it and pushes again). */
  roleOf(roomId: string, userId: string): Role | undefined {
    const facts = this.cache.get(roomId);
    if (facts) return facts.power.roleOf(userId);
    this.refresh(roomId);
    return undefined;
  }

  private refresh(roomId: string): void {
    if (this.loading.has(roomId)) return;
    const p = this.facts(roomId).finally(() => this.loading.delete(roomId));
    this.loading.set(roomId, p);
    void p.then(() => this.notify(roomId)).catch((err: unknown) => this.log.warn({ err, roomId }, "room state not read"));
  }

  /** A state event that governance reads changed (from a transaction): everyone is told anew. */
  onRoomState(roomId: string, type: string): void {
    if (!["m.room.create", "m.room.power_levels", CALL_STATE_EVENT, "m.room.join_rules"].includes(type)) return;
    this.cache.delete(roomId);
    this.refresh(roomId);
  }

  private isGuest(userId: string): boolean {
    return userId.startsWith(`@${this.cfg.guestPrefix}`) && this.isLocal(userId);
  }

  private isLocal(userId: string): boolean {
    return serverOf(userId) === this.cfg.domain;
  }

  isExternal(userId: string): boolean {
    return this.external.hasUser(userId);
  }

  private async isAliasMeeting(roomId: string): Promise<boolean> {
    return (await this.deps.store.aliasOfRoom(roomId))?.state === "ready";
  }

  // ---- what clients are shown ----

  /** The `meeting` push for one user. */
  meetingPush(roomId: string, userId: string): CallPush | undefined {
    const facts = this.cache.get(roomId);
    if (!facts) return undefined;
    const { settings, power } = facts;
    return {
      type: "meeting",
      access: settings.access,
      locked: settings.locked,
      guests: settings.guests,
      ended: settings.ended,
      you: { role: power.roleOf(userId), can: power.allowed(userId) },
    };
  }

  private lobbyPush(roomId: string, userId: string): CallPush | undefined {
    const facts = this.cache.get(roomId);
    if (!facts?.power.may(userId, "admit")) return undefined;
    return { type: "lobby", waiting: this.waiting(roomId) };
  }

  /** Pushes the meeting (and, to those who may admit, the lobby) to every seat of the room. */
  notify(roomId: string): void {
    this.deps.seats.pushEach(roomId, (userId) => this.meetingPush(roomId, userId));
    this.deps.seats.pushEach(roomId, (userId) => this.lobbyPush(roomId, userId));
  }

  /** A seat opened: its user gets the meeting and, if they may admit, the lobby. */
  async onSeated(roomId: string, userId: string, push: (p: CallPush) => void): Promise<void> {
    await Promise.all([this.cache.has(roomId) ? undefined : this.facts(roomId), this.seedLobby(roomId)]);
    const meeting = this.meetingPush(roomId, userId);
    if (meeting) push(meeting);
    const lobby = this.lobbyPush(roomId, userId);
    if (lobby) push(lobby);
  }

  // ---- the lobby ----

  waiting(roomId: string): LobbyEntry[] {
    return [...(this.lobbies.get(roomId)?.values() ?? [])].sort((a, b) => a.since - b.since);
  }

  /** Knocks waiting in every lobby (metrics). */
  waitingKnocks(): number {
    let n = 0;
    for (const lobby of this.lobbies.values()) n += lobby.size;
    return n;
  }

  /** What to call once a knock is decided (metrics). Read before deciding: the decision's own
   *  membership event may take the knock out of the lobby before the decision returns. */
  private decision(since: number | undefined): (decision: "admitted" | "denied", by: "host" | "auto") => void {
    return (decision, by) => {
      if (since) this.deps.observeLobby?.(decision, by, Math.max(0, this.deps.clock.now() - since));
    };
  }

  /** Knocks made before Parley started are read from the room once. */
  private seedLobby(roomId: string): Promise<void> {
    let seeded = this.lobbySeeded.get(roomId);
    if (!seeded) {
      seeded = this.deps.homeserver
        .members(roomId, "knock")
        .then((knocks) => {
          for (const k of knocks) this.addKnock(roomId, k);
        })
        .catch((err: unknown) => {
          this.lobbySeeded.delete(roomId);
          this.log.warn({ err, roomId }, "knocks not read");
        });
      this.lobbySeeded.set(roomId, seeded);
    }
    return seeded;
  }

  private addKnock(roomId: string, k: RoomMemberFacts): void {
    const server = serverOf(k.userId);
    if (server === undefined) return;
    let lobby = this.lobbies.get(roomId);
    if (!lobby) this.lobbies.set(roomId, (lobby = new Map()));
    const name = k.displayName?.trim() ? k.displayName.slice(0, 256) : k.userId;
    lobby.set(k.userId, {
      user_id: k.userId,
      // Guests' names carry the mark already (calls/guests.ts); a guest who renamed gets it back.
      display_name: this.isGuest(k.userId) && !name.endsWith(GUEST_MARK.trim()) ? `${name}${GUEST_MARK}` : name,
      avatar_url: k.avatarUrl?.startsWith("mxc://") ? k.avatarUrl : null,
      server,
      reason: k.reason ? k.reason.slice(0, 500) : null,
      since: k.since,
    });
    const profile = inviteProfile(k);
    if (profile) this.knockProfiles.set(`${roomId}|${k.userId}`, profile);
    else this.knockProfiles.delete(`${roomId}|${k.userId}`);
  }

  /** The profile a waiting knock stated, for its invite (undefined: none usable, or not waiting). */
  private knockProfileOf(roomId: string, userId: string): InviteProfile | undefined {
    return this.knockProfiles.get(`${roomId}|${userId}`);
  }

  private removeKnock(roomId: string, userId: string): boolean {
    const lobby = this.lobbies.get(roomId);
    const had = lobby?.delete(userId) ?? false;
    this.knockProfiles.delete(`${roomId}|${userId}`);
    if (lobby?.size === 0) this.lobbies.delete(roomId);
    return had;
  }

  /**
   * A membership change seen as its transaction arrived (the homeserver's push, not yet its place
   * in the queue; CallService lets a lobby grant in at the same moment): a knock answered leaves
   * the lobby and the let-in is pushed now, not once the transactions ahead of it are processed.
   * Otherwise a user let in could be in the call while the hosts still saw them waiting.
   */
  answeredOnArrival(roomId: string, userId: string, membership: string): void {
    if (membership !== "invite" && membership !== "leave" && membership !== "ban") return;
    if (!this.lobbies.get(roomId)?.has(userId)) return;
    this.answeredEarly.add(`${roomId}|${userId}`);
    this.answered(roomId, userId, membership === "invite");
  }

  /**
   * A knock answered: it leaves the lobby, and the devices in the call hear of a let-in (`let_in`,
   * which each confirms with its own homeserver). Answered through Parley, at its invite or kick,
   * not when the transaction brings the membership back (by then a user let in may be in the call
   * already, their grant asked from the lobby); the transaction then finds nothing to do.
   */
  private answered(roomId: string, userId: string, admitted: boolean): void {
    if (!this.removeKnock(roomId, userId)) return;
    this.notify(roomId);
    if (admitted) this.deps.seats.pushEach(roomId, () => ({ type: "let_in", user_id: userId }));
  }

  /**
   * A membership changed (from a transaction). A knock joins the lobby (and, in an *institution*
   * meeting, a user of this or a trusted server is invited at once); anything else leaves it. A
   * local user joining an alias meeting may become its host; a host leaving may promote a co-host.
   */
  async onMembership(roomId: string, k: RoomMemberFacts, membership: string): Promise<void> {
    const early = `${roomId}|${k.userId}`;
    if (membership === "knock") {
      // (An older knock, a note for the hosts say, behind an answer seen on arrival: answered already.)
      if (this.answeredEarly.has(early)) return;
      this.addKnock(roomId, k);
      this.notify(roomId);
      await this.autoAdmit(roomId, k.userId);
      return;
    }
    this.answeredEarly.delete(early);
    // Answered (in Element, or by the policy; one answered through Parley has left already): let
    // in, the devices in the call hear it from this transaction, not at their next sync (100-300
    // ms later on a busy page), and send the user's devices their media keys once their own
    // homeserver confirms the invite. Nothing a member of the room does not see.
    this.answered(roomId, k.userId, membership === "invite");
    if (!(await this.isAliasMeeting(roomId)) || k.userId === this.deps.homeserver.botUserId) return;
    if (membership === "join") await this.inRoomOrder(roomId, () => this.maybeMakeHost(roomId, k.userId));
    else if (membership === "leave" || membership === "ban") await this.inRoomOrder(roomId, () => this.maybePromote(roomId));
  }

  private inRoomOrder<T>(roomId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.serial.get(roomId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.serial.set(roomId, next);
    void next.finally(() => {
      if (this.serial.get(roomId) === next) this.serial.delete(roomId);
    }).catch(() => undefined);
    return next;
  }

  /**
   * A knocker let in: invited with the knock's own profile. Their call sessions hear of it as the
   * invite goes out (its paused media made meanwhile), and of its failure.
   */
  private async invite(roomId: string, userId: string, why: string): Promise<void> {
    this.deps.letIn?.ahead(roomId, userId);
    try {
      await this.deps.homeserver.membershipAct(roomId, "invite", userId, why, this.knockProfileOf(roomId, userId));
    } catch (err) {
      this.deps.letIn?.failed(roomId, userId);
      throw err;
    }
  }

  /** A knock Parley answers itself: in an *institution* meeting, one from this or a trusted
   *  server; in an *open* one that knocks (external users exist), anyone's. Never an external
   *  user's or a guest's, never while locked. */
  private async autoAdmit(roomId: string, userId: string): Promise<void> {
    const decided = this.decision(this.lobbies.get(roomId)?.get(userId)?.since);
    if (this.isExternal(userId) || this.isGuest(userId)) return;
    const { settings } = await this.facts(roomId);
    if (settings.locked) return;
    const admit = settings.access === "open" || (settings.access === "institution" && this.trusted.hasUser(userId));
    if (!admit) return;
    await this.invite(roomId, userId, settings.access === "open" ? "an open meeting" : "a member of the institution");
    this.deps.observe?.("auto_admit", "ok");
    decided("admitted", "auto");
    this.audit({ audit: "auto_admit", roomId, target: userId }, "knock admitted: institution member");
  }

  /**
   * Logs an audit line and persists it. The log line keeps every field; the stored event keeps
   * the ids in their columns and, as details, only the other facts that name nobody (counts,
   * media kind, policy): a refusal's reason quotes user ids, so it stays in the log.
   */
  private audit(fields: { audit: string; roomId: string; callId?: string; actor?: string; target?: string | undefined; outcome?: string; why?: string } & Record<string, unknown>, msg: string): void {
    this.log.info(fields, msg);
    const { audit: action, roomId, callId, actor, target, outcome, why: _why, ...rest } = fields;
    const details = Object.fromEntries(Object.entries(rest).filter(([, v]) => typeof v === "number" || typeof v === "boolean" || (typeof v === "string" && !v.includes("@"))));
    this.deps.audit?.({ action, roomId, ...(callId ? { callId } : {}), ...(actor ? { actor } : {}), ...(target ? { target } : {}), ...(outcome ? { outcome } : {}), details });
  }

  private mayHost(userId: string): boolean {
    if (!this.isLocal(userId) || this.isGuest(userId) || this.isExternal(userId)) return false;
    return this.cfg.hosts === "first_local_joiner" || this.cfg.hostUsers.includes(userId);
  }

  private async joinedHosts(roomId: string, power: RoomPower): Promise<RoomMemberFacts[]> {
    const joined = await this.deps.homeserver.members(roomId, "join");
    return joined.filter((m) => m.userId !== this.deps.homeserver.botUserId && power.roleOf(m.userId) === "host");
  }

  private async maybeMakeHost(roomId: string, userId: string): Promise<void> {
    if (!this.mayHost(userId)) return;
    const { power } = await this.facts(roomId);
    if (power.roleOf(userId) === "host") return;
    if (this.cfg.hosts === "first_local_joiner" && (await this.joinedHosts(roomId, power)).some((m) => m.userId !== userId)) return;
    await this.setLevel(roomId, power, userId, HOST_LEVEL);
    this.deps.observe?.("host_assigned", "ok");
    this.audit({ audit: "host_assigned", roomId, target: userId, policy: this.cfg.hosts }, "host of the meeting");
  }

  /** The last host left: the co-host present longest (earliest membership) becomes host. */
  private async maybePromote(roomId: string): Promise<void> {
    const { power } = await this.facts(roomId);
    const joined = (await this.deps.homeserver.members(roomId, "join")).filter((m) => m.userId !== this.deps.homeserver.botUserId);
    if (joined.some((m) => power.roleOf(m.userId) === "host")) return;
    const next = joined
      .filter((m) => power.roleOf(m.userId) === "cohost" && !this.isExternal(m.userId) && !this.isGuest(m.userId))
      .sort((a, b) => a.since - b.since)[0];
    if (!next) return;
    await this.setLevel(roomId, power, next.userId, HOST_LEVEL);
    this.deps.observe?.("host_promoted", "ok");
    this.audit({ audit: "host_promoted", roomId, target: next.userId }, "the last host left: co-host promoted");
  }

  private async setLevel(roomId: string, power: RoomPower, userId: string, level: number): Promise<void> {
    await this.deps.homeserver.putState(roomId, "m.room.power_levels", power.withLevel(userId, level));
    this.cache.delete(roomId);
  }

  // ---- admission to a call ----

  /**
   * Whether the user may get a call session now: a locked meeting takes nobody new (hosts,
   * co-hosts and users already in the call excepted), an ended one only a host (whose join
   * starts it again; a grant asked `ahead`, from the pre-join, starts nothing), external users
   * only after a host admitted them. `atHello`: the hello of a session granted ahead, admitted at
   * its grant moments before: the facts read then serve (HELLO_FACTS_MAX_AGE_MS), not three more
   * state reads on the join's path.
   */
  async admit(roomId: string, userId: string, inCall: boolean, ahead = false, atHello = false): Promise<void> {
    const { power, settings, content } = atHello ? await this.recentFacts(roomId, HELLO_FACTS_MAX_AGE_MS) : await this.facts(roomId);
    const role = power.roleOf(userId);
    if (settings.ended) {
      if (role !== "host") {
        throw new ParleyError("M_FORBIDDEN", `this meeting was ended by ${settings.ended.by}; a host can start it again`);
      }
      if (ahead) throw new ParleyError("M_FORBIDDEN", `this meeting was ended by ${settings.ended.by}; joining starts it again`);
      await this.deps.homeserver.putState(roomId, CALL_STATE_EVENT, withSettings(content, { ...settings, ended: null }));
      this.cache.delete(roomId);
      this.audit({ audit: "restart", roomId, actor: userId }, "meeting started again");
    }
    if (settings.locked && role === "participant" && !inCall) {
      throw new ParleyError("M_FORBIDDEN", "this meeting is locked: nobody new can join until a host unlocks it");
    }
  }

  // ---- host actions ----

  async act(actor: Actor, a: ModerateAction): Promise<Record<string, unknown>> {
    const facts = await this.facts(actor.roomId);
    const target = "user_id" in a ? a.user_id : undefined;
    const refuse = (why: string): never => {
      this.deps.observe?.(a.action, "refused");
      this.audit({ audit: a.action, roomId: actor.roomId, callId: actor.callId, actor: actor.userId, target, outcome: "refused", why }, "moderation refused");
      throw new ParleyError("M_FORBIDDEN", why);
    };
    if (!facts.power.may(actor.userId, a.action, target)) {
      refuse(target !== undefined && facts.power.levelOf(target) >= facts.power.levelOf(actor.userId) && facts.power.may(actor.userId, a.action)
        ? `you may not ${a.action.replace("_", " ")} ${target}: their power level is not below yours`
        : `your power level in this room does not allow '${a.action.replace("_", " ")}'`);
    }
    const result = await this.perform(actor, a, facts, refuse);
    this.deps.observe?.(a.action, "ok");
    this.audit({ audit: a.action, roomId: actor.roomId, callId: actor.callId, actor: actor.userId, target, outcome: "ok", ...("kind" in a ? { kind: a.kind } : {}), ...result }, "moderation");
    return result;
  }

  private async perform(actor: Actor, a: ModerateAction, facts: RoomFacts, refuse: (why: string) => never): Promise<Record<string, unknown>> {
    const { homeserver } = this.deps;
    const { moderation } = this.deps;
    const by = actor.userId;
    const reason = (what: string) => `${what} by ${by}`;
    switch (a.action) {
      case "mute":
      case "allow":
        if (facts.power.levelOf(a.user_id) > facts.power.levelOf(by)) refuse(`you may not mute ${a.user_id}: their power level is above yours`);
        return { seats: await moderation.setForced(actor.callId, a.user_id, a.kind, a.action === "mute", by) };
      case "mute_all": {
        let muted = 0;
        for (const u of moderation.usersInCall(actor.callId)) {
          if (u === by || facts.power.roleOf(u) !== "participant") continue;
          await moderation.setForced(actor.callId, u, a.kind, true, by);
          muted++;
        }
        return { muted };
      }
      case "stop_share":
        if ((await moderation.stopShare(actor.callId, a.user_id, by)) === 0) throw new ParleyError("M_NOT_FOUND", `${a.user_id} is not sharing their screen`);
        return {};
      case "lower_hand":
        moderation.raiseHand(actor.callId, a.user_id, false);
        return {};
      case "remove":
      case "ban": {
        const key = `${actor.roomId}|${a.user_id}`;
        this.actedFor.set(key, { by, reason: a.reason });
        const what = a.action === "remove" ? "removed" : "banned";
        try {
          await homeserver.membershipAct(actor.roomId, a.action === "remove" ? "kick" : "ban", a.user_id, a.reason ? `${a.reason} (${reason(what)})` : reason(what));
        } catch (err) {
          this.actedFor.delete(key);
          throw err;
        }
        return {};
      }
      case "admit":
      case "deny": {
        const knock = this.lobbies.get(actor.roomId)?.get(a.user_id);
        if (!knock) throw new ParleyError("M_NOT_FOUND", `${a.user_id} is not waiting in the lobby`);
        if (a.action === "admit" && facts.settings.locked) refuse("the meeting is locked: unlock it to admit anyone");
        if (a.action === "admit") await this.invite(actor.roomId, a.user_id, reason("admitted"));
        else await homeserver.membershipAct(actor.roomId, "kick", a.user_id, reason("declined"));
        this.decision(knock.since)(a.action === "admit" ? "admitted" : "denied", "host");
        this.answered(actor.roomId, a.user_id, a.action === "admit");
        return {};
      }
      case "admit_all": {
        if (facts.settings.locked) refuse("the meeting is locked: unlock it to admit anyone");
        const waiting = this.waiting(actor.roomId);
        for (const w of waiting) {
          await this.invite(actor.roomId, w.user_id, reason("admitted"));
          this.decision(w.since)("admitted", "host");
          this.answered(actor.roomId, w.user_id, true);
        }
        return { admitted: waiting.length };
      }
      case "set_role": {
        if (a.role === "cohost" && (this.isExternal(a.user_id) || this.isGuest(a.user_id))) {
          refuse(`${a.user_id} is ${this.isGuest(a.user_id) ? "a guest" : "an external user"} and cannot hold power`);
        }
        await this.setLevel(actor.roomId, facts.power, a.user_id, a.role === "cohost" ? this.cfg.cohostLevel : 0);
        return {};
      }
      case "settings":
        return this.changeSettings(actor, a, facts);
      case "end":
        await this.end(actor.roomId, by, facts);
        return {};
    }
  }

  private async changeSettings(actor: Actor, a: Extract<ModerateAction, { action: "settings" }>, facts: RoomFacts): Promise<Record<string, unknown>> {
    const before = facts.settings;
    const after: MeetingSettings = {
      ...before,
      ...(a.access !== undefined ? { access: a.access } : {}),
      ...(a.locked !== undefined ? { locked: a.locked } : {}),
      ...(a.guests !== undefined ? { guests: a.guests } : {}),
    };
    const { homeserver } = this.deps;
    const institution = { externalUsers: this.cfg.externalServers.length > 0, guestsLobby: this.cfg.guestsLobby === true };
    const rule = joinRuleFor(after, institution);
    if (rule !== joinRuleFor(before, institution)) await homeserver.putState(actor.roomId, "m.room.join_rules", { join_rule: rule });
    await homeserver.putState(actor.roomId, CALL_STATE_EVENT, withSettings(facts.content, after));
    this.cache.delete(actor.roomId);
    await this.facts(actor.roomId);
    this.notify(actor.roomId);
    return { access: after.access, locked: after.locked, guests: after.guests };
  }

  /** End for all: the call state says ended, every session closes, the SFU room goes. */
  private async end(roomId: string, by: string, facts: RoomFacts): Promise<void> {
    const { homeserver, store, clock } = this.deps;
    const at = clock.now();
    await homeserver.putState(roomId, CALL_STATE_EVENT, withSettings(facts.content, { ...facts.settings, ended: { by, at } }));
    this.cache.delete(roomId);
    const ended = await store.endCall(roomId, { by, at, eventId: null });
    if (ended?.widgetId) await homeserver.removeWidget(roomId, ended.widgetId);
    if (ended) await this.deps.endCall(ended);
    this.deps.onMeetingEnded?.(roomId);
  }

  /** The host on whose behalf the bot removed or banned a user, and their reason (read once, by the eviction). */
  actorOf(roomId: string, userId: string): { by: string; reason: string | undefined } | undefined {
    const key = `${roomId}|${userId}`;
    const actor = this.actedFor.get(key);
    this.actedFor.delete(key);
    return actor;
  }

  /** Nothing of a room stays once Parley leaves it. */
  forgetRoom(roomId: string): void {
    this.cache.delete(roomId);
    this.lobbies.delete(roomId);
    this.lobbySeeded.delete(roomId);
    for (const key of this.answeredEarly) if (key.startsWith(`${roomId}|`)) this.answeredEarly.delete(key);
    for (const key of this.knockProfiles.keys()) if (key.startsWith(`${roomId}|`)) this.knockProfiles.delete(key);
  }
}

/** Longest display name an invite takes from a knock (Synapse's own limit for a profile's). */
export const INVITE_DISPLAY_NAME_MAX = 256;
/** Longest avatar URL an invite takes from a knock. */
export const INVITE_AVATAR_URL_MAX = 1000;

/**
 * The profile a knock states, for its invite to carry: its display name (at most
 * INVITE_DISPLAY_NAME_MAX characters) and its avatar, an mxc:// URL of at most
 * INVITE_AVATAR_URL_MAX. Undefined when it states no usable name: the homeserver then looks the
 * profile up itself, as for any invite. (Another server's knock content is taken only within
 * those bounds, never as it came.)
 */
export function inviteProfile(k: Pick<RoomMemberFacts, "displayName" | "avatarUrl">): InviteProfile | undefined {
  const name = k.displayName;
  if (typeof name !== "string" || !name.trim() || name.length > INVITE_DISPLAY_NAME_MAX) return undefined;
  const avatar = k.avatarUrl;
  const usable = typeof avatar === "string" && avatar.startsWith("mxc://") && avatar.length <= INVITE_AVATAR_URL_MAX;
  return { displayName: name, ...(usable ? { avatarUrl: avatar } : {}) };
}
