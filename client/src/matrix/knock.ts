// Asking to join a meeting room whose join rule is `knock` (docs/governance.md, Lobby): what the
// homeserver tells a non-member about the room (its summary), the knock itself, and waiting on
// /sync for the answer: an invite (a host let us in, or the meeting's server invites institution
// users at once) or a leave (a host declined: the knock was kicked, or banned). Withdrawing the
// knock is leaving the room.
//
// One sync loop per device while waiting: the homeserver deletes a device's to-device messages up
// to the `since` of any of its syncs, so a second loop that ignores them (this wait's own) would
// acknowledge messages the crypto's loop (the room's feed, already running in the lobby) may not
// have had yet: a media key sent as the knock is answered could be lost. With the feed's loop to
// listen to (`tap`), the wait reads the answer from its responses and makes only its first,
// initial sync itself (no `since`: it acknowledges nothing), for the state before it listened.
import { ParleyClientError, type ClientErrCode } from "../errors.ts";
import { pause, realTimers, type Timers } from "../timers.ts";
import type { CallAnnouncement } from "./callTrust.ts";
import { serverNameOf } from "./discovery.ts";
import { enc, errorFromResponse, type MatrixHttp } from "./http.ts";
import { CALL_STATE_EVENT, type StateEvent } from "./rooms.ts";

/** What the homeserver says of a room before joining it. */
export type RoomPreview =
  | { kind: "summary"; roomId: string; name: string | null; joinRule: string | null; membership: string | null }
  /** Not shown to a non-member: invite-only (or locked), or unknown to the homeserver. */
  | { kind: "hidden" }
  /** The homeserver has no room summary, or could not be asked. */
  | { kind: "unknown" };

export type Admission = "invited" | "joined" | "declined";

/** The server a meeting link names: an alias's (`#name:server`), or a room id's own (`!opaque:server`, before room v12). */
export function linkServer(target: string): string | null {
  const colon = target.indexOf(":");
  return (target.startsWith("#") || target.startsWith("!")) && colon > 0 && colon < target.length - 1 ? target.slice(colon + 1) : null;
}

/** Servers to reach a room id through (`!opaque:server` before room v12); an alias resolves by itself. */
export function viaServers(target: string): string[] {
  const server = target.startsWith("!") ? linkServer(target) : null;
  return server ? [server] : [];
}

/** GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (Matrix 1.15, MSC3266). */
export async function previewRoom(http: MatrixHttp, target: string): Promise<RoomPreview> {
  let r: Record<string, unknown>;
  try {
    r = await http.request<Record<string, unknown>>("GET", `/room_summary/${enc(target)}`, {
      prefix: "/_matrix/client/v1",
      query: { via: viaServers(target) },
      context: "room",
    });
  } catch (err) {
    // Synapse answers 404 for a room it shows no non-member (invite-only, or locked). Anything
    // else (no such endpoint, or a 403 from Parley's guest proxy, which does not pass it on):
    // the homeserver can't say, and the knock's own answer will.
    if (err instanceof ParleyClientError && err.code === "M_NOT_FOUND") return { kind: "hidden" };
    return { kind: "unknown" };
  }
  if (typeof r.room_id !== "string") return { kind: "unknown" };
  const str = (v: unknown) => (typeof v === "string" && v ? v : null);
  return { kind: "summary", roomId: r.room_id, name: str(r.name) ?? str(r.canonical_alias), joinRule: str(r.join_rule), membership: str(r.membership) };
}

/** POST /knock/{roomIdOrAlias} through `via` (a room id's own server by default); resolves with the room id. */
export async function knockRoom(http: MatrixHttp, target: string, reason: string, via: string[] = viaServers(target)): Promise<string> {
  const res = await http.request<{ room_id?: unknown }>("POST", `/knock/${enc(target)}`, {
    body: reason ? { reason } : {},
    query: { server_name: via, via },
    context: "room",
  });
  if (typeof res.room_id !== "string") throw new ParleyClientError("BAD_RESPONSE", "room", { detail: "knock without room_id" });
  return res.room_id;
}

/** Takes the knock back (or leaves whatever membership there is). */
export async function withdrawKnock(http: MatrixHttp, roomId: string): Promise<void> {
  await http.request("POST", `/rooms/${enc(roomId)}/leave`, { body: {}, context: "room" });
}

type SyncRooms = Partial<Record<"join" | "invite" | "leave" | "knock", Record<string, unknown>>>;

