// The room's org.parley.call state as a Parley bot announces it: the call's key mode lives in its
// `e2ee` field, which the web client reads (never the signalling server's hello). Tests set it
// as the bot, with the institution's appservice token.
import { Method } from "matrix-js-sdk";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { TestUser } from "./matrix.ts";

const enc = encodeURIComponent;

/**
 * Resolves `alias` (Parley creates the room if it has none yet) and sets its org.parley.call
 * state's `e2ee` field as the institution's bot, keeping the rest. Returns the room id.
 */
export async function announceCallE2ee(inst: Institution, alias: string, e2ee: { keys: "participant" | "provisioned"; bot?: string }): Promise<string> {
  const bot = new TestUser(inst.synapse.clientUrl, inst.botUserId, inst.parley.config.appservice.asToken);
  const as = { user_id: inst.botUserId };
  const { room_id: roomId } = await bot.request<{ room_id: string }>(Method.Get, `/directory/room/${enc(alias)}`, undefined, as);
  const path = `/rooms/${enc(roomId)}/state/org.parley.call/`;
  const current = await bot.request<Record<string, unknown>>(Method.Get, path, undefined, as).catch(() => ({}));
  await bot.request(Method.Put, path, { ...current, e2ee }, as);
  return roomId;
}
