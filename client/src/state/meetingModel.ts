// One meeting from link to hang-up: open the room (after a yes when that would create a new
// meeting; or ask to join it and wait for a host), pre-join, the call, and after leaving the
// choice to rejoin. The services that touch the network are injected by the composition root.
//
// Asking to join is a pre-join too (as in Meet and Teams): the preview and the device choice show
// beside the wait, and "Join when let in" enters the call as soon as a host lets the user in (the
// room joined, no second Join). Let in before that, the user gets the pre-join with the same
// devices and joins when they are ready.
import { ParleyClientError, toClientError } from "../errors.ts";
import type { RoomSummary } from "../matrix/rooms.ts";
import type { CallDevicesModel } from "./callDevices.ts";
import type { CallViewModel } from "./callModel.ts";
import type { ChatModel } from "./chatModel.ts";
import type { GovernanceModel } from "./governanceModel.ts";
import type { LayoutModel } from "./layoutModel.ts";
import { KnockModel, type KnockPort } from "./knockModel.ts";
import type { LocalMediaHandoff, PrejoinModel } from "./prejoinModel.ts";
import { markStep } from "../timeline.ts";
import { Store } from "./store.ts";

export interface ActiveCall {
  vm: CallViewModel;
  chat: ChatModel;
  governance: GovernanceModel;
  devices: CallDevicesModel;
  /** Where the tiles go (pages, the speaker view, pins); what it shows is reported to the server. */
  layout: LayoutModel;
  dispose(): void;
}

export interface MeetingServices {
  /** Whether opening the target would create a new meeting; absent: targets open as they are. */
  isNewMeeting?(target: string): Promise<boolean>;
  openRoom(target: string): Promise<RoomSummary>;
  /**
   * The pre-join screen for this room (it asks about the call's host where the rule says to);
   * `kept`: the one shown while asking to join, returned with the host to ask about (its devices
   * go on).
   */
  prejoin(room: RoomSummary, kept?: PrejoinModel): PrejoinModel;
  /**
   * The pre-join shown while asking to join, before the room is open: the preview and the
   * devices (the call's host is asked about once the room is open). Absent: no preview there.
   */
  lobbyPrejoin?(): PrejoinModel;
  /**
   * Let in from the lobby, with the call announced by the invite (vouched for by the inviting
   * server): the room as the invite shows it, at once, and its join, started now (resolves with
   * the room id joined). Null: the room is joined and read first (openRoom). Absent: never early.
   */
  letInRoom?(target: string): { room: RoomSummary; joined: Promise<string> } | null;
  /** `joined`: the room's join, when the call starts before it answers (its membership waits for it). */
  call(room: RoomSummary, local: LocalMediaHandoff, joined?: Promise<unknown>): ActiveCall;
  /** The meeting is closed: whatever the services started for it (a feed warming up) stops. */
  dispose?(): void;
  /** Asking to join a room the user may not enter directly (absent: no knocking here, e.g. the widget). */
  knock?: KnockPort;
}

export type MeetingState =
  | { stage: "opening"; target: string }
  | { stage: "confirm"; target: string }
  /**
   * Asking to join. `prejoin`: the preview beside the wait (none once asking is not possible);
   * `joinWhenAdmitted`: the user pressed "Join when let in"; `admitted`: let in, the room opening;
   * `letIn`: the room as the invite showed it, its join under way, and the pre-join made for it
   * (a Join pressed now starts the call beside that join); `starting`: the call is starting so.
   */
  | {
      stage: "knock";
      target: string;
      knock: KnockModel;
      prejoin: PrejoinModel | null;
      joinWhenAdmitted: boolean;
      admitted: boolean;
      letIn?: LetIn;
      starting?: boolean;
    }
  | { stage: "prejoin"; target: string; room: RoomSummary; prejoin: PrejoinModel }
  | { stage: "call"; target: string; room: RoomSummary; call: ActiveCall }
  | { stage: "left"; target: string; room: RoomSummary; reason: string | null }
  | { stage: "error"; target: string; message: string };

/** Let in from the lobby with the call announced: the invite's room, its join under way, and the pre-join made for it. */
interface LetIn {
  room: RoomSummary;
  joined: Promise<RoomSummary>;
  prejoin: PrejoinModel;
}

