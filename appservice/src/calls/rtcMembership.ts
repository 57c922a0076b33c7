// MatrixRTC call membership, parsed from the events clients publish (flow 5 in ARCHITECTURE.md).
//
// Two wire shapes describe "this device of this user is in this call":
// - the session form: an `org.matrix.msc3401.call.member` state event whose state key names the
//   user and device (what Element Call and matrix-js-sdk send today);
// - the MSC4143 form: an `m.rtc.member` sticky event (MSC4354) keyed by its sticky key.
// Both are normalised into one RtcMembership. The checks follow matrix-js-sdk's
// `membershipData/session.ts` and `membershipData/rtc.ts`, and like them every problem with the
// content is collected, not just the first. Pure: no I/O, no clock, no library imports.

export const CALL_MEMBER_EVENT_TYPE = "org.matrix.msc3401.call.member";
/** The stable name from MSC4143 and the unstable one matrix-js-sdk sends. */
export const RTC_MEMBER_EVENT_TYPES: readonly string[] = ["m.rtc.member", "org.matrix.msc4143.rtc.member"];

/** How long a session-form membership lives without an `expires` of its own (js-sdk's default). */
export const DEFAULT_EXPIRE_DURATION_MS = 4 * 60 * 60 * 1000;
/** MSC4354 bounds stickiness to one hour, whatever the event claims. */
export const MAX_STICKY_DURATION_MS = 60 * 60 * 1000;

/** The application of voice and video calls (MSC4196). */
export const CALL_APPLICATION = "m.call";
/** js-sdk maps the legacy room-wide `call_id: ""` onto this slot id. */
export const ROOM_CALL_SLOT_ID = "m.call#ROOM";

/** A MatrixRTC transport: how to reach a member's media. Unknown types pass through untouched. */
export interface Transport {
  type: string;
  [key: string]: unknown;
}

export const PARLEY_TRANSPORT_TYPE = "org.parley.janus";

/** Parley's own transport: the call API that admits the device to the Janus room of this room. */
export interface ParleyTransport extends Transport {
  type: typeof PARLEY_TRANSPORT_TYPE;
  call_api: string;
  room_id: string;
}

export function parleyTransport(callApiUrl: string, roomId: string): ParleyTransport {
  return { type: PARLEY_TRANSPORT_TYPE, call_api: callApiUrl, room_id: roomId };
}

export function isParleyTransport(t: unknown): t is ParleyTransport {
  return (
    isRecord(t) &&
    t.type === PARLEY_TRANSPORT_TYPE &&
    typeof t.call_api === "string" &&
    isHttpUrl(t.call_api) &&
    typeof t.room_id === "string" &&
    t.room_id.startsWith("!")
  );
}

/** An event as the appservice receives it; everything but the envelope is checked here. */
export interface MembershipEvent {
  type: string;
  sender: string;
  content: unknown;
  state_key?: string;
  origin_server_ts?: number;
  /** MSC4354 stickiness, unstable and stable names. */
  msc4354_sticky?: unknown;
  sticky?: unknown;
  unsigned?: unknown;
}

export interface ParseOptions {
  /** When this process received the event; bounds a sticky event's life like js-sdk does. */
  receivedAt?: number;
}

export type MembershipForm = "session" | "rtc";

/** One device of one user in one call, whichever shape it came in. */
export interface RtcMembership {
  form: MembershipForm;
  eventType: string;
  /**
   * What a later event must share to replace this one: the state key (session form) or the
   * sticky key (MSC4143 form), scoped by event type and sender.
   */
  key: string;
  userId: string;
  deviceId: string;
  /** `membershipID` or `${sender}:${device_id}` (session form), `member.id` (MSC4143 form). */
  memberId: string;
  application: string;
  /** The application's id for the slot: `call_id`, or the part of `slot_id` after '#'. */
  callId: string;
  /** `{application}#{id}`; a session-form `m.call` with `call_id: ""` is `m.call#ROOM`, as in js-sdk. */
  slotId: string;
  /** `foci_preferred` (session form) or `transports.published` / `rtc_transports` (MSC4143). */
  transports: Transport[];
  /** Session form only: the legacy focus selection. */
  focusActive?: Transport;
  /** MSC4143 form only: the transport types the member can subscribe to. */
  canSubscribe?: string[];
  callIntent?: string;
  /** When the membership began: `created_ts` or the event's `origin_server_ts`. */
  createdTs?: number;
  /** After this instant the membership no longer counts. Undefined: it does not expire by itself. */
  expiresAt?: number;
}

