// Joining calls: who may, and what they get. A join carries a Matrix OpenID token; the user's
// own homeserver vouches for the user id, the federation policy must allow its server, the bot
// must see the user joined to the room, and the room must be a call room (a meeting alias room,
// or a room with a running `!meet` call). The answer is a short-lived session for the signalling
// socket. A session outlives neither its expiry nor the user's membership. One session, one
// holder: a second socket saying hello with a session takes it over and the first is ended.
import { ParleyError } from "../errors.ts";
import type { AliasStore, CallRecord, CallStore, SfuRoomRecord } from "../store/store.ts";
import { iceForSession, type IceServer, type TurnGrantConfig } from "../turn/credentials.ts";
import type { FederationPolicy } from "./policy.ts";
import type { Clock, Homeserver, IdSource, OpenIdVerifier, SfuRooms } from "./ports.ts";
import { SingleFlight } from "./singleFlight.ts";

export interface CallSession {
  readonly token: string;
  readonly userId: string;
  readonly roomId: string;
  readonly callId: string;
  readonly expiresAt: number;
}

export interface JoinGrant {
  session: string;
  expiresAt: number;
  callId: string;
  roomId: string;
  iceServers: IceServer[];
  /** "relay": the browser may use only TURN relay candidates (config turn.relayOnly). */
  iceTransportPolicy: "all" | "relay";
}

/** What holds a live session open (the signalling socket); told when the session must end. */
export type SessionCloser = (reason: SessionEndReason) => void;
export interface SessionEndReason {
  errcode: "M_FORBIDDEN" | "M_UNKNOWN_TOKEN" | "M_NOT_FOUND";
  message: string;
  /** Who ended it (a kick's or ban's actor, whoever ended the meeting), and the reason they gave. */
  by?: string | undefined;
  reason?: string | undefined;
}

export const TAKEN_OVER: SessionEndReason = { errcode: "M_FORBIDDEN", message: "session taken over by another connection" };

export interface CallServiceDeps {
  homeserver: Pick<Homeserver, "resolveAlias" | "getMembership">;
  store: Pick<CallStore & AliasStore, "activeCall" | "activeCalls" | "startCall" | "setCallSfu" | "aliasOfRoom" | "endCall">;
  policy: Pick<FederationPolicy, "allowsUser">;
  verifier: OpenIdVerifier;
  sfu: SfuRooms;
  clock: Clock;
  ids: IdSource;
  /** Told when a user's first session in a room is granted and when their last one ends (guests' accounts, attendance). */
  onPresence?: (roomId: string, userId: string, present: boolean, callId: string) => void;
  /** Governance's say on a joined user (locked, ended, external users): throws to refuse. */
  admission?: (roomId: string, userId: string, inCall: boolean) => Promise<void>;
}

export interface CallServiceConfig {
  sessionTtlMs: number;
  iceServers: IceServer[];
  turn?: TurnGrantConfig | undefined;
  /** Live sessions (granted or held by a socket) one user may have in one call. */
  sessionsPerUserPerCall: number;
  /** Sessions in one call at most (absent: no limit of Parley's own). */
  sessionsPerCall?: number;
}

const ROOM_ID = /^![^\s:]+(:\S+)?$/;
const ROOM_ALIAS = /^#[^\s:]+:\S+$/;
const SERVER_NAME = /^[A-Za-z0-9.\-[\]:]+$/;

export class CallService {
  private readonly sessions = new Map<string, CallSession>();
  private readonly closers = new Map<string, SessionCloser>();
  private readonly expiryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly sfuRoomCreation = new SingleFlight<string, CallRecord>();
  private readonly cfg: CallServiceConfig;
  private readonly deps: CallServiceDeps;

  constructor(cfg: CallServiceConfig, deps: CallServiceDeps) {
    this.cfg = cfg;
    this.deps = deps;
  }

  async join(req: { openIdToken: string; serverName: string; room: string }): Promise<JoinGrant> {
    const { verifier, policy, homeserver } = this.deps;
    if (!req.openIdToken) throw new ParleyError("M_MISSING_TOKEN", "an OpenID token is required");
    if (!SERVER_NAME.test(req.serverName)) throw new ParleyError("M_INVALID_PARAM", "matrix_server_name is not a server name");
    if (!ROOM_ID.test(req.room) && !ROOM_ALIAS.test(req.room)) {
      throw new ParleyError("M_INVALID_PARAM", "room must be a room id (!...) or an alias (#...:server)");
    }
    const { userId } = await verifier.verify(req.openIdToken, req.serverName);
    if (!policy.allowsUser(userId)) {
      throw new ParleyError("M_FORBIDDEN", `users of ${req.serverName} may not use this Parley`);
    }
    const roomId = ROOM_ID.test(req.room) ? req.room : await homeserver.resolveAlias(req.room);
    if (!roomId) throw new ParleyError("M_NOT_FOUND", `no room ${req.room}`);
    if (!(await this.isCallRoom(roomId))) throw new ParleyError("M_NOT_FOUND", "no call is running in this room; start one with !meet");
    const membership = await homeserver.getMembership(roomId, userId);
    if (membership !== "join") throw new ParleyError("M_FORBIDDEN", `${userId} is not joined to ${roomId}`);
    // A user holding a session in the room's call reconnecting is not someone new.
    await this.deps.admission?.(roomId, userId, this.hasSession(roomId, userId));
    const call = await this.callFor(roomId, userId);
    return this.grant(userId, call);
  }