export class MeetingModel {
  readonly state: Store<MeetingState>;
  private readonly services: MeetingServices;
  /** The user said yes to creating this meeting. */
  private createConfirmed = false;
  /** Devices opened beside the room's opening, until the pre-join or the lobby takes them. */
  private opening: PrejoinModel | null = null;
  private disposed = false;

  constructor(target: string, services: MeetingServices) {
    this.services = services;
    this.state = new Store<MeetingState>({ stage: "opening", target });
  }

  /**
   * Opens the meeting's room: the pre-join, or asking to join when refused. `join`: the user
   * pressed Join already (a call started at the let-in whose room join was refused after all, as
   * Synapse does for a moment after a knock's invite): the room opened now, the call starts again
   * without a second Join (once the pre-join may start it); refused again, the user asks again.
   */
  async open(join = false): Promise<void> {
    const target = this.state.get().target;
    this.state.set({ stage: "opening", target });
    try {
      if (!this.createConfirmed && (await this.services.isNewMeeting?.(target))) {
        this.state.set({ stage: "confirm", target });
        return;
      }
    } catch (err) {
      return this.refused(target, err, null);
    }
    // The devices open now, beside the room's opening: the pre-join that follows, or the lobby
    // when the join is refused and the user asks to join, shows their preview with them. (A
    // knock's preview came 200-370 ms after the knock, and a person let in before it waited.)
    const devices = this.services.lobbyPrejoin?.() ?? null;
    if (devices) void devices.start();
    this.opening = devices;
    let room: RoomSummary;
    try {
      room = await this.services.openRoom(target);
    } catch (err) {
      if (this.tookBack(devices)) return;
      return this.refused(target, err, devices);
    }
    if (this.tookBack(devices)) return;
    markStep("room-opened");
    this.toPrejoin(room, devices);
    const s = this.state.get();
    if (join && s.stage === "prejoin" && s.prejoin.canJoin) await this.join();
  }

  /** The room's opening ended: true (and its devices closed) when the meeting was closed meanwhile. */
  private tookBack(devices: PrejoinModel | null): boolean {
    // (dispose() closed them already if they were still this opening's.)
    const mine = this.opening === devices;
    if (mine) this.opening = null;
    if (!this.disposed) return false;
    if (mine) devices?.dispose();
    return true;
  }

  /** Opening failed: asked to join when the join was refused (with the devices opening), else the error. */
  private refused(target: string, err: unknown, devices: PrejoinModel | null): Promise<void> | void {
    if (this.services.knock && err instanceof ParleyClientError && err.code === "M_FORBIDDEN") return this.toKnock(target, this.services.knock, err, devices);
    devices?.dispose();
    this.state.set({ stage: "error", target, message: toClientError(err, "room").human });
  }

  /** The user said yes to a new meeting: opening it creates it. */
  async create(): Promise<void> {
    if (this.state.get().stage !== "confirm") return;
    this.createConfirmed = true;
    await this.open();
  }

  /**
   * From pre-join into the call, with the previewed tracks (once any device still opening is).
   * While asking to join: the call starts as soon as a host lets the user in.
   */
  async join(): Promise<void> {
    const before = this.state.get();
    if (before.stage === "knock") {
      // Let in, the room's join under way: the call starts now, beside it, as when Join was
      // pressed before the let-in (docs/join.md, twenty-second pass).
      if (this.startBesideRoomJoin(before.knock)) return;
      // Waiting, or let in while the room opens: the call starts once it has.
      if (before.prejoin && !before.joinWhenAdmitted && !before.starting && before.knock.state.get().status === "waiting") this.state.set({ ...before, joinWhenAdmitted: true });
      return;
    }
    if (before.stage !== "prejoin") return;
    markStep("join");
    await before.prejoin.settled();
    const s = this.state.get();
    // The user may have left the pre-join (or pressed Join twice) meanwhile.
    if (s.stage !== "prejoin" || s.prejoin !== before.prejoin) return;
    this.startCall(s.target, s.room, s.prejoin);
  }

