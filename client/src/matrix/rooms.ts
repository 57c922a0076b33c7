// Finding the meeting room: what the user typed (a name, an alias, a room id, a link) becomes a
// room to join; the room's org.parley.call state names the Parley that hosts its call, and
// callTrust.ts decides whether the user's identity may go there.
import { ParleyClientError, unreachableServer } from "../errors.ts";
import type { CallAnnouncement, CallHost, CallTrustSettings } from "./callTrust.ts";
import { enc, type MatrixHttp } from "./http.ts";
import { viaServers } from "./knock.ts";

export interface ClientSettings {
  homeserverUrl: string;
  serverName: string;
  aliasPrefix: string;
  callTrust: CallTrustSettings;
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

/** The server name of an alias or room id ("#meet-team:a.example" -> "a.example"); null for none. */
export function serverOfTarget(target: string): string | null {
  const m = /^[#!][^:]*:(.+)$/.exec(target.trim());
  return m ? m[1]! : null;
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
  /** The room's org.parley.call state (the hosting Parley's URL and who said so), if it has one. */
  call: CallAnnouncement | null;
  /** Where the user's identity goes for this call, decided when the room was opened. */
  host: CallHost;
  encrypted: boolean;
  /** The institution hosting the meeting: the server name of its alias, else of who announced its call, else of its id. */
  hostedBy?: string;
  /** The signed-in user's display name in this room, when known. */
  selfName?: string;
  /** The content of the room's org.parley.call state as read on opening (null: none; absent: not read): the call's key mode before the room's sync is up. */
  callContent?: unknown;
}

/**
 * Joins (or re-joins) the room; joining a #<prefix> alias makes Parley create the room. A 403
 * (M_FORBIDDEN) for a room whose join rule is `knock` is where asking to join starts (knock.ts).
 */
/** Joins refused by a homeserver race are tried again this many times (after 25 ms, doubling: 1.6 s in all). */
export const JOIN_RACE_RETRIES = 6;

/**
 * Synapse 1.163 sometimes refuses a join over federation right after a knock and its invite
 * ("duplicate auth_events" for the joiner's membership: the join was built on both); the same join
 * a moment later goes through.
 */
function isJoinRace(err: unknown): boolean {
  return err instanceof ParleyClientError && err.code === "M_FORBIDDEN" && !!err.detail?.includes("duplicate auth_events");
}

export async function joinRoom(
  http: MatrixHttp,
  target: string,
  ownServer: string | null = null,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  opts: { roomId?: string } = {},
): Promise<string> {
  // A room whose id is known already (the invite that let the user in from the lobby) is joined
  // by it, through the alias's server: the user's homeserver then asks nothing about the alias
  // over federation first (one round trip to the meeting's server less, on a knock's way in).
  const server = opts.roomId ? serverOfTarget(target) : null;
  const via = server ? [server] : viaServers(target);
  const joined = opts.roomId ?? target;
  let res: { room_id?: unknown };
  for (let attempt = 0; ; attempt++) {
    try {
      res = await http.request<{ room_id?: unknown }>("POST", `/join/${enc(joined)}`, { body: {}, query: { server_name: via, via }, context: "room" });
      break;
    } catch (err) {
      if (isJoinRace(err) && attempt < JOIN_RACE_RETRIES) {
        await sleep(25 * 2 ** attempt);
        continue;
      }
      throw joinFailure(err, target, ownServer);
    }
  }
  if (typeof res.room_id !== "string") throw new ParleyClientError("BAD_RESPONSE", "room", { detail: "join without room_id" });
  return res.room_id;
}

/**
 * A join's failure, with the meeting's server named when the user's homeserver could not reach
 * it: Synapse answers 502 (or 504) with an errcode (M_UNKNOWN) when a federation request fails.
 * A 502 without an errcode (M_UNAVAILABLE here) is a proxy in front of the user's own homeserver.
 */
export function joinFailure(err: unknown, target: string, ownServer: string | null): unknown {
  if (!(err instanceof ParleyClientError) || (err.status !== 502 && err.status !== 504) || err.code === "M_UNAVAILABLE") return err;
  const server = serverOfTarget(target);
  if (!server || server === ownServer) return err;
  return unreachableServer(server, "room", { status: err.status, ...(err.detail ? { detail: err.detail } : {}) });
}

export async function roomSummary(
  http: MatrixHttp,
  roomId: string,
  target: string,
  trust: { decide(call: CallAnnouncement | null): CallHost },
  selfUserId?: string,
): Promise<RoomSummary> {
  return summaryOf(await summaryState(http, roomId, selfUserId), roomId, target, trust, selfUserId);
}

/**
 * A room's summary from its state events: read from the joined room (roomSummary), or the
 * stripped state of the invite that let the user in (knock.ts inviteState).
 */
export function summaryOf(
  events: readonly StateEvent[],
  roomId: string,
  target: string,
  trust: { decide(call: CallAnnouncement | null): CallHost },
  selfUserId?: string,
): RoomSummary {
  const event = (type: string) => events.find((e) => e.type === type && e.state_key === "");
  const find = (type: string) => event(type)?.content;
  const name = find("m.room.name")?.name;
  const alias = find("m.room.canonical_alias")?.alias;
  const announced = event(CALL_STATE_EVENT);
  const api = announced?.content?.api;
  const call = typeof api === "string" && typeof announced?.sender === "string" ? { api, sender: announced.sender } : null;
  const me = events.find((e) => e.type === "m.room.member" && e.state_key === selfUserId)?.content?.displayname;
  const hostedBy = meetingHost(target, typeof alias === "string" ? alias : null, call, roomId);
  return {
    roomId,
    name: typeof name === "string" && name ? name : typeof alias === "string" ? alias : target,
    call,
    host: trust.decide(call),
    encrypted: !!find("m.room.encryption"),
    callContent: announced?.content ?? null,
    ...(hostedBy ? { hostedBy } : {}),
    ...(typeof me === "string" && me.trim() ? { selfName: me } : {}),
  };
}

export type StateEvent = { type?: unknown; state_key?: unknown; sender?: unknown; content?: Record<string, unknown> };

/** The state events a summary reads: (type, state key). The call's announcement is read whole (its sender counts). */
const SUMMARY_STATE = ["m.room.name", "m.room.canonical_alias", CALL_STATE_EVENT, "m.room.encryption"] as const;

/**
 * The few state events a summary needs, each asked for by itself (`format=event`), at once: not
 * the room's whole state, which lists every member (megabytes for an assembly) and which Synapse
 * answers only once a room joined over federation has its full state (its members come after a
 * fast join: 100-300 ms in the knock benchmark). A homeserver that answers with the content only
 * (no `format=event`) gets the whole-state request instead.
 */
async function summaryState(http: MatrixHttp, roomId: string, selfUserId: string | undefined): Promise<StateEvent[]> {
  const one = async (type: string, stateKey: string): Promise<StateEvent | null | "content-only"> => {
    try {
      const ev = await http.request<unknown>("GET", `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, { query: { format: "event" }, context: "room" });
      const e = ev as StateEvent | null;
      if (!e || typeof e !== "object" || typeof e.content !== "object" || e.content === null || e.type !== type) return "content-only";
      return e;
    } catch (err) {
      if (err instanceof ParleyClientError && err.code === "M_NOT_FOUND") return null;
      throw err;
    }
  };
  const wanted: [string, string][] = SUMMARY_STATE.map((t) => [t, ""]);
  if (selfUserId) wanted.push(["m.room.member", selfUserId]);
  const got = await Promise.all(wanted.map(([t, k]) => one(t, k)));
  if (got.includes("content-only")) {
    const state = await http.request<unknown>("GET", `/rooms/${enc(roomId)}/state`, { context: "room" });
    return Array.isArray(state) ? (state as StateEvent[]) : [];
  }
  return got.filter((e): e is StateEvent => e !== null && e !== "content-only");
}

/** Who hosts a meeting, by server name: its alias's (the target's or the canonical one), else who announced its call, else its room id's. */
export function meetingHost(target: string, canonicalAlias: string | null, call: CallAnnouncement | null, roomId: string): string | null {
  const alias = target.startsWith("#") ? target : canonicalAlias;
  const announcer = call ? /^@[^:]+:(.+)$/.exec(call.sender)?.[1] : undefined;
  return (alias ? serverOfTarget(alias) : null) ?? announcer ?? serverOfTarget(roomId);
}