/** An empty content (or `member.membership: "leave"`): the device left the call. */
export interface RtcLeave {
  form: MembershipForm;
  eventType: string;
  /** The key of the membership this leave ends; undefined when a sticky leave carries none. */
  key: string | undefined;
  userId: string;
}

export type RtcMembershipParse =
  | { ok: true; membership: RtcMembership }
  | { ok: true; membership: null; left: RtcLeave }
  | { ok: false; errors: string[] };

const MXID = /^@[^:\s]+:\S+$/;

export function parseRtcMembership(event: MembershipEvent, options: ParseOptions = {}): RtcMembershipParse {
  const errors: string[] = [];
  if (typeof event.sender !== "string" || !MXID.test(event.sender)) {
    errors.push("sender must be a user id");
  }
  if (!isRecord(event.content)) errors.push("content must be an object");
  if (event.origin_server_ts !== undefined && !isTimestamp(event.origin_server_ts)) {
    errors.push("origin_server_ts must be a non-negative integer");
  }
  const form = formOf(event.type);
  if (form === undefined) {
    errors.push(`event type ${JSON.stringify(event.type)} is not a call membership`);
  }
  if (errors.length > 0 || form === undefined || !isRecord(event.content)) return { ok: false, errors };
  const input = { event, content: event.content, errors, options };
  return form === "session" ? parseSession(input) : parseRtc(input);
}

/** Whether the membership no longer counts at `now` (js-sdk: expired once its expiry is reached). */
export function membershipExpired(m: Pick<RtcMembership, "expiresAt">, now: number): boolean {
  return m.expiresAt !== undefined && m.expiresAt <= now;
}

/** The key that identifies one event slot, so a later event (or a leave) can replace it. */
export function membershipKey(eventType: string, sender: string, key: string): string {
  return JSON.stringify([eventType, sender, key]);
}

function formOf(type: unknown): MembershipForm | undefined {
  if (type === CALL_MEMBER_EVENT_TYPE) return "session";
  if (typeof type === "string" && RTC_MEMBER_EVENT_TYPES.includes(type)) return "rtc";
  return undefined;
}

interface ParseInput {
  event: MembershipEvent;
  content: Record<string, unknown>;
  errors: string[];
  options: ParseOptions;
}

// ---- session form: org.matrix.msc3401.call.member state events ----

