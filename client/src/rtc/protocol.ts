// The client's view of the signalling protocol (appservice/src/http/signalling/protocol.ts is the
// server's zod schema, the source of truth). Outbound messages are typed here; inbound ones are
// parsed by the guards below before anything acts on them. Meeting governance (roles, lobby,
// moderation, hands, reactions) has its own module, governanceProtocol.ts.
import {
  GOVERNANCE_PUSHES,
  parseGovernanceFields,
  type GovernanceFields,
  type GovernancePush,
  type GovernanceRequest,
} from "./governanceProtocol.ts";
import { VIEW_PUSHES, type ViewPush, type ViewRequest } from "./viewProtocol.ts";
import { isFeed, isKind, isObj, isUserId, type R } from "./wireGuards.ts";

export type * from "./governanceProtocol.ts";
export type * from "./viewProtocol.ts";

export type FeedId = string | number;
export type Jsep<T extends "offer" | "answer"> = { type: T; sdp: string };
export type CandidateInit = { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null } | null;
export type Target = "publisher" | "subscriber";

export type ClientRequest =
  | { type: "hello"; session: string; device_id?: string; standby?: boolean; prepare?: boolean }
  | { type: "ping" }
  | { type: "publish"; jsep: Jsep<"offer">; simulcast?: boolean; e2ee?: boolean }
  | { type: "subscribe"; feeds: { feed: FeedId; mid?: string }[]; e2ee?: boolean }
  | { type: "unsubscribe"; feeds: FeedId[] }
  | { type: "answer"; jsep: Jsep<"answer">; e2ee?: boolean }
  | { type: "trickle"; target: Target; candidate: CandidateInit }
  | { type: "mute"; kind: "audio" | "video"; muted: boolean }
  | { type: "source"; kind: "video"; source: "camera" | "screen" }
  | { type: "leave" }
  | ViewRequest
  | GovernanceRequest;

export interface SubscribedStream {
  feed: FeedId;
  mid: string;
  kind: "audio" | "video";
  user_id: string;
  device_id: string;
}

/** A video m-line a pre-join's subscription left out (its publisher's mid), subscribed at Join (prejoinMedia.ts). */
export interface HeldStream {
  feed: FeedId;
  mid: string;
}

/** A `prepared` push's `held`: what is not a {feed, mid} is left out. */
export function parseHeld(v: unknown): HeldStream[] {
  if (!Array.isArray(v)) return [];
  return v.flatMap((h: unknown) => (isObj(h) && isFeed(h.feed) && typeof h.mid === "string" ? [{ feed: h.feed, mid: h.mid }] : []));
}

export interface Participant extends GovernanceFields {
  user_id: string;
  device_id: string;
  feed_id: FeedId;
  streams: { mid: string; kind: "audio" | "video"; type?: "camera" | "screen" }[];
  muted: { audio: boolean; video: boolean };
}

export interface E2eeInfo {
  required: boolean;
  keys: "participant" | "provisioned";
  /** The bot whose device sends provisioned keys. */
  bot: string;
}

export interface HelloResult {
  user_id: string;
  room_id: string;
  call_id: string;
  e2ee?: E2eeInfo;
  /** The server took over this client's media from before a Parley restart: nothing to publish again. */
  resumed?: boolean;
  /** A session granted in the lobby (a knocker's): the ICE servers its grant did not carry, now that it is let in. */
  ice?: { iceServers: RTCIceServer[]; iceTransportPolicy: RTCIceTransportPolicy };
  /** The subscription answered on the standby socket is this seat's, forwarding from now on (docs/join.md). */
  prepared?: boolean;
  /**
   * The held videos' offer pushed on the standby, which this hello crossed: the subscription's
   * renegotiation for the call to answer (kept raw: a subscribe result's fields, parsed where applied).
   */
  preparedUpdate?: R;
}
export interface PublishResult {
  jsep: Jsep<"answer">;
  feed_id: FeedId;
}
export interface SubscribeResult {
  jsep?: Jsep<"offer">;
  streams: SubscribedStream[];
}

