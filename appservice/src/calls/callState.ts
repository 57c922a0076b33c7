// The room state `org.parley.call` (state_key ""), sent only by a Parley bot. It tells clients
// where the call API is and which key mode the room's calls use (the room's admins control it:
// its power level is 100 in meeting rooms Parley makes):
//   { version: 1, api, alias?, e2ee: { keys: "participant" | "provisioned", bot? },
//     access?: "open" | "institution" | "invited", locked?: boolean, guests?: boolean,
//     ended?: { by, at } }   (meeting governance: docs/governance.md)
// `e2ee.bot` names the only user whose Olm device may send call keys, when keys are provisioned.
// The bot writes it from config (configuredKeyMode); the server reads the mode from the room at
// each hello (readKeyMode), never from config directly nor from a client.
import { ParleyError } from "../errors.ts";
import type { Homeserver } from "./ports.ts";

export const CALL_STATE_EVENT = "org.parley.call";

export type KeyMode = "participant" | "provisioned";

/** Which key mode a room's calls use, as the operator configured it (calls.e2ee). */
export interface KeyPolicy {
  keys: KeyMode;
  /** Rooms whose calls use provisioned keys whatever `keys` says. */
  provisionedRooms: readonly string[];
}

export function configuredKeyMode(policy: KeyPolicy, roomId: string | undefined): KeyMode {
  return policy.keys === "provisioned" || (roomId !== undefined && policy.provisionedRooms.includes(roomId)) ? "provisioned" : "participant";
}

export function callStateContent(opts: { api: string; alias?: string; keys: KeyMode; bot: string; settings?: MeetingSettings }): Record<string, unknown> {
  return {
    version: 1,
    api: opts.api,
    ...(opts.alias !== undefined ? { alias: opts.alias } : {}),
    e2ee: opts.keys === "provisioned" ? { keys: "provisioned", bot: opts.bot } : { keys: "participant" },
    ...(opts.settings ? settingsContent(opts.settings) : {}),
  };
}

export type Access = "open" | "institution" | "invited";
export const ACCESS_LEVELS: readonly Access[] = ["open", "institution", "invited"];

/** The meeting's governance settings, as org.parley.call carries them. */
export interface MeetingSettings {
  access: Access;
  locked: boolean;
  /** Guests by link may ask to join (when the institution allows guests at all). */
  guests: boolean;
  ended: { by: string; at: number } | null;
}

function settingsContent(s: MeetingSettings): Record<string, unknown> {
  return { access: s.access, locked: s.locked, guests: s.guests, ...(s.ended ? { ended: s.ended } : {}) };
}

/** The settings a content says; what is absent or malformed takes `defaults` (a room made before
 *  governance, or a `!meet` room: its join rule decides who is in, the access level only informs). */
export function meetingSettings(content: Record<string, unknown> | undefined, defaults: Pick<MeetingSettings, "access" | "guests">): MeetingSettings {
  const c = content ?? {};
  const access = ACCESS_LEVELS.includes(c.access as Access) ? (c.access as Access) : defaults.access;
  const e = c.ended as Record<string, unknown> | undefined;
  const ended = typeof e === "object" && e !== null && typeof e.by === "string" && typeof e.at === "number" ? { by: e.by, at: e.at } : null;
  return { access, locked: c.locked === true, guests: typeof c.guests === "boolean" ? c.guests : defaults.guests, ended };
}

/** The content with new settings, everything else (api, alias, e2ee, unknown keys) kept. */
export function withSettings(content: Record<string, unknown>, s: MeetingSettings): Record<string, unknown> {
  const { ended: _ended, ...rest } = content;
  return { ...rest, ...settingsContent(s) };
}

/**
 * The join rule an access level maps to (a locked meeting takes no knocks: invite). Where some
 * users must always pass the lobby (external users, Tchap-style; guests, when the meeting takes
 * them), an open meeting knocks too: Parley admits every knock at once except theirs.
 */
export function joinRuleFor(
  s: Pick<MeetingSettings, "access" | "locked" | "guests">,
  institution: { externalUsers: boolean; guestsLobby: boolean },
): "public" | "knock" | "invite" {
  if (s.locked) return "invite";
  const lobbyAlways = institution.externalUsers || (institution.guestsLobby && s.guests);
  return s.access === "open" && !lobbyAlways ? "public" : "knock";
}

export interface RoomKeyMode {
  keys: KeyMode;
  /** With provisioned keys: the bot whose Olm device sends them (undefined: the room named none). */
  bot: string | undefined;
}

/** Reads the room's state (the homeserver port's door to it). */
export type RoomStateReader = Pick<Homeserver, "stateEvent">;

/** The key mode an org.parley.call content says; no state or a malformed `e2ee`: participant keys. */
export function roomKeyMode(content: Record<string, unknown> | undefined): RoomKeyMode {
  const e2ee = content?.e2ee;
  if (typeof e2ee !== "object" || e2ee === null || Array.isArray(e2ee)) return { keys: "participant", bot: undefined };
  const { keys, bot } = e2ee as Record<string, unknown>;
  if (keys !== "provisioned") return { keys: "participant", bot: undefined };
  return { keys: "provisioned", bot: typeof bot === "string" ? bot : undefined };
}

/** The key mode of the org.parley.call content `read` gives (undefined: none); a read that fails fails closed. */
export async function keyModeOf(read: () => Promise<Record<string, unknown> | undefined>): Promise<RoomKeyMode> {
  let content: Record<string, unknown> | undefined;
  try {
    content = await read();
  } catch {
    // Fail closed: a guess could hand out the wrong key mode.
    throw new ParleyError("M_UNAVAILABLE", "the room's call settings could not be read; retry shortly");
  }
  return roomKeyMode(content);
}

export async function readKeyMode(reader: RoomStateReader, roomId: string): Promise<RoomKeyMode> {
  return keyModeOf(async () => (await reader.stateEvent(roomId, CALL_STATE_EVENT, ""))?.content);
}
