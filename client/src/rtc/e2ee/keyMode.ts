// Which key mode a call uses, as the room decides it: the `e2ee` field of the room's
// `org.parley.call` state (state key ""), which only the room's admins (and the Parley bot they
// let in) can send. Never the signalling server's `hello`: a server must not be able to switch a
// call to keys it provisions, nor name the bot whose keys are trusted.
//
//   { "version": 1, "api": "...", "e2ee": { "keys": "participant" | "provisioned", "bot"?: "@parley:server" } }
//
// No state, or no `e2ee` field: participant keys. Anything else that is not one of the two shapes
// is refused (no keys are accepted) rather than guessed.
import type { KeyMode } from "./cipher.ts";

export type CallKeyMode = { keys: "participant" } | { keys: "provisioned"; bot: string };

const USER_ID = /^@[^:\s]+:\S+$/;

/** The call's key mode from the `org.parley.call` content (null: no such state), or why it has none. */
export function keyModeFromCallState(content: unknown): CallKeyMode | { error: string } {
  if (content === null || content === undefined) return { keys: "participant" };
  if (typeof content !== "object" || Array.isArray(content)) return { error: "org.parley.call is not an object" };
  const e2ee = (content as Record<string, unknown>).e2ee;
  if (e2ee === undefined) return { keys: "participant" };
  if (typeof e2ee !== "object" || e2ee === null || Array.isArray(e2ee)) return { error: "org.parley.call e2ee is not an object" };
  const { keys, bot } = e2ee as Record<string, unknown>;
  if (keys === "participant") return { keys: "participant" };
  if (keys !== "provisioned") return { error: `org.parley.call e2ee.keys must be "participant" or "provisioned", got ${JSON.stringify(keys)}` };
  if (typeof bot !== "string" || !USER_ID.test(bot)) return { error: "org.parley.call e2ee.keys is \"provisioned\" but e2ee.bot names no user" };
  return { keys: "provisioned", bot };
}

/** What the call header says about the keys. */
export function keyModeText(mode: KeyMode, bot: string | null): string {
  return mode === "provisioned" ? `Keys: provisioned by ${bot ?? "the meeting's server"}` : "Keys: each participant";
}
