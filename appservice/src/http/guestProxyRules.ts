// What a guest may ask of the homeserver through Parley: an allow-list of client-server routes,
// each scoped to the guest itself (its user, its device) or to its one meeting room. Everything
// else is M_FORBIDDEN. Requests reach the homeserver as the appservice masquerading as the guest's
// device, so nothing the guest sends is passed on unexamined:
//   - paths are decoded and re-encoded segment by segment (no %2F or dot-segment tricks);
//   - query parameters are an allow-list per route (an appservice may set `ts` on sends, and
//     `user_id`/`device_id` choose whom it acts as: a guest sets none of them);
//   - membership bodies are rebuilt to `{reason}` (Synapse puts the rest of a join or knock body
//     into the member event: a guest would pick its own display name, without the guest mark);
//   - state writes are the guest's own MatrixRTC call membership only;
//   - to-device messages are Olm (`m.room.encrypted`) to members of the meeting room only;
//   - joining needs an invite (a host's admission), even if the room's join rule changed.
// Pure apart from the context's lookups, so unit tests drive it with fakes.
import { ParleyError } from "../errors.ts";

export interface GuestIdentity {
  userId: string;
  deviceId: string;
  roomId: string;
}

/** What the rules may look up (the bot's view of the homeserver). */
export interface ProxyContext {
  domain: string;
  /** Longest /sync long poll passed on (ms). */
  syncTimeoutMs: number;
  resolveAlias(alias: string): Promise<string | undefined>;
  membership(roomId: string, userId: string): Promise<string | undefined>;
  /** Users joined to or invited into the room. */
  members(roomId: string): Promise<Set<string>>;
}

export type Decision =
  | { kind: "forward"; family: string; path: string; query: [string, string][]; body?: unknown; timeoutMs: number; media?: boolean }
  | { kind: "answer"; family: string; status: number; body: unknown }
  | { kind: "logout"; family: string };

/** The family of the MatrixRTC call membership state event the web client writes. */
export const CALL_MEMBER_EVENT = "org.matrix.msc3401.call.member";
/** Event types a guest may send into its meeting room (chat, plain or Megolm). */
export const GUEST_SEND_TYPES = new Set(["m.room.message", "m.room.encrypted"]);
const REASON_MAX = 256;
const DEFAULT_TIMEOUT_MS = 30_000;
const MESSAGES_LIMIT_MAX = 100;

type Params = Record<string, string>;
type Query = Record<string, (v: string) => string | undefined>;
interface Input {
  p: Params;
  query: URLSearchParams;
  body: unknown;
  guest: GuestIdentity;
  ctx: ProxyContext;
}

interface Route {
  family: string;
  method: "GET" | "POST" | "PUT";
  /** Path prefix (before the pattern's segments). */
  prefix: string;
  /** Segments; ":name" takes one segment, ":name?" an optional last one. */
  pattern: string[];
  query?: Query;
  decide?: (i: Input) => Outcome | Promise<Outcome>;
}
/** A route's say: refuse (throw), answer itself, or forward with these changes (nothing: as is). */
type Outcome = Decision | Partial<Extract<Decision, { kind: "forward" }>> | void;

const V3 = "/_matrix/client/v3";
const str = (max: number) => (v: string) => (v.length <= max ? v : undefined);
const oneOf = (...values: string[]) => (v: string) => (values.includes(v) ? v : undefined);
const intUpTo = (max: number) => (v: string) => (/^\d{1,9}$/.test(v) ? String(Math.min(Number(v), max)) : undefined);
const bool = oneOf("true", "false");

const forbid = (message: string) => new ParleyError("M_FORBIDDEN", message);

function self(i: Input): void {
  if (i.p.user !== i.guest.userId) throw forbid("a guest may act only as itself");
}

function ownRoom(i: Input): void {
  if (i.p.room !== i.guest.roomId) throw forbid("a guest may act only in the meeting it was made for");
}

/** The meeting room a knock or join names (a room id, or an alias of this server resolving to it). */
async function meetingTarget(i: Input): Promise<string> {
  const target = i.p.target!;
  if (target === i.guest.roomId) return target;
  if (target.startsWith("#") && target.endsWith(`:${i.ctx.domain}`) && (await i.ctx.resolveAlias(target)) === i.guest.roomId) return i.guest.roomId;
  throw forbid("a guest may act only in the meeting it was made for");
}

