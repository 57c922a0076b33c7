// POST {callApi}/_parley/v1/calls/join: an OpenID token and a room in, a short-lived call session
// out. The errors (401/403/404/503) become words in errors.ts ("join" context).
import { askedAhead, type AskedAhead } from "../ahead.ts";
import { ParleyClientError } from "../errors.ts";
import { errorFromResponse, type FetchFn } from "../matrix/http.ts";
import type { OpenIdToken } from "../matrix/openid.ts";
import { parseIcePolicy, parseIceServers } from "./protocol.ts";

export interface CallGrant {
  session: string;
  expiresAt: number;
  callId: string;
  roomId: string;
  iceServers: RTCIceServer[];
  /** "relay": only the TURN relay may carry media (the call API's turn.relayOnly). */
  iceTransportPolicy: RTCIceTransportPolicy;
  /** Path of the signalling WebSocket on the call API's host. */
  signalling: string;
  /** Asked ahead: the Matrix devices in the call now, as the server lists them (at most MAX_GRANT_DEVICES). */
  devices?: { userId: string; deviceId: string }[];
}

/** Devices of a grant taken at most (the server lists no more). */
export const MAX_GRANT_DEVICES = 100;

/** The grant's `devices`: well-formed entries only, at most MAX_GRANT_DEVICES. */
function grantDevices(raw: unknown): NonNullable<CallGrant["devices"]> {
  if (!Array.isArray(raw)) return [];
  const devices: NonNullable<CallGrant["devices"]> = [];
  for (const d of raw.slice(0, MAX_GRANT_DEVICES) as Record<string, unknown>[]) {
    if (typeof d?.user_id === "string" && typeof d.device_id === "string" && d.user_id.startsWith("@") && d.device_id) devices.push({ userId: d.user_id, deviceId: d.device_id });
  }
  return devices;
}

export function parseGrant(raw: unknown): CallGrant {
  const r = (raw ?? {}) as Record<string, unknown>;
  const bad = (what: string) => new ParleyClientError("BAD_RESPONSE", "join", { detail: `join answer: ${what}` });
  if (typeof r.session !== "string" || !r.session) throw bad("no session");
  if (typeof r.signalling !== "string" || !r.signalling.startsWith("/")) throw bad("signalling must be a path");
  if (typeof r.room_id !== "string") throw bad("no room_id");
  return {
    session: r.session,
    expiresAt: typeof r.expires_at === "number" ? r.expires_at : 0,
    callId: typeof r.call_id === "string" ? r.call_id : "",
    roomId: r.room_id,
    iceServers: parseIceServers(r.ice_servers),
    iceTransportPolicy: parseIcePolicy(r.ice_transport_policy),
    signalling: r.signalling,
    ...(r.devices === undefined ? {} : { devices: grantDevices(r.devices) }),
  };
}

export async function joinCall(
  callApi: string,
  body: { openid_token: OpenIdToken; room: string; ahead?: true },
  fetchFn: FetchFn = (i, init) => fetch(i, init),
): Promise<CallGrant> {
  let res: Response;
  try {
    res = await fetchFn(`${callApi.replace(/\/+$/, "")}/_parley/v1/calls/join`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });
  } catch (err) {
    throw new ParleyClientError("NETWORK", "join", { detail: `${callApi}: ${err instanceof Error ? err.message : String(err)}` });
  }
  const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
  if (!res.ok) throw errorFromResponse(res.status, json, "join");
  return parseGrant(json);
}

/**
 * Tells the call, through the call API that granted `session` ahead, that this device (its keys
 * up) is in the pre-join: the devices in the call send it their media keys now (docs/join.md).
 * Best effort: false when it could not (the join's own hello tells the call anyway).
 */
export async function announceArriving(callApi: string, session: string, deviceId: string, fetchFn: FetchFn = (i, init) => fetch(i, init)): Promise<boolean> {
  try {
    const res = await fetchFn(`${callApi.replace(/\/+$/, "")}/_parley/v1/calls/arriving`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ session, device_id: deviceId }),
      signal: AbortSignal.timeout(10_000),
    });
    return res.ok;
  } catch {
    return false;
  }
}

/** The share of a grant's lifetime (as seen when it came) after which a grant asked ahead is not used. */
const AHEAD_USABLE_SHARE = 0.5;

/** A call grant asked for before Join (when the pre-join shows), taken by the next join. */
export type GrantAhead = AskedAhead<CallGrant>;

/**
 * Join's first step done while the user looks at their preview: the OpenID token checked, the
 * session granted (docs/join.md, "The grant in the pre-join"). The server admits the session again
 * at its hello; a grant older than half its lifetime is not used (the join asks afresh, as
 * without one), nor is a failed one (a locked or ended meeting answers the join itself).
 */
export function grantAhead(ask: () => Promise<CallGrant>, now: () => number = () => Date.now()): GrantAhead {
  return askedAhead(ask, (grant, at, t) => t - at < (grant.expiresAt - at) * AHEAD_USABLE_SHARE, now);
}

/** The signalling socket's path as Parley serves it unless configured otherwise (a grant says which). */
export const DEFAULT_SIGNALLING_PATH = "/_parley/v1/signal";

/** ws(s)://host of the call API + the signalling path. */
export function signallingUrl(callApi: string, path: string): string {
  const u = new URL(path, callApi.replace(/\/+$/, "") + "/");
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}