/** The answer a /sync response holds for the room, if any. */
export function admissionIn(res: { rooms?: SyncRooms }, roomId: string): Admission | null {
  const has = (section: keyof SyncRooms) => {
    const rooms = res.rooms?.[section];
    return typeof rooms === "object" && rooms !== null && Object.hasOwn(rooms, roomId);
  };
  if (has("join")) return "joined";
  if (has("invite")) return "invited";
  if (has("leave")) return "declined";
  return null;
}

/** The room as an invite shows it before the join (its stripped state, knock.ts inviteState). */
export interface InviteState {
  /** The call API the room announces, vouched for by the inviting server, else null. */
  call: CallAnnouncement | null;
  /** The invite's stripped state events, the call's announcement among them only if vouched for. */
  events: StateEvent[];
}

/**
 * The room as the invite's stripped state (`invite_state`) shows it. The inviting server adds
 * `org.parley.call` to it when configured so (Synapse's `room_prejoin_state.additional_event_types`,
 * docs/deployment.md). Stripped state is not signed: the inviting server says what it likes in
 * it. So the call's announcement counts only when its sender is a user of that same server (the
 * server of the invite's sender, which signed the invite: our homeserver checked that), which
 * vouches for its own users only; the caller then trusts it as it would the room's own state, by
 * its sender, and the joined room's state decides (the key mode: callEncryption.ts). The rest
 * (name, alias, the invite itself) is what a client shows of any invite.
 */
export function inviteState(res: { rooms?: SyncRooms }, roomId: string, userId: string): InviteState {
  const invite = res.rooms?.invite?.[roomId] as { invite_state?: { events?: unknown } } | undefined;
  const events = strippedEvents(invite?.invite_state?.events);
  const inviter = events.find((e) => e.type === "m.room.member" && e.state_key === userId && e.content?.membership === "invite")?.sender;
  const others = events.filter((e) => e.type !== CALL_STATE_EVENT);
  const vouched = vouchedCall(events, typeof inviter === "string" ? serverNameOf(inviter) : null);
  return vouched ? { call: vouched.call, events: [...others, vouched.event] } : { call: null, events: others };
}

/**
 * The call API the room announces in the knock's stripped state (`knock_state`), with the
 * announcement's content (the call's key mode, read as from an invite's: callEncryption.ts),
 * counted only when its sender is a user of `server`, the server the knock went through (which
 * answered it with that state): as for an invite (inviteState), a server vouches for its own
 * users only.
 */
export function knockCall(res: { rooms?: SyncRooms }, roomId: string, server: string): { call: CallAnnouncement; content: unknown } | null {
  const knock = res.rooms?.knock?.[roomId] as { knock_state?: { events?: unknown } } | undefined;
  const vouched = vouchedCall(strippedEvents(knock?.knock_state?.events), server);
  return vouched ? { call: vouched.call, content: vouched.event.content } : null;
}

/** A stripped state's events, objects only. */
function strippedEvents(raw: unknown): StateEvent[] {
  return (Array.isArray(raw) ? (raw as unknown[]) : []).filter((e): e is StateEvent => typeof e === "object" && e !== null && !Array.isArray(e));
}

/**
 * The stripped state's first well-formed `org.parley.call` and the call it announces, if its
 * sender is a user of `server` (the one that vouches: null, nobody does); else null. The first
 * decides: a forged one before a true one hides it.
 */
function vouchedCall(events: StateEvent[], server: string | null): { call: CallAnnouncement; event: StateEvent } | null {
  for (const ev of events) {
    if (ev.type !== CALL_STATE_EVENT || ev.state_key !== "" || typeof ev.sender !== "string" || typeof ev.content?.api !== "string") continue;
    return server && serverNameOf(ev.sender) === server ? { call: { api: ev.content.api, sender: ev.sender }, event: ev } : null;
  }
  return null;
}

/** Only this room, and as little of it as the homeserver allows. */
export function waitFilter(roomId: string): string {
  const none = { not_types: ["*"] };
  return JSON.stringify({
    presence: none,
    account_data: none,
    room: { rooms: [roomId], timeline: { limit: 1 }, state: { types: [] }, ephemeral: none, account_data: none },
  });
}

/** The /sync responses of a loop this device runs already (the room's feed): the wait listens instead of polling. */
export interface SyncTap {
  /** Calls `fn` with each /sync response from now on (its HTTP status and body); returns the unsubscribe. */
  onResponse(fn: (status: number, body: unknown) => void): () => void;
  /** Rejects if that loop is not going to run (its start failed, or it stopped): the wait then polls itself. */
  running: Promise<unknown>;
}

/** What a failed /sync says that ends the wait rather than being retried (an expired sign-in, a refusal). */
const FATAL_SYNC_ERRORS: ReadonlySet<string> = new Set<ClientErrCode>(["M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_FORBIDDEN"]);

