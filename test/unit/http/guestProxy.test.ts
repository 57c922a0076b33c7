// The guest door over real HTTP with a fake homeserver behind it: the allow-list (every forbidden
// family refused, room and self scoping, scrubbed queries and bodies), the guest token, and each
// limit crossed (request rate, requests in flight, body size; guests per address, live guests,
// name length).
import type { Server } from "node:http";
import { Readable } from "node:stream";
import express from "express";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GuestService, GUEST_NAME_MAX, type GuestAccounts, type MeetingFacts } from "../../../appservice/src/calls/guests.ts";
import { errorHandler } from "../../../appservice/src/http/errors.ts";
import { guestApiRouter } from "../../../appservice/src/http/guestApi.ts";
import { GUEST_PROXY_PREFIX, guestProxyRouter } from "../../../appservice/src/http/guestProxy.ts";
import { AddressRateLimiter } from "../../../appservice/src/http/rateLimit.ts";
import type { ForwardRequest, ForwardResponse } from "../../../appservice/src/matrix/guestAccounts.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";

const DOMAIN = "example.org";
const ROOM = "!meet:example.org";
const OTHER_ROOM = "!other:example.org";
const ALIAS = "#meet-team:example.org";
const API = "https://meet.example.org";

class FakeAccounts implements GuestAccounts {
  readonly rooms = new Map<string, MeetingFacts>([
    [ROOM, { call: { api: API }, joinRule: "knock" }],
    [OTHER_ROOM, { call: { api: API }, joinRule: "knock" }],
  ]);
  async resolveAlias(alias: string) {
    return alias === ALIAS ? ROOM : undefined;
  }
  async meetingFacts(roomId: string) {
    return this.rooms.get(roomId);
  }
  async create() {}
  async deactivate() {
    return "deactivated" as const;
  }
}

interface Forwarded {
  userId: string | undefined;
  req: ForwardRequest;
}

let store: SqliteStore;
let server: Server;
let base: string;
let forwarded: Forwarded[];
let memberships: Map<string, string>;
let members: Set<string>;
let hang: boolean;
let n: number;

function start(opts: { burst?: number; concurrent?: number; maxBodyBytes?: number; createBurst?: number; maxLive?: number; mode?: "off" | "lobby" } = {}) {
  const guests = new GuestService(
    {
      mode: opts.mode ?? "lobby",
      deactivateAfterMs: 60_000,
      lobbyWaitMs: 60_000,
      maxLifetimeMs: 3_600_000,
      maxLive: opts.maxLive ?? 100,
      userPrefix: "_parley_",
      domain: DOMAIN,
      publicUrl: API,
    },
    {
      accounts: new FakeAccounts(),
      store,
      clock: { now: () => Date.now() },
      ids: { localpart: () => `g${++n}`, deviceId: () => `DEV${n}`, token: () => `tok${n + 1}`, hash: (t) => `h:${t}` },
    },
  );
  const forward = async (guest: { userId: string } | undefined, req: ForwardRequest): Promise<ForwardResponse> => {
    forwarded.push({ userId: guest?.userId, req });
    if (hang) await new Promise((r) => req.signal?.addEventListener("abort", r));
    return { status: 200, headers: new Headers({ "content-type": "application/json", "set-cookie": "x=1" }), body: Readable.from([JSON.stringify({ forwarded: true })]) };
  };
  const app = express();
  app.use(guestApiRouter({ guests, limiter: new AddressRateLimiter({ perMinute: 1, burst: opts.createBurst ?? 100 }), proxyUrl: `${API}${GUEST_PROXY_PREFIX}` }));
  app.use(
    guestProxyRouter({
      guests,
      forward,
      ctx: {
        domain: DOMAIN,
        syncTimeoutMs: 30_000,
        resolveAlias: async (a) => (a === ALIAS ? ROOM : undefined),
        membership: async (room, user) => memberships.get(`${room}|${user}`),
        members: async () => members,
      },
      limiter: new AddressRateLimiter({ perMinute: 1, burst: opts.burst ?? 1000 }),
      concurrent: opts.concurrent ?? 8,
      maxBodyBytes: opts.maxBodyBytes ?? 64 * 1024,
    }),
  );
  app.use(errorHandler());
  return new Promise<void>((resolve) => {
    server = app.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      base = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
      resolve();
    });
  });
}

beforeEach(() => {
  store = new SqliteStore(":memory:");
  forwarded = [];
  memberships = new Map();
  members = new Set(["@alice:example.org"]);
  hang = false;
  n = 0;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await store.close();
});

async function makeGuest(meeting = ALIAS): Promise<{ user_id: string; device_id: string; access_token: string; room_id: string }> {
  const res = await fetch(`${base}/_parley/v1/guests`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "Ada", meeting }) });
  expect(res.status).toBe(200);
  return (await res.json()) as { user_id: string; device_id: string; access_token: string; room_id: string };
}