function parseSession({ event, content, errors }: ParseInput): RtcMembershipParse {
  const sender = event.sender;
  const stateKey = event.state_key;
  let owned: string | undefined;
  if (typeof stateKey !== "string") {
    errors.push("state_key must be a string (call.member is a state event)");
  } else {
    owned = stateKeyRest(stateKey, sender);
    if (owned === undefined) {
      errors.push(`state_key ${JSON.stringify(stateKey)} does not belong to sender ${sender}`);
    }
  }

  if (Object.keys(content).length === 0) {
    if (errors.length > 0 || typeof stateKey !== "string") return { ok: false, errors };
    return { ok: true, membership: null, left: leave("session", event, stateKey) };
  }
  if (Array.isArray(content.memberships)) {
    errors.push("the pre-MSC4143 memberships array is not supported (one device per state key)");
    return { ok: false, errors };
  }

  const deviceId = content.device_id;
  const callId = content.call_id;
  const application = content.application;
  if (!isNonEmptyString(deviceId)) errors.push("device_id must be a non-empty string");
  if (typeof callId !== "string") errors.push("call_id must be a string");
  if (!isNonEmptyString(application)) errors.push("application must be a non-empty string");
  if (content.scope !== undefined && typeof content.scope !== "string") errors.push("scope must be a string");

  let focusActive: Transport | undefined;
  if (!isRecord(content.focus_active)) {
    errors.push("focus_active must be an object");
  } else if (typeof content.focus_active.type !== "string") {
    errors.push("focus_active.type must be a string");
  } else {
    focusActive = content.focus_active as Transport;
  }
  const transports =
    content.foci_preferred === undefined ? [] : checkTransports(content.foci_preferred, "foci_preferred", errors);

  const createdTs = optional(content, "created_ts", isTimestamp, "a non-negative integer", errors);
  const expires = optional(content, "expires", isPositiveInteger, "a positive integer (milliseconds)", errors);
  const memberId = optional(content, "membershipID", isNonEmptyString, "a non-empty string", errors);
  const callIntent = optional(content, "m.call.intent", isString, "a string", errors);

  // The state key names the device: `_@user:server_DEVICE` (or without the leading '_' in room
  // versions with owned state keys), and js-sdk appends `_{application}{call_id}`.
  if (owned !== undefined && stateKey !== undefined && isNonEmptyString(deviceId)) {
    const forms = [deviceId];
    if (typeof application === "string" && typeof callId === "string") {
      forms.push(`${deviceId}_${application}${callId}`);
    }
    if (!forms.includes(owned)) {
      errors.push(`state_key ${JSON.stringify(stateKey)} does not name device_id ${JSON.stringify(deviceId)}`);
    }
  }

  if (
    errors.length > 0 ||
    stateKey === undefined ||
    !isNonEmptyString(deviceId) ||
    typeof callId !== "string" ||
    !isNonEmptyString(application)
  ) {
    return { ok: false, errors };
  }
  const origin = createdTs ?? event.origin_server_ts;
  const id = application === CALL_APPLICATION && callId === "" ? "ROOM" : callId;
  const membership: RtcMembership = {
    form: "session",
    eventType: event.type,
    key: membershipKey(event.type, sender, stateKey),
    userId: sender,
    deviceId,
    memberId: memberId ?? `${sender}:${deviceId}`,
    application,
    callId,
    slotId: `${application}#${id}`,
    transports,
  };
  if (focusActive !== undefined) membership.focusActive = focusActive;
  if (callIntent !== undefined) membership.callIntent = callIntent;
  if (origin !== undefined) {
    membership.createdTs = origin;
    membership.expiresAt = origin + (expires ?? DEFAULT_EXPIRE_DURATION_MS);
  }
  return { ok: true, membership };
}

/** What follows `{sender}_` in a state key the sender owns; undefined when it is not theirs. */
function stateKeyRest(stateKey: string, sender: string): string | undefined {
  const body = stateKey.startsWith("_") ? stateKey.slice(1) : stateKey;
  const prefix = `${sender}_`;
  return body.startsWith(prefix) ? body.slice(prefix.length) : undefined;
}

// ---- MSC4143 form: m.rtc.member sticky events ----

const LEFT_CONTENT_KEYS = new Set(["slot_id", "sticky_key", "msc4354_sticky_key"]);