  /** A meeting room made from an alias, or a room with a running `!meet` call. */
  private async isCallRoom(roomId: string): Promise<boolean> {
    const { store } = this.deps;
    return (await store.activeCall(roomId)) !== undefined || (await store.aliasOfRoom(roomId))?.state === "ready";
  }

  /** The active call of a call room, with its SFU room; made on first join of a meeting room. */
  private async callFor(roomId: string, userId: string): Promise<CallRecord> {
    return this.sfuRoomCreation.run(roomId, () => this.ensureSfuRoom(roomId, userId));
  }

  private async ensureSfuRoom(roomId: string, userId: string): Promise<CallRecord> {
    const { store, sfu, clock, ids } = this.deps;
    let call = await store.activeCall(roomId);
    if (!call) {
      if (!(await this.isCallRoom(roomId))) throw new ParleyError("M_NOT_FOUND", "no call is running in this room; start one with !meet");
      // Another Parley on the same store may start it first: then its call is the one joined.
      call =
        (await store.startCall({
          callId: ids.callId(), roomId, origin: "alias", startedBy: userId, startedAt: clock.now(), startEventId: null, widgetId: null,
        })) ?? (await store.activeCall(roomId));
      if (!call) throw new ParleyError("M_UNKNOWN", "could not start the call");
    }
    if (call.sfu && (await sfu.roomExists(call.sfu))) return call;
    const room = await sfu.createRoom(call.callId);
    await store.setCallSfu(call.callId, room);
    return { ...call, sfu: room };
  }

  private grant(userId: string, call: CallRecord): JoinGrant {
    const inCall = [...this.sessions.values()].filter((s) => s.callId === call.callId);
    if (this.cfg.sessionsPerCall !== undefined && inCall.length >= this.cfg.sessionsPerCall) {
      throw new ParleyError("M_LIMIT_EXCEEDED", `the call is full: at most ${this.cfg.sessionsPerCall} participants' devices`);
    }
    const held = inCall.filter((s) => s.userId === userId).length;
    if (held >= this.cfg.sessionsPerUserPerCall) {
      throw new ParleyError("M_LIMIT_EXCEEDED", `at most ${this.cfg.sessionsPerUserPerCall} sessions per user in a call; close one first`);
    }
    const token = this.deps.ids.sessionToken();
    const expiresAt = this.deps.clock.now() + this.cfg.sessionTtlMs;
    const first = !this.hasSession(call.roomId, userId);
    this.sessions.set(token, { token, userId, roomId: call.roomId, callId: call.callId, expiresAt });
    if (first) this.deps.onPresence?.(call.roomId, userId, true, call.callId);
    const timer = setTimeout(() => this.end(token, { errcode: "M_UNKNOWN_TOKEN", message: "session expired" }), this.cfg.sessionTtlMs);
    timer.unref();
    this.expiryTimers.set(token, timer);
    return { session: token, expiresAt, callId: call.callId, roomId: call.roomId, ...iceForSession(this.cfg, token, this.deps.clock.now()) };
  }

  /** The live session for a token, or undefined (unknown or expired). */
  session(token: string): CallSession | undefined {
    const s = this.sessions.get(token);
    if (s && s.expiresAt <= this.deps.clock.now()) {
      this.end(token, { errcode: "M_UNKNOWN_TOKEN", message: "session expired" });
      return undefined;
    }
    return s;
  }

  /**
   * Registers what to close when the session ends (the signalling socket). The grant's expiry
   * bounds how long it may wait for its socket; once open, the session lasts as long as the
   * socket, ended by a leave, kick or ban (evict) or the call's end, never by a timer in mid-call.
   * A session has one holder: a new one takes it over, and the previous holder is ended now
   * (a reconnecting client whose old socket is not yet seen dead must not be locked out).
   */
  attach(token: string, closer: SessionCloser): void {
    if (!this.sessions.has(token)) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    const previous = this.closers.get(token);
    this.closers.set(token, closer);
    clearTimeout(this.expiryTimers.get(token));
    this.expiryTimers.delete(token);
    const s = this.sessions.get(token);
    if (s) this.sessions.set(token, { ...s, expiresAt: Number.POSITIVE_INFINITY });
    if (previous && previous !== closer) previous(TAKEN_OVER);
  }

