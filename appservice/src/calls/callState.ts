// The room state `org.parley.call` (state_key ""), sent only by a Parley bot. It tells clients
// where the call API is and which key mode the room's calls use (the room's admins control it:
// its power level is 100 in meeting rooms Parley makes):
//   { version: 1, api, alias?, e2ee: { keys: "participant" | "provisioned", bot? } }
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

export function callStateContent(opts: { api: string; alias?: string; keys: KeyMode; bot: string }): Record<string, unknown> {
  return {
    version: 1,
    api: opts.api,
    ...(opts.alias !== undefined ? { alias: opts.alias } : {}),
    e2ee: opts.keys === "provisioned" ? { keys: "provisioned", bot: opts.bot } : { keys: "participant" },
  };
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

export async function readKeyMode(reader: RoomStateReader, roomId: string): Promise<RoomKeyMode> {
  let content: Record<string, unknown> | undefined;
  try {
    content = (await reader.stateEvent(roomId, CALL_STATE_EVENT, ""))?.content;
  } catch {
    // Fail closed: a guess could hand out the wrong key mode.
    throw new ParleyError("M_UNAVAILABLE", "the room's call settings could not be read; retry shortly");
  }
  return roomKeyMode(content);
}