export interface WaitOptions {
  signal: AbortSignal;
  /** A sync loop of this device already running: its responses carry the answer (see the top of this file). */
  tap?: SyncTap;
  timers?: Timers;
  /** How long one /sync waits for news. */
  pollMs?: number;
  /** Invited: the room as the invite's stripped state shows it to `userId` (inviteState), before the answer returns. */
  onInvite?: { userId: string; invited: (state: InviteState) => void };
  /** Still knocking: the call the knock's stripped state announces (knockCall, vouched for by `server`) and its content, once. */
  onKnock?: { server: string; knocking: (call: CallAnnouncement, content: unknown) => void };
}

/**
 * Long-polls /sync until the room answers the knock. The first, initial sync gives the current
 * membership (a knock answered while nobody watched, or at once); later ones give what changed.
 * Network trouble is retried with a backoff; an expired sign-in or the abort ends the wait.
 */
export async function awaitAdmission(http: MatrixHttp, roomId: string, o: WaitOptions): Promise<Admission> {
  const timers = o.timers ?? realTimers;
  const pollMs = o.pollMs ?? 30_000;
  const filter = waitFilter(roomId);
  let since: string | undefined;
  let failures = 0;
  let knockSeen = false;
  let invitedSeen = false;
  /** The answer a response holds, if any; the invite's and the knock's hints are given once each. */
  const read = (res: { rooms?: SyncRooms }): Admission | null => {
    const answer = admissionIn(res, roomId);
    if (answer === "invited" && o.onInvite && !invitedSeen) {
      invitedSeen = true;
      try {
        o.onInvite.invited(inviteState(res, roomId, o.onInvite.userId));
      } catch {
        // a hint: the answer stands whatever its listener does
      }
    }
    if (answer) return answer;
    const known = o.onKnock && !knockSeen ? knockCall(res, roomId, o.onKnock.server) : null;
    if (known) {
      knockSeen = true;
      try {
        o.onKnock!.knocking(known.call, known.content);
      } catch {
        // a hint, as the invite's
      }
    }
    return null;
  };
  // Listened to before the first sync below: nothing the other loop gets meanwhile is missed.
  let tapped = o.tap ? listen(o.tap, read, o.signal) : null;
  try {
    for (;;) {
      if (o.signal.aborted) throw aborted();
      let res: { next_batch?: unknown; rooms?: SyncRooms };
      try {
        res = await http.request("GET", "/sync", {
          query: { filter, since, timeout: since ? pollMs : 0 },
          timeoutMs: pollMs + 15_000,
          signal: o.signal,
          context: "room",
        });
        failures = 0;
      } catch (err) {
        if (o.signal.aborted) throw aborted();
        if (err instanceof ParleyClientError && FATAL_SYNC_ERRORS.has(err.code)) throw err;
        await pause(timers, Math.min(30_000, 1000 * 2 ** failures++), o.signal); // an abort ends the loop at its top
        continue;
      }
      const answer = read(res);
      if (answer) return answer;
      if (typeof res.next_batch === "string") since = res.next_batch;
      if (tapped) {
        // The state before listening is known: from here on the other loop's responses.
        const heard = await tapped.answer;
        if (heard) return heard;
        tapped.off(); // that loop is not running: this wait polls on from its own sync
        tapped = null;
      }
    }
  } finally {
    tapped?.off();
  }
}

/**
 * The answer the tapped loop's responses bring (null if that loop is not running); rejects when
 * one says the sign-in expired or was refused, or when the wait is aborted.
 */
function listen(tap: SyncTap, read: (res: { rooms?: SyncRooms }) => Admission | null, signal: AbortSignal): { answer: Promise<Admission | null>; off: () => void } {
  let off: () => void = () => undefined;
  const answer = new Promise<Admission | null>((resolve, reject) => {
    const stop = tap.onResponse((status, body) => {
      const b = body && typeof body === "object" ? (body as Record<string, unknown>) : undefined;
      if (status >= 200 && status < 300) {
        const a = read(b ?? {});
        if (a) resolve(a);
        return;
      }
      // Read as this wait's own request reads a failed answer.
      const err = errorFromResponse(status, b, "room");
      if (FATAL_SYNC_ERRORS.has(err.code)) reject(err);
    });
    const onAbort = () => reject(aborted());
    signal.addEventListener("abort", onAbort, { once: true });
    tap.running.catch(() => resolve(null));
    off = () => {
      stop();
      signal.removeEventListener("abort", onAbort);
    };
  });
  answer.catch(() => undefined); // awaited only once the first sync is done
  return { answer, off };
}

const aborted = () => new ParleyClientError("CLOSED", "room", { detail: "stopped waiting for the knock's answer" });