function parseRtc({ event, content, errors, options }: ParseInput): RtcMembershipParse {
  const sender = event.sender;
  const sticky = checkStickyKey(content, errors);
  const stickyKey = sticky.key;
  const member = content.member;

  // js-sdk: a content with nothing beyond the slot and the sticky key is a leave; the latest
  // MSC4143 text says so with member.membership = "leave".
  const leftByEmptiness = Object.keys(content).every((k) => LEFT_CONTENT_KEYS.has(k));
  const leftByWord = isRecord(member) && member.membership === "leave";
  if (leftByEmptiness || leftByWord) {
    if (errors.length > 0) return { ok: false, errors };
    return { ok: true, membership: null, left: leave("rtc", event, stickyKey) };
  }

  let userId: string | undefined;
  let deviceId: string | undefined;
  let memberId: string | undefined;
  if (!isRecord(member)) {
    errors.push("member must be an object");
  } else {
    // js-sdk 43 sends user_id/device_id; an MSC4143 revision named them claimed_*.
    const claimedUser = member.user_id ?? member.claimed_user_id;
    if (typeof claimedUser !== "string") {
      errors.push("member.user_id must be a string");
    } else if (!MXID.test(claimedUser)) {
      errors.push("member.user_id must be a user id");
    } else if (claimedUser !== sender) {
      // As js-sdk: nothing yet says who may publish a membership for someone else.
      errors.push(`member.user_id ${claimedUser} must be the sender ${sender}`);
    } else {
      userId = claimedUser;
    }
    const claimedDevice = member.device_id ?? member.claimed_device_id;
    if (!isNonEmptyString(claimedDevice)) errors.push("member.device_id must be a non-empty string");
    else deviceId = claimedDevice;
    if (!isNonEmptyString(member.id)) errors.push("member.id must be a non-empty string");
    else memberId = member.id;
    if (member.membership !== undefined && member.membership !== "join") {
      errors.push('member.membership must be "join" or "leave"');
    }
  }

  let application: string | undefined;
  if (!isRecord(content.application)) {
    errors.push("application must be an object");
  } else if (!isNonEmptyString(content.application.type)) {
    errors.push("application.type must be a non-empty string");
  } else if (content.application.type.includes("#")) {
    errors.push('application.type must not contain "#"');
  } else {
    application = content.application.type;
  }

  let callId: string | undefined;
  const slotId = content.slot_id;
  if (typeof slotId !== "string") {
    errors.push("slot_id must be a string");
  } else if (slotId.split("#").length !== 2) {
    errors.push('slot_id must be "{application}#{id}" with exactly one "#"');
  } else if (application !== undefined && !slotId.startsWith(`${application}#`)) {
    errors.push(`slot_id must start with ${application}#`);
  } else {
    callId = slotId.slice(slotId.indexOf("#") + 1);
  }

  let transports: Transport[] = [];
  let canSubscribe: string[] | undefined;
  if (content.transports !== undefined) {
    if (!isRecord(content.transports)) {
      errors.push("transports must be an object");
    } else {
      transports = checkTransports(content.transports.published, "transports.published", errors);
      const cs = content.transports.can_subscribe;
      if (cs !== undefined) {
        if (Array.isArray(cs) && cs.every(isString)) canSubscribe = cs;
        else errors.push("transports.can_subscribe must be an array of strings");
      }
    }
  } else if (content.rtc_transports !== undefined) {
    transports = checkTransports(content.rtc_transports, "rtc_transports", errors);
  } else {
    errors.push("transports.published must be an array of transports");
  }

  if (content.versions !== undefined && !(Array.isArray(content.versions) && content.versions.every(isString))) {
    errors.push("versions must be an array of strings");
  }
  const rel = content["m.relates_to"];
  if (rel !== undefined) {
    if (!isRecord(rel)) {
      errors.push("m.relates_to must be an object");
    } else {
      if (typeof rel.event_id !== "string") errors.push("m.relates_to.event_id must be a string");
      if (rel.rel_type !== "m.reference") errors.push("m.relates_to.rel_type must be m.reference");
    }
  }
  const callIntent = isRecord(content.application) ? content.application["m.call.intent"] : undefined;
  if (callIntent !== undefined && typeof callIntent !== "string") {
    errors.push("application.m.call.intent must be a string");
  }
  if (stickyKey === undefined && !sticky.malformed) {
    errors.push("sticky_key (or msc4354_sticky_key) must be a string");
  }
  const expiresAt = stickyExpiry(event, options, errors);

  if (
    errors.length > 0 ||
    userId === undefined ||
    deviceId === undefined ||
    memberId === undefined ||
    application === undefined ||
    callId === undefined ||
    typeof slotId !== "string" ||
    stickyKey === undefined
  ) {
    return { ok: false, errors };
  }
  const membership: RtcMembership = {
    form: "rtc",
    eventType: event.type,
    key: membershipKey(event.type, sender, stickyKey),
    userId,
    deviceId,
    memberId,
    application,
    callId,
    slotId,
    transports,
  };
  if (canSubscribe !== undefined) membership.canSubscribe = canSubscribe;
  if (typeof callIntent === "string") membership.callIntent = callIntent;
  if (event.origin_server_ts !== undefined) membership.createdTs = event.origin_server_ts;
  if (expiresAt !== undefined) membership.expiresAt = expiresAt;
  return { ok: true, membership };
}

