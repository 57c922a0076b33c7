// Seats: a signalling socket's place in a call, from hello to its end. A hello takes the session
// over (the previous holder ends at once), reads the room's key mode and, for provisioned keys,
// adds the device to the key service. A seat ends on eviction, takeover, the call's end or its
// socket's close; ending releases, synchronously, its provisioned-key membership (no key sent
// afterwards reaches it) and its SFU session (closed through the SFU at once), then tells the
// client and closes its socket.
import { ParleyError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { CallClient } from "./callRoster.ts";
import { CallMedia, type MemberRecord, type PreparedMedia, type Seat } from "./callMedia.ts";
import { TAKEN_OVER, type CallService, type IceAtHello, type SessionCloser, type SessionEndReason } from "./callService.ts";
import { readKeyMode, type KeyMode, type RoomKeyMode, type RoomStateReader } from "./callState.ts";
import type { CallPush } from "./callRoster.ts";
import type { ModerationConfig, ModerationRecorder } from "./moderation.ts";
import type { Clock, SfuMedia } from "./ports.ts";
import type { Role } from "./roles.ts";
import type { KeyDevice } from "./provisionedKeys.ts";
import type { LargeMeetingsConfig } from "./largeMeetings.ts";
import type { E2eeObserver } from "./e2eeAdmission.ts";
import type { SeatRecord } from "../store/store.ts";

/** How a seat ended (metrics): its socket closed, another took it over, or its session ended. */
export type SeatEnd = "socket_closed" | "taken_over" | "expired" | "call_ended" | "left_room" | "removed";

/** The seat end a session's end reason means: a membership change by someone else is a removal. */
export function seatEnd(reason: SessionEndReason): SeatEnd {
  if (reason === TAKEN_OVER) return "taken_over";
  if (reason.errcode === "M_UNKNOWN_TOKEN") return "expired";
  if (reason.errcode === "M_NOT_FOUND") return "call_ended";
  return reason.by ? "removed" : "left_room";
}

/** What the signalling layer gives a seat: pushes, and the end of its socket. */
export interface SeatClient extends CallClient {
  /** The seat ended: tell the client why and close the socket. */
  ended(reason: SessionEndReason): void;
}

/** How a call's media is encrypted, as told in hello. */
export interface E2eeInfo {
  required: boolean;
  keys: KeyMode;
  /** The bot whose Olm device sends provisioned keys (only keys from it are accepted). */
  bot: string;
}

/** The provisioned-key service, as seats use it. */
export interface CallKeys {
  join(callId: string, roomId: string, member: object, device: KeyDevice): void;
  leave(callId: string, member: object): void;
}

export interface CallSeatsDeps {
  calls: Pick<CallService, "session" | "admitHolder" | "attach" | "detach" | "holds" | "sfuRoomOf" | "restore" | "recordMedia" | "whenEnded" | "grantedInLobby" | "letInForMedia">;
  sfu: SfuMedia;
  rooms: RoomStateReader;
  /** The room's key mode for a hello, from state read lately (governance's); absent: read now. */
  keyMode?: (roomId: string) => Promise<RoomKeyMode>;
  /** The bot's Olm device sending provisioned keys; undefined without crypto. */
  keys: CallKeys | undefined;
  botUserId: string;
  requireE2ee: boolean;
  clock: Clock;
  moderation: ModerationConfig;
  /** Governance: the role shown for a user, and what a newly seated user is told. */
  roleOf?: (roomId: string, userId: string) => Role | undefined;
  onSeated?: (roomId: string, userId: string, push: (p: CallPush) => void) => Promise<void>;
  /** Large meetings (docs/large-meetings.md); defaults if absent. */
  media?: LargeMeetingsConfig | undefined;
  /** Told of each seat opened and ended (metrics); optional. */
  onSeat?: ((what: "joined" | SeatEnd) => void) | undefined;
  /** Told of each end-to-end encryption check (metrics); optional. */
  observeE2ee?: E2eeObserver | undefined;
  /** Records the calls' moderation for a restarted Parley (docs/resilience.md); optional. */
  recordModeration?: ModerationRecorder | undefined;
  /** Pre-join subscriptions a call may hold at once (calls.limits.prejoinSubscriptionsPerCall); optional. */
  preparedPerCall?: number | undefined;
}

/** A standby socket's pre-join subscription, handed to its real hello: the SFU's, and the client's answer if one is under way. */
export interface PreparedAtHello {
  media: Promise<PreparedMedia | undefined>;
  answering: Promise<unknown> | undefined;
}

interface SeatState extends Seat {
  readonly closer: SessionCloser;
  ended: boolean;
  /** Holds a session restored from the store until its client reattaches (no socket, no metrics). */
  standIn?: true;
}

export class CallSeats {
  readonly media: CallMedia;
  private readonly deps: CallSeatsDeps;
  /** Live seats per room (governance pushes reach them before they have media). */
  private readonly byRoom = new Map<string, Set<SeatState>>();
  private readonly log = getLogger("calls.seats");
  /** Stand-in seats of sessions restored from the store, by session key. */
  private readonly standIns = new Map<string, SeatState>();
  /** Parley is stopping: sockets closing now end nothing (the next process takes the sessions over). */
  private suspended = false;

  constructor(deps: CallSeatsDeps) {
    this.deps = deps;
    this.media = new CallMedia({
      sfu: deps.sfu,
      sfuRoomOf: (callId) => deps.calls.sfuRoomOf(callId),
      live: (seat) => this.live(seat),
      requireE2ee: deps.requireE2ee,
      clock: deps.clock,
      moderation: deps.moderation,
      ...(deps.roleOf ? { roleOf: deps.roleOf } : {}),
      media: deps.media,
      mediaFailed: (what, err) => this.log.warn({ err, what }, "large-meeting media choice not applied"),
      observeE2ee: deps.observeE2ee,
      recordMember: (seat, record) => deps.calls.recordMedia(seat.session, record && JSON.stringify(record)),
      recordModeration: deps.recordModeration,
      preparedPerCall: deps.preparedPerCall,
    });
  }

  /**
   * Sessions an earlier Parley process recorded (docs/resilience.md): live again, each under a
   * stand-in seat with its SFU session adopted and its member back in the roster, until its
   * client says hello again (and takes the member over, media untouched) or `graceMs` passes
   * (the session ends and its SFU session closes). A record whose SFU session is gone leaves a
   * session without media: its client renegotiates once back.
   */
  async restore(records: readonly SeatRecord[], graceMs: number, now: number): Promise<{ sessions: number; media: number }> {
    const adopted = await Promise.all(
      records.map(async (r) => {
        const grace = r.expiresAt === null ? graceMs : r.expiresAt - now;
        if (grace <= 0) return false;
        const closer: SessionCloser = (reason) => {
          if (this.standIns.get(r.tokenHash) === seat) this.standIns.delete(r.tokenHash);
          this.release(seat, seatEnd(reason));
        };
        const seat: SeatState = { session: this.deps.calls.restore(r, closer, grace), deviceId: r.deviceId, client: { push: () => {} }, ended: false, standIn: true, closer };
        this.standIns.set(r.tokenHash, seat);
        const member = parseMemberRecord(r.media);
        return member !== undefined && (await this.media.adopt(seat, member));
      }),
    );
    return { sessions: this.standIns.size, media: adopted.filter(Boolean).length };
  }

  /** Parley is stopping for a restart: sockets that close from now on end no session and release no media. */
  suspend(): void {
    this.suspended = true;
  }

  /** Pushes to each live seat of the room what `push(userId)` gives for its user. */
  pushEach(roomId: string, push: (userId: string) => CallPush | undefined): void {
    for (const seat of this.byRoom.get(roomId) ?? []) {
      const p = push(seat.session.userId);
      if (p) seat.client.push(p);
    }
  }

  /**
   * A standby hello (the pre-join's socket, opened ahead): the live session of `token` and how long
   * it has left (Infinity once held), seating nobody. Its real hello is checked again in `open`.
   * `ended` is told if the session ends first (a deny of a lobby grant, an eviction, its expiry)
   * until `release` (the real hello, or the socket's close).
   */
  standby(token: string, ended: SessionCloser): { userId: string; roomId: string; callId: string; key: string; lifeMs: number; release: () => void } {
    const s = this.deps.calls.session(token);
    if (!s) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    const lifeMs = s.expiresAt - this.deps.clock.now();
    return { userId: s.userId, roomId: s.roomId, callId: s.callId, key: s.key, lifeMs, release: this.deps.calls.whenEnded(s.key, ended) };
  }

  /**
   * The pre-join's subscription of a standby socket's session (CallMedia.prepare): none for a
   * session gone, or one waiting in the lobby (nobody's media until let in: a lobby grant's waits
   * for the let-in, CallService.letInForMedia). `live`: whether the standby still wants it.
   */
  async prepare(token: string, live: () => boolean): Promise<PreparedMedia | undefined> {
    const s = this.deps.calls.session(token);
    if (!s) return undefined;
    // A knocker's grant: only once let in (its client asks when the invite shows on its own
    // homeserver, perhaps before this one has it), and only while the standby still wants it. Its
    // offer carries the ICE servers its grant did not.
    let ice: IceAtHello | undefined;
    if (this.deps.calls.grantedInLobby(token)) {
      const letIn = await this.deps.calls.letInForMedia(token, live);
      if (!letIn || !live()) return undefined;
      ice = letIn.ice;
    }
    const prepared = await this.media.prepare(s, () => live() && this.deps.calls.session(token) !== undefined);
    if (prepared && ice) prepared.ice = ice;
    return prepared;
  }

  /** hello: the seat of `token` for this client, taking the session over from any other socket. */
  /** `resumed`: the seat took over the SFU session its client had before a Parley restart (nothing to renegotiate). */
  /** `ice`: a session granted in the lobby, or restored after a restart, gets its ICE servers (TURN credentials) here. */
  /** `prepared`: the standby's pre-join subscription on this socket, seated with it if answered (`prepared` in the result), else closed. */
  async open(
    client: SeatClient,
    token: string,
    deviceId: string | undefined,
    prepared?: PreparedAtHello,
  ): Promise<{ seat: Seat; e2ee: E2eeInfo; resumed: boolean; ice?: IceAtHello; prepared?: boolean; preparedUpdate?: { sdp: string; streams: PreparedMedia["streams"] } }> {
    const { calls } = this.deps;
    const closePrepared = () => void prepared?.media.then((p) => p?.close());
    const known = calls.session(token);
    if (!known) {
      closePrepared();
      throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    }
    // A session granted from the pre-join passes the meeting's admission now (locked or ended since?).
    const keyMode = this.deps.keyMode ?? ((roomId: string) => readKeyMode(this.deps.rooms, roomId));
    const settled = prepared ? prepared.media.then(async (p) => (p && (await p.settled(prepared.answering)) ? p : undefined)) : Promise.resolve(undefined);
    const [mode, ice, ready] = await Promise.all([keyMode(known.roomId), calls.admitHolder(token), settled]).catch((err: unknown) => {
      closePrepared();
      throw err;
    });
    // The session may have ended while the room state was read.
    const session = calls.session(token);
    if (!session) {
      closePrepared();
      throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
    }
    if (!ready) closePrepared();
    const seat: SeatState = {
      session,
      deviceId: deviceId ?? "",
      client,
      ended: false,
      closer: (reason) => {
        this.release(seat, seatEnd(reason));
        client.ended(reason);
      },
    };
    // A session an earlier Parley process had: its member (SFU session and all) is this seat's now.
    const standIn = this.standIns.get(session.key);
    if (standIn) {
      this.standIns.delete(session.key);
      standIn.ended = true;
    }
    calls.attach(token, seat.closer, deviceId ?? "");
    const resumed = standIn !== undefined && this.media.moved(standIn, seat);
    let seats = this.byRoom.get(session.roomId);
    if (!seats) this.byRoom.set(session.roomId, (seats = new Set()));
    seats.add(seat);
    this.deps.onSeat?.("joined");
    // The pre-join's subscription, answered, is the seat's media (still paused); or the seat's SFU
    // session opens now, before any request needs it (the participant list is pushed once it
    // has: after the hello's answer, since the SFU answers after this returns).
    const seatedPrepared = !resumed && ready !== undefined ? this.media.seatPrepared(seat, ready) : false;
    if (ready && resumed) void ready.close();
    if (!seatedPrepared) this.media.warm(seat);
    // After the hello's answer (sent once this returns): forced mutes that still hold, and by whom.
    setImmediate(() => {
      if (!seat.ended) this.media.moderation.replay(session.callId, session.userId, (p) => client.push(p));
    });
    void this.deps.onSeated?.(session.roomId, session.userId, (p) => {
      if (!seat.ended) client.push(p);
    }).catch((err: unknown) => this.log.warn({ err, roomId: session.roomId }, "meeting state not sent"));
    const bot = mode.bot ?? this.deps.botUserId;
    const keys = this.deps.keys;
    if (mode.keys === "provisioned") {
      if (!keys || bot !== this.deps.botUserId) {
        this.log.warn({ roomId: session.roomId, bot }, "the room wants provisioned keys this Parley cannot send");
      } else if (deviceId) {
        keys.join(session.callId, session.roomId, seat, { userId: session.userId, deviceId });
      }
    }
    const seated = seatedPrepared ? { prepared: true, ...(seatedPrepared.update ? { preparedUpdate: seatedPrepared.update } : {}) } : {};
    return { seat, e2ee: { required: this.deps.requireE2ee, keys: mode.keys, bot }, resumed, ...(ice ? { ice } : {}), ...seated };
  }

  /** Whether the seat's session is live and still held by this seat. */
  live(seat: Seat): boolean {
    const s = seat as SeatState;
    return !s.ended && this.deps.calls.holds(s.session.token, s.closer);
  }

  /** The seat's socket closed by itself: its session ends with it (unless taken over). */
  closed(seat: Seat): void {
    if (this.suspended) return;
    const s = seat as SeatState;
    this.deps.calls.detach(s.session.token, s.closer);
    this.release(s, "socket_closed");
  }

  /** Seated sessions per call (metrics; a room has one call at a time). */
  seatsPerCall(): number[] {
    return [...this.byRoom.values()].map((s) => s.size);
  }

  private release(seat: SeatState, end: SeatEnd): void {
    if (seat.ended) return;
    seat.ended = true;
    if (!seat.standIn) this.deps.onSeat?.(end);
    const seats = this.byRoom.get(seat.session.roomId);
    seats?.delete(seat);
    if (seats?.size === 0) this.byRoom.delete(seat.session.roomId);
    this.deps.keys?.leave(seat.session.callId, seat);
    void this.media.release(seat).catch((err: unknown) => this.log.warn({ err, callId: seat.session.callId }, "SFU session not released"));
  }
}

/** The recorded member, or undefined when there is none or it is not one this Parley wrote. */
function parseMemberRecord(json: string | null): MemberRecord | undefined {
  if (!json) return undefined;
  try {
    const r = JSON.parse(json) as Partial<MemberRecord> | null;
    const ok = r && typeof r.sfu?.session === "number" && typeof r.sfu.feedId === "string" && Array.isArray(r.streams) && Array.isArray(r.subscribed);
    return ok ? (r as MemberRecord) : undefined;
  } catch {
    return undefined;
  }
}
