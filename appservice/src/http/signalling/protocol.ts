// The signalling protocol between a client and its hosting Parley, as zod schemas: every inbound
// message is parsed, never trusted. Requests carry an `id` echoed in their answer.
import { z } from "zod";

/** The most sessions a call may be configured for (calls.limits.sessionsPerCall). */
export const MAX_SESSIONS_PER_CALL = 150;
/**
 * Largest SDP accepted. A publisher's offer is a few KB; a subscriber's answer has two m-lines
 * per other participant, about 1.4 KB (Chromium's, with its extensions and feedback lines): for a
 * call of MAX_SESSIONS_PER_CALL about 210 KB.
 */
export const MAX_SDP_BYTES = 256 * 1024;
/** Largest message accepted (an SDP and its envelope); bigger ones are answered M_TOO_LARGE and the socket lives on. */
export const MAX_MESSAGE_BYTES = MAX_SDP_BYTES + 16 * 1024;

const id = z.union([z.string().max(64), z.number().int()]).optional();
const sdp = z
  .string()
  .max(MAX_SDP_BYTES, "SDP too large")
  .refine((s) => s.startsWith("v=0"), "not an SDP (must start with v=0)");
const jsep = (type: "offer" | "answer") => z.object({ type: z.literal(type), sdp });
const userId = z.string().regex(/^@[^\s:]+:\S+$/, "a Matrix user id").max(255);
const kind = z.enum(["audio", "video"]);

/** A host or co-host action (docs/governance.md); the room's power levels decide who may. */
export const moderateAction = z.discriminatedUnion("action", [
  z.object({ action: z.enum(["mute", "allow"]), user_id: userId, kind }),
  z.object({ action: z.literal("mute_all"), kind }),
  z.object({ action: z.enum(["stop_share", "lower_hand", "admit", "deny"]), user_id: userId }),
  z.object({ action: z.enum(["remove", "ban"]), user_id: userId, reason: z.string().max(500).optional() }),
  z.object({ action: z.enum(["end", "admit_all"]) }),
  z.object({ action: z.literal("set_role"), user_id: userId, role: z.enum(["cohost", "participant"]) }),
  z.object({
    action: z.literal("settings"),
    access: z.enum(["open", "institution", "invited"]).optional(),
    locked: z.boolean().optional(),
    guests: z.boolean().optional(),
  }),
]);

/** Limits of the `view` message (docs/large-meetings.md). */
export const VIEW_LIMITS = { videos: 200, pinned: 4, tiles: 200, height: 4320, downlinkKbps: 10_000_000, page: 1000 } as const;
const feedId = z.string().min(1).max(64);

/** What the viewer's layout shows now: the server picks its videos and layers from it. */
export const viewMessage = z.object({
  type: z.literal("view"),
  id,
  videos: z.int().min(0).max(VIEW_LIMITS.videos),
  pinned: z.array(feedId).max(VIEW_LIMITS.pinned).optional(),
  tiles: z.array(z.object({ feed: feedId, height: z.int().min(0).max(VIEW_LIMITS.height) })).max(VIEW_LIMITS.tiles).optional(),
  downlink_kbps: z.number().min(0).max(VIEW_LIMITS.downlinkKbps).optional(),
  /** The layout's page (0-based; absent: 0). Past the first, the tiles on screen get their videos first. */
  page: z.int().min(0).max(VIEW_LIMITS.page).optional(),
});

export const clientMessage = z.discriminatedUnion("type", [
  // device_id: the Matrix device the client runs as; others address their media keys to it.
  // standby: the pre-join's socket, opened ahead; nobody is seated until a hello without it.
  // prepare (with standby): the pre-join's subscription to the call's media is made on this socket, paused (docs/join.md).
  z.object({
    type: z.literal("hello"),
    id,
    session: z.string().min(1).max(256),
    device_id: z.string().min(1).max(255).optional(),
    standby: z.boolean().optional(),
    prepare: z.boolean().optional(),
  }),
  z.object({ type: z.literal("ping"), id }),
  // e2ee: the client's frames are end-to-end encrypted (publish) / it decrypts them (subscribe, answer).
  z.object({ type: z.literal("publish"), id, jsep: jsep("offer"), simulcast: z.boolean().optional(), e2ee: z.boolean().optional() }),
  z.object({
    type: z.literal("subscribe"),
    id,
    e2ee: z.boolean().optional(),
    feeds: z.array(z.object({ feed: z.union([z.string(), z.number()]), mid: z.string().max(16).optional() })).min(1).max(64),
  }),
  z.object({ type: z.literal("unsubscribe"), id, feeds: z.array(z.union([z.string(), z.number()])).min(1).max(64) }),
  z.object({ type: z.literal("answer"), id, jsep: jsep("answer"), e2ee: z.boolean().optional() }),
  z.object({
    type: z.literal("trickle"),
    id,
    target: z.enum(["publisher", "subscriber"]),
    candidate: z.union([
      z.object({ candidate: z.string().max(1024), sdpMid: z.string().max(16).nullish(), sdpMLineIndex: z.number().int().nullish() }),
      z.null(),
    ]),
  }),
  z.object({ type: z.literal("mute"), id, kind: z.enum(["audio", "video"]), muted: z.boolean() }),
  // What the published video shows now (a screen share swaps the track without renegotiating).
  z.object({ type: z.literal("source"), id, kind: z.literal("video"), source: z.enum(["camera", "screen"]) }),
  z.object({ type: z.literal("leave"), id }),
  z.object({ type: z.literal("hand"), id, raised: z.boolean() }),
  z.object({ type: z.literal("react"), id, emoji: z.string().min(1).max(16) }),
  z.object({ type: z.literal("moderate"), id, action: moderateAction }),
  viewMessage,
]);

