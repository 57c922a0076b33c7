// A Matrix user for integration tests and benchmarks: matrix-js-sdk's HTTP layer against a
// real homeserver, plus the few waits tests need (a reply, a membership).
import { createClient, Method, type MatrixClient } from "matrix-js-sdk";

const enc = encodeURIComponent;
const noop = () => undefined;
/** Tests read results, not matrix-js-sdk's per-request debug lines. */
const quiet = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, getChild: () => quiet };

export interface StateEvent {
  type: string;
  state_key: string;
  sender: string;
  content: Record<string, unknown>;
}

export interface TimelineEvent {
  event_id: string;
  type: string;
  sender: string;
  content: Record<string, unknown>;
}

/** A device and its keys as a homeserver lists them (`/keys/query`). */
export interface ListedDevice {
  device_id: string;
  keys: Record<string, string>;
}

export class TestUser {
  readonly userId: string;
  readonly client: MatrixClient;

  constructor(baseUrl: string, userId: string, accessToken: string) {
    this.userId = userId;
    this.client = createClient({ baseUrl, userId, accessToken, localTimeoutMs: 60_000, logger: quiet });
  }

  request<T>(method: Method, path: string, body?: unknown, query?: Record<string, string>): Promise<T> {
    return this.client.http.authedRequest<T>(method, path, query, body as Record<string, unknown> | undefined);
  }

  async join(roomIdOrAlias: string, via: string[] = []): Promise<string> {
    const query: Record<string, string> = {};
    const path = `/join/${enc(roomIdOrAlias)}`;
    const viaQuery = via.length ? `?${via.map((s) => `server_name=${enc(s)}`).join("&")}` : "";
    const res = await this.request<{ room_id: string }>(Method.Post, path + viaQuery, {}, query);
    return res.room_id;
  }

  async createRoom(body: Record<string, unknown>): Promise<string> {
    return (await this.request<{ room_id: string }>(Method.Post, "/createRoom", body)).room_id;
  }

  async invite(roomId: string, userId: string): Promise<void> {
    await this.request(Method.Post, `/rooms/${enc(roomId)}/invite`, { user_id: userId });
  }

  async send(roomId: string, body: string): Promise<string> {
    const txn = `t${Date.now()}${Math.random().toString(36).slice(2)}`;
    return (
      await this.request<{ event_id: string }>(Method.Put, `/rooms/${enc(roomId)}/send/m.room.message/${txn}`, {
        msgtype: "m.text",
        body,
      })
    ).event_id;
  }

  async state(roomId: string): Promise<StateEvent[]> {
    return this.request<StateEvent[]>(Method.Get, `/rooms/${enc(roomId)}/state`);
  }

  async stateEvent(roomId: string, type: string, stateKey = ""): Promise<Record<string, unknown> | undefined> {
    try {
      return await this.request<Record<string, unknown>>(Method.Get, `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`);
    } catch (err) {
      if ((err as { errcode?: string }).errcode === "M_NOT_FOUND") return undefined;
      throw err;
    }
  }

  async messages(roomId: string, limit = 50): Promise<TimelineEvent[]> {
    const res = await this.request<{ chunk: TimelineEvent[] }>(Method.Get, `/rooms/${enc(roomId)}/messages`, undefined, {
      dir: "b",
      limit: String(limit),
    });
    return res.chunk.reverse();
  }

  async resolveAlias(alias: string): Promise<string | undefined> {
    try {
      return (await this.request<{ room_id: string }>(Method.Get, `/directory/room/${enc(alias)}`)).room_id;
    } catch {
      return undefined;
    }
  }

  /** The devices of `userId` with their keys, as this user's homeserver lists them (what a client Olm-encrypts to). */
  async devicesOf(userId: string): Promise<Record<string, ListedDevice>> {
    const res = await this.request<{ device_keys?: Record<string, Record<string, ListedDevice>> }>(Method.Post, "/keys/query", { device_keys: { [userId]: [] } });
    return res.device_keys?.[userId] ?? {};
  }

  /** The one device the homeserver lists for `userId`, with its identity keys (an error if it lists more or none). */
  async onlyDeviceOf(userId: string): Promise<{ deviceId: string; curve25519: string; ed25519: string }> {
    const devices = Object.values(await this.devicesOf(userId));
    if (devices.length !== 1) throw new Error(`${userId}: ${devices.length} devices listed, not one`);
    const d = devices[0]!;
    return { deviceId: d.device_id, curve25519: d.keys[`curve25519:${d.device_id}`]!, ed25519: d.keys[`ed25519:${d.device_id}`]! };
  }

  /** An OpenID token from the user's own homeserver (what a client hands a call API). */
  async openIdToken(): Promise<{ access_token: string; matrix_server_name: string; token_type: string; expires_in: number }> {
    return this.request(Method.Post, `/user/${enc(this.userId)}/openid/request_token`, {});
  }

  async kick(roomId: string, userId: string, reason = "test"): Promise<void> {
    await this.request(Method.Post, `/rooms/${enc(roomId)}/kick`, { user_id: userId, reason });
  }

  async ban(roomId: string, userId: string, reason = "test"): Promise<void> {
    await this.request(Method.Post, `/rooms/${enc(roomId)}/ban`, { user_id: userId, reason });
  }

  async leave(roomId: string): Promise<void> {
    await this.request(Method.Post, `/rooms/${enc(roomId)}/leave`, {});
  }

  async joinedRooms(): Promise<string[]> {
    return (await this.request<{ joined_rooms: string[] }>(Method.Get, "/joined_rooms")).joined_rooms;
  }

  /** Polls the room timeline until `match` finds an event (or throws after timeoutMs). */
  async waitForEvent(roomId: string, match: (e: TimelineEvent) => boolean, timeoutMs = 15_000): Promise<TimelineEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = (await this.messages(roomId)).find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no matching event in ${roomId} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Long-polls /sync from `since` until a timeline event in `roomId` matches. */
  async syncUntil(
    roomId: string,
    since: string | undefined,
    match: (e: TimelineEvent) => boolean,
    timeoutMs = 15_000,
  ): Promise<{ event: TimelineEvent; nextBatch: string }> {
    const deadline = Date.now() + timeoutMs;
    let token = since;
    const filter = JSON.stringify({ room: { timeline: { limit: 20 }, state: { lazy_load_members: true } }, presence: { types: [] } });
    for (;;) {
      const query: Record<string, string> = { timeout: "5000", filter };
      if (token) query.since = token;
      const res = await this.request<{ next_batch: string; rooms?: { join?: Record<string, { timeline?: { events?: TimelineEvent[] } }> } }>(
        Method.Get,
        "/sync",
        undefined,
        query,
      );
      token = res.next_batch;
      const found = res.rooms?.join?.[roomId]?.timeline?.events?.find(match);
      if (found) return { event: found, nextBatch: token };
      if (Date.now() > deadline) throw new Error(`sync: no matching event in ${roomId} within ${timeoutMs} ms`);
    }
  }

  async syncToken(): Promise<string> {
    const res = await this.request<{ next_batch: string }>(Method.Get, "/sync", undefined, {
      timeout: "0",
      filter: JSON.stringify({ room: { timeline: { limit: 1 } }, presence: { types: [] } }),
    });
    return res.next_batch;
  }
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
