// Asking to join a meeting the user could not enter (the join was refused, 403). Where the room
// takes knocks (or the homeserver can't say), the client knocks at once, without asking: Parley
// lets many knocks in by itself (an open meeting where external servers exist, an institution
// member), so most users only pass through. Otherwise they wait in the lobby until a host lets
// them in (an invite: the meeting opens again and joins) or declines; meanwhile they may add a
// message for the hosts (a knock again, with the reason) or take the request back. Leaving the
// page keeps the knock: opening the meeting again resumes the wait.
import { toClientError, type ParleyClientError } from "../errors.ts";
import type { Admission, RoomPreview } from "../matrix/knock.ts";
import { markStep } from "../timeline.ts";
import { Store } from "./store.ts";

export interface KnockPort {
  preview(target: string): Promise<RoomPreview>;
  /** Knocks with an optional reason; resolves with the room id. */
  knock(target: string, reason: string): Promise<string>;
  /** Resolves with the room's answer; rejects when `signal` aborts or the wait cannot go on. */
  wait(roomId: string, signal: AbortSignal): Promise<Admission>;
  withdraw(roomId: string): Promise<void>;
}

export type KnockState =
  | { status: "checking"; name: string }
  /** "Ask to join", with an optional reason (after a cancel, or when a knock failed). */
  | { status: "offer"; name: string; sending: boolean; error: string | null }
  /** In the lobby; `note`: the message for the hosts (none yet, being sent, sent). */
  | { status: "waiting"; name: string; cancelling: boolean; error: string | null; note: "none" | "sending" | "sent" }
  | { status: "declined"; name: string }
  /** Asking is not possible (invite-only or locked, banned): the words why. */
  | { status: "closed"; name: string; message: string };

export const LOCKED_TEXT = "This meeting is not taking requests right now (it may be locked).";
export const INVITE_ONLY_TEXT = "This meeting only lets in people a host invited (it may be locked). Ask a host to invite you.";
const MAX_REASON = 500;

export class KnockModel {
  readonly state: Store<KnockState>;
  private readonly target: string;
  private readonly port: KnockPort;
  private readonly admitted: () => void;
  private roomId: string | null = null;
  private waiting: AbortController | null = null;
  private disposed = false;

  constructor(target: string, port: KnockPort, admitted: () => void) {
    this.target = target;
    this.port = port;
    this.admitted = admitted;
    this.state = new Store<KnockState>({ status: "checking", name: target });
  }

  /** What the room allows a non-member, after the join was refused with `refusal`. */
  async start(refusal: ParleyClientError): Promise<void> {
    const p = await this.port.preview(this.target);
    if (this.disposed) return;
    const name = (p.kind === "summary" && p.name) || this.target;
    if (p.kind === "summary") {
      this.roomId = p.roomId;
      if (p.membership === "knock") return this.waitForAnswer(name);
      if (p.membership === "ban") return this.state.set({ status: "closed", name, message: "You were banned from this meeting." });
      if (p.membership === "invite") return this.admitted();
      const rule = p.joinRule ?? "";
      if (rule !== "knock" && rule !== "knock_restricted") {
        return this.state.set({ status: "closed", name, message: rule === "invite" ? INVITE_ONLY_TEXT : refusal.human });
      }
    }
    if (p.kind === "hidden") return this.state.set({ status: "closed", name, message: INVITE_ONLY_TEXT });
    this.state.set({ status: "offer", name, sending: false, error: null });
    await this.ask("");
  }

  async ask(reason: string): Promise<void> {
    const s = this.state.get();
    if ((s.status !== "offer" && s.status !== "declined") || (s.status === "offer" && s.sending)) return;
    this.state.set({ status: "offer", name: s.name, sending: true, error: null });
    markStep("knock");
    try {
      this.roomId = await this.port.knock(this.target, reason.trim().slice(0, MAX_REASON));
    } catch (err) {
      const e = toClientError(err, "room");
      if (!this.disposed) this.state.set({ status: "offer", name: s.name, sending: false, error: e.code === "M_FORBIDDEN" ? LOCKED_TEXT : e.human });
      return;
    }
    if (!this.disposed) this.waitForAnswer(s.name);
  }

  /** A message for the hosts while waiting: the knock again, with it as the reason. */
  async addNote(reason: string): Promise<void> {
    const s = this.state.get();
    const text = reason.trim().slice(0, MAX_REASON);
    if (s.status !== "waiting" || s.note === "sending" || !text) return;
    this.state.set({ ...s, note: "sending", error: null });
    try {
      await this.port.knock(this.target, text);
      this.update((w) => ({ ...w, note: "sent" }));
    } catch (err) {
      this.update((w) => ({ ...w, note: "none", error: `Your message didn't reach the hosts: ${toClientError(err, "room").human}` }));
    }
  }

  /** Takes the request back; the offer to ask shows again. */
  async cancel(): Promise<void> {
    const s = this.state.get();
    if (s.status !== "waiting" || s.cancelling || !this.roomId) return;
    this.state.set({ ...s, cancelling: true });
    this.waiting?.abort();
    try {
      await this.port.withdraw(this.roomId);
      if (!this.disposed) this.state.set({ status: "offer", name: s.name, sending: false, error: null });
    } catch (err) {
      // Still knocking: keep waiting for the answer.
      if (!this.disposed) this.waitForAnswer(s.name, `Couldn't take your request back: ${toClientError(err, "room").human}`);
    }
  }

  /** The page moves on: stop waiting (the knock itself stays for when the meeting opens again). */
  dispose(): void {
    this.disposed = true;
    this.waiting?.abort();
  }

  /** Shows the wait and returns; the answer, when it comes, moves the state on. */
  private waitForAnswer(name: string, error: string | null = null): void {
    const waiting = new AbortController();
    this.waiting?.abort();
    this.waiting = waiting;
    this.state.set({ status: "waiting", name, cancelling: false, error, note: "none" });
    void this.answer(this.roomId!, name, waiting);
  }

  /** Changes the waiting state, if still waiting. */
  private update(fn: (w: Extract<KnockState, { status: "waiting" }>) => KnockState): void {
    const s = this.state.get();
    if (!this.disposed && s.status === "waiting") this.state.set(fn(s));
  }

  private async answer(roomId: string, name: string, waiting: AbortController): Promise<void> {
    let answer: Admission;
    try {
      answer = await this.port.wait(roomId, waiting.signal);
    } catch (err) {
      if (waiting.signal.aborted || this.disposed) return;
      this.state.set({ status: "offer", name, sending: false, error: `Stopped waiting for a host: ${toClientError(err, "room").human}` });
      return;
    }
    if (waiting.signal.aborted || this.disposed) return;
    if (answer === "declined") this.state.set({ status: "declined", name });
    else this.admitted();
  }
}