/** `sticky_key` and its unstable twin: at least one, strings, equal when both are present. */
function checkStickyKey(
  content: Record<string, unknown>,
  errors: string[],
): { key: string | undefined; malformed: boolean } {
  const stable = content.sticky_key;
  const unstable = content.msc4354_sticky_key;
  const before = errors.length;
  if (stable !== undefined && !isNonEmptyString(stable)) errors.push("sticky_key must be a non-empty string");
  if (unstable !== undefined && !isNonEmptyString(unstable)) {
    errors.push("msc4354_sticky_key must be a non-empty string");
  }
  if (isNonEmptyString(stable) && isNonEmptyString(unstable) && stable !== unstable) {
    errors.push("sticky_key and msc4354_sticky_key must be equal when both are present");
  }
  if (errors.length > before) return { key: undefined, malformed: true };
  const key = isNonEmptyString(stable) ? stable : isNonEmptyString(unstable) ? unstable : undefined;
  return { key, malformed: false };
}

/**
 * When a sticky event stops counting, as js-sdk computes it: from the earlier of its
 * origin_server_ts and its receipt (so a timestamp from the future buys nothing), plus its
 * duration bounded to one hour; a server-provided remaining ttl counts from receipt instead.
 */
function stickyExpiry(event: MembershipEvent, options: ParseOptions, errors: string[]): number | undefined {
  const info = event.msc4354_sticky ?? event.sticky;
  if (info === undefined) return undefined;
  const duration = isRecord(info) ? info.duration_ms : undefined;
  if (!isTimestamp(duration)) {
    errors.push("sticky.duration_ms must be a non-negative integer");
    return undefined;
  }
  const ttl = isRecord(event.unsigned) ? event.unsigned.msc4354_sticky_duration_ttl_ms : undefined;
  const receivedAt = options.receivedAt;
  if (isTimestamp(ttl) && receivedAt !== undefined) return receivedAt + Math.min(ttl, MAX_STICKY_DURATION_MS);
  const ots = event.origin_server_ts;
  const start = ots === undefined ? receivedAt : receivedAt === undefined ? ots : Math.min(ots, receivedAt);
  return start === undefined ? undefined : start + Math.min(duration, MAX_STICKY_DURATION_MS);
}

// ---- shared checks ----

function leave(form: MembershipForm, event: MembershipEvent, key: string | undefined): RtcLeave {
  return {
    form,
    eventType: event.type,
    key: key === undefined ? undefined : membershipKey(event.type, event.sender, key),
    userId: event.sender,
  };
}

/** An array of objects with a string `type`; Parley's own type must also be well formed. */
function checkTransports(value: unknown, path: string, errors: string[]): Transport[] {
  if (!Array.isArray(value)) {
    errors.push(`${path} must be an array of transports`);
    return [];
  }
  const out: Transport[] = [];
  value.forEach((t: unknown, i) => {
    if (!isRecord(t) || typeof t.type !== "string") {
      errors.push(`${path}[${i}] must be an object with a string type`);
    } else if (t.type === PARLEY_TRANSPORT_TYPE && !isParleyTransport(t)) {
      errors.push(`${path}[${i}] (${PARLEY_TRANSPORT_TYPE}) needs an http(s) call_api and a room_id`);
    } else {
      out.push(t as Transport);
    }
  });
  return out;
}

function optional<T>(
  content: Record<string, unknown>,
  key: string,
  guard: (v: unknown) => v is T,
  expected: string,
  errors: string[],
): T | undefined {
  const v = content[key];
  if (v === undefined) return undefined;
  if (guard(v)) return v;
  errors.push(`${key} must be ${expected}`);
  return undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isString(v: unknown): v is string {
  return typeof v === "string";
}

function isNonEmptyString(v: unknown): v is string {
  return typeof v === "string" && v.length > 0;
}

function isTimestamp(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function isPositiveInteger(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0;
}

function isHttpUrl(s: string): boolean {
  if (!URL.canParse(s)) return false;
  const { protocol } = new URL(s);
  return protocol === "https:" || protocol === "http:";
}