  private startCall(target: string, room: RoomSummary, prejoin: PrejoinModel, joined?: Promise<unknown>): ActiveCall {
    const local = prejoin.handOff();
    prejoin.dispose();
    const call = this.services.call(room, local, joined);
    // The join starts before the call screen is drawn (its view reads the call's state as it is
    // then): with the grant in already, the signalling socket opens first. A failed call stays on
    // screen (with its reason, the chat, and "join again").
    void call.vm.join();
    this.state.set({ stage: "call", target, room, call });
    markStep("call-shown");
    void call.chat.start();
    return call;
  }

  /** After a failed call: back to pre-join for a fresh attempt. */
  retry(): void {
    const s = this.state.get();
    if (s.stage !== "call") return;
    s.call.dispose();
    this.toPrejoin(s.room);
  }

  async leave(): Promise<void> {
    const s = this.state.get();
    if (s.stage !== "call") return;
    await s.call.vm.leave();
    s.call.dispose();
    this.state.set({ stage: "left", target: s.target, room: s.room, reason: null });
  }

  /** Back to pre-join after leaving or a failure. */
  rejoin(): void {
    const s = this.state.get();
    if (s.stage === "left") this.toPrejoin(s.room);
  }

  dispose(): void {
    const s = this.state.get();
    this.disposed = true;
    this.opening?.dispose();
    this.opening = null;
    this.services.dispose?.();
    if (s.stage === "prejoin") s.prejoin.dispose();
    if (s.stage === "call") s.call.dispose();
    if (s.stage === "knock") {
      s.knock.dispose();
      s.prejoin?.dispose();
    }
  }

  /** The join was refused: ask to join (a knock) and wait for a host; let in, the meeting opens again. */
  private async toKnock(target: string, port: KnockPort, refusal: ParleyClientError, opened: PrejoinModel | null = null): Promise<void> {
    const knock = new KnockModel(target, port, () => void this.admitted(knock));
    const prejoin = opened ?? this.services.lobbyPrejoin?.() ?? null;
    this.state.set({ stage: "knock", target, knock, prejoin, joinWhenAdmitted: false, admitted: false });
    if (prejoin && !opened) void prejoin.start();
    const offKnock = knock.state.subscribe((k) => {
      const s = this.knockStage(knock);
      // Asking is not possible (banned, invite-only, locked): the preview stops.
      if (k.status === "closed" && s?.prejoin) {
        s.prejoin.dispose();
        this.state.set({ ...s, prejoin: null, joinWhenAdmitted: false });
      }
      // "Join when let in" holds only while waiting (not after a cancel or a decline).
      else if (k.status !== "waiting" && s?.joinWhenAdmitted) this.state.set({ ...s, joinWhenAdmitted: false });
    });
    // Whatever moves the meeting on (let in, "Try again") ends this wait. The preview goes with
    // it unless the pre-join or the call took it.
    const off = this.state.subscribe((s) => {
      if (s.stage === "knock" && s.knock === knock) return;
      off();
      offKnock();
      knock.dispose();
      const taken = (s.stage === "prejoin" && s.prejoin === prejoin) || s.stage === "call";
      if (!taken) prejoin?.dispose();
    });
    await knock.start(refusal);
  }

