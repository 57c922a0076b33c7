// Which media keys a call uses is the room's decision: the `org.parley.call` state event
// (state key "") that a Parley bot wrote, read from the homeserver at each hello; never config
// directly, never a client's word. A room without it (or with a malformed `e2ee`) uses
// participant keys. `e2ee.bot` names the only user whose device may send provisioned keys.
import { ParleyError } from "../errors.ts";
import { CALL_STATE_EVENT } from "./meetings.ts";

export type KeyMode = "participant" | "provisioned";

export interface RoomKeyMode {
  keys: KeyMode;
  /** With provisioned keys: the bot whose Olm device sends them (undefined: the room named none). */
  bot: string | undefined;
}

/** Reads a state event's content ("undefined": the room has no such state). */
export interface RoomStateReader {
  stateContent(roomId: string, type: string, stateKey?: string): Promise<Record<string, unknown> | undefined>;
}

export function keyModeOf(content: Record<string, unknown> | undefined): RoomKeyMode {
  const e2ee = content?.e2ee;
  if (typeof e2ee !== "object" || e2ee === null || Array.isArray(e2ee)) return { keys: "participant", bot: undefined };
  const { keys, bot } = e2ee as Record<string, unknown>;
  if (keys !== "provisioned") return { keys: "participant", bot: undefined };
  return { keys: "provisioned", bot: typeof bot === "string" ? bot : undefined };
}

export async function readKeyMode(reader: RoomStateReader, roomId: string): Promise<RoomKeyMode> {
  let content: Record<string, unknown> | undefined;
  try {
    content = await reader.stateContent(roomId, CALL_STATE_EVENT, "");
  } catch {
    // Fail closed: a guess could hand out the wrong key mode.
    throw new ParleyError("M_UNAVAILABLE", "the room's call settings could not be read; retry shortly");
  }
  return keyModeOf(content);
}
