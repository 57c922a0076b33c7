// Before a join makes one: is this a new meeting? Joining an alias of Parley's namespace makes the
// homeserver ask Parley, which creates the room, so a mistyped name would silently become a new
// meeting. This Parley is asked first (GET /_parley/v1/meetings/{alias},
// appservice/src/http/meetingInfo.ts), which creates nothing. Aliases of other servers and room
// ids are not asked about: their Parley decides.
import { ParleyClientError } from "../errors.ts";
import { errorFromResponse, type FetchFn } from "./http.ts";
import type { ClientSettings } from "./rooms.ts";

export interface MeetingInfo {
  exists: boolean;
  alias: string;
  server: string;
}

/** Whether `target` is an alias in this Parley's namespace (#<prefix>…:<server name>). */
export function isOwnMeetingAlias(target: string, settings: Pick<ClientSettings, "aliasPrefix" | "serverName">): boolean {
  return target.startsWith(`#${settings.aliasPrefix}`) && target.endsWith(`:${settings.serverName}`);
}

export async function getMeetingInfo(apiBase: string, alias: string, fetchFn: FetchFn = (i, init) => fetch(i, init)): Promise<MeetingInfo | null> {
  let res: Response;
  try {
    res = await fetchFn(`${apiBase.replace(/\/+$/, "")}/_parley/v1/meetings/${encodeURIComponent(alias)}`, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new ParleyClientError("NETWORK", "room", { detail: `meeting lookup: ${err instanceof Error ? err.message : String(err)}` });
  }
  const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
  // Not one of this Parley's meetings after all (a slug it does not make): the join says what it says.
  if (res.status === 404 && json?.errcode === "M_NOT_FOUND") return null;
  if (!res.ok) throw errorFromResponse(res.status, json, "room");
  if (typeof json?.exists !== "boolean") throw new ParleyClientError("BAD_RESPONSE", "room", { detail: "meeting lookup without exists" });
  return { exists: json.exists, alias, server: typeof json.server === "string" ? json.server : "" };
}

/** Whether opening `target` would create a meeting: an alias of this Parley's that has no room yet. */
export async function isNewMeeting(
  target: string,
  ctx: { settings: Pick<ClientSettings, "aliasPrefix" | "serverName">; apiBase: string; fetchFn?: FetchFn },
): Promise<boolean> {
  if (!isOwnMeetingAlias(target, ctx.settings)) return false;
  const info = await getMeetingInfo(ctx.apiBase, target, ctx.fetchFn);
  return info !== null && !info.exists;
}
