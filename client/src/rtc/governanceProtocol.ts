// Meeting governance on the signalling socket (docs/governance.md): roles, the lobby, moderation,
// raised hands and reactions. Requests are typed here; pushes are parsed by the guards below,
// which collect every error instead of trusting the wire. The server's zod schema
// (appservice/src/http/signalling/protocol.ts) is the source of truth.
import { isKind, isObj, isUserId, nullableString, type Kind, type R } from "./wireGuards.ts";

export type { Kind };

export type Role = "host" | "cohost" | "participant";
export type Access = "open" | "institution" | "invited";

/** The `moderate` actions; `meeting.you.can` lists those the user may take. */
export const ACTIONS = [
  "mute", "allow", "mute_all", "stop_share", "lower_hand", "remove", "ban", "end", "admit", "deny", "admit_all", "set_role", "settings",
] as const;
export type ActionName = (typeof ACTIONS)[number];

/** The reactions a `react` may carry: the server's list (appservice/src/calls/moderation.ts), kept equal by a unit test. */
export const REACTIONS = ["👍", "👏", "😂", "❤️", "🎉", "😮", "🤔", "🙏"] as const;
export type Reaction = (typeof REACTIONS)[number];

export type ModerateAction =
  | { action: "mute" | "allow"; user_id: string; kind: Kind }
  | { action: "mute_all"; kind: Kind }
  | { action: "stop_share" | "lower_hand" | "admit" | "deny"; user_id: string }
  | { action: "remove" | "ban"; user_id: string; reason?: string }
  | { action: "end" | "admit_all" }
  | { action: "set_role"; user_id: string; role: "cohost" | "participant" }
  | { action: "settings"; access?: Access; locked?: boolean; guests?: boolean };

export type GovernanceRequest =
  | { type: "hand"; raised: boolean }
  | { type: "react"; emoji: Reaction }
  | { type: "moderate"; action: ModerateAction };

export interface MeetingInfo {
  access: Access;
  locked: boolean;
  guests: boolean;
  ended: { by: string; at: number } | null;
  you: { role: Role; can: ActionName[] };
}

export interface LobbyEntry {
  user_id: string;
  display_name: string | null;
  /** An mxc:// URI. */
  avatar_url: string | null;
  server: string;
  reason: string | null;
  /** When they knocked (ms since the epoch). */
  since: number;
}

/** What a participant entry carries about governance; each field only when the server sent it. */
export interface GovernanceFields {
  role?: Role;
  /** When the hand went up (ms), null when down. */
  hand?: number | null;
  /** A host's mute the participant cannot lift. */
  forced?: { audio: boolean; video: boolean };
}

export type GovernancePush =
  | ({ type: "meeting" } & MeetingInfo)
  | { type: "lobby"; waiting: LobbyEntry[] }
  | { type: "moderated"; kind: Kind; muted: boolean; by: string }
  | { type: "stop_share"; by: string }
  | { type: "reaction"; user_id: string; emoji: Reaction };

const ROLES: readonly string[] = ["host", "cohost", "participant"];
const ACCESS: readonly string[] = ["open", "institution", "invited"];
const isRole = (v: unknown): v is Role => typeof v === "string" && ROLES.includes(v);
const isAccess = (v: unknown): v is Access => typeof v === "string" && ACCESS.includes(v);
export const isReaction = (v: unknown): v is Reaction => typeof v === "string" && (REACTIONS as readonly string[]).includes(v);
const isTime = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0;

function bool(m: R, field: string, errors: string[]): boolean {
  if (typeof m[field] !== "boolean") errors.push(`${field} must be a boolean`);
  return m[field] === true;
}

function user(m: R, field: string, errors: string[]): string | undefined {
  if (isUserId(m[field])) return m[field];
  errors.push(`${field} must be a Matrix user id`);
  return undefined;
}

function parseYou(v: unknown, errors: string[]): MeetingInfo["you"] {
  if (!isObj(v)) return (errors.push("you must be {role, can}"), { role: "participant", can: [] });
  if (!isRole(v.role)) errors.push("you.role must be host|cohost|participant");
  if (!Array.isArray(v.can) || v.can.some((a) => typeof a !== "string")) errors.push("you.can must be an array of action names");
  // Action names this client does not know yet are left out (a newer server), not an error.
  const can = Array.isArray(v.can) ? ACTIONS.filter((a) => (v.can as unknown[]).includes(a)) : [];
  return { role: isRole(v.role) ? v.role : "participant", can };
}