/** `{reason}` at most, whatever else the body held. */
function reasonOnly(body: unknown): Record<string, unknown> {
  const reason = (body as { reason?: unknown } | undefined)?.reason;
  if (reason === undefined) return {};
  if (typeof reason !== "string") throw new ParleyError("M_BAD_JSON", "reason: expected a string");
  return { reason: reason.slice(0, REASON_MAX) };
}

function objectBody(body: unknown): Record<string, unknown> {
  if (body === undefined) return {};
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ParleyError("M_BAD_JSON", "expected a JSON object");
  return body as Record<string, unknown>;
}

const membershipChange = (verb: string) => (i: Input) => ({ path: `${V3}/rooms/${enc(i.guest.roomId)}/${verb}`, body: reasonOnly(i.body) });

async function join(i: Input): Promise<Outcome> {
  const roomId = i.p.target !== undefined ? await meetingTarget(i) : (ownRoom(i), i.guest.roomId);
  const membership = await i.ctx.membership(roomId, i.guest.userId);
  if (membership !== "invite" && membership !== "join") throw forbid("wait in the lobby until a host lets you in");
  return { path: `${V3}/rooms/${enc(roomId)}/join`, body: reasonOnly(i.body) };
}

/** Only Olm to members of the meeting room (and the guest itself); other targets are dropped. */
async function toDevice(i: Input): Promise<Outcome> {
  if (i.p.type !== "m.room.encrypted") throw forbid("a guest may send only Olm-encrypted to-device messages");
  const messages = objectBody(objectBody(i.body).messages);
  const members = await i.ctx.members(i.guest.roomId);
  const kept = Object.fromEntries(Object.entries(messages).filter(([user]) => user === i.guest.userId || members.has(user)));
  if (!Object.keys(kept).length) return { kind: "answer", family: "to_device", status: 200, body: {} };
  return { body: { messages: kept } };
}

function send(i: Input) {
  ownRoom(i);
  if (!GUEST_SEND_TYPES.has(i.p.type!)) throw forbid(`a guest may not send ${i.p.type} events`);
  return { body: objectBody(i.body) };
}

function putState(i: Input) {
  ownRoom(i);
  const own = `_${i.guest.userId}_${i.guest.deviceId}`;
  const key = i.p.key ?? "";
  if (i.p.type !== CALL_MEMBER_EVENT || (key !== own && !key.startsWith(`${own}_`))) {
    throw forbid("a guest may write only its own call membership");
  }
  return { body: objectBody(i.body) };
}

function sync(i: Input) {
  const timeout = Math.min(Number(i.query.get("timeout") ?? 0) || 0, i.ctx.syncTimeoutMs);
  return { timeoutMs: timeout + DEFAULT_TIMEOUT_MS, query: [...pick(i.query, SYNC_QUERY)].map(([k, v]) => [k, k === "timeout" ? String(timeout) : v] as [string, string]) };
}

const SYNC_QUERY: Query = {
  filter: str(8192),
  since: str(1024),
  timeout: intUpTo(Number.MAX_SAFE_INTEGER),
  full_state: bool,
  set_presence: oneOf("offline", "online", "unavailable"),
  use_state_after: bool,
  "org.matrix.msc4222.use_state_after": bool,
};

