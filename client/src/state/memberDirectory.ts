// Who a Matrix user is on screen: the room member's display name and avatar, falling back to what
// else is known (our own name, a knocker's profile) and at last the user id. Avatars load once per
// mxc URI; the owner is told when one arrives so it can draw it.
import type { AvatarSource } from "../matrix/media.ts";
import type { RoomMember } from "../matrix/timeline.ts";

export interface MembersPort {
  members(): ReadonlyMap<string, RoomMember>;
  onMembers(fn: (m: ReadonlyMap<string, RoomMember>) => void): () => void;
}

export interface Profile {
  name: string;
  avatarUrl: string | null;
}

export function initialsOf(name: string): string {
  const clean = name.replace(/^[@#!]/, "").split(":")[0]!.trim();
  const words = clean.split(/[\s._-]+/).filter(Boolean);
  const letters = words.length > 1 ? words[0]![0]! + words[1]![0]! : clean.slice(0, 2);
  return [...letters.toUpperCase()].slice(0, 2).join("") || "?";
}

export class MemberDirectory {
  private readonly members: MembersPort;
  private readonly avatars: AvatarSource;
  private readonly self: { userId: string; displayName?: string };
  private readonly onAvatar: () => void;
  private readonly avatarUrls = new Map<string, string | null>();
  private disposed = false;

  constructor(members: MembersPort, avatars: AvatarSource, self: { userId: string; displayName?: string }, onAvatar: () => void) {
    this.members = members;
    this.avatars = avatars;
    this.self = self;
    this.onAvatar = onAvatar;
  }

  /** The room member's name and avatar; `fallback` where the room does not know them (yet). */
  profile(userId: string, fallback: { name?: string | null; avatarMxc?: string | null } = {}): Profile {
    const m = this.members.members().get(userId);
    const name = m?.displayName || (userId === this.self.userId ? this.self.displayName : undefined) || fallback.name || userId;
    return { name, avatarUrl: this.avatar(m?.avatarMxc ?? fallback.avatarMxc ?? null) };
  }

  name(userId: string): string {
    return this.profile(userId).name;
  }

  /** The blob: URL of an mxc:// avatar once loaded (null meanwhile; the owner is told when it is). */
  avatar(mxc: string | null): string | null {
    if (!mxc) return null;
    if (this.avatarUrls.has(mxc)) return this.avatarUrls.get(mxc) ?? null;
    this.avatarUrls.set(mxc, null);
    void this.avatars(mxc).then((url) => {
      this.avatarUrls.set(mxc, url);
      if (url && !this.disposed) this.onAvatar();
    });
    return null;
  }

  dispose(): void {
    this.disposed = true;
  }
}
