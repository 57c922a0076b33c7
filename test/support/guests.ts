// Guests for integration and browser tests: a guest made through Parley's guest API, as a
// MatrixSession (its homeserver is Parley's guest proxy, its token Parley's guest token).
// A browser test can instead open a meeting link signed out and use the sign-in page's
// "Join as guest" form (#guest-name, then the "Join as guest" button).
import type { Institution } from "../../scripts/stack/institutions.ts";

export interface GuestSession {
  userId: string;
  deviceId: string;
  /** Parley's opaque guest token (only the guest proxy takes it). */
  accessToken: string;
  /** The guest proxy: …/_parley/guest. */
  homeserverUrl: string;
  roomId: string;
  displayName: string;
}

/** POST /_parley/v1/guests; throws with the answer unless a guest was made. */
export async function createGuest(inst: Institution, name: string, meeting: string): Promise<GuestSession> {
  const res = await fetch(`${inst.parley.url}/_parley/v1/guests`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name, meeting }),
  });
  const json = (await res.json()) as Record<string, string>;
  if (res.status !== 200) throw new Error(`guest refused: ${res.status} ${JSON.stringify(json)}`);
  return {
    userId: json.user_id!,
    deviceId: json.device_id!,
    accessToken: json.access_token!,
    homeserverUrl: json.home_server_url!,
    roomId: json.room_id!,
    displayName: json.display_name!,
  };
}

/** A request through the guest proxy as `guest`: status and JSON answer. */
export async function asGuest(guest: GuestSession, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${guest.homeserverUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${guest.accessToken}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
}