const ROUTES: Route[] = [
  { family: "versions", method: "GET", prefix: "/_matrix/client", pattern: ["versions"] },
  { family: "capabilities", method: "GET", prefix: V3, pattern: ["capabilities"] },
  { family: "whoami", method: "GET", prefix: V3, pattern: ["account", "whoami"] },
  { family: "logout", method: "POST", prefix: V3, pattern: ["logout"], decide: () => ({ kind: "logout", family: "logout" }) },
  { family: "logout", method: "POST", prefix: V3, pattern: ["logout", "all"], decide: () => ({ kind: "logout", family: "logout" }) },
  { family: "push_rules", method: "GET", prefix: V3, pattern: ["pushrules", ":rest?"] },
  { family: "filter", method: "POST", prefix: V3, pattern: ["user", ":user", "filter"], decide: (i) => (self(i), { body: objectBody(i.body) }) },
  { family: "filter", method: "GET", prefix: V3, pattern: ["user", ":user", "filter", ":id"], decide: self },
  { family: "sync", method: "GET", prefix: V3, pattern: ["sync"], decide: sync },
  { family: "keys", method: "POST", prefix: V3, pattern: ["keys", "upload"], decide: (i) => ({ body: objectBody(i.body) }) },
  { family: "keys", method: "POST", prefix: V3, pattern: ["keys", "query"], decide: (i) => ({ body: objectBody(i.body) }) },
  { family: "keys", method: "POST", prefix: V3, pattern: ["keys", "claim"], decide: (i) => ({ body: objectBody(i.body) }) },
  { family: "keys", method: "GET", prefix: V3, pattern: ["keys", "changes"], query: { from: str(1024), to: str(1024) } },
  { family: "key_backup", method: "GET", prefix: V3, pattern: ["room_keys", "version", ":version?"] },
  { family: "to_device", method: "PUT", prefix: V3, pattern: ["sendToDevice", ":type", ":txn"], decide: toDevice },
  { family: "devices", method: "GET", prefix: V3, pattern: ["devices"] },
  {
    family: "devices",
    method: "GET",
    prefix: V3,
    pattern: ["devices", ":device"],
    decide: (i) => {
      if (i.p.device !== i.guest.deviceId) throw forbid("a guest may look only at its own device");
      return {};
    },
  },
  { family: "profile", method: "GET", prefix: V3, pattern: ["profile", ":user", ":field?"], decide: self },
  { family: "account_data", method: "GET", prefix: V3, pattern: ["user", ":user", "account_data", ":type"], decide: self },
  { family: "openid", method: "POST", prefix: V3, pattern: ["user", ":user", "openid", "request_token"], decide: (i) => (self(i), { body: {} }) },
  { family: "knock", method: "POST", prefix: V3, pattern: ["knock", ":target"], decide: async (i) => ({ path: `${V3}/knock/${enc(await meetingTarget(i))}`, body: reasonOnly(i.body) }) },
  { family: "join", method: "POST", prefix: V3, pattern: ["join", ":target"], decide: join },
  { family: "join", method: "POST", prefix: V3, pattern: ["rooms", ":room", "join"], decide: join },
  { family: "leave", method: "POST", prefix: V3, pattern: ["rooms", ":room", "leave"], decide: (i) => (ownRoom(i), membershipChange("leave")(i)) },
  { family: "room_read", method: "GET", prefix: V3, pattern: ["rooms", ":room", "state"], decide: ownRoom },
  { family: "room_read", method: "GET", prefix: V3, pattern: ["rooms", ":room", "state", ":type", ":key?"], query: { format: oneOf("content", "event") }, decide: ownRoom },
  { family: "room_read", method: "GET", prefix: V3, pattern: ["rooms", ":room", "members"], query: { at: str(1024), membership: str(16), not_membership: str(16) }, decide: ownRoom },
  { family: "room_read", method: "GET", prefix: V3, pattern: ["rooms", ":room", "joined_members"], decide: ownRoom },
  { family: "room_read", method: "GET", prefix: V3, pattern: ["rooms", ":room", "event", ":event"], decide: ownRoom },
  {
    family: "room_read",
    method: "GET",
    prefix: V3,
    pattern: ["rooms", ":room", "messages"],
    query: { from: str(1024), to: str(1024), dir: oneOf("b", "f"), limit: intUpTo(MESSAGES_LIMIT_MAX), filter: str(8192) },
    decide: ownRoom,
  },
  { family: "send", method: "PUT", prefix: V3, pattern: ["rooms", ":room", "send", ":type", ":txn"], decide: send },
  {
    family: "call_membership",
    method: "PUT",
    prefix: V3,
    pattern: ["rooms", ":room", "state", ":type", ":key?"],
    query: { "org.matrix.msc4140.delay": intUpTo(86_400_000) },
    decide: putState,
  },
  {
    family: "call_membership",
    method: "POST",
    prefix: "/_matrix/client/unstable/org.matrix.msc4140",
    pattern: ["delayed_events", ":id"],
    decide: (i) => {
      const action = objectBody(i.body).action;
      if (action !== "restart" && action !== "send" && action !== "cancel") throw new ParleyError("M_INVALID_PARAM", "action: restart, send or cancel");
      return { body: { action } };
    },
  },
  // MSC4143: matrix-js-sdk asks which MatrixRTC transports the homeserver offers (read-only).
  { family: "rtc", method: "GET", prefix: "/_matrix/client/unstable/org.matrix.msc4143", pattern: ["rtc", "transports"] },
  {
    family: "media",
    method: "GET",
    prefix: "/_matrix/client/v1/media",
    pattern: ["thumbnail", ":server", ":media"],
    query: { width: intUpTo(1024), height: intUpTo(1024), method: oneOf("crop", "scale"), animated: bool },
    decide: () => ({ media: true }),
  },
];

