// The lobby as hosts and co-hosts see it: who is knocking (name, server, avatar, reason), a count
// of knocks not yet seen for the badge, and a `knock` event for the sound cue. Admitting and
// turning away go through the governance model, which names a refused act.
import type { LobbyEntry, ModerateAction } from "../rtc/governanceProtocol.ts";
import type { MemberDirectory } from "./memberDirectory.ts";
import { Emitter, Store } from "./store.ts";

export interface LobbyRow {
  userId: string;
  name: string;
  server: string;
  avatarUrl: string | null;
  reason: string | null;
  /** When they knocked (ms), 0 when the server did not say. */
  since: number;
}

export interface LobbyState {
  waiting: LobbyRow[];
  /** Knocks that arrived while the lobby was not open on screen (the badge). */
  unseen: number;
  /** The lobby is on screen. */
  open: boolean;
}

export class LobbyModel {
  readonly state = new Store<LobbyState>({ waiting: [], unseen: 0, open: false });
  /** Someone new knocked: the cue to play a sound. */
  readonly events = new Emitter<{ knock: LobbyRow[] }>();
  private entries: LobbyEntry[] = [];
  private readonly directory: Pick<MemberDirectory, "profile">;
  private readonly moderate: (action: ModerateAction) => Promise<boolean>;

  constructor(directory: Pick<MemberDirectory, "profile">, moderate: (action: ModerateAction) => Promise<boolean>) {
    this.directory = directory;
    this.moderate = moderate;
  }

  /** The server's list (at hello, after a reconnect, on every change). */
  update(entries: LobbyEntry[]): void {
    const before = new Set(this.entries.map((e) => e.user_id));
    this.entries = entries;
    const waiting = this.rows();
    const fresh = waiting.filter((r) => !before.has(r.userId));
    const s = this.state.get();
    // Only those still waiting count: a knock withdrawn or answered leaves the badge.
    const unseen = s.open ? 0 : Math.min(s.unseen + fresh.length, waiting.length);
    this.state.update({ waiting, unseen });
    if (fresh.length) this.events.emit("knock", fresh);
  }

  /** Names and avatars again (the room's members or an avatar changed). */
  refresh(): void {
    this.state.update({ waiting: this.rows() });
  }

  setOpen(open: boolean): void {
    this.state.update({ open, ...(open ? { unseen: 0 } : {}) });
  }

  admit(userId: string): Promise<boolean> {
    return this.moderate({ action: "admit", user_id: userId });
  }

  deny(userId: string): Promise<boolean> {
    return this.moderate({ action: "deny", user_id: userId });
  }

  admitAll(): Promise<boolean> {
    return this.moderate({ action: "admit_all" });
  }

  /** A knocker's name for messages, from the lobby when the room does not know them. */
  entry(userId: string): LobbyEntry | undefined {
    return this.entries.find((e) => e.user_id === userId);
  }

  private rows(): LobbyRow[] {
    return this.entries.map((e) => {
      const p = this.directory.profile(e.user_id, { name: e.display_name, avatarMxc: e.avatar_url });
      return { userId: e.user_id, name: p.name, server: e.server, avatarUrl: p.avatarUrl, reason: e.reason, since: e.since };
    });
  }
}
