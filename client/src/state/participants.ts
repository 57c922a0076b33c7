// The participants panel's rows: one per person (their devices' entries merged), with role, raised
// hand, mute and forced-mute state, and the per-person menu the user may open. Raised hands come
// first (longest raised first), then hosts, co-hosts and everyone else, by name.
import type { Participant, Role } from "../rtc/protocol.ts";
import { initialsOf, type Profile } from "./memberDirectory.ts";
import { personActions, ROLE_TEXT, type PersonAction, type You } from "./moderation.ts";

export interface PersonRow {
  userId: string;
  name: string;
  initials: string;
  avatarUrl: string | null;
  self: boolean;
  role: Role;
  /** "Host", "Co-host" or "". */
  roleText: string;
  /** When the hand went up (ms), null when down. */
  hand: number | null;
  /** Muted on every device. */
  muted: { audio: boolean; video: boolean };
  /** A host's mute on any device. */
  forced: { audio: boolean; video: boolean };
  sharing: boolean;
  actions: PersonAction[];
}

const RANK: Record<Role, number> = { host: 0, cohost: 1, participant: 2 };

function merge(entries: Participant[]): Omit<PersonRow, "name" | "initials" | "avatarUrl" | "self" | "roleText" | "actions"> {
  const hands = entries.map((e) => e.hand ?? null).filter((h): h is number => h !== null);
  const roles = entries.map((e) => e.role ?? "participant");
  return {
    userId: entries[0]!.user_id,
    role: roles.reduce((a, b) => (RANK[b] < RANK[a] ? b : a)),
    hand: hands.length ? Math.min(...hands) : null,
    muted: { audio: entries.every((e) => e.muted.audio), video: entries.every((e) => e.muted.video) },
    forced: { audio: entries.some((e) => e.forced?.audio), video: entries.some((e) => e.forced?.video) },
    sharing: entries.some((e) => e.streams.some((s) => s.type === "screen")),
  };
}

export function participantRows(list: readonly Participant[], you: You, profile: (userId: string) => Profile): PersonRow[] {
  const byUser = new Map<string, Participant[]>();
  for (const p of list) byUser.set(p.user_id, [...(byUser.get(p.user_id) ?? []), p]);
  const rows = [...byUser.values()].map((entries): PersonRow => {
    const m = merge(entries);
    const self = m.userId === you.userId;
    const { name, avatarUrl } = profile(m.userId);
    return { ...m, name: self ? `${name} (you)` : name, initials: initialsOf(name), avatarUrl, self, roleText: ROLE_TEXT[m.role], actions: personActions(you, m) };
  });
  return rows.sort(
    (a, b) =>
      (a.hand ?? Infinity) - (b.hand ?? Infinity) || RANK[a.role] - RANK[b.role] || a.name.localeCompare(b.name) || a.userId.localeCompare(b.userId),
  );
}