async function call(token: string | undefined, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${base}${GUEST_PROXY_PREFIX}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const V3 = "/_matrix/client/v3";
const e = encodeURIComponent;

describe("the guest API", () => {
  it("says the mode and hands out a session on the proxy", async () => {
    await start();
    expect(await (await fetch(`${base}/_parley/v1/guests`)).json()).toEqual({ mode: "lobby" });
    const g = await makeGuest();
    expect(g).toMatchObject({ user_id: "@_parley_guest-g1:example.org", device_id: "DEV1", room_id: ROOM, home_server_url: `${API}/_parley/guest`, display_name: "Ada (guest)" });
  });

  it("refuses when guests are off", async () => {
    await start({ mode: "off" });
    expect(await (await fetch(`${base}/_parley/v1/guests`)).json()).toEqual({ mode: "off" });
    const res = await fetch(`${base}/_parley/v1/guests`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "Ada", meeting: ALIAS }) });
    expect(res.status).toBe(403);
  });

  it("limits guests per address before reading the body", async () => {
    await start({ createBurst: 2 });
    await makeGuest();
    await makeGuest();
    const res = await fetch(`${base}/_parley/v1/guests`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "Ada", meeting: ALIAS }) });
    expect(res.status).toBe(429);
    expect(((await res.json()) as { errcode: string }).errcode).toBe("M_LIMIT_EXCEEDED");
    expect(res.headers.get("retry-after")).toBeTruthy();
  });

  it("limits live guests", async () => {
    await start({ maxLive: 1 });
    await makeGuest();
    const res = await fetch(`${base}/_parley/v1/guests`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "Bo", meeting: ALIAS }) });
    expect(res.status).toBe(429);
  });

  it("refuses a name one character too long, and an oversized body", async () => {
    await start();
    const post = (body: string) => fetch(`${base}/_parley/v1/guests`, { method: "POST", headers: { "content-type": "application/json" }, body });
    const long = await post(JSON.stringify({ name: "x".repeat(GUEST_NAME_MAX + 1), meeting: ALIAS }));
    expect(long.status).toBe(400);
    expect(((await long.json()) as { errcode: string }).errcode).toBe("M_INVALID_PARAM");
    const ok = await post(JSON.stringify({ name: "x".repeat(GUEST_NAME_MAX), meeting: ALIAS }));
    expect(ok.status).toBe(200);
    expect((await post(JSON.stringify({ name: "x".repeat(4000), meeting: ALIAS }))).status).toBe(413);
  });
});

