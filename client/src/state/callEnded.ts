// Why the call ended, in words, when a person ended it: a host ending the meeting for everyone
// (evicted M_NOT_FOUND, "the call has ended"), or removing or banning this user (M_FORBIDDEN).
// Such an ending is final: the signalling client does not reconnect, and the words name who.
import type { Eviction } from "../rtc/call.ts";
import type { Timers } from "../timers.ts";

export function evictionText(e: Eviction | undefined, selfId: string, nameOf: (userId: string) => string): string | null {
  if (!e?.by) return null;
  const you = e.by === selfId;
  const who = you ? "You" : nameOf(e.by);
  if (e.errcode === "M_NOT_FOUND") return `${who} ended the meeting.`;
  if (e.errcode === "M_FORBIDDEN" && !you) return `${who} removed you from the meeting${e.reason ? `: ${e.reason}` : "."}`;
  return null;
}

/** The user who ended the meeting, from the room's `org.parley.call` content (`ended.by`). */
export function endedByOf(content: unknown): string | null {
  if (typeof content !== "object" || content === null) return null;
  const ended = (content as { ended?: unknown }).ended;
  const by = typeof ended === "object" && ended !== null ? (ended as { by?: unknown }).by : undefined;
  return typeof by === "string" && /^@[^:\s]+:\S+$/.test(by) ? by : null;
}

/**
 * Reads the room's `org.parley.call` content until `pick` finds something in it: the meeting's
 * server writes the state before it acts (ends the sessions, refuses a join), though the state may
 * reach this client a moment later; so it is read again a few times.
 */
export async function fromRoomState<T>(
  read: () => Promise<unknown>,
  pick: (content: unknown) => T | null,
  timers: Timers,
  delaysMs: readonly number[] = [0, 500, 1500, 3000],
): Promise<T | null> {
  for (const ms of delaysMs) {
    if (ms) await new Promise<void>((r) => timers.setTimeout(r, ms));
    const found = pick(await read().catch(() => null));
    if (found !== null) return found;
  }
  return null;
}

/** Why the meeting's server refused to let the user into the call, from the room's state (ended, locked). */
export function joinRefusalText(content: unknown, selfId: string, nameOf: (userId: string) => string): string | null {
  const by = endedByOf(content);
  if (by) return `${by === selfId ? "You" : nameOf(by)} ended the meeting. Only a host can start it again.`;
  if (typeof content === "object" && content !== null && (content as { locked?: unknown }).locked === true) {
    return "This meeting is locked: nobody new can join until a host unlocks it.";
  }
  return null;
}
