// Meeting governance during the call (docs/governance.md): the user's role and what they may do
// (`meeting.you.can`), the meeting's settings, the participants panel, the lobby, raised hands and
// reactions, and every host act; a refused act is named in a message ("Couldn't remove Bob: …").
// The call is reached through a narrow port; nothing here knows about the DOM.
import { toClientError } from "../errors.ts";
import type { AvatarSource } from "../matrix/media.ts";
import type { Access, ActionName, GovernanceRequest, Kind, MeetingInfo, ModerateAction, Participant, Push, Reaction } from "../rtc/protocol.ts";
import { realTimers, type Timers } from "../timers.ts";
import type { CallPort } from "./callModel.ts";
import { LobbyModel } from "./lobbyModel.ts";
import { MemberDirectory, type MembersPort } from "./memberDirectory.ts";
import { refusalText, type You } from "./moderation.ts";
import { participantRows, type PersonRow } from "./participants.ts";
import { ReactionsModel } from "./reactionsModel.ts";
import { Store } from "./store.ts";

export type GovernancePort = Pick<CallPort, "state" | "onPush" | "send">;

export interface GovernanceOptions {
  call: GovernancePort;
  members: MembersPort;
  avatars: AvatarSource;
  self: { userId: string; displayName?: string };
  /** The meeting's link to hand out; null where there is none to give (inside Element). */
  shareLink?: string | null;
  timers?: Timers;
  reactionMs?: number;
}

export interface GovernanceState {
  /** Null until the server says (a server without governance never does). */
  meeting: MeetingInfo | null;
  you: You;
  people: PersonRow[];
  handRaised: boolean;
  /** In the call, and nobody else is: the moment to share the link. */
  alone: boolean;
  shareLink: string | null;
  /** "End for everyone" was pressed and waits for a yes. */
  confirmingEnd: boolean;
  /** The last refused act, named, until dismissed or replaced. */
  error: string | null;
}

export type SettingsPatch = { access?: Access; locked?: boolean; guests?: boolean };

export class GovernanceModel {
  readonly state: Store<GovernanceState>;
  readonly lobby: LobbyModel;
  readonly reactions: ReactionsModel;
  private readonly o: GovernanceOptions;
  private readonly directory: MemberDirectory;
  private participants: Participant[] | null = null;
  private readonly offs: (() => void)[] = [];

  constructor(opts: GovernanceOptions) {
    this.o = opts;
    const self = opts.self.userId;
    this.state = new Store<GovernanceState>({
      meeting: null,
      you: { userId: self, role: "participant", can: [] },
      people: [],
      handRaised: false,
      alone: false,
      shareLink: opts.shareLink || null,
      confirmingEnd: false,
      error: null,
    });
    this.directory = new MemberDirectory(opts.members, opts.avatars, opts.self, () => this.rebuild());
    this.lobby = new LobbyModel(this.directory, (action) => this.moderate(action));
    this.reactions = new ReactionsModel(opts.timers ?? realTimers, opts.reactionMs);
    this.offs.push(
      opts.call.onPush((p) => this.onPush(p)),
      opts.members.onMembers(() => this.rebuild()),
      opts.call.state.subscribe((s, prev) => {
        if (s.phase !== prev.phase) this.rebuild();
        if (s.phase === "ended" || s.phase === "failed") {
          this.reactions.dispose();
          this.lobby.setOpen(false);
          this.state.update({ confirmingEnd: false, error: null });
        }
      }),
    );
    this.rebuild();
  }

  may(action: ActionName): boolean {
    return this.state.get().you.can.includes(action);
  }

  async setHand(raised: boolean): Promise<void> {
    const before = this.state.get().handRaised;
    this.state.update({ handRaised: raised });
    if (!(await this.request({ type: "hand", raised }))) this.state.update({ handRaised: before });
  }

  async react(emoji: Reaction): Promise<void> {
    await this.request({ type: "react", emoji });
  }

  /** A host act; false (and a message naming it) when refused. */
  moderate(action: ModerateAction): Promise<boolean> {
    return this.request({ type: "moderate", action });
  }

  muteAll(kind: Kind): Promise<boolean> {
    return this.moderate({ action: "mute_all", kind });
  }

  changeSettings(patch: SettingsPatch): Promise<boolean> {
    return this.moderate({ action: "settings", ...patch });
  }

  /** Ending for everyone asks first. */
  askEnd(): void {
    if (this.may("end")) this.state.update({ confirmingEnd: true });
  }

  cancelEnd(): void {
    this.state.update({ confirmingEnd: false });
  }

  async confirmEnd(): Promise<boolean> {
    if (!this.state.get().confirmingEnd) return false;
    this.state.update({ confirmingEnd: false });
    return this.moderate({ action: "end" });
  }

  dismissError(): void {
    this.state.update({ error: null });
  }

  dispose(): void {
    for (const off of this.offs.splice(0)) off();
    this.directory.dispose();
    this.reactions.dispose();
  }

  private async request(r: GovernanceRequest): Promise<boolean> {
    try {
      await this.o.call.send(r);
      return true;
    } catch (err) {
      this.state.update({ error: refusalText(r, toClientError(err, "signalling"), (u) => this.nameOf(u)) });
      return false;
    }
  }

  private nameOf(userId: string): string {
    const knocker = this.lobby.entry(userId);
    return this.directory.profile(userId, { name: knocker?.display_name ?? null }).name;
  }

  private onPush(p: Push): void {
    switch (p.type) {
      case "meeting": {
        const { type: _type, ...meeting } = p;
        this.state.update({ meeting, you: { userId: this.o.self.userId, role: meeting.you.role, can: meeting.you.can } });
        if (!meeting.you.can.includes("end")) this.state.update({ confirmingEnd: false });
        return this.rebuild();
      }
      case "participants": {
        this.participants = p.participants;
        const own = p.participants.filter((x) => x.user_id === this.o.self.userId && x.hand !== undefined);
        if (own.length) this.state.update({ handRaised: own.some((x) => x.hand !== null) });
        return this.rebuild();
      }
      case "lobby":
        return this.lobby.update(p.waiting);
      case "reaction":
        return this.reactions.add(p.user_id, this.directory.name(p.user_id), p.emoji);
    }
  }

  private rebuild(): void {
    const s = this.state.get();
    const self = this.o.self.userId;
    const list = this.participants ?? [];
    // The user is listed from the start, before the server's list has their published feed.
    const withSelf = list.some((p) => p.user_id === self)
      ? list
      : [{ user_id: self, device_id: "", feed_id: "", streams: [], muted: { audio: false, video: false }, hand: s.handRaised ? 0 : null }, ...list];
    const you = s.you;
    const people = participantRows(
      withSelf.map((p) => (p.user_id === self && s.meeting ? { ...p, role: you.role } : p)),
      you,
      (u) => this.directory.profile(u),
    );
    const phase = this.o.call.state.get().phase;
    const alone = phase === "connected" && this.participants !== null && people.every((r) => r.self);
    this.state.update({ people, alone });
    this.lobby.refresh();
  }
}
