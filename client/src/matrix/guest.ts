// Guests by link: asking the Parley that served this page whether it takes guests, and for a
// guest session for a meeting (GET/POST /_parley/v1/guests). The session's homeserver is that
// Parley's guest proxy and its token a Parley guest token; the rest of the client uses it like any
// Matrix session.
import { ParleyClientError } from "../errors.ts";
import type { FetchFn } from "./http.ts";
import { errorFromResponse } from "./http.ts";
import type { MatrixSession } from "./session.ts";

export type GuestMode = "off" | "lobby";

const PATH = "/_parley/v1/guests";

/** Whether this Parley lets people without an account join meetings as guests ("off" when unsure). */
export async function guestMode(origin: string, fetchFn: FetchFn = (i, init) => fetch(i, init)): Promise<GuestMode> {
  try {
    const res = await fetchFn(`${origin}${PATH}`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) return "off";
    return ((await res.json()) as { mode?: unknown }).mode === "lobby" ? "lobby" : "off";
  } catch {
    return "off";
  }
}

/** A guest session for `meeting` (an alias or room id) under `name`. */
export async function createGuest(origin: string, name: string, meeting: string, fetchFn: FetchFn = (i, init) => fetch(i, init)): Promise<MatrixSession> {
  let res: Response;
  try {
    res = await fetchFn(`${origin}${PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name, meeting }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new ParleyClientError("NETWORK", "login", { detail: err instanceof Error ? err.message : String(err) });
  }
  const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
  if (!res.ok) {
    const e = errorFromResponse(res.status, json, "login");
    // The server's words are meant for people here (which meeting, which limit).
    const said = typeof json?.error === "string" ? json.error : undefined;
    throw new ParleyClientError(e.code, "login", { status: res.status, ...(e.detail ? { detail: e.detail } : {}), human: guestRefusal(e.code, said) });
  }
  const s = json ?? {};
  const fields = [s.user_id, s.device_id, s.access_token, s.home_server_url];
  if (!fields.every((f) => typeof f === "string" && f)) throw new ParleyClientError("BAD_RESPONSE", "login", { detail: "guest session without its fields" });
  return { userId: s.user_id as string, deviceId: s.device_id as string, accessToken: s.access_token as string, homeserverUrl: s.home_server_url as string };
}

function guestRefusal(code: ParleyClientError["code"], said: string | undefined): string {
  switch (code) {
    case "M_FORBIDDEN":
      return `You can't join this meeting as a guest${said ? `: ${said}` : ""}. Sign in with a Matrix account instead.`;
    case "M_NOT_FOUND":
      return "There is no meeting at this link.";
    case "M_INVALID_PARAM":
      return said?.startsWith("name:") ? `Check your name: ${said.slice(5).trim()}.` : "This meeting link isn't valid.";
    case "M_LIMIT_EXCEEDED":
      return "Too many guests right now. Wait a moment and try again.";
    default:
      return new ParleyClientError(code, "login").human;
  }
}