export type Push =
  | { type: "participants"; participants: Participant[] }
  | { type: "trickle"; target: Target; candidate: CandidateInit }
  | { type: "renegotiate"; reason: string }
  /** The session ended; `by` and `reason` when a person ended it (a host's end, remove or ban). */
  | { type: "evicted"; errcode: string; error: string; by?: string; reason?: string }
  /** A device in the pre-join (its session granted ahead, its keys up): its media keys may go now. */
  | { type: "arriving"; user_id: string; device_id: string }
  /** A user let in from the lobby (invited after their knock), as the server's homeserver told it. */
  | { type: "let_in"; user_id: string }
  | ViewPush
  | GovernancePush;

// ---- guards: collect what is wrong instead of trusting the wire ----

export function isJsep<T extends "offer" | "answer">(v: unknown, type: T): v is Jsep<T> {
  return isObj(v) && v.type === type && typeof v.sdp === "string" && v.sdp.startsWith("v=0");
}

function parseCandidate(v: unknown, errors: string[]): CandidateInit | undefined {
  if (v === null) return null;
  if (!isObj(v) || typeof v.candidate !== "string") return void errors.push("candidate must be null or {candidate}");
  return {
    candidate: v.candidate,
    sdpMid: typeof v.sdpMid === "string" ? v.sdpMid : null,
    sdpMLineIndex: typeof v.sdpMLineIndex === "number" ? v.sdpMLineIndex : null,
  };
}

export function parseStreams(v: unknown, errors: string[]): SubscribedStream[] {
  if (!Array.isArray(v)) return (errors.push("streams must be an array"), []);
  const out: SubscribedStream[] = [];
  v.forEach((s, i) => {
    if (isObj(s) && isFeed(s.feed) && typeof s.mid === "string" && isKind(s.kind) && typeof s.user_id === "string") {
      out.push({ feed: s.feed, mid: s.mid, kind: s.kind, user_id: s.user_id, device_id: typeof s.device_id === "string" ? s.device_id : "" });
    } else errors.push(`streams[${i}] must be {feed, mid, kind, user_id}`);
  });
  return out;
}

function parseParticipants(v: unknown, errors: string[]): Participant[] {
  if (!Array.isArray(v)) return (errors.push("participants must be an array"), []);
  const out: Participant[] = [];
  v.forEach((p, i) => {
    if (!isObj(p) || typeof p.user_id !== "string" || !isFeed(p.feed_id)) return void errors.push(`participants[${i}] needs user_id, feed_id`);
    const streams = Array.isArray(p.streams)
      ? p.streams
          .filter((s): s is R => isObj(s) && typeof s.mid === "string" && isKind(s.kind))
          .map((s): Participant["streams"][number] => {
            const type = s.type === "camera" || s.type === "screen" ? s.type : undefined;
            return { mid: s.mid as string, kind: s.kind as "audio" | "video", ...(type ? { type } : {}) };
          })
      : [];
    const muted = isObj(p.muted) ? p.muted : {};
    out.push({
      user_id: p.user_id,
      device_id: typeof p.device_id === "string" ? p.device_id : "",
      feed_id: p.feed_id,
      streams,
      muted: { audio: muted.audio === true, video: muted.video === true },
      ...parseGovernanceFields(p, `participants[${i}]`, errors),
    });
  });
  return out;
}

function parseTrickle(m: R, errors: string[]): Push | undefined {
  const target = m.target === "publisher" || m.target === "subscriber" ? m.target : undefined;
  if (!target) errors.push("target must be publisher|subscriber");
  const candidate = parseCandidate(m.candidate, errors);
  return target && candidate !== undefined ? { type: "trickle", target, candidate } : undefined;
}

function parseEvicted(m: R): Push {
  return {
    type: "evicted",
    errcode: typeof m.errcode === "string" ? m.errcode : "M_UNKNOWN",
    error: typeof m.error === "string" ? m.error : "",
    // Who ended the session is a courtesy for the words on screen: dropped when malformed, since
    // the eviction itself must take effect whatever else the message carries.
    ...(isUserId(m.by) ? { by: m.by } : {}),
    ...(typeof m.reason === "string" && m.reason ? { reason: m.reason } : {}),
  };
}

