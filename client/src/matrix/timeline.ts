// The in-call chat and member list as a port: the room's messages and who is in it, fed by a
// sync loop (roomFeed.ts, matrix-js-sdk) or by Element through the widget API (widget.ts).
import type { ParleyClientError } from "../errors.ts";
import type { Emitter } from "../state/store.ts";

export interface ChatMessage {
  id: string;
  sender: string;
  body: string;
  ts: number;
  kind: "text" | "emote" | "notice" | "encrypted" | "other";
  /** Set on our own messages: matches the pending local echo. */
  txnId?: string;
}

export interface RoomMember {
  userId: string;
  displayName: string;
  avatarMxc: string | null;
}

export interface RoomFeedEvents extends Record<string, unknown> {
  message: ChatMessage;
  members: ReadonlyMap<string, RoomMember>;
  error: ParleyClientError;
  /** The homeserver answers again after an error (pending messages go now). */
  online: undefined;
}

export type SendCheck = { ok: true } | { ok: false; reason: string };

export interface RoomFeed {
  readonly events: Emitter<RoomFeedEvents>;
  start(): Promise<void>;
  stop(): void;
  /** Messages already in the timeline when the feed started, oldest first. */
  history(): ChatMessage[];
  members(): ReadonlyMap<string, RoomMember>;
  canSend(): SendCheck;
  /** Sends a text message; resolves with its event id when known. */
  send(text: string, txnId: string): Promise<{ eventId?: string }>;
}

export const ENCRYPTED_CHAT_REASON =
  "This room is end-to-end encrypted. Parley can't read or send encrypted messages yet; use your Matrix app for chat in this room for now.";

interface RawEvent {
  event_id?: unknown;
  sender?: unknown;
  type?: unknown;
  content?: unknown;
  origin_server_ts?: unknown;
  unsigned?: unknown;
}

/** A room event as a chat line; null for what the chat doesn't show (state, edits, reactions). */
export function toChatMessage(ev: RawEvent): ChatMessage | null {
  if (typeof ev.event_id !== "string" || typeof ev.sender !== "string") return null;
  const ts = typeof ev.origin_server_ts === "number" ? ev.origin_server_ts : 0;
  const unsigned = (ev.unsigned ?? {}) as { transaction_id?: unknown; redacted_because?: unknown };
  const txnId = typeof unsigned.transaction_id === "string" ? unsigned.transaction_id : undefined;
  const base = { id: ev.event_id, sender: ev.sender, ts, ...(txnId ? { txnId } : {}) };
  if (ev.type === "m.room.encrypted") return { ...base, body: "Encrypted message", kind: "encrypted" };
  if (ev.type !== "m.room.message") return null;
  const c = (ev.content ?? {}) as { msgtype?: unknown; body?: unknown; "m.relates_to"?: { rel_type?: unknown } };
  if (c["m.relates_to"]?.rel_type === "m.replace") return null; // edits: the original stays
  if (typeof c.body !== "string") return null; // redacted
  switch (c.msgtype) {
    case "m.text":
      return { ...base, body: c.body, kind: "text" };
    case "m.emote":
      return { ...base, body: c.body, kind: "emote" };
    case "m.notice":
      return { ...base, body: c.body, kind: "notice" };
    default:
      return { ...base, body: c.body || "(attachment)", kind: "other" };
  }
}

/** m.room.member state events -> joined members. */
export function membersFromState(events: RawEvent[] & { state_key?: unknown }[]): Map<string, RoomMember> {
  const out = new Map<string, RoomMember>();
  for (const ev of events as (RawEvent & { state_key?: unknown })[]) {
    if (ev.type !== "m.room.member" || typeof ev.state_key !== "string") continue;
    const c = (ev.content ?? {}) as { membership?: unknown; displayname?: unknown; avatar_url?: unknown };
    if (c.membership !== "join") continue;
    out.set(ev.state_key, {
      userId: ev.state_key,
      displayName: typeof c.displayname === "string" && c.displayname.trim() ? c.displayname : ev.state_key,
      avatarMxc: typeof c.avatar_url === "string" && c.avatar_url.startsWith("mxc://") ? c.avatar_url : null,
    });
  }
  return out;
}