describe("the guest proxy", () => {
  let g: Awaited<ReturnType<typeof makeGuest>>;
  const own = () => `/rooms/${e(g.room_id)}`;

  it("forwards the allowed routes as the guest, with only allowed query parameters", async () => {
    await start();
    g = await makeGuest();
    const ok = [
      ["GET", `${V3}/sync?timeout=90000&since=s1&user_id=@alice:example.org&ts=1&access_token=x`],
      ["GET", `${V3}/account/whoami`],
      ["GET", `${V3}/capabilities`],
      ["GET", `${V3}/pushrules/`],
      ["POST", `${V3}/keys/upload`, { one_time_keys: {} }],
      ["POST", `${V3}/keys/query`, { device_keys: {} }],
      ["POST", `${V3}/keys/claim`, { one_time_keys: {} }],
      ["POST", `${V3}/user/${e(g.user_id)}/filter`, { room: {} }],
      ["POST", `${V3}/user/${e(g.user_id)}/openid/request_token`, {}],
      ["GET", `${V3}/profile/${e(g.user_id)}`],
      ["GET", `${V3}/devices/${g.device_id}`],
      ["GET", `${V3}${own()}/state`],
      ["GET", `${V3}${own()}/state/m.room.member/${e(g.user_id)}`],
      ["GET", `${V3}${own()}/messages?dir=b&limit=1000&ts=5`],
      ["PUT", `${V3}${own()}/send/m.room.encrypted/t1?ts=1`, { ciphertext: "x" }],
      ["PUT", `${V3}${own()}/state/org.matrix.msc3401.call.member/${e(`_${g.user_id}_${g.device_id}`)}?org.matrix.msc4140.delay=30000`, { device_id: g.device_id }],
      ["POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1", { action: "restart" }],
      ["GET", "/_matrix/client/v1/media/thumbnail/example.org/abc?width=96&height=96&method=crop"],
    ] as const;
    for (const [method, path, body] of ok) {
      const res = await call(g.access_token, method, path, body);
      expect(res, `${method} ${path}`).toEqual({ status: 200, json: { forwarded: true } });
    }
    expect(forwarded.every((f) => f.userId === g.user_id)).toBe(true);
    const sync = forwarded[0]!.req;
    expect(sync.path).toBe(`${V3}/sync`);
    expect(sync.query).toEqual([["since", "s1"], ["timeout", "30000"]]);
    expect(forwarded.find((f) => f.req.path.endsWith("/messages"))!.req.query).toEqual([["dir", "b"], ["limit", "100"]]);
    expect(forwarded.find((f) => f.req.path.includes("/send/"))!.req.query).toEqual([]);
  });

  it("refuses every other family with 403 M_FORBIDDEN, without forwarding", async () => {
    await start();
    g = await makeGuest();
    const refused = [
      ["POST", `${V3}/createRoom`, {}],
      ["POST", `${V3}${own()}/invite`, { user_id: "@bob:example.org" }],
      ["POST", `${V3}${own()}/kick`, { user_id: "@alice:example.org" }],
      ["POST", `${V3}${own()}/ban`, { user_id: "@alice:example.org" }],
      ["PUT", `${V3}${own()}/state/m.room.power_levels/`, {}],
      ["PUT", `${V3}${own()}/state/m.room.member/${e(g.user_id)}`, { membership: "join", displayname: "Boss" }],
      ["PUT", `${V3}${own()}/state/org.matrix.msc3401.call.member/${e("_@alice:example.org_ALICEDEV")}`, {}],
      ["PUT", `${V3}${own()}/send/m.call.invite/t2`, {}],
      ["PUT", `${V3}${own()}/send/m.room.redaction/t3`, {}],
      ["PUT", `${V3}/profile/${e(g.user_id)}/displayname`, { displayname: "Boss" }],
      ["POST", `${V3}/register`, {}],
      ["POST", `${V3}/login`, {}],
      ["POST", `${V3}/account/deactivate`, {}],
      ["POST", `${V3}/account/password`, {}],
      ["DELETE", `${V3}/devices/${g.device_id}`],
      ["PUT", `${V3}/devices/${g.device_id}`, { display_name: "x" }],
      ["POST", `${V3}/delete_devices`, {}],
      ["PUT", `${V3}/directory/room/${e("#mine:example.org")}`, { room_id: g.room_id }],
      ["GET", `${V3}/directory/room/${e(ALIAS)}`],
      ["POST", `${V3}/publicRooms`, {}],
      ["POST", `${V3}/user_directory/search`, { search_term: "a" }],
      ["GET", `${V3}/voip/turnServer`],
      ["POST", `${V3}/keys/device_signing/upload`, {}],
      ["PUT", `${V3}/user/${e(g.user_id)}/account_data/x`, {}],
      ["PUT", `${V3}/sendToDevice/m.room_key_request/t4`, { messages: {} }],
      ["POST", "/_matrix/media/v3/upload", {}],
      ["POST", "/_synapse/admin/v1/register", {}],
      ["GET", `${V3}/rooms/${e(g.room_id)}/../../createRoom`],
    ] as const;
    for (const [method, path, body] of refused) {
      const res = await call(g.access_token, method, path, body);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.json.errcode, `${method} ${path}`).toBe("M_FORBIDDEN");
    }
    expect(forwarded).toEqual([]);
  });

  it("scopes rooms: only the meeting, by id or by this server's alias; joining needs an admission", async () => {
    await start();
    g = await makeGuest();
    for (const [method, path] of [
      ["GET", `${V3}/rooms/${e(OTHER_ROOM)}/messages`],
      ["GET", `${V3}/rooms/${e(OTHER_ROOM)}/state`],
      ["PUT", `${V3}/rooms/${e(OTHER_ROOM)}/send/m.room.message/t1`],
      ["POST", `${V3}/knock/${e(OTHER_ROOM)}`],
      ["POST", `${V3}/knock/${e("#meet-team:evil.example")}`],
      ["POST", `${V3}/join/${e(OTHER_ROOM)}`],
      ["GET", `${V3}/rooms/${e(`${g.room_id}/x`)}/state`],
    ] as const) {
      expect((await call(g.access_token, method, path, method === "GET" ? undefined : {})).status, path).toBe(403);
    }
    expect(await call(g.access_token, "POST", `${V3}/knock/${e(ALIAS)}?server_name=evil.example`, { reason: "hi", displayname: "Boss" })).toMatchObject({ status: 200 });
    expect(forwarded[0]!.req).toMatchObject({ path: `${V3}/knock/${e(ROOM)}`, query: [], body: { reason: "hi" } });
    // Not admitted: no join, whatever the join rule says now.
    expect((await call(g.access_token, "POST", `${V3}/join/${e(ALIAS)}`, {})).json.errcode).toBe("M_FORBIDDEN");
    memberships.set(`${ROOM}|${g.user_id}`, "invite");
    expect((await call(g.access_token, "POST", `${V3}/join/${e(ALIAS)}`, { displayname: "Boss", avatar_url: "mxc://x/y" })).status).toBe(200);
    expect(forwarded[1]!.req).toMatchObject({ path: `${V3}/rooms/${e(ROOM)}/join`, body: {} });
    expect((await call(g.access_token, "POST", `${V3}${own()}/leave`, { reason: "bye" })).status).toBe(200);
  });

  it("scopes to-device messages to Olm and the meeting's members", async () => {
    await start();
    g = await makeGuest();
    const messages = { "@alice:example.org": { A: { ciphertext: 1 } }, "@mallory:evil.example": { M: { ciphertext: 2 } } };
    expect((await call(g.access_token, "PUT", `${V3}/sendToDevice/m.room.encrypted/t1`, { messages })).status).toBe(200);
    expect(forwarded[0]!.req.body).toEqual({ messages: { "@alice:example.org": { A: { ciphertext: 1 } } } });
    const none = await call(g.access_token, "PUT", `${V3}/sendToDevice/m.room.encrypted/t2`, { messages: { "@mallory:evil.example": {} } });
    expect(none).toEqual({ status: 200, json: {} });
    expect(forwarded).toHaveLength(1);
  });

  it("acts only as the token's guest: another guest's user and device are refused", async () => {
    await start();
    g = await makeGuest();
    const other = await makeGuest(OTHER_ROOM);
    for (const [method, path] of [
      ["POST", `${V3}/user/${e(other.user_id)}/openid/request_token`],
      ["POST", `${V3}/user/${e(other.user_id)}/filter`],
      ["GET", `${V3}/profile/${e(other.user_id)}`],
      ["GET", `${V3}/devices/${other.device_id}`],
      ["GET", `${V3}/rooms/${e(other.room_id)}/state`],
    ] as const) {
      expect((await call(g.access_token, method, path, method === "POST" ? {} : undefined)).status, path).toBe(403);
    }
    expect(forwarded).toEqual([]);
  });

  it("wants the guest token in the Authorization header, and a live one", async () => {
    await start();
    g = await makeGuest();
    expect((await call(undefined, "GET", `${V3}/sync?access_token=${g.access_token}`)).json.errcode).toBe("M_MISSING_TOKEN");
    expect(await call("tok-nope", "GET", `${V3}/sync`)).toMatchObject({ status: 401, json: { errcode: "M_UNKNOWN_TOKEN" } });
    expect((await call(g.access_token, "POST", `${V3}/logout`, {})).status).toBe(200);
    expect((await call(g.access_token, "GET", `${V3}/sync`)).json.errcode).toBe("M_UNKNOWN_TOKEN");
    // /versions needs no token (clients ask before they have one).
    expect((await call(undefined, "GET", "/_matrix/client/versions")).status).toBe(200);
    expect(forwarded.map((f) => f.userId)).toEqual([undefined]);
  });

  it("limits a guest's request rate", async () => {
    await start({ burst: 3 });
    g = await makeGuest();
    for (let i = 0; i < 3; i++) expect((await call(g.access_token, "GET", `${V3}/capabilities`)).status).toBe(200);
    expect(await call(g.access_token, "GET", `${V3}/capabilities`)).toMatchObject({ status: 429, json: { errcode: "M_LIMIT_EXCEEDED" } });
  });

  it("limits a guest's requests in flight", async () => {
    await start({ concurrent: 2 });
    g = await makeGuest();
    hang = true;
    const aborts = [new AbortController(), new AbortController()];
    const pending = aborts.map((a) =>
      fetch(`${base}${GUEST_PROXY_PREFIX}${V3}/sync?timeout=30000`, { headers: { authorization: `Bearer ${g.access_token}` }, signal: a.signal }).catch(() => undefined),
    );
    await expect.poll(() => forwarded.length).toBe(2);
    expect(await call(g.access_token, "GET", `${V3}/capabilities`)).toMatchObject({ status: 429, json: { errcode: "M_LIMIT_EXCEEDED" } });
    for (const a of aborts) a.abort();
    await Promise.all(pending);
    hang = false;
    await expect.poll(async () => (await call(g.access_token, "GET", `${V3}/capabilities`)).status).toBe(200);
  });

  it("limits body size", async () => {
    await start({ maxBodyBytes: 1024 });
    g = await makeGuest();
    const big = { ciphertext: "x".repeat(2000) };
    expect(await call(g.access_token, "PUT", `${V3}${own()}/send/m.room.encrypted/t1`, big)).toMatchObject({ status: 413, json: { errcode: "M_TOO_LARGE" } });
    expect(forwarded).toEqual([]);
  });

  it("passes back only content headers", async () => {
    await start();
    g = await makeGuest();
    const res = await fetch(`${base}${GUEST_PROXY_PREFIX}${V3}/capabilities`, { headers: { authorization: `Bearer ${g.access_token}` } });
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(res.headers.get("content-type")).toBe("application/json");
  });
});