/** Every push by type: each parser reports what is wrong in `errors`. */
const PUSHES: Record<Push["type"], (m: R, errors: string[]) => Push | undefined> = {
  participants: (m, errors) => ({ type: "participants", participants: parseParticipants(m.participants, errors) }),
  trickle: parseTrickle,
  renegotiate: (m) => ({ type: "renegotiate", reason: typeof m.reason === "string" ? m.reason : "" }),
  evicted: parseEvicted,
  arriving: (m, errors) => {
    if (isUserId(m.user_id) && typeof m.device_id === "string" && m.device_id && m.device_id.length <= 255) return { type: "arriving", user_id: m.user_id, device_id: m.device_id };
    errors.push("arriving needs user_id and device_id");
    return undefined;
  },
  let_in: (m, errors) => {
    if (isUserId(m.user_id)) return { type: "let_in", user_id: m.user_id };
    errors.push("let_in needs user_id");
    return undefined;
  },
  ...GOVERNANCE_PUSHES,
  ...VIEW_PUSHES,
};

/** A push from the server, or the list of what is wrong with it. */
export function parsePush(m: R): { push: Push } | { errors: string[] } {
  const errors: string[] = [];
  const parse = typeof m.type === "string" && Object.hasOwn(PUSHES, m.type) ? PUSHES[m.type as Push["type"]] : undefined;
  if (!parse) return { errors: [`unknown push type ${String(m.type)}`] };
  const push = parse(m, errors);
  return errors.length || !push ? { errors } : { push };
}

function parseE2ee(v: unknown): E2eeInfo | undefined {
  if (!isObj(v) || typeof v.required !== "boolean") return undefined;
  return { required: v.required, keys: v.keys === "provisioned" ? "provisioned" : "participant", bot: typeof v.bot === "string" ? v.bot : "" };
}

/** ICE servers as the call API gives them (a grant's or a hello's `ice_servers`): well-formed entries only. */
export function parseIceServers(raw: unknown): RTCIceServer[] {
  const servers: RTCIceServer[] = [];
  for (const s of (Array.isArray(raw) ? raw : []) as Record<string, unknown>[]) {
    const urls = s?.urls;
    if (typeof urls !== "string" && !(Array.isArray(urls) && urls.every((u) => typeof u === "string"))) continue;
    servers.push({
      urls: urls as string | string[],
      ...(typeof s.username === "string" ? { username: s.username } : {}),
      ...(typeof s.credential === "string" ? { credential: s.credential } : {}),
    });
  }
  return servers;
}

/** Only "relay" narrows anything; an unknown word must not widen or break the connection. */
export function parseIcePolicy(raw: unknown): RTCIceTransportPolicy {
  return raw === "relay" ? "relay" : "all";
}

export function parseHello(v: R): HelloResult | null {
  if (typeof v.user_id !== "string" || typeof v.room_id !== "string" || typeof v.call_id !== "string") return null;
  const e2ee = parseE2ee(v.e2ee);
  const ice = Array.isArray(v.ice_servers) ? { iceServers: parseIceServers(v.ice_servers), iceTransportPolicy: parseIcePolicy(v.ice_transport_policy) } : undefined;
  return {
    user_id: v.user_id,
    room_id: v.room_id,
    call_id: v.call_id,
    ...(e2ee ? { e2ee } : {}),
    ...(v.resumed === true ? { resumed: true } : {}),
    ...(ice ? { ice } : {}),
    ...(v.prepared === true ? { prepared: true } : {}),
    ...(v.prepared === true && isObj(v.prepared_update) ? { preparedUpdate: v.prepared_update } : {}),
  };
}

export function parsePublishResult(v: R): PublishResult | null {
  return isJsep(v.jsep, "answer") && isFeed(v.feed_id) ? { jsep: v.jsep, feed_id: v.feed_id } : null;
}

export function parseSubscribeResult(v: R, errors: string[] = []): SubscribeResult | null {
  const streams = parseStreams(v.streams ?? [], errors);
  if (v.jsep !== undefined && !isJsep(v.jsep, "offer")) errors.push("jsep must be an offer");
  if (errors.length) return null;
  return { ...(v.jsep ? { jsep: v.jsep as Jsep<"offer"> } : {}), streams };
}