export type ClientMessage = z.infer<typeof clientMessage>;
export type MessageOf<T extends ClientMessage["type"]> = Extract<ClientMessage, { type: T }>;

/*
 * Server -> client. Every request is answered by {type:"result", id, ...} or
 * {type:"error", id?, errcode, error}. Results:
 *   hello       -> {user_id, room_id, call_id, e2ee: {required, keys: "participant"|"provisioned", bot}}
 *                  and, for a session granted in the lobby (a knocker's, docs/governance.md) or restored after a
 *                  Parley restart, its {ice_servers, ice_transport_policy}, which its grant did not
 *                  carry (or may not have)
 *   hello with standby: true -> {standby: true, user_id, room_id, call_id}: a socket opened ahead
 *                  (the pre-join's). The session is checked, nobody is seated, and the socket may
 *                  wait (calls.limits.standbySeconds, at most its grant's life) for the real hello,
 *                  sent at Join on it. One per session: a newer standby closes the older (4403).
 *   hello with standby and prepare: true -> as above; then, when the call has feeds and a
 *                  pre-join subscription may be made (calls.limits.prejoinSubscriptionsPerCall; a
 *                  lobby grant's once let in: it waits for the let-in as its hello would), the push
 *                  {type:"prepared", jsep: {type:"offer", sdp}, streams: SubscribedStream[],
 *                  held?: {feed, mid}[]}, with a lobby grant's {ice_servers, ice_transport_policy}:
 *                  every m-line made paused in the SFU. The offer holds the feeds' audio (all their
 *                  m-lines when none has audio); `held` names the video m-lines left out (their
 *                  publishers' mids). Once its connection is up they are added, paused, and a
 *                  second `prepared` {jsep, streams} carries that renegotiation's offer, answered
 *                  on the standby like the first. A real hello that crossed it gets it in its
 *                  result (`prepared_update`: {jsep, streams}), answered as the call's; one that
 *                  came before the connection was up leaves the held m-lines to the seated client
 *                  (a subscribe naming only some of them, each {feed, mid}, once: added paused).
 *                  Either way they resume as the viewer chooses once answered.
 *                  A socket on standby without prepare may say it once more, with prepare and the
 *                  same session (a knocker's lobby standby, once its client saw the invite);
 *                  any other second hello on standby is M_FORBIDDEN. On standby the socket
 *                  takes `answer` to them and `trickle` (target subscriber), nothing else. The real
 *                  hello on the same socket seats the subscription if its answer came before the
 *                  hello (its result says `prepared: true`), and it forwards from then on; otherwise
 *                  it is closed, and the hello does not wait for one still being made (an offer
 *                  pushed as the hello was on its way is not the call's)
 *   publish     -> {jsep: {type:"answer", sdp}, feed_id}
 *   subscribe   -> {jsep: {type:"offer", sdp}, streams: SubscribedStream[]}   (then send `answer`)
 *   unsubscribe -> {jsep?: {type:"offer", sdp}, streams}                       (renegotiation offer)
 *   answer, trickle, mute, source, leave, ping, hand, react, view -> {}  (ping: {pong:true})
 *   view        -> M_INVALID_PARAM for a feed pinned twice or a tile given twice
 *   moderate    -> {} or counts ({muted}, {admitted}, {seats}); M_FORBIDDEN when the room's power
 *                  levels do not allow it (docs/governance.md)
 * Pushes (no id):
 *   {type:"participants", participants: Participant[]}   the full list, on every change
 *   {type:"trickle", target:"publisher"|"subscriber", candidate}   Janus's candidates (if any)
 *   {type:"renegotiate", reason}   the SFU room was recreated (e.g. Janus restarted): publish and
 *                                  subscribe again on fresh peer connections
 *   {type:"meeting"|"lobby"|"moderated"|"stop_share"|"reaction", ...}   governance (docs/governance.md)
 *   {type:"speakers", talking, recent}   who talks now, and the speakers most recent first
 *                                        (at most 50), on change, coalesced (docs/large-meetings.md)
 *   {type:"arriving", user_id, device_id}   a device in the pre-join (its session granted ahead,
 *                                        its keys up: POST /_parley/v1/calls/arriving), or in the
 *                                        call with its keys up only after its hello: the devices
 *                                        in the call may send it their media keys now (again)
 *   {type:"let_in", user_id}   a user invited after their knock (let in from the lobby), as the
 *                              homeserver's transaction tells it: each device confirms the invite
 *                              with its own homeserver, then sends the user's devices its media key
 *   {type:"videos", videos: [{feed, layer}]}   exactly the remote videos the server forwards to
 *                                        this viewer now, in selection order, and their simulcast
 *                                        layer (0 low, 1 medium, 2 high); others get no video
 *   {type:"evicted", errcode, error}   the session ended (leave/kick/ban, expiry, call end, or
 *                                      another socket's hello took it over); the socket closes
 *                                      with 4000 + HTTP status (4403, 4401, 4404)
 *   {type:"error", errcode, error}     unsolicited, then closed: M_MISSING_TOKEN (no hello within
 *                                      calls.limits.helloTimeoutSeconds, or after a standby hello
 *                                      within standbySeconds; 4408), M_LIMIT_EXCEEDED
 *                                      (calls.limits.socketsPerAddress, or messagesPerSecond past
 *                                      messageBurst; 4429); a socket whose messages failed
 *                                      ERRORS_BEFORE_HELLO times before its hello is closed with
 *                                      the next error's code
 */
export interface SubscribedStream {
  feed: string | number;
  mid: string;
  kind: "audio" | "video";
  user_id: string;
  /** The Matrix device the publisher declared in hello ("" if none): whose media key decrypts it. */
  device_id: string;
}

export type { Participant } from "../../calls/callRoster.ts";