const enc = encodeURIComponent;

function* pick(query: URLSearchParams, allowed: Query): Generator<[string, string]> {
  for (const [name, check] of Object.entries(allowed)) {
    const raw = query.get(name);
    if (raw === null) continue;
    const v = check(raw);
    if (v !== undefined) yield [name, v];
  }
}

/** A route matched by method and path, before the body is read. */
export interface RouteMatch {
  route: Route;
  params: Params;
  /** The path as passed on: the prefix and the decoded segments, encoded again. */
  path: string;
}

function decodeSegments(rest: string): string[] {
  try {
    return rest.split("/").map((s) => decodeURIComponent(s));
  } catch {
    throw new ParleyError("M_INVALID_PARAM", "the path is not percent-encoded UTF-8");
  }
}

function bind(pattern: string[], segments: string[]): Params | undefined {
  const params: Params = {};
  const optional = pattern.at(-1)?.endsWith("?") ?? false;
  const segs = segments.at(-1) === "" && (!optional || segments.length === pattern.length + 1) ? segments.slice(0, -1) : segments;
  if (segs.length !== pattern.length && !(optional && segs.length === pattern.length - 1)) return undefined;
  for (let k = 0; k < pattern.length; k++) {
    const part = pattern[k]!;
    const seg = segs[k];
    if (part.startsWith(":")) {
      if (seg === undefined) continue; // the optional last one, absent
      params[part.replace(/^:|\?$/g, "")] = seg;
    } else if (seg !== part) return undefined;
  }
  return params;
}

/** The route for a method and path, or M_FORBIDDEN (M_INVALID_PARAM for an undecodable path). */
export function matchGuestRoute(method: string, path: string): RouteMatch {
  for (const route of ROUTES) {
    if (route.method !== method || !path.startsWith(`${route.prefix}/`)) continue;
    const segments = decodeSegments(path.slice(route.prefix.length + 1));
    if (segments.some((s) => s === "." || s === "..")) break;
    const params = bind(route.pattern, segments);
    if (params) return { route, params, path: `${route.prefix}/${segments.map(enc).join("/")}` };
  }
  throw forbid(`guests may not use ${method} ${familyOf(path)}`);
}

/** The families of the routes guests may use (a bounded metric label). */
export const GUEST_ROUTE_FAMILIES: ReadonlySet<string> = new Set(ROUTES.map((r) => r.family));

/** The broad name of a refused path, for the refusal message and metrics ("createRoom", "rooms/invite"). */
export function familyOf(path: string): string {
  const rest = path.replace(/^\/_matrix\/client\/(v\d+|r0|unstable\/[^/]+)\//, "").split("/");
  const verb = rest[0] === "rooms" ? `rooms/${rest[2] ?? ""}` : rest[0] === "user" ? `user/${rest[2] ?? ""}` : (rest[0] ?? "");
  return verb.replace(/[^A-Za-z0-9_/.-]/g, "").slice(0, 40) || "/";
}

/** What to do with a matched request once its body is read; throws ParleyError to refuse. */
export async function decideGuestRequest(
  match: RouteMatch,
  query: URLSearchParams,
  body: unknown,
  guest: GuestIdentity,
  ctx: ProxyContext,
): Promise<Decision> {
  const { route } = match;
  const base = { kind: "forward" as const, family: route.family, path: match.path, query: [...pick(query, route.query ?? {})], timeoutMs: DEFAULT_TIMEOUT_MS };
  const decided = (await route.decide?.({ p: match.params, query, body, guest, ctx })) ?? {};
  if (decided.kind === "answer" || decided.kind === "logout") return decided;
  return { ...base, ...decided, kind: "forward" };
}
