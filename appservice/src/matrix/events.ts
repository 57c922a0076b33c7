// Inbound events are parsed, not trusted: only the fields Parley acts on, each checked.
import { z } from "zod";

const baseEvent = z.object({
  event_id: z.string().min(1),
  room_id: z.string().min(1),
  sender: z.string().startsWith("@"),
  type: z.string().min(1),
});

const optionalText = z.string().optional().catch(undefined);

export const memberEvent = baseEvent.extend({
  type: z.literal("m.room.member"),
  state_key: z.string(),
  origin_server_ts: z.number().optional().catch(undefined),
  // Profile and reason are shown (the lobby) but never required: a wrong type reads as absent.
  content: z.object({ membership: z.string(), displayname: optionalText, avatar_url: optionalText, reason: optionalText }),
});

/** A state event whose change governance re-reads (its content is read from the room, not here). */
export const stateEvent = baseEvent.extend({ state_key: z.string() });

export const messageEvent = baseEvent.extend({
  type: z.literal("m.room.message"),
  content: z.object({ msgtype: z.string(), body: z.string() }),
});

/** The envelope of a MatrixRTC membership event; its content is checked by calls/rtcMembership. */
export const rtcMembershipEvent = z.looseObject({
  room_id: z.string().min(1),
  sender: z.string().startsWith("@"),
  type: z.string().min(1),
  content: z.unknown(),
  state_key: z.string().optional(),
  origin_server_ts: z.number().optional(),
});

export const transactionBody = z.object({
  events: z.array(z.record(z.string(), z.unknown())).default([]),
});

export type MemberEvent = z.infer<typeof memberEvent>;
export type MessageEvent = z.infer<typeof messageEvent>;
export type RawEvent = Record<string, unknown>;

/** "type.path: problem; ..." for logs. */
export function describeZodError(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`).join("; ");
}
