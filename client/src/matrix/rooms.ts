// Finding the meeting room: what the user typed (a name, an alias, a room id, a link) becomes a
// room to join; the room's org.parley.call state names the Parley that hosts its call.
import { ParleyClientError } from "../errors.ts";
import { enc, type MatrixHttp } from "./http.ts";

export interface ClientSettings {
  homeserverUrl: string;
  serverName: string;
  aliasPrefix: string;
}

export const CALL_STATE_EVENT = "org.parley.call";

/**
 * "team sync" -> "#<prefix>team-sync:<server>"; aliases and room ids pass through; Parley links
 * (…/#/call/<target>) and matrix.to links are unwrapped.
 */
export function meetingTarget(input: string, settings: Pick<ClientSettings, "serverName" | "aliasPrefix">): string {
  let t = input.trim();
  const link = /#\/call\/([^?#]+)/.exec(t) ?? /matrix\.to\/#\/([^?/]+)/.exec(t);
  if (link) t = safeDecode(link[1]!);
  if (!t) throw new ParleyClientError("BAD_INPUT", "room", { human: "Enter a meeting name, alias or room id." });
  if (t.startsWith("#") || t.startsWith("!")) {
    if (!t.includes(":")) throw new ParleyClientError("M_INVALID_PARAM", "room");
    return t;
  }
  const slug = t.toLowerCase().replace(/[^a-z0-9._=-]+/g, "-").replace(/^-+|-+$/g, "");
  if (!slug) throw new ParleyClientError("M_INVALID_PARAM", "room");
  return `#${settings.aliasPrefix}${slug}:${settings.serverName}`;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export interface RoomSummary {
  roomId: string;
  name: string;
  /** The hosting Parley's public URL from org.parley.call, if the room has one. */
  callApi: string | null;
  encrypted: boolean;
  /** The signed-in user's display name in this room, when known. */
  selfName?: string;
}

/** Joins (or re-joins) the room; joining a #<prefix> alias makes Parley create the room. */
export async function joinRoom(http: MatrixHttp, target: string): Promise<string> {
  const res = await http.request<{ room_id?: unknown }>("POST", `/join/${enc(target)}`, { body: {}, context: "room" });
  if (typeof res.room_id !== "string") throw new ParleyClientError("BAD_RESPONSE", "room", { detail: "join without room_id" });
  return res.room_id;
}

export async function roomSummary(http: MatrixHttp, roomId: string, target: string, selfUserId?: string): Promise<RoomSummary> {
  const state = await http.request<unknown>("GET", `/rooms/${enc(roomId)}/state`, { context: "room" });
  const events = Array.isArray(state) ? (state as { type?: unknown; state_key?: unknown; content?: Record<string, unknown> }[]) : [];
  const find = (type: string) => events.find((e) => e.type === type && e.state_key === "")?.content;
  const name = find("m.room.name")?.name;
  const alias = find("m.room.canonical_alias")?.alias;
  const api = find(CALL_STATE_EVENT)?.api;
  const me = events.find((e) => e.type === "m.room.member" && e.state_key === selfUserId)?.content?.displayname;
  return {
    roomId,
    name: typeof name === "string" && name ? name : typeof alias === "string" ? alias : target,
    callApi: typeof api === "string" && /^https?:\/\//.test(api) ? api.replace(/\/+$/, "") : null,
    encrypted: !!find("m.room.encryption"),
    ...(typeof me === "string" && me.trim() ? { selfName: me } : {}),
  };
}

/** The call API for a room: the hosting Parley's URL, else the origin this client came from. */
export function callApiBase(summary: Pick<RoomSummary, "callApi">, origin: string): string {
  return summary.callApi ?? origin.replace(/\/+$/, "");
}