  /** Whether the session is live and held by `closer` (what every media message checks). */
  holds(token: string, closer: SessionCloser): boolean {
    return this.sessions.has(token) && this.closers.get(token) === closer;
  }

  /** The session's holder went away by itself (socket closed): the session ends with it,
   *  unless another socket has taken the session over since (a reconnect). */
  detach(token: string, closer: SessionCloser): void {
    if (this.closers.get(token) !== closer) return;
    this.closers.delete(token);
    this.forget(token);
  }

  private hasSession(roomId: string, userId: string): boolean {
    for (const s of this.sessions.values()) if (s.roomId === roomId && s.userId === userId) return true;
    return false;
  }

  /** Drops a session; the user's last one in the room ending is told. */
  private forget(token: string): void {
    const s = this.sessions.get(token);
    if (!s) return;
    this.sessions.delete(token);
    if (!this.hasSession(s.roomId, s.userId)) this.deps.onPresence?.(s.roomId, s.userId, false, s.callId);
  }

  private end(token: string, reason: Parameters<SessionCloser>[0]): void {
    const closer = this.closers.get(token);
    this.forget(token);
    this.closers.delete(token);
    clearTimeout(this.expiryTimers.get(token));
    this.expiryTimers.delete(token);
    closer?.(reason);
  }

  /** A leave, kick or ban: every session of that user in that room ends now. Returns how many. */
  evict(roomId: string, userId: string, membership: string, cause: { by?: string | undefined; reason?: string | undefined } = {}): number {
    let ended = 0;
    for (const s of [...this.sessions.values()]) {
      if (s.roomId === roomId && s.userId === userId) {
        const by = cause.by && cause.by !== userId ? cause.by : undefined;
        this.end(s.token, { errcode: "M_FORBIDDEN", message: `membership is now ${membership}`, by, reason: by ? cause.reason : undefined });
        ended++;
      }
    }
    return ended;
  }

  /**
   * The call ended (`!meet end`, the bot removed from the room): every session of it ends now
   * (its sockets close, their SFU sessions and provisioned keys are released by their closers),
   * then its SFU room is destroyed.
   */
  async endCall(call: Pick<CallRecord, "callId" | "sfu">, message = "the call has ended", by?: string): Promise<void> {
    for (const s of [...this.sessions.values()]) {
      if (s.callId === call.callId) this.end(s.token, { errcode: "M_NOT_FOUND", message, by });
    }
    const sfu = (await this.sfuRoomOf(call.callId)) ?? call.sfu;
    if (sfu) {
      await this.deps.sfu.destroyRoom(sfu);
      await this.deps.store.setCallSfu(call.callId, null);
    }
  }

  /**
   * Nobody has been in the call for a while: its SFU room goes. A meeting-alias call ends (the
   * next join starts a new call and room); a `!meet` call stays running and gets a new SFU room
   * on the next join (its widget and join link stay valid until `!meet end`).
   */
  async endIdle(call: CallRecord): Promise<void> {
    if (this.occupied(call.callId) || this.sfuRoomCreation.running(call.roomId)) return;
    if (call.origin === "alias") await this.deps.store.endCall(call.roomId, { by: "idle", at: this.deps.clock.now(), eventId: null });
    if (call.sfu) {
      await this.deps.store.setCallSfu(call.callId, null);
      await this.deps.sfu.destroyRoom(call.sfu);
    }
  }

  /** Whether the call has a live session (granted, or held by a socket). */
  occupied(callId: string): boolean {
    for (const s of this.sessions.values()) if (s.callId === callId) return true;
    return false;
  }

  /** The SFU room of an active call, if it has one. */
  async sfuRoomOf(callId: string): Promise<SfuRoomRecord | undefined> {
    const call = (await this.deps.store.activeCalls()).find((c) => c.callId === callId);
    return call?.sfu ?? undefined;
  }

  /** Calls with at least one live session (metrics). */
  occupiedCalls(): number {
    return new Set([...this.sessions.values()].map((s) => s.callId)).size;
  }

  activeSessions(): number {
    return this.sessions.size;
  }

  stop(): void {
    for (const t of this.expiryTimers.values()) clearTimeout(t);
    this.expiryTimers.clear();
    this.sessions.clear();
    this.closers.clear();
  }
}
