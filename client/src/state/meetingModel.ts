// One meeting from link to hang-up: open the room (after a yes when that would create a new
// meeting; or ask to join it and wait for a host), pre-join, the call, and after leaving the
// choice to rejoin. The services that touch the network are injected by the composition root.
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
  /** The pre-join screen for this room (it asks about the call's host where the rule says to). */
  prejoin(room: RoomSummary): PrejoinModel;
  call(room: RoomSummary, local: LocalMediaHandoff): ActiveCall;
  /** The meeting is closed: whatever the services started for it (a feed warming up) stops. */
  dispose?(): void;
  /**
   * Starts opening the microphone and camera for the next pre-join now (a knock let in: the
   * pre-join follows the room's join); returns what stops them if no pre-join takes them.
   */
  warmDevices?(): () => void;
  /** Asking to join a room the user may not enter directly (absent: no knocking here, e.g. the widget). */
  knock?: KnockPort;
}

export type MeetingState =
  | { stage: "opening"; target: string }
  | { stage: "confirm"; target: string }
  | { stage: "knock"; target: string; knock: KnockModel }
  | { stage: "prejoin"; target: string; room: RoomSummary; prejoin: PrejoinModel }
  | { stage: "call"; target: string; room: RoomSummary; call: ActiveCall }
  | { stage: "left"; target: string; room: RoomSummary; reason: string | null }
  | { stage: "error"; target: string; message: string };

export class MeetingModel {
  readonly state: Store<MeetingState>;
  private readonly services: MeetingServices;
  /** The user said yes to creating this meeting. */
  private createConfirmed = false;

  constructor(target: string, services: MeetingServices) {
    this.services = services;
    this.state = new Store<MeetingState>({ stage: "opening", target });
  }

  async open(): Promise<void> {
    const target = this.state.get().target;
    this.state.set({ stage: "opening", target });
    try {
      if (!this.createConfirmed && (await this.services.isNewMeeting?.(target))) {
        this.state.set({ stage: "confirm", target });
        return;
      }
      const room = await this.services.openRoom(target);
      markStep("room-opened");
      this.toPrejoin(room);
    } catch (err) {
      if (this.services.knock && err instanceof ParleyClientError && err.code === "M_FORBIDDEN") return this.toKnock(target, this.services.knock, err);
      this.state.set({ stage: "error", target, message: toClientError(err, "room").human });
    }
  }

  /** The user said yes to a new meeting: opening it creates it. */
  async create(): Promise<void> {
    if (this.state.get().stage !== "confirm") return;
    this.createConfirmed = true;
    await this.open();
  }

  /** From pre-join into the call, with the previewed tracks (once any device still opening is). */
  async join(): Promise<void> {
    const before = this.state.get();
    if (before.stage !== "prejoin") return;
    markStep("join");
    await before.prejoin.settled();
    const s = this.state.get();
    // The user may have left the pre-join (or pressed Join twice) meanwhile.
    if (s.stage !== "prejoin" || s.prejoin !== before.prejoin) return;
    const local = s.prejoin.handOff();
    s.prejoin.dispose();
    const call = this.services.call(s.room, local);
    this.state.set({ stage: "call", target: s.target, room: s.room, call });
    // A failed call stays on screen (with its reason, the chat, and "join again").
    void call.vm.join();
    void call.chat.start();
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
    this.services.dispose?.();
    if (s.stage === "prejoin") s.prejoin.dispose();
    if (s.stage === "call") s.call.dispose();
    if (s.stage === "knock") s.knock.dispose();
  }

  /** The join was refused: ask to join (a knock) and wait for a host; let in, the meeting opens again. */
  private async toKnock(target: string, port: KnockPort, refusal: ParleyClientError): Promise<void> {
    const knock = new KnockModel(target, port, () => {
      markStep("admitted");
      const s = this.state.get();
      if (s.stage !== "knock" || s.knock !== knock) return;
      // The user asked to join: their preview starts while the room is joined, not after.
      const release = this.services.warmDevices?.();
      void this.open().finally(() => {
        if (this.state.get().stage !== "prejoin") release?.();
      });
    });
    this.state.set({ stage: "knock", target, knock });
    // Whatever moves the meeting on (let in, "Try again") ends this wait.
    const off = this.state.subscribe((s) => {
      if (s.stage === "knock" && s.knock === knock) return;
      off();
      knock.dispose();
    });
    await knock.start(refusal);
  }

  private toPrejoin(room: RoomSummary): void {
    const prejoin = this.services.prejoin(room);
    this.state.set({ stage: "prejoin", target: this.state.get().target, room, prejoin });
    markStep("prejoin-shown");
    void prejoin.start();
  }
}
