// What a host or co-host may do to one person, and how every governance request is named on
// screen, so that a refused one says which act was refused. The server decides (docs/governance.md);
// this only offers what `meeting.you.can` allows, and removal and bans only over someone of lower
// rank (the server also wants more power than the target).
import type { ParleyClientError } from "../errors.ts";
import type { ActionName, GovernanceRequest, Kind, ModerateAction, Role } from "../rtc/governanceProtocol.ts";

export interface You {
  userId: string;
  role: Role;
  can: readonly ActionName[];
}

export interface Target {
  userId: string;
  role: Role;
  hand: number | null;
  forced: { audio: boolean; video: boolean };
  sharing: boolean;
}

export type PersonActionId =
  | "mute-audio" | "mute-video" | "allow-audio" | "allow-video" | "stop-share" | "lower-hand" | "make-cohost" | "make-participant" | "remove" | "ban";

export interface PersonAction {
  id: PersonActionId;
  label: string;
  action: ModerateAction;
  /** Removes the person (shown apart, in red). */
  danger: boolean;
}

const RANK: Record<Role, number> = { participant: 0, cohost: 1, host: 2 };

export const ROLE_TEXT: Record<Role, string> = { host: "Host", cohost: "Co-host", participant: "" };

export function outranks(a: Role, b: Role): boolean {
  return RANK[a] > RANK[b];
}

/** The per-person menu: what `you` may do to `t`, in the order it is shown. */
export function personActions(you: You, t: Target): PersonAction[] {
  if (t.userId === you.userId) return [];
  const can = (a: ActionName) => you.can.includes(a);
  const user_id = t.userId;
  const out: PersonAction[] = [];
  const add = (id: PersonActionId, label: string, action: ModerateAction, danger = false) => out.push({ id, label, action, danger });
  for (const kind of ["audio", "video"] as const) {
    if (t.forced[kind] && can("allow")) add(`allow-${kind}`, kind === "audio" ? "Allow to unmute" : "Allow camera", { action: "allow", user_id, kind });
    if (!t.forced[kind] && can("mute")) add(`mute-${kind}`, kind === "audio" ? "Mute microphone" : "Turn off camera", { action: "mute", user_id, kind });
  }
  if (t.sharing && can("stop_share")) add("stop-share", "Stop screen share", { action: "stop_share", user_id });
  if (t.hand !== null && can("lower_hand")) add("lower-hand", "Lower hand", { action: "lower_hand", user_id });
  if (can("set_role") && you.role === "host" && t.role !== "host") {
    if (t.role === "cohost") add("make-participant", "Make participant", { action: "set_role", user_id, role: "participant" });
    else add("make-cohost", "Make co-host", { action: "set_role", user_id, role: "cohost" });
  }
  if (outranks(you.role, t.role)) {
    if (can("remove")) add("remove", "Remove from meeting", { action: "remove", user_id }, true);
    if (can("ban")) add("ban", "Ban from meeting", { action: "ban", user_id }, true);
  }
  return out;
}

const device = (kind: Kind) => (kind === "audio" ? "microphone" : "camera");

/** The act a request asks for, as a sentence fragment: "mute Bob's microphone". */
export function requestText(r: GovernanceRequest, nameOf: (userId: string) => string): string {
  if (r.type === "hand") return r.raised ? "raise your hand" : "lower your hand";
  if (r.type === "react") return "send your reaction";
  const a = r.action;
  switch (a.action) {
    case "mute":
      return `turn off ${nameOf(a.user_id)}'s ${device(a.kind)}`;
    case "allow":
      return `let ${nameOf(a.user_id)} turn their ${device(a.kind)} back on`;
    case "mute_all":
      return a.kind === "audio" ? "mute everyone" : "turn off everyone's camera";
    case "stop_share":
      return `stop ${nameOf(a.user_id)}'s screen share`;
    case "lower_hand":
      return `lower ${nameOf(a.user_id)}'s hand`;
    case "remove":
      return `remove ${nameOf(a.user_id)} from the meeting`;
    case "ban":
      return `ban ${nameOf(a.user_id)} from the meeting`;
    case "end":
      return "end the meeting for everyone";
    case "admit":
      return `let ${nameOf(a.user_id)} in`;
    case "deny":
      return `turn ${nameOf(a.user_id)} away`;
    case "admit_all":
      return "let everyone in";
    case "set_role":
      return `make ${nameOf(a.user_id)} ${a.role === "cohost" ? "a co-host" : "a participant"}`;
    case "settings":
      return "change the meeting's settings";
  }
}

const WHY: Partial<Record<string, string>> = {
  M_FORBIDDEN: "you don't have the permission to do that in this meeting.",
  M_NOT_FOUND: "they are no longer in the meeting or the lobby.",
  M_BAD_JSON: "the meeting server doesn't support this yet.",
  M_UNRECOGNIZED: "the meeting server doesn't support this yet.",
  M_INVALID_PARAM: "the meeting server didn't accept it.",
  M_LIMIT_EXCEEDED: "too many requests; wait a moment and try again.",
  CLOSED: "you're not connected to the meeting server right now.",
  TIMEOUT: "the meeting server didn't answer.",
};

/** "Couldn't remove Bob from the meeting: you don't have the permission to do that in this meeting." */
export function refusalText(r: GovernanceRequest, err: ParleyClientError, nameOf: (userId: string) => string): string {
  const notSharing = r.type === "moderate" && r.action.action === "stop_share" && err.code === "M_NOT_FOUND";
  return `Couldn't ${requestText(r, nameOf)}: ${notSharing ? "they are not sharing their screen any more." : (WHY[err.code] ?? err.human)}`;
}
