// Guest accounts on the homeserver (the GuestAccounts port of calls/guests.ts) and the one door
// through which a guest's client-server requests reach it.
//
// A guest never gets a homeserver access token. Synapse 1.163 refuses appservice login
// (`m.login.application_service`) to an appservice with MSC4190 on, which Parley's registration
// turns on for its bot's Olm device; instead the appservice makes the guest's device with
// `PUT /devices/{id}` (MSC4190: allowed to any appservice requester, synapse/rest/client/devices.py)
// and acts as that device with its as_token, `user_id` and `device_id` (synapse/api/auth/base.py
// get_appservice_user checks the device exists). So Parley holds no guest secret; the browser
// holds an opaque token that only Parley's guest proxy accepts.
// Deactivation as the appservice skips user-interactive auth (synapse/rest/client/account.py:
// "allow ASes to deactivate their own users").
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { MatrixError } from "matrix-js-sdk";
import type { GuestAccounts, MeetingFacts } from "../calls/guests.ts";
import type { Homeserver } from "../calls/ports.ts";
import { CALL_STATE_EVENT } from "../calls/callState.ts";
import { ParleyError } from "../errors.ts";

/** The device name every guest device carries (its owner's display name says who it is). */
export const GUEST_DEVICE_NAME = "Parley guest";
const TIMEOUT_MS = 30_000;
const enc = encodeURIComponent;

export interface ForwardRequest {
  method: string;
  /** Path from /_matrix on, every segment encoded. */
  path: string;
  /** Query parameters to pass on (user_id and device_id are Parley's, added here). */
  query: [string, string][];
  body?: unknown;
  timeoutMs: number;
  /** Aborts the request (the guest's connection closed). */
  signal?: AbortSignal;
}

export interface ForwardResponse {
  status: number;
  headers: Headers;
  body: Readable | null;
}

export class MatrixGuestAccounts implements GuestAccounts {
  private readonly url: string;
  private readonly asToken: string;
  private readonly homeserver: Pick<Homeserver, "resolveAlias" | "stateEvent">;

  constructor(opts: { url: string; asToken: string; homeserver: Pick<Homeserver, "resolveAlias" | "stateEvent"> }) {
    this.url = opts.url.replace(/\/+$/, "");
    this.asToken = opts.asToken;
    this.homeserver = opts.homeserver;
  }

  resolveAlias(alias: string): Promise<string | undefined> {
    return this.homeserver.resolveAlias(alias);
  }

  async meetingFacts(roomId: string): Promise<MeetingFacts | undefined> {
    try {
      const [call, rule] = await Promise.all([
        this.homeserver.stateEvent(roomId, CALL_STATE_EVENT),
        this.homeserver.stateEvent(roomId, "m.room.join_rules"),
      ]);
      const joinRule = rule?.content.join_rule;
      return { call: call?.content, joinRule: typeof joinRule === "string" ? joinRule : undefined };
    } catch (err) {
      // Not in the room, or no such room: not a meeting the bot can vouch for.
      if (err instanceof MatrixError && (err.httpStatus === 403 || err.httpStatus === 404)) return undefined;
      throw new ParleyError("M_UNAVAILABLE", "the meeting's settings could not be read; retry shortly");
    }
  }

  async create(guest: { userId: string; deviceId: string; displayName: string }): Promise<void> {
    const localpart = guest.userId.slice(1, guest.userId.indexOf(":"));
    await this.call("POST", "/_matrix/client/v3/register", [], { type: "m.login.application_service", username: localpart, inhibit_login: true });
    const as = [["user_id", guest.userId]] as [string, string][];
    await this.call("PUT", `/_matrix/client/v3/devices/${enc(guest.deviceId)}`, as, { display_name: GUEST_DEVICE_NAME });
    await this.call("PUT", `/_matrix/client/v3/profile/${enc(guest.userId)}/displayname`, as, { displayname: guest.displayName });
  }

  async deactivate(userId: string): Promise<"deactivated" | "absent"> {
    try {
      await this.call("POST", "/_matrix/client/v3/account/deactivate", [["user_id", userId]], { erase: true });
      return "deactivated";
    } catch (err) {
      // Synapse: "Application service has not registered this user" (the account was never made).
      if (err instanceof GuestHomeserverError && err.status === 403 && /not registered/i.test(err.message)) return "absent";
      throw err;
    }
  }

  /** Users joined to or invited into the room, as the bot sees it (to-device targets of its guests). */
  async members(roomId: string): Promise<Set<string>> {
    const res = (await this.call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/members`, [["not_membership", "leave"]])) as { chunk?: unknown };
    const out = new Set<string>();
    for (const e of Array.isArray(res.chunk) ? (res.chunk as { state_key?: unknown; content?: { membership?: unknown } }[]) : []) {
      const m = e.content?.membership;
      if (typeof e.state_key === "string" && (m === "join" || m === "invite")) out.add(e.state_key);
    }
    return out;
  }

  /** Sends a request as the guest's device (none: as the bot); the answer is streamed back as it comes. */
  async forward(guest: { userId: string; deviceId: string } | undefined, req: ForwardRequest): Promise<ForwardResponse> {
    const as: [string, string][] = guest ? [["user_id", guest.userId], ["device_id", guest.deviceId]] : [];
    const query = new URLSearchParams([...req.query, ...as]);
    const signal = req.signal ? AbortSignal.any([req.signal, AbortSignal.timeout(req.timeoutMs)]) : AbortSignal.timeout(req.timeoutMs);
    const res = await fetch(`${this.url}${req.path}?${query.toString()}`, {
      method: req.method,
      headers: { authorization: `Bearer ${this.asToken}`, ...(req.body !== undefined ? { "content-type": "application/json" } : {}) },
      body: req.body !== undefined ? JSON.stringify(req.body) : undefined,
      signal,
      redirect: "manual",
    });
    return { status: res.status, headers: res.headers, body: res.body ? Readable.fromWeb(res.body as WebReadableStream<Uint8Array>) : null };
  }

  private async call(method: string, path: string, query: [string, string][], body?: unknown): Promise<unknown> {
    const qs = query.length ? `?${new URLSearchParams(query).toString()}` : "";
    const res = await fetch(`${this.url}${path}${qs}`, {
      method,
      headers: { authorization: `Bearer ${this.asToken}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const json = (await res.json().catch(() => undefined)) as { errcode?: unknown; error?: unknown } | undefined;
    if (!res.ok) throw new GuestHomeserverError(res.status, String(json?.errcode ?? "M_UNKNOWN"), String(json?.error ?? `HTTP ${res.status}`), `${method} ${path}`);
    return json;
  }
}

/** The homeserver refused a guest account request. */
export class GuestHomeserverError extends Error {
  readonly status: number;
  readonly errcode: string;
  constructor(status: number, errcode: string, message: string, what: string) {
    super(`${what}: ${status} ${errcode}: ${message}`);
    this.name = "GuestHomeserverError";
    this.status = status;
    this.errcode = errcode;
  }
}