  /**
   * Let in: the room opens (the preview goes on), then the pre-join, or the call if asked for.
   * Asked for, with the call announced by the invite, the call starts at once, beside the room's
   * join: its grant is asked at the invite, the call's server takes the hello of a user let in
   * while their join is on its way (it must arrive within calls.limits.invitedJoinWaitMs), and the
   * join takes 130-450 ms over federation (the knock benchmark), which the call's socket,
   * subscription and peer connections no longer wait for. The call's membership event waits for
   * the join; a join that fails after all ends that call as a failed room opening would.
   */
  private async admitted(knock: KnockModel): Promise<void> {
    markStep("admitted");
    const s = this.knockStage(knock);
    if (!s || s.admitted) return;
    if (!s.prejoin) return void this.open();
    const early = this.services.letInRoom?.(s.target) ?? null;
    const joined = early?.joined.then((roomId) => sameRoom(early.room, roomId));
    joined?.catch(() => undefined); // (handled below, or by the call started beside it)
    // The pre-join made for the invite's room, kept for after the join when it cannot join yet.
    const made = early && joined ? this.services.prejoin(early.room, s.prejoin) : undefined;
    this.state.set({ ...s, admitted: true, ...(early && joined && made ? { letIn: { room: early.room, joined, prejoin: made } } : {}) });
    if (s.joinWhenAdmitted && this.startBesideRoomJoin(knock)) return;
    let room: RoomSummary;
    try {
      room = joined ? await joined : await this.services.openRoom(s.target);
    } catch (err) {
      const k = this.knockStage(knock);
      if (!k || k.starting) return; // (a call started beside the join reports it)
      // Refused after all (the invite taken back): open again from the start, "Join when let in" standing.
      if (err instanceof ParleyClientError && err.code === "M_FORBIDDEN") return void this.open(k.joinWhenAdmitted);
      this.state.set({ stage: "error", target: s.target, message: toClientError(err, "room").human });
      return;
    }
    markStep("room-opened");
    const now = this.knockStage(knock);
    if (!now || now.starting) return; // (a call started beside the join: its own from here)
    if (!now.prejoin) return this.toPrejoin(room);
    const prejoin = made ?? this.services.prejoin(room, now.prejoin);
    if (!now.joinWhenAdmitted || !prejoin.canJoin) return this.showPrejoin(room, prejoin);
    markStep("join");
    await prejoin.settled();
    if (!this.knockStage(knock)) return;
    this.startCall(s.target, room, prejoin);
  }

  /**
   * Let in with the room's join under way (admitted above) and Join pressed, before or now: the
   * call starts beside that join. False (nothing started) when it cannot: not let in so, started
   * already, or the pre-join must ask about the call's host first.
   */
  private startBesideRoomJoin(knock: KnockModel): boolean {
    const s = this.knockStage(knock);
    if (!s?.letIn || s.starting || !s.prejoin || !s.letIn.prejoin.canJoin) return false;
    this.state.set({ ...s, joinWhenAdmitted: true, starting: true });
    void this.joinBesideRoomJoin(knock, s.letIn);
    return true;
  }

  /** The call started beside the room's join (startBesideRoomJoin). */
  private async joinBesideRoomJoin(knock: KnockModel, { room, joined, prejoin }: LetIn): Promise<void> {
    markStep("join");
    await prejoin.settled();
    const s = this.knockStage(knock);
    if (!s) return;
    const call = this.startCall(s.target, room, prejoin, joined);
    try {
      await joined;
      markStep("room-opened");
    } catch (err) {
      const now = this.state.get();
      if (now.stage !== "call" || now.call !== call) return; // left meanwhile
      call.dispose();
      // Refused after all (the invite taken back, or a homeserver's join race that outlasted
      // joinRoom's retries): open again from the start; the Join pressed stands.
      if (err instanceof ParleyClientError && err.code === "M_FORBIDDEN") return void this.open(true);
      this.state.set({ stage: "error", target: s.target, message: toClientError(err, "room").human });
    }
  }

  /** The meeting's state while it is still asking to join with `knock`, else null. */
  private knockStage(knock: KnockModel): Extract<MeetingState, { stage: "knock" }> | null {
    const s = this.state.get();
    return s.stage === "knock" && s.knock === knock ? s : null;
  }

  /** The pre-join for `room`; `opened`: with the devices already opening (open()). */
  private toPrejoin(room: RoomSummary, opened: PrejoinModel | null = null): void {
    const prejoin = this.services.prejoin(room, opened ?? undefined);
    this.showPrejoin(room, prejoin);
    if (!opened) void prejoin.start();
  }

  private showPrejoin(room: RoomSummary, prejoin: PrejoinModel): void {
    this.state.set({ stage: "prejoin", target: this.state.get().target, room, prejoin });
    markStep("prejoin-shown");
  }
}

/** The room the invite showed, once its join answered with that room (another: the alias moved meanwhile). */
function sameRoom(room: RoomSummary, joinedId: string): RoomSummary {
  if (joinedId !== room.roomId) throw new ParleyClientError("M_UNKNOWN", "room", { detail: `joined ${joinedId}, not the room of the invite (${room.roomId})` });
  return room;
}
