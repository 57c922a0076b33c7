// Why the call ended, in words, when a person ended it: a host ending the meeting for everyone
// (evicted M_NOT_FOUND, "the call has ended"), or removing or banning this user (M_FORBIDDEN).
// Such an ending is final: the signalling client does not reconnect, and the words name who.
import type { Eviction } from "../rtc/call.ts";

export function evictionText(e: Eviction | undefined, selfId: string, nameOf: (userId: string) => string): string | null {
  if (!e?.by) return null;
  const you = e.by === selfId;
  const who = you ? "You" : nameOf(e.by);
  if (e.errcode === "M_NOT_FOUND") return `${who} ended the meeting.`;
  if (e.errcode === "M_FORBIDDEN" && !you) return `${who} removed you from the meeting${e.reason ? `: ${e.reason}` : "."}`;
  return null;
}
