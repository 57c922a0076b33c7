// Joining calls: who may, and what they get. A join carries a Matrix OpenID token; the user's
// own homeserver vouches for the user id, the federation policy must allow its server, the bot
// must see the user joined to the room, and the room must be a call room (a meeting alias room,
// or a room with a running `!meet` call). The answer is a short-lived session for the signalling
// socket. A session outlives neither its expiry nor the user's membership. One session, one
// holder: a second socket saying hello with a session takes it over and the first is ended.
import { setTimeout as sleep } from "node:timers/promises";
import { ParleyError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { AliasStore, CallRecord, CallStore, SeatRecord, SfuRoomRecord } from "../store/store.ts";
import { iceForSession, type IceServer, type TurnGrantConfig } from "../turn/credentials.ts";
import type { FederationPolicy } from "./policy.ts";
import type { Clock, Homeserver, IdSource, OpenIdVerifier, SfuRooms } from "./ports.ts";
import { InOrder } from "./inOrder.ts";
import { SingleFlight } from "./singleFlight.ts";

export interface CallSession {
  /** The bearer token ("" for a session restored from the store until its client says hello). */
  readonly token: string;
  /** The session's key: the recorder's hash of the token (the token itself without a recorder). */
  readonly key: string;
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
  /**
   * A grant asked ahead: the Matrix devices in the call now (sessions held, with the device their
   * client declared), at most MAX_GRANT_DEVICES. The pre-join tells them, Olm-encrypted, that it
   * is about to join (docs/join.md); the room's call memberships say as much to any room member.
   */
  devices?: { userId: string; deviceId: string }[];
}

/** Devices a grant asked ahead lists at most (the client announces itself to no more). */
export const MAX_GRANT_DEVICES = 100;

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
/** A session's holder went away (its socket closed): what those watching it are told. */
const HOLDER_GONE: SessionEndReason = { errcode: "M_UNKNOWN_TOKEN", message: "the session ended with its connection" };

/**
 * Sessions recorded in the store, so that a restarted Parley still knows them and their clients
 * reattach without joining again (docs/resilience.md). Writes for one session run in order.
 */
export interface SessionRecorder {
  /** The store's key of a token (a hash: the token is never stored). */
  key(token: string): string;
  save(seat: Omit<SeatRecord, "media">): Promise<void>;
  /** The session's member (SFU session and what the others know of it), JSON; null: none. */
  media(key: string, media: string | null, at: number): Promise<void>;
  forget(key: string): Promise<void>;
}

export interface CallServiceDeps {
  homeserver: Pick<Homeserver, "resolveAlias" | "getMembership">;
  store: Pick<CallStore & AliasStore, "activeCall" | "activeCalls" | "startCall" | "setCallSfu" | "aliasOfRoom" | "endCall">;
  policy: Pick<FederationPolicy, "allowsUser">;
  verifier: OpenIdVerifier;
  sfu: SfuRooms;
  clock: Clock;
  ids: IdSource;
  /** Told when a user's first session in a room gets its holder (the socket's hello) and when their last held one ends (guests' accounts, attendance). */
  onPresence?: (roomId: string, userId: string, present: boolean, callId: string) => void;
  /**
   * Governance's say on a joined user (locked, ended): throws to refuse. `ahead`: the grant is
   * asked from the pre-join, before the user chose to join, so it must change nothing (an ended
   * meeting is not started again by a host who only looks at their preview).
   */
  admission?: (roomId: string, userId: string, inCall: boolean, ahead: boolean, atHello?: boolean) => Promise<void>;
  /** Records sessions for a restarted Parley; absent: sessions live in this process only. */
  recorder?: SessionRecorder | undefined;
  /** A recording failed (logged by the caller); the session goes on. */
  recordFailed?: (err: unknown) => void;
}

export interface CallServiceConfig {
  sessionTtlMs: number;
  iceServers: IceServer[];
  turn?: TurnGrantConfig | undefined;
  /** Live sessions (granted or held by a socket) one user may have in one call. */
  sessionsPerUserPerCall: number;
  /** Sessions in one call at most (absent: no limit of Parley's own). */
  sessionsPerCall?: number;
  /** How long after its hello an invited user's session granted ahead waits for their room join to reach the homeserver (absent or 0: the hello needs the join). */
  invitedJoinWaitMs?: number;
  /** Sessions granted to knockers waiting in one call's lobby at most (absent or 0: a knocker gets no grant before the let-in). */
  lobbyGrantsPerCall?: number;
  /** How long a lobby grant's hello waits for its user's invite to reach this homeserver (absent: LET_IN_WAIT_MS). */
  letInWaitMs?: number;
}

/** A session admitted again at its hello (CallService.admitAtHello). */
interface AdmitAtHello {
  knownJoined: boolean;
  /** Granted while invited (let in from the lobby): a leave, kick or ban since ends it by its transaction. */
  knownInvited?: boolean;
  /** Its hello went on while its user was invited: their join is awaited (CallService.awaitJoin). */
  joinDue?: boolean;
  /** Granted while knocking (the lobby grant): no hello, no announcement until the invite (`knownInvited`). */
  lobby?: boolean;
  /**
   * A lobby grant whose user a host admitted through Parley, the invite still on its way
   * (`letInAhead`): its standby's pre-join subscription may be made now, paused; its hello and its
   * device's announcement still wait for the invite.
   */
  admitting?: boolean;
  /** Restored from the store: whether its grant carried ICE servers is not known (a lobby grant's did not). */
  restored?: boolean;
  /** Restored, and held before the restart: in the call already (no admission again), its membership read if the homeserver answers. */
  wasHeld?: boolean;
  /** The waits on this grant (its hello's, its standby's pre-join subscription's): woken by its user's join or invite in a transaction, the let-in of its hello, or its end. */
  wakers?: Set<() => void>;
}

/** Whether a lobby grant's pre-join subscription may be made: its user invited, joined, or admitted ahead of the invite. */
function mediaLetIn(admit: AdmitAtHello): boolean {
  return admit.knownInvited === true || admit.knownJoined || admit.admitting === true;
}

/** Wakes every wait on `admit` (pauseUnlessWoken). */
function wake(admit: AdmitAtHello | undefined): void {
  for (const w of admit?.wakers ?? []) w();
}

/** What the hello of a session granted in the lobby (or restored after a restart) gets that its grant may not have had: the ICE servers (TURN credentials). */
export type IceAtHello = ReturnType<typeof iceForSession>;

/**
 * How long a lobby grant's hello waits for its user's invite to reach this homeserver when it comes
 * first (CallService.awaitLetIn): the invite is this homeserver's own, sent over federation before
 * it is stored here (620 ms seen in the knock benchmark).
 */
export const LET_IN_WAIT_MS = 2000;

/**
 * How often a lobby grant's pre-join subscription, asked in the lobby and still waiting once
 * LET_IN_WAIT_MS of reads have shown a knock, checks that its standby socket still wants it (the
 * let-in itself wakes it at once; this bounds how long a wait outlives a closed socket).
 */
export const LOBBY_MEDIA_CHECK_MS = 1000;

/** Why a user may not hold a session of the room's call: not joined (or, knocking, not let in yet). */
const notJoined = (userId: string, roomId: string) => `${userId} is not joined to ${roomId}`;
const notLetIn = (userId: string, roomId: string) => `${userId} is not let in to ${roomId} yet`;

const ROOM_ID = /^![^\s:]+(:\S+)?$/;
const ROOM_ALIAS = /^#[^\s:]+:\S+$/;
const SERVER_NAME = /^[A-Za-z0-9.\-[\]:]+$/;

export class CallService {
  private readonly log = getLogger("calls.sessions");
  private readonly sessions = new Map<string, CallSession>();
  private readonly closers = new Map<string, SessionCloser>();
  private readonly expiryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /**
   * Sessions whose admission is decided again by their first hello: granted ahead (from the
   * pre-join), or restored from the store before any hello. `knownJoined`: granted ahead to a
   * user joined to the room (at the grant), or whose join came in a transaction since (`memberJoined`), whose
   * hello does not read the membership again (a leave, kick or ban since reaches Parley in a
   * transaction and ends the session, as it would a held one: `evict`); one granted while
   * invited (let in from the lobby) goes on at its hello and then awaits the join (`joinDue`);
   * its `wakers` end a pause of that wait when the join comes (`memberJoined`), not at the next read.
   */
  private readonly admitAtHello = new Map<string, AdmitAtHello>();
  /** Sessions held by a socket (or restored as held): a user's presence in the call. */
  private readonly held = new Set<string>();
  /** The Matrix device each held session's client declared at its hello (none: not listed). */
  private readonly deviceOf = new Map<string, string>();
  /** Sessions granted ahead whose device was announced to the call (`arriving`: once each). */
  private readonly announced = new Set<string>();
  /** Told when the session ends, without holding it (`whenEnded`: a standby socket). */
  private readonly watchers = new Map<string, Set<SessionCloser>>();
  private readonly sfuRoomCreation = new SingleFlight<string, CallRecord>();
  private readonly recording = new InOrder<string>();
  private readonly cfg: CallServiceConfig;
  private readonly deps: CallServiceDeps;

  constructor(cfg: CallServiceConfig, deps: CallServiceDeps) {
    this.cfg = cfg;
    this.deps = deps;
  }

  /**
   * `ahead`: asked when the pre-join shows, so that Join does not wait for the OpenID check.
   * Such a session is nobody's presence until its hello, which runs the admission again (the
   * meeting may have been locked or ended meanwhile); the grant itself starts nothing again.
   */
  async join(req: { openIdToken: string; serverName: string; room: string; ahead?: boolean }): Promise<JoinGrant> {
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
    const ahead = req.ahead === true;
    // Asked ahead (from a pre-join or the lobby), the admission reads the room's facts beside the
    // membership: it changes nothing then (no restart of an ended meeting), and its refusal counts
    // only once the membership has passed, as when asked after it.
    const admittedAhead = ahead ? this.deps.admission?.(roomId, userId, this.present(roomId, userId), true) : undefined;
    admittedAhead?.catch(() => undefined);
    const membership = await homeserver.getMembership(roomId, userId);
    // Let in from the lobby (invited after a knock) and joining the room now: the client asks its
    // grant ahead beside that join; its hello may come before the join reaches here (awaitJoin).
    // Still knocking: a lobby grant, if this Parley gives them (lobbyGrant).
    const lobby = ahead && membership === "knock" && (this.cfg.lobbyGrantsPerCall ?? 0) > 0;
    if (membership !== "join" && !(ahead && membership === "invite") && !lobby) throw new ParleyError("M_FORBIDDEN", notJoined(userId, roomId));
    // A user holding a session in the room's call reconnecting is not someone new.
    await (ahead ? admittedAhead : this.deps.admission?.(roomId, userId, this.present(roomId, userId), false));
    if (lobby) return this.lobbyGrant(userId, roomId);
    const call = await this.callFor(roomId, userId);
    const grant = this.grant(userId, call, ahead ? this.aheadTtlMs() : this.cfg.sessionTtlMs);
    if (!ahead) return grant;
    this.admitAtHello.set(this.keyOf(grant.session), { knownJoined: membership === "join", knownInvited: membership === "invite" });
    return { ...grant, devices: this.devicesIn(call.callId) };
  }

  /**
   * A knocker's grant, asked from the lobby (docs/governance.md, "A grant in the lobby"): their
   * OpenID check done while they wait, so that once let in their hello goes out at once. It opens
   * nothing before the invite: its hello and its device's announcement are refused while its user
   * only knocks, a deny (the knock's leave) ends it, and it carries neither TURN credentials nor
   * the call's devices (the hello after the let-in gets the credentials). Only for a call someone
   * is in (it starts no call and keeps none alive), at most `lobbyGrantsPerCall` at once.
   */
  private async lobbyGrant(userId: string, roomId: string): Promise<JoinGrant> {
    const limit = this.cfg.lobbyGrantsPerCall ?? 0;
    const call = await this.deps.store.activeCall(roomId);
    if (!call?.sfu || !this.hasHolder(call.callId)) throw new ParleyError("M_NOT_FOUND", "nobody is in this meeting's call yet; ask again once let in");
    const waiting = [...this.admitAtHello].filter(([key, a]) => a.lobby && this.sessions.get(key)?.callId === call.callId).length;
    if (waiting >= limit) throw new ParleyError("M_LIMIT_EXCEEDED", `at most ${limit} sessions wait in this call's lobby; ask again once let in`);
    const grant = this.grant(userId, call, this.aheadTtlMs());
    this.admitAtHello.set(this.keyOf(grant.session), { knownJoined: false, lobby: true });
    return { ...grant, iceServers: [], iceTransportPolicy: "all", devices: [] };
  }

  /**
   * Before a session's first holder: a session granted ahead passes the admission now, as a join
   * would, its user joined to the room (a refused one ends, so its token opens nothing). Other
   * sessions pass as they are.
   */
  async admitHolder(token: string): Promise<IceAtHello | undefined> {
    const key = this.keyOf(token);
    const s = this.sessions.get(key);
    const admit = this.admitAtHello.get(key);
    if (!s || !admit || admit.joinDue) return undefined;
    try {
      // A user let in from the lobby (invited) says hello as soon as their grant is in, while
      // their own homeserver is still joining the room over federation: the invite is the hosts'
      // admission, so the hello goes on, and their join has invitedJoinWaitMs to reach this
      // homeserver, or the session ends (awaitJoin). A join seen in a transaction since the grant
      // (`memberJoined`) spares the read, and so does the invite the grant saw (or, for a lobby
      // grant, the invite's transaction), when the join may follow the hello: a leave, kick or
      // ban after either comes the same way, and evicts.
      const joinMayFollow = (this.cfg.invitedJoinWaitMs ?? 0) > 0;
      const membership = admit.knownJoined ? "join" : admit.knownInvited && joinMayFollow ? "invite" : admit.wasHeld ? this.stillMember(s) : this.deps.homeserver.getMembership(s.roomId, s.userId);
      const admission = admit.wasHeld ? undefined : this.deps.admission?.(s.roomId, s.userId, this.present(s.roomId, s.userId), false, true);
      let [now] = await Promise.all([membership, admission]);
      if (admit.lobby && now === "knock") now = await this.awaitLetIn(key, s, admit);
      const waits = now === "invite" && !admit.knownJoined && joinMayFollow;
      if (now !== "join" && !waits) throw new ParleyError("M_FORBIDDEN", admit.lobby && now === "knock" ? notLetIn(s.userId, s.roomId) : notJoined(s.userId, s.roomId));
      const fromLobby = admit.lobby === true;
      if (fromLobby) {
        // Out of the lobby: a session of the call like any other from here.
        this.refuseIfFull(s.callId, key);
        admit.lobby = false;
        wake(admit); // a pre-join subscription waiting for the let-in (letInForMedia)
      }
      // A lobby grant carried no ICE servers; nor, perhaps, one restored after a restart (the
      // store does not say whether it was asked from the lobby): its hello brings them.
      const ice = fromLobby || admit.restored ? iceForSession(this.cfg, token, this.deps.clock.now()) : undefined;
      if (waits) this.awaitJoin(key, s, admit);
      else this.admitAtHello.delete(key);
      return ice;
    } catch (err) {
      this.end(key, { errcode: "M_UNKNOWN_TOKEN", message: "session refused at its hello" });
      throw err;
    }
  }

  /**
   * A lobby grant's hello while this homeserver still says "knock". Its client says hello once its
   * own homeserver shows the invite, and that can be before this one has stored it: a host's
   * admission invites over federation first (in the knock benchmark the invite took 620 ms here,
   * and the let-in knocker's hello came 200 ms before it was done; refused, that knocker never got
   * into the call). So the hello waits for the invite's transaction (`letIn`) or a read that shows
   * it, 25 ms after the first read and then twice as long each time (at most 250 ms apart), up to
   * `letInWaitMs` (LET_IN_WAIT_MS) in all, and returns the membership as last seen. A deny
   * meanwhile ends the session (and wakes this), and the caller refuses it. A knocker not let in
   * holds its hello no longer than that, with at most lobbyGrantsPerCall such grants per call.
   */
  private async awaitLetIn(key: string, s: CallSession, admit: AdmitAtHello): Promise<string | undefined> {
    const seen = await this.watchLetIn(key, s, admit);
    if (!seen) return "knock"; // ended meanwhile (a deny): refused by the caller
    if (seen.membership === "knock") this.log.info({ userId: s.userId, roomId: s.roomId, waitedMs: seen.waitedMs }, "a lobby grant's hello: still knocking; refused");
    return seen.membership;
  }

  /**
   * A lobby grant's wait for its user's let-in (its hello's, awaitLetIn, and its pre-join
   * subscription's, letInForMedia), up to `letInWaitMs`: the invite's or the join's transaction,
   * the let-in of its hello (`lobby` cleared), or a read that no longer says "knock".
   */
  private watchLetIn(key: string, s: CallSession, admit: AdmitAtHello, media = false): ReturnType<CallService["watchMembership"]> {
    const limit = this.cfg.letInWaitMs ?? LET_IN_WAIT_MS;
    // (A host's admit ahead of its invite counts for the paused media, not for the hello.)
    const known = () => (admit.knownJoined ? "join" : admit.knownInvited || !admit.lobby || (media && admit.admitting) ? "invite" : undefined);
    return this.watchMembership(key, s, admit, limit, "knock", known, (m) => m !== "knock");
  }

  /**
   * The session's membership watched while its hello or its join waits, for up to `limitMs`
   * (`membership` until then): a transaction that settles it wakes the wait (`known` then says
   * what it showed); between transactions it is read 25 ms after the start, then twice as long
   * each time (at most 250 ms apart), until a read is `settled`. Returns the membership as last
   * known and the time waited; null if the session ended meanwhile (its end wakes the wait).
   */
  private async watchMembership(
    key: string,
    s: CallSession,
    admit: AdmitAtHello,
    limitMs: number,
    membership: string | undefined,
    known: () => string | undefined,
    settled: (membership: string | undefined) => boolean,
  ): Promise<{ membership: string | undefined; waitedMs: number } | null> {
    let waited = 0;
    for (let pause = 25; waited < limitMs; pause = Math.min(pause * 2, 250)) {
      const step = Math.min(pause, limitMs - waited);
      await this.pauseUnlessWoken(key, step);
      waited += step;
      if (this.admitAtHello.get(key) !== admit) return null;
      const told = known();
      if (told !== undefined) return { membership: told, waitedMs: waited };
      membership = await this.deps.homeserver.getMembership(s.roomId, s.userId);
      if (this.admitAtHello.get(key) !== admit) return null;
      if (settled(membership)) break;
    }
    return { membership, waitedMs: waited };
  }

  /**
   * The membership of a user whose session was held before a Parley restart, read at its client's
   * hello again: a leave or kick whose transaction has not reached this process yet refuses it,
   * and an invite (their join was awaited) awaits the join again. If the homeserver does not
   * answer, the previous process's admission stands (a restart during a homeserver outage must
   * not end the calls: the leave's transaction still comes and evicts).
   */
  private async stillMember(s: CallSession): Promise<string | undefined> {
    try {
      return await this.deps.homeserver.getMembership(s.roomId, s.userId);
    } catch (err) {
      this.log.warn({ err, userId: s.userId, roomId: s.roomId }, "membership not read at a restored session's hello; it goes on");
      return "join";
    }
  }

  /**
   * An invited user's session went on at its hello: their room join must reach this homeserver
   * within invitedJoinWaitMs, or the session ends (M_FORBIDDEN; nobody stays in a call without
   * joining its room). Their join's transaction ends the wait at once (`memberJoined`); between
   * transactions the membership is read again after 25 ms, doubling, at most 250 ms apart.
   */
  private awaitJoin(key: string, s: CallSession, admit: AdmitAtHello): void {
    admit.joinDue = true;
    const limit = this.cfg.invitedJoinWaitMs ?? 0;
    void (async () => {
      const seen = await this.watchMembership(key, s, admit, limit, "invite", () => (admit.knownJoined ? "join" : undefined), (m) => m !== "invite");
      if (!seen) return; // ended meanwhile (a leave, the call's end)
      const { membership, waitedMs } = seen;
      if (membership === "join") return void this.admitAtHello.delete(key);
      this.log.info({ userId: s.userId, roomId: s.roomId, membership, waitedMs }, "let in but not joined; session ended");
      const message = membership === "invite" ? `${s.userId} did not join ${s.roomId} within ${limit} ms of their hello` : notJoined(s.userId, s.roomId);
      this.end(key, { errcode: "M_FORBIDDEN", message });
    })().catch((err: unknown) => {
      this.log.warn({ err, userId: s.userId, roomId: s.roomId }, "membership not read; session ended");
      if (this.admitAtHello.get(key) === admit) this.end(key, { errcode: "M_FORBIDDEN", message: notJoined(s.userId, s.roomId) });
    });
  }

  /**
   * A user's room join reached Parley in a transaction from its homeserver: hellos waiting for it
   * go on now.
   */
  memberJoined(roomId: string, userId: string): void {
    // A hello still to come needs no read either (a leave after this comes the same way).
    for (const [key, admit] of this.admitAtHello) {
      const s = this.sessions.get(key);
      if (s?.roomId !== roomId || s.userId !== userId) continue;
      admit.knownJoined = true;
      wake(admit);
    }
  }

  /** Waits `ms`, or less if the session's wait is woken first: its user's join or invite came in a transaction (`memberJoined`, `letIn`), or the session ended. */
  private async pauseUnlessWoken(key: string, ms: number): Promise<void> {
    const admit = this.admitAtHello.get(key);
    if (!admit) return sleep(ms);
    const timer = new AbortController();
    let waker: () => void = () => undefined;
    const woken = new Promise<void>((resolve) => (waker = resolve));
    (admit.wakers ??= new Set()).add(waker);
    try {
      await Promise.race([woken, sleep(ms, undefined, { signal: timer.signal })]);
    } finally {
      timer.abort();
      admit.wakers.delete(waker);
    }
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

  /** Waiting for its hello, a grant asked ahead (from the pre-join or the lobby) lives no longer than a TURN credential. */
  private aheadTtlMs(): number {
    return this.cfg.turn ? Math.min(this.cfg.sessionTtlMs, this.cfg.turn.ttlSeconds * 1000) : this.cfg.sessionTtlMs;
  }

  /** The call is full (sessionsPerCall, sessions in its lobby not counted; nor `except`): M_LIMIT_EXCEEDED. */
  private refuseIfFull(callId: string, except?: string): void {
    const limit = this.cfg.sessionsPerCall;
    if (limit === undefined) return;
    let n = 0;
    for (const [key, s] of this.sessions) if (s.callId === callId && key !== except && !this.inLobby(key)) n++;
    if (n >= limit) throw new ParleyError("M_LIMIT_EXCEEDED", `the call is full: at most ${limit} participants' devices`);
  }

  /** Whether a transaction since the grant said the session's user is invited or joined. */
  private letInKnown(key: string): boolean {
    const admit = this.admitAtHello.get(key);
    return !!admit && (admit.knownInvited === true || admit.knownJoined);
  }

  /** A session granted in the lobby whose hello has not come yet (lobbyGrant). */
  private inLobby(key: string): boolean {
    return this.admitAtHello.get(key)?.lobby === true;
  }

  /** Whether someone holds a session in the call (is in it, not only granted). */
  private hasHolder(callId: string): boolean {
    for (const key of this.held) if (this.sessions.get(key)?.callId === callId) return true;
    return false;
  }

  private grant(userId: string, call: CallRecord, ttlMs: number): JoinGrant {
    this.refuseIfFull(call.callId);
    const inCall = [...this.sessions.values()].filter((s) => s.callId === call.callId);
    const held = inCall.filter((s) => s.userId === userId).length;
    if (held >= this.cfg.sessionsPerUserPerCall) {
      throw new ParleyError("M_LIMIT_EXCEEDED", `at most ${this.cfg.sessionsPerUserPerCall} sessions per user in a call; close one first`);
    }
    const token = this.deps.ids.sessionToken();
    const key = this.keyOf(token);
    const expiresAt = this.deps.clock.now() + ttlMs;
    const session = { token, key, userId, roomId: call.roomId, callId: call.callId, expiresAt };
    this.sessions.set(key, session);
    this.record(session, "");
    this.expireIn(key, ttlMs);
    return { session: token, expiresAt, callId: call.callId, roomId: call.roomId, ...iceForSession(this.cfg, token, this.deps.clock.now()) };
  }

  /** The live session for a token, or undefined (unknown or expired). */
  session(token: string): CallSession | undefined {
    const key = this.keyOf(token);
    const s = this.sessions.get(key);
    if (s && s.expiresAt <= this.deps.clock.now()) {
      this.end(key, { errcode: "M_UNKNOWN_TOKEN", message: "session expired" });
      return undefined;
    }
    if (s && s.token !== token) {
      // Restored from the store: the client's hello gave the token back.
      const known = { ...s, token };
      this.sessions.set(key, known);
      return known;
    }
    return s;
  }

  /**
   * A session an earlier Parley process recorded: live again, held by `closer` (what releases
   * what the session still has, its SFU session) until its client says hello again or
   * `graceMs` passes. A held one's presence was told already; either kind (held, or a grant
   * waiting for its hello, `expiresAt` set) is admitted at its hello, as a grant asked ahead is.
   */
  restore(record: Pick<SeatRecord, "tokenHash" | "userId" | "roomId" | "callId" | "expiresAt">, closer: SessionCloser, graceMs: number): CallSession {
    const key = record.tokenHash;
    const session = { token: "", key, userId: record.userId, roomId: record.roomId, callId: record.callId, expiresAt: this.deps.clock.now() + graceMs };
    this.sessions.set(key, session);
    this.closers.set(key, closer);
    if (record.expiresAt === null) this.held.add(key);
    // Admitted again at its hello, held before or not: the previous process may have been waiting
    // for an invited user's join (awaitJoin), which nothing recorded, and a leave may not have
    // reached this one yet. The hello reads the membership: joined goes on, invited waits for the
    // join again, anything else is refused.
    this.admitAtHello.set(key, { knownJoined: false, restored: true, wasHeld: record.expiresAt === null });
    this.expireIn(key, graceMs);
    return session;
  }

  /**
   * Registers what to close when the session ends (the signalling socket). The grant's expiry
   * bounds how long it may wait for its socket; once open, the session lasts as long as the
   * socket, ended by a leave, kick or ban (evict) or the call's end, never by a timer in mid-call.
   * A session has one holder: a new one takes it over, and the previous holder is ended now
   * (a reconnecting client whose old socket is not yet seen dead must not be locked out).
   * The user's first held session in the room is their presence in the call.
   */
  attach(token: string, closer: SessionCloser, deviceId = ""): void {
    const key = this.keyOf(token);
    const s = this.sessions.get(key);
    if (!s) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    const first = !this.present(s.roomId, s.userId);
    const previous = this.closers.get(key);
    this.closers.set(key, closer);
    this.held.add(key);
    if (deviceId) this.deviceOf.set(key, deviceId);
    else this.deviceOf.delete(key);
    clearTimeout(this.expiryTimers.get(key));
    this.expiryTimers.delete(key);
    const held = { ...s, expiresAt: Number.POSITIVE_INFINITY };
    this.sessions.set(key, held);
    this.record(held, deviceId);
    if (first) this.deps.onPresence?.(s.roomId, s.userId, true, s.callId);
    if (previous && previous !== closer) previous(TAKEN_OVER);
  }

  /** Records the session's member for a restarted Parley, in order with the session's own writes. */
  recordMedia(session: Pick<CallSession, "key">, media: string | null): void {
    const recorder = this.deps.recorder;
    if (!recorder || !this.sessions.has(session.key)) return;
    const at = this.deps.clock.now();
    void this.recording.run(session.key, () => recorder.media(session.key, media, at)).catch((err: unknown) => this.deps.recordFailed?.(err));
  }

  /** Whether the session is live and held by `closer` (what every media message checks). */
  holds(token: string, closer: SessionCloser): boolean {
    const key = this.keyOf(token);
    return this.sessions.has(key) && this.closers.get(key) === closer;
  }

  /** The session's holder went away by itself (socket closed): the session ends with it,
   *  unless another socket has taken the session over since (a reconnect). */
  detach(token: string, closer: SessionCloser): void {
    const key = this.keyOf(token);
    if (this.closers.get(key) !== closer) return;
    this.forget(key);
  }

  /**
   * A session granted ahead names the Matrix device that will hold it, its keys up: the call is
   * told (by the caller: the seats' `arriving` push), so that the devices in it send that device
   * their media keys during its pre-join (docs/join.md); a session held already (in the call)
   * names the device its hello named, its keys up only after the hello. Once per session: true the
   * first time, false after. Unknown or expired: M_UNKNOWN_TOKEN; a session neither granted ahead
   * nor held, or a held one naming another device: M_FORBIDDEN.
   */
  arriving(token: string, deviceId: string): { session: CallSession; first: boolean } {
    const key = this.keyOf(token);
    const session = this.sessions.get(key);
    if (!session) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    if (this.held.has(key)) {
      // In the call already (its hello named the device), its keys up only now: the call's devices
      // that could not encrypt to it at its hello send it their keys again (the device it named only).
      if (this.deviceOf.get(key) !== deviceId) throw new ParleyError("M_FORBIDDEN", "not the device this session's hello named");
    } else if (!this.admitAtHello.has(key)) {
      throw new ParleyError("M_FORBIDDEN", "only a session granted ahead (from the pre-join) announces its device");
    } else if (this.inLobby(key) && !this.letInKnown(key)) {
      // A knocker's device is nobody's business in the call until a host lets them in.
      throw new ParleyError("M_FORBIDDEN", notLetIn(session.userId, session.roomId));
    }
    const first = !this.announced.has(key);
    this.announced.add(key);
    return { session, first };
  }

  /** The devices of the sessions held in a call (those whose client declared one), at most MAX_GRANT_DEVICES. */
  private devicesIn(callId: string): { userId: string; deviceId: string }[] {
    const devices: { userId: string; deviceId: string }[] = [];
    for (const [key, deviceId] of this.deviceOf) {
      const s = this.sessions.get(key);
      if (s?.callId === callId && this.held.has(key)) devices.push({ userId: s.userId, deviceId });
      if (devices.length >= MAX_GRANT_DEVICES) break;
    }
    return devices;
  }

  /** Whether the user holds a session in the room: is in its call (a grant not yet said hello with is not). */
  private present(roomId: string, userId: string): boolean {
    for (const [key, s] of this.sessions) if (s.roomId === roomId && s.userId === userId && this.held.has(key)) return true;
    return false;
  }

  /** Whether the session of `token` was granted in the lobby and its user is not let in yet (nobody's media). */
  grantedInLobby(token: string): boolean {
    return this.inLobby(this.keyOf(token));
  }

  /**
   * Whether the pre-join subscription asked on a lobby grant's standby socket may be made: once its
   * user is let in, as its hello would be (docs/governance.md, "A grant in the lobby"). Its client
   * asks for it when its own homeserver shows the invite, which can be before this one has stored
   * it (the invite goes over federation first), so it waits for the invite's transaction, the
   * let-in of the grant's hello, or a read that shows the invite or the join, as the hello does
   * (awaitLetIn: at most `letInWaitMs`). Asked from the lobby itself (the knock's stripped state
   * named the call's key mode), it waits on past those reads for the let-in's events only
   * (letInLater), the admit of a host through Parley among them (`letInAhead`): the media is then
   * made and connected, paused, while the invite crosses federation. No (null) when the session
   * ended (a deny), its standby is gone (`live`), or its hello was let in and seated it
   * meanwhile. A grant not asked from the lobby: yes (`{}`) while it lives. Yes for a lobby grant
   * comes with the ICE servers (TURN credentials) its grant did not carry, as its hello would get
   * them: the subscription's peer connection needs them before that hello.
   */
  async letInForMedia(token: string, live: () => boolean = () => true): Promise<{ ice?: IceAtHello } | null> {
    const key = this.keyOf(token);
    const s = this.sessions.get(key);
    const admit = this.admitAtHello.get(key);
    if (!s) return null;
    if (!admit?.lobby) return {};
    const ice = () => ({ ice: iceForSession(this.cfg, token, this.deps.clock.now()) });
    if (mediaLetIn(admit)) return ice();
    const seen = await this.watchLetIn(key, s, admit, true);
    if (seen === null) return null;
    if (seen.membership === "invite" || seen.membership === "join") return ice();
    // Still knocking: asked from the lobby (docs/governance.md, "Media ready in the lobby"). It
    // waits on for the let-in itself, read no more: a host's admit through Parley, the invite's
    // or join's transaction, or the let-in of its hello wakes it.
    return (await this.letInLater(key, admit, live)) ? ice() : null;
  }

  /**
   * A lobby grant's pre-join subscription waiting past its reads for its user's let-in: true once
   * let in (`admitting` included: the subscription is paused until the hello, which needs the
   * invite), false once the session ends, its hello was let in without it, or `live` says its
   * standby is gone (checked every LOBBY_MEDIA_CHECK_MS).
   */
  private async letInLater(key: string, admit: AdmitAtHello, live: () => boolean): Promise<boolean> {
    for (;;) {
      if (this.admitAtHello.get(key) !== admit || !admit.lobby || !live()) return false;
      if (mediaLetIn(admit)) return true;
      await this.pauseUnlessWoken(key, LOBBY_MEDIA_CHECK_MS);
    }
  }

  /**
   * A host admits `userId` through Parley (Governance, before its invite goes out over
   * federation): their lobby grants' pre-join subscriptions are made now, so that the media is
   * connected, paused, when the invite reaches them. Nothing is forwarded and no hello is let in
   * before the invite is this homeserver's.
   */
  letInAhead(roomId: string, userId: string): void {
    for (const [, admit] of this.lobbyGrantsOf(roomId, userId)) {
      admit.admitting = true;
      wake(admit);
    }
  }

  /**
   * That admission's invite failed: their lobby grants admitted ahead end (with any subscription
   * made for them), unless the invite reached Parley meanwhile. The user is still knocking; their
   * client asks again.
   */
  letInFailed(roomId: string, userId: string): void {
    for (const [key, admit] of [...this.lobbyGrantsOf(roomId, userId)]) {
      if (admit.admitting && !admit.knownInvited && !admit.knownJoined) this.end(key, { errcode: "M_FORBIDDEN", message: notLetIn(userId, roomId) });
    }
  }

  /** The grants of `userId` in `roomId`'s call still waiting in its lobby (not let in at a hello). */
  private *lobbyGrantsOf(roomId: string, userId: string): Generator<[string, AdmitAtHello]> {
    for (const [key, admit] of this.admitAtHello) {
      const s = this.sessions.get(key);
      if (admit.lobby && s?.roomId === roomId && s.userId === userId) yield [key, admit];
    }
  }

  /**
   * `told` once if the session of `key` ends (a deny of its lobby grant, an eviction, its expiry,
   * its holder gone) before the returned function is called: a socket on standby for it closes
   * then, not at its own timer. A session already gone is told at once.
   */
  whenEnded(key: string, told: SessionCloser): () => void {
    if (!this.sessions.has(key)) {
      told({ errcode: "M_UNKNOWN_TOKEN", message: "unknown or expired session; join again" });
      return () => undefined;
    }
    const set = this.watchers.get(key) ?? new Set<SessionCloser>();
    this.watchers.set(key, set.add(told));
    return () => {
      set.delete(told);
      if (!set.size && this.watchers.get(key) === set) this.watchers.delete(key);
    };
  }

  /** Drops a session and its holder; the user's last held one in the room ending is told, and so is whoever watches it. */
  private forget(key: string, reason: SessionEndReason = HOLDER_GONE): void {
    const s = this.sessions.get(key);
    if (!s) return;
    const watchers = this.watchers.get(key);
    this.watchers.delete(key);
    const held = this.held.delete(key);
    this.deviceOf.delete(key);
    this.announced.delete(key);
    this.closers.delete(key);
    this.sessions.delete(key);
    const admit = this.admitAtHello.get(key);
    this.admitAtHello.delete(key);
    wake(admit); // a hello or a join waiting on it learns at once that it ended
    const recorder = this.deps.recorder;
    if (recorder) void this.recording.run(key, () => recorder.forget(key)).catch((err: unknown) => this.deps.recordFailed?.(err));
    if (held && !this.present(s.roomId, s.userId)) this.deps.onPresence?.(s.roomId, s.userId, false, s.callId);
    for (const told of watchers ?? []) told(reason);
  }

  private end(key: string, reason: SessionEndReason): void {
    const closer = this.closers.get(key);
    this.forget(key, reason);
    this.closers.delete(key);
    clearTimeout(this.expiryTimers.get(key));
    this.expiryTimers.delete(key);
    closer?.(reason);
  }

  private expireIn(key: string, ms: number): void {
    const timer = setTimeout(() => this.end(key, { errcode: "M_UNKNOWN_TOKEN", message: "session expired" }), ms);
    timer.unref();
    this.expiryTimers.set(key, timer);
  }

  private keyOf(token: string): string {
    return this.deps.recorder?.key(token) ?? token;
  }

  /** Writes the session's holder part (a session without a socket keeps its grant's expiry). */
  private record(s: CallSession, deviceId: string): void {
    const recorder = this.deps.recorder;
    if (!recorder) return;
    const seat = {
      tokenHash: s.key, userId: s.userId, roomId: s.roomId, callId: s.callId, deviceId,
      expiresAt: Number.isFinite(s.expiresAt) ? s.expiresAt : null, updatedAt: this.deps.clock.now(),
    };
    void this.recording.run(s.key, () => recorder.save(seat)).catch((err: unknown) => this.deps.recordFailed?.(err));
  }

  /**
   * A leave, kick or ban: every session of that user in that room ends now. Returns how many. An
   * invite takes nothing away: an invited user (never a joined one) holds at most a grant asked
   * ahead for the room join it is making (its hello awaits that join), or one asked from the
   * lobby, which the invite lets in. A knock (again: a note for the hosts) takes nothing away either.
   */
  evict(roomId: string, userId: string, membership: string, cause: { by?: string | undefined; reason?: string | undefined } = {}): number {
    // Let in from the lobby: a grant asked there may say hello now, its user's device be announced.
    if (membership === "invite") {
      this.letIn(roomId, userId);
      return 0;
    }
    // Knocking again (a new reason): the grant asked in the lobby stands.
    if (membership === "knock") return 0;
    let ended = 0;
    for (const s of [...this.sessions.values()]) {
      if (s.roomId === roomId && s.userId === userId) {
        const by = cause.by && cause.by !== userId ? cause.by : undefined;
        this.end(s.key, { errcode: "M_FORBIDDEN", message: `membership is now ${membership}`, by, reason: by ? cause.reason : undefined });
        ended++;
      }
    }
    return ended;
  }

  /** A knocker's invite reached Parley in a transaction: their lobby grants are let in (no read at their hello). */
  private letIn(roomId: string, userId: string): void {
    for (const [, admit] of this.lobbyGrantsOf(roomId, userId)) {
      admit.knownInvited = true;
      wake(admit); // a hello (awaitLetIn) or a pre-join subscription (letInForMedia) waiting for this invite
    }
  }

  /**
   * The call ended (`!meet end`, the bot removed from the room): every session of it ends now
   * (its sockets close, their SFU sessions and provisioned keys are released by their closers),
   * then its SFU room is destroyed.
   */
  async endCall(call: Pick<CallRecord, "callId" | "sfu">, message = "the call has ended", by?: string): Promise<void> {
    for (const s of [...this.sessions.values()]) {
      if (s.callId === call.callId) this.end(s.key, { errcode: "M_NOT_FOUND", message, by });
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
    // Knockers' grants (which do not occupy it) go with its SFU room: they ask again once let in.
    for (const [key, s] of [...this.sessions]) if (s.callId === call.callId && this.inLobby(key)) this.end(key, { errcode: "M_NOT_FOUND", message: "the call has ended" });
    if (call.origin === "alias") await this.deps.store.endCall(call.roomId, { by: "idle", at: this.deps.clock.now(), eventId: null });
    if (call.sfu) {
      await this.deps.store.setCallSfu(call.callId, null);
      await this.deps.sfu.destroyRoom(call.sfu);
    }
  }

  /** Whether the call has a live session (granted, or held by a socket; a knocker's grant in the lobby is not one). */
  occupied(callId: string): boolean {
    for (const [key, s] of this.sessions) if (s.callId === callId && !this.inLobby(key)) return true;
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
    this.held.clear();
    // Waits on a grant (a hello's, a lobby subscription's) end now, not at their next check.
    const waiting = [...this.admitAtHello.values()];
    this.admitAtHello.clear();
    for (const admit of waiting) wake(admit);
    this.announced.clear();
    this.deviceOf.clear();
    this.watchers.clear();
  }
}