function parseEnded(v: unknown, errors: string[]): MeetingInfo["ended"] {
  if (v === null || v === undefined) return null;
  if (isObj(v) && isUserId(v.by) && isTime(v.at)) return { by: v.by, at: v.at };
  errors.push("ended must be null or {by, at}");
  return null;
}

function parseMeeting(m: R, errors: string[]): GovernancePush {
  if (!isAccess(m.access)) errors.push("access must be open|institution|invited");
  return {
    type: "meeting",
    access: isAccess(m.access) ? m.access : "invited",
    locked: bool(m, "locked", errors),
    guests: bool(m, "guests", errors),
    ended: parseEnded(m.ended, errors),
    you: parseYou(m.you, errors),
  };
}

function parseLobbyEntry(v: unknown, at: string, errors: string[]): LobbyEntry | undefined {
  if (!isObj(v) || !isUserId(v.user_id)) return void errors.push(`${at} needs a user_id`);
  const mine: string[] = [];
  const entry: LobbyEntry = {
    user_id: v.user_id,
    display_name: nullableString(v.display_name, `${at}.display_name`, mine),
    avatar_url: nullableString(v.avatar_url, `${at}.avatar_url`, mine),
    server: typeof v.server === "string" && v.server ? v.server : v.user_id.slice(v.user_id.indexOf(":") + 1),
    reason: nullableString(v.reason, `${at}.reason`, mine),
    since: isTime(v.since) ? v.since : 0,
  };
  if (v.server !== undefined && typeof v.server !== "string") mine.push(`${at}.server must be a string`);
  if (v.since !== undefined && !isTime(v.since)) mine.push(`${at}.since must be a time in ms`);
  errors.push(...mine);
  return mine.length ? undefined : entry;
}

function parseLobby(m: R, errors: string[]): GovernancePush {
  if (!Array.isArray(m.waiting)) return (errors.push("waiting must be an array"), { type: "lobby", waiting: [] });
  const waiting = m.waiting.map((e, i) => parseLobbyEntry(e, `waiting[${i}]`, errors)).filter((e): e is LobbyEntry => !!e);
  return { type: "lobby", waiting };
}

function parseModerated(m: R, errors: string[]): GovernancePush | undefined {
  if (!isKind(m.kind)) errors.push("kind must be audio|video");
  const muted = bool(m, "muted", errors);
  const by = user(m, "by", errors);
  return isKind(m.kind) && by ? { type: "moderated", kind: m.kind, muted, by } : undefined;
}

function parseStopShare(m: R, errors: string[]): GovernancePush | undefined {
  const by = user(m, "by", errors);
  return by ? { type: "stop_share", by } : undefined;
}

function parseReaction(m: R, errors: string[]): GovernancePush | undefined {
  const userId = user(m, "user_id", errors);
  if (!isReaction(m.emoji)) errors.push("emoji must be one of REACTIONS");
  return userId && isReaction(m.emoji) ? { type: "reaction", user_id: userId, emoji: m.emoji } : undefined;
}

/** The governance pushes by type: each parser reports what is wrong in `errors`. */
export const GOVERNANCE_PUSHES: Record<GovernancePush["type"], (m: R, errors: string[]) => GovernancePush | undefined> = {
  meeting: parseMeeting,
  lobby: parseLobby,
  moderated: parseModerated,
  stop_share: parseStopShare,
  reaction: parseReaction,
};

/** The governance fields of one participant entry (absent fields stay absent: an older server). */
export function parseGovernanceFields(p: R, at: string, errors: string[]): GovernanceFields {
  const out: GovernanceFields = {};
  if (p.role !== undefined) {
    if (isRole(p.role)) out.role = p.role;
    else errors.push(`${at}.role must be host|cohost|participant`);
  }
  if (p.hand !== undefined) {
    if (p.hand === null || isTime(p.hand)) out.hand = p.hand;
    else errors.push(`${at}.hand must be null or a time in ms`);
  }
  if (p.forced !== undefined) {
    const f = p.forced;
    if (isObj(f) && typeof f.audio === "boolean" && typeof f.video === "boolean") out.forced = { audio: f.audio, video: f.video };
    else errors.push(`${at}.forced must be {audio, video} booleans`);
  }
  return out;
}
