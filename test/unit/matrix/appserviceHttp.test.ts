import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import express from "express";
import { MatrixError } from "matrix-js-sdk";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { errorHandler } from "../../../appservice/src/http/errors.ts";
import { AliasRefusedError } from "../../../appservice/src/calls/aliasRooms.ts";
import { createMetrics } from "../../../appservice/src/http/metrics.ts";
import { configureLogging } from "../../../appservice/src/log.ts";
import { appserviceRouter, isTransient, parseTransactionParts, type AppserviceHandlers } from "../../../appservice/src/matrix/appserviceHttp.ts";
import type { RawEvent } from "../../../appservice/src/matrix/events.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";

const HS_TOKEN = "h".repeat(64);

interface Running {
  base: string;
  store: SqliteStore;
  close(): Promise<void>;
}

let dir: string;
let dbFile: string;
const running: Running[] = [];

/** Handlers that record the events they see; `fail` decides per call whether to throw. */
function recorder(fail: (event: RawEvent, nth: number) => Error | undefined = () => undefined) {
  const seen: string[] = [];
  const aliases: string[] = [];
  let aliasAnswer: boolean | Error = true;
  const handlers: AppserviceHandlers = {
    async onEvent(event) {
      seen.push(String(event.event_id));
      await new Promise((r) => setTimeout(r, 2));
      const err = fail(event, seen.filter((id) => id === event.event_id).length);
      if (err) throw err;
    },
    async onAliasQuery(alias) {
      aliases.push(alias);
      if (aliasAnswer instanceof Error) throw aliasAnswer;
      return aliasAnswer;
    },
  };
  return {
    handlers,
    seen,
    aliases,
    answerAlias(a: boolean | Error) {
      aliasAnswer = a;
    },
  };
}

async function serve(handlers: AppserviceHandlers): Promise<Running> {
  const store = new SqliteStore(dbFile);
  const app = express();
  app.use(appserviceRouter({ hsToken: HS_TOKEN, store, handlers, metrics: createMetrics() }));
  app.use(errorHandler());
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  const r: Running = {
    base: `http://127.0.0.1:${address.port}`,
    store,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
      await store.close();
    },
  };
  running.push(r);
  return r;
}

const event = (id: string, type = "m.room.message"): RawEvent => ({
  event_id: id,
  type,
  room_id: "!r:example.org",
  sender: "@alice:example.org",
  content: { msgtype: "m.text", body: "hi" },
});

function put(base: string, txnId: string, body: unknown, token: string | null = HS_TOKEN): Promise<Response> {
  return fetch(`${base}/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`, {
    method: "PUT",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function answer(res: Response): Promise<[number, unknown]> {
  return [res.status, await res.json()];
}

beforeAll(() => configureLogging("silent"));

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-as-"));
  dbFile = path.join(dir, "parley.db");
});

afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("authentication", () => {
  it("answers 401 M_UNAUTHORIZED without a token", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    expect(await answer(await put(base, "t1", { events: [event("$1")] }, null))).toEqual([
      401,
      { errcode: "M_UNAUTHORIZED", error: "missing homeserver token" },
    ]);
    expect(rec.seen).toEqual([]);
  });

  it("answers 403 M_FORBIDDEN with a wrong token", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    expect(await answer(await put(base, "t1", { events: [event("$1")] }, "x".repeat(64)))).toEqual([
      403,
      { errcode: "M_FORBIDDEN", error: "bad homeserver token" },
    ]);
    expect(rec.seen).toEqual([]);
  });

  it("accepts the token as a Bearer header", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    expect(await answer(await put(base, "t1", { events: [event("$1")] }))).toEqual([200, {}]);
    expect(rec.seen).toEqual(["$1"]);
  });

  it("refuses the token as ?access_token: Synapse 1.163 sends it in the Authorization header", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    const res = await fetch(`${base}/_matrix/app/v1/transactions/t1?access_token=${HS_TOKEN}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ events: [event("$1")] }),
    });
    expect(await answer(res)).toEqual([401, { errcode: "M_UNAUTHORIZED", error: "missing homeserver token" }]);
    expect(rec.seen).toEqual([]);
  });

  it("does not take a non-Bearer authorization header as the token", async () => {
    const { base } = await serve(recorder().handlers);
    const res = await fetch(`${base}/_matrix/app/v1/ping`, { method: "POST", headers: { authorization: `Basic ${HS_TOKEN}` } });
    expect(res.status).toBe(401);
  });
});

describe("transactions", () => {
  it("hands each event to onEvent in order and answers {}", async () => {
    const rec = recorder();
    const { base, store } = await serve(rec.handlers);
    expect(await answer(await put(base, "t1", { events: [event("$1"), event("$2"), event("$3")] }))).toEqual([200, {}]);
    expect(rec.seen).toEqual(["$1", "$2", "$3"]);
    expect(await store.isTxnDone("t1")).toBe(true);
    expect(await store.isEventProcessed("$2")).toBe(true);
  });

  it("accepts a body without events as an empty transaction", async () => {
    const rec = recorder();
    const { base, store } = await serve(rec.handlers);
    expect(await answer(await put(base, "t-empty", {}))).toEqual([200, {}]);
    expect(await store.isTxnDone("t-empty")).toBe(true);
  });

  it("processes the same txnId once when it is PUT twice", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    const body = { events: [event("$1"), event("$2")] };
    expect((await put(base, "t1", body)).status).toBe(200);
    expect((await put(base, "t1", body)).status).toBe(200);
    expect(rec.seen).toEqual(["$1", "$2"]);
  });

  it("processes the same txnId once when it is PUT concurrently", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    const body = { events: [event("$1"), event("$2")] };
    const results = await Promise.all(Array.from({ length: 5 }, () => put(base, "t1", body)));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(rec.seen).toEqual(["$1", "$2"]);
  });

  it("does not repeat an event delivered again in another transaction", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    await put(base, "t1", { events: [event("$1")] });
    await put(base, "t2", { events: [event("$1"), event("$2")] });
    expect(rec.seen).toEqual(["$1", "$2"]);
  });

  it("still treats a txnId as done after a restart on the same store file", async () => {
    const first = recorder();
    const a = await serve(first.handlers);
    await put(a.base, "t1", { events: [event("$1")] });
    await a.close();
    running.splice(running.indexOf(a), 1);

    const second = recorder();
    const b = await serve(second.handlers);
    expect(await answer(await put(b.base, "t1", { events: [event("$1")] }))).toEqual([200, {}]);
    expect(second.seen).toEqual([]);
  });

  it("answers 500 on a transient failure; the retry re-runs only the events not yet done", async () => {
    const rec = recorder((e, nth) => (e.event_id === "$2" && nth === 1 ? new Error("homeserver unreachable") : undefined));
    const { base, store } = await serve(rec.handlers);
    const body = { events: [event("$1"), event("$2"), event("$3")] };

    expect(await answer(await put(base, "t1", body))).toEqual([
      500,
      { errcode: "M_UNKNOWN", error: "transaction not processed; retry" },
    ]);
    expect(rec.seen).toEqual(["$1", "$2"]);
    expect(await store.isTxnDone("t1")).toBe(false);
    expect(await store.isEventProcessed("$1")).toBe(true);
    expect(await store.isEventProcessed("$2")).toBe(false);

    expect(await answer(await put(base, "t1", body))).toEqual([200, {}]);
    expect(rec.seen).toEqual(["$1", "$2", "$2", "$3"]);
    expect(await store.isTxnDone("t1")).toBe(true);
  });

  it("treats a 5xx or 429 MatrixError as transient", async () => {
    const rec = recorder((e, nth) =>
      nth === 1 ? new MatrixError({ errcode: "M_LIMIT_EXCEEDED", error: "slow down" }, 429) : undefined,
    );
    const { base } = await serve(rec.handlers);
    expect((await put(base, "t1", { events: [event("$1")] })).status).toBe(500);
    expect((await put(base, "t1", { events: [event("$1")] })).status).toBe(200);
    expect(rec.seen).toEqual(["$1", "$1"]);
  });

  it("gives up on an event that keeps failing after five tries", async () => {
    const rec = recorder((e) => (e.event_id === "$bad" ? new Error("still down") : undefined));
    const { base, store } = await serve(rec.handlers);
    const body = { events: [event("$bad"), event("$good", "m.room.member")] };
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await put(base, "t1", body)).status);
    expect(statuses).toEqual([500, 500, 500, 500, 200]);
    expect(rec.seen).toEqual(["$bad", "$bad", "$bad", "$bad", "$bad", "$good"]);
    expect(await store.isEventProcessed("$bad")).toBe(true);
  });

  it("gives up at once on a non-transient MatrixError", async () => {
    const rec = recorder((e) =>
      e.event_id === "$1" ? new MatrixError({ errcode: "M_FORBIDDEN", error: "x" }, 403) : undefined,
    );
    const { base, store } = await serve(rec.handlers);
    expect(await answer(await put(base, "t1", { events: [event("$1"), event("$2")] }))).toEqual([200, {}]);
    expect(rec.seen).toEqual(["$1", "$2"]);
    expect(await store.isEventProcessed("$1")).toBe(true);
    expect(await store.isTxnDone("t1")).toBe(true);
    await put(base, "t2", { events: [event("$1")] });
    expect(rec.seen).toEqual(["$1", "$2"]);
  });

  it("answers 400 M_BAD_JSON when events is not an array", async () => {
    const rec = recorder();
    const { base, store } = await serve(rec.handlers);
    const [status, body] = await answer(await put(base, "t1", { events: { $1: event("$1") } }));
    expect(status).toBe(400);
    expect(body).toMatchObject({ errcode: "M_BAD_JSON" });
    expect((body as { error: string }).error).toMatch(/^transaction body: events: /);
    expect(rec.seen).toEqual([]);
    expect(await store.isTxnDone("t1")).toBe(false);
  });

  it("answers 400 M_BAD_JSON when an event is not an object", async () => {
    const { base } = await serve(recorder().handlers);
    const [status, body] = await answer(await put(base, "t1", { events: ["$1"] }));
    expect(status).toBe(400);
    expect(body).toMatchObject({ errcode: "M_BAD_JSON" });
  });

  it("answers 400 M_NOT_JSON for a body that is not JSON", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    expect(await answer(await put(base, "t1", "{ events: [ "))).toEqual([
      400,
      { errcode: "M_NOT_JSON", error: "request body is not valid JSON" },
    ]);
    expect(rec.seen).toEqual([]);
  });
});

describe("queries", () => {
  const get = (base: string, p: string) => fetch(`${base}${p}`, { headers: { authorization: `Bearer ${HS_TOKEN}` } });

  it("answers an alias query with {} when the handler made the room", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    expect(await answer(await get(base, "/_matrix/app/v1/rooms/%23meet-team%3Aexample.org"))).toEqual([200, {}]);
    expect(rec.aliases).toEqual(["#meet-team:example.org"]);
  });

  it("answers 404 M_NOT_FOUND when the alias is not Parley's", async () => {
    const rec = recorder();
    rec.answerAlias(false);
    const { base } = await serve(rec.handlers);
    expect(await answer(await get(base, "/_matrix/app/v1/rooms/%23other%3Aexample.org"))).toEqual([
      404,
      { errcode: "M_NOT_FOUND", error: "Parley does not provide #other:example.org" },
    ]);
  });

  it("answers 500 M_UNKNOWN when the handler throws", async () => {
    const rec = recorder();
    rec.answerAlias(new Error("createRoom failed"));
    const { base } = await serve(rec.handlers);
    expect(await answer(await get(base, "/_matrix/app/v1/rooms/%23meet-x%3Aexample.org"))).toEqual([
      500,
      { errcode: "M_UNKNOWN", error: "could not create the meeting room" },
    ]);
  });

  it("answers a refusal by a limit with its errcode, status and retry time (not 500)", async () => {
    const rec = recorder();
    rec.answerAlias(new AliasRefusedError("rate", "too many new meeting rooms", 1500));
    const { base } = await serve(rec.handlers);
    const res = await get(base, "/_matrix/app/v1/rooms/%23meet-x%3Aexample.org");
    expect(res.headers.get("retry-after")).toBe("2");
    expect(await answer(res)).toEqual([429, { errcode: "M_LIMIT_EXCEEDED", error: "too many new meeting rooms", retry_after_ms: 1500 }]);
    rec.answerAlias(new AliasRefusedError("cap", "the cap"));
    expect(await answer(await get(base, "/_matrix/app/v1/rooms/%23meet-y%3Aexample.org"))).toEqual([429, { errcode: "M_LIMIT_EXCEEDED", error: "the cap" }]);
  });

  it("answers an alias that is not percent-encoded UTF-8 with 400, not 500", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    const [status, body] = await answer(await get(base, "/_matrix/app/v1/rooms/%23meet-x%EF%BC%3Aexample.org%E0%A4%A"));
    expect([status, (body as { errcode?: string }).errcode]).toEqual([400, "M_INVALID_PARAM"]);
    expect(rec.aliases).toEqual([]);
  });

  it("needs the token for alias queries too", async () => {
    const rec = recorder();
    const { base } = await serve(rec.handlers);
    expect((await fetch(`${base}/_matrix/app/v1/rooms/%23meet-x%3Aexample.org`)).status).toBe(401);
    expect(rec.aliases).toEqual([]);
  });

  it("answers every user query with 404 M_NOT_FOUND", async () => {
    const { base } = await serve(recorder().handlers);
    expect(await answer(await get(base, "/_matrix/app/v1/users/%40_parley_x%3Aexample.org"))).toEqual([
      404,
      { errcode: "M_NOT_FOUND", error: "Parley does not provide @_parley_x:example.org" },
    ]);
  });

  it("answers ping with 200 {}", async () => {
    const { base } = await serve(recorder().handlers);
    const res = await fetch(`${base}/_matrix/app/v1/ping`, {
      method: "POST",
      headers: { authorization: `Bearer ${HS_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ transaction_id: "p1" }),
    });
    expect(await answer(res)).toEqual([200, {}]);
  });
});

describe("isTransient", () => {
  it("retries network errors, 5xx and 429, not other Matrix errors", () => {
    expect(isTransient(new Error("ECONNREFUSED"))).toBe(true);
    expect(isTransient(new MatrixError({ errcode: "M_UNKNOWN", error: "x" }, 502))).toBe(true);
    expect(isTransient(new MatrixError({ errcode: "M_LIMIT_EXCEEDED", error: "x" }, 429))).toBe(true);
    expect(isTransient(new MatrixError({ errcode: "M_FORBIDDEN", error: "x" }, 403))).toBe(false);
    expect(isTransient(new MatrixError({ errcode: "M_NOT_FOUND", error: "x" }, 404))).toBe(false);
  });
});

describe("E2EE parts of a transaction (MSC2409 to-device, MSC3202)", () => {
  const toDevice = { type: "m.room.encrypted", sender: "@alice:example.org", to_user_id: "@parley:example.org", to_device_id: "DEV", content: {} };
  const e2eeBody = (events: RawEvent[]) => ({
    events,
    "de.sorunome.msc2409.to_device": [toDevice],
    "org.matrix.msc3202.device_lists": { changed: ["@alice:example.org"], left: [] },
    "org.matrix.msc3202.device_one_time_keys_count": { "@parley:example.org": { DEV: { signed_curve25519: 50 } } },
    "org.matrix.msc3202.device_unused_fallback_key_types": { "@parley:example.org": { DEV: ["signed_curve25519"] } },
  });

  it("parses Synapse's unstable fields, and finds nothing in a plain transaction", () => {
    expect(parseTransactionParts(e2eeBody([]))).toEqual({
      toDevice: [toDevice],
      deviceLists: { changed: ["@alice:example.org"], left: [] },
      oneTimeKeyCounts: { "@parley:example.org": { DEV: { signed_curve25519: 50 } } },
      unusedFallbackKeyTypes: { "@parley:example.org": { DEV: ["signed_curve25519"] } },
    });
    expect(parseTransactionParts({ events: [event("$1")] })).toBeUndefined();
    expect(parseTransactionParts({ "org.matrix.msc3202.device_lists": "nope" })).toBeUndefined();
  });

  it("hands the parts over before the events, once per txnId even when an event is retried", async () => {
    const order: string[] = [];
    let failOnce = true;
    const rec = recorder((e) => {
      if (e.event_id === "$2" && failOnce) {
        failOnce = false;
        return new MatrixError({ errcode: "M_UNKNOWN" }, 502);
      }
      return undefined;
    });
    const handlers: AppserviceHandlers = {
      ...rec.handlers,
      onEvent: async (e) => {
        order.push(String(e.event_id));
        await rec.handlers.onEvent(e);
      },
      onTransactionParts: async (parts) => {
        order.push(`parts:${parts.toDevice.length}`);
      },
    };
    const { base } = await serve(handlers);
    const body = e2eeBody([event("$1"), event("$2")]);
    expect((await put(base, "t1", body)).status).toBe(500);
    expect((await put(base, "t1", body)).status).toBe(200);
    expect((await put(base, "t1", body)).status).toBe(200);
    expect(order).toEqual(["parts:1", "$1", "$2", "$2"]);
  });

  it("a failure in the parts fails the transaction, and the retry hands them over again", async () => {
    let calls = 0;
    const rec = recorder();
    const { base } = await serve({
      ...rec.handlers,
      onTransactionParts: async () => {
        if (++calls === 1) throw new Error("disk full");
      },
    });
    expect((await put(base, "t1", e2eeBody([event("$1")]))).status).toBe(500);
    expect(rec.seen).toEqual([]);
    expect((await put(base, "t1", e2eeBody([event("$1")]))).status).toBe(200);
    expect(calls).toBe(2);
    expect(rec.seen).toEqual(["$1"]);
  });
});

describe("evictions do not wait behind bulk work", () => {
  it("a membership loss reaches onMembershipLost on arrival, while an earlier transaction still runs", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const lost: string[] = [];
    const handlers: AppserviceHandlers = {
      async onEvent(e) {
        if (e.event_id === "$slow") await held;
      },
      onAliasQuery: async () => false,
      onMembershipLost: (roomId, userId, membership) => void lost.push(`${roomId} ${userId} ${membership}`),
    };
    const { base, store } = await serve(handlers);
    const bulk = put(base, "t-bulk", { events: [event("$slow")] });
    const member = (id: string, userId: string, membership: string): RawEvent => ({
      event_id: id, type: "m.room.member", room_id: "!r:example.org", sender: userId, state_key: userId, content: { membership },
    });
    const kick = put(base, "t-kick", { events: [member("$kick", "@bob:example.org", "leave"), member("$join", "@carol:example.org", "join")] });
    await waitUntil(() => lost.length > 0);
    expect(lost).toEqual(["!r:example.org @bob:example.org leave"]); // joins are not losses
    expect(await store.isTxnDone("t-bulk")).toBe(false);
    release();
    expect((await bulk).status).toBe(200);
    expect((await kick).status).toBe(200);
    // A redelivered transaction that is done already does not evict again.
    expect((await put(base, "t-kick", { events: [member("$kick", "@bob:example.org", "leave")] })).status).toBe(200);
    expect(lost).toHaveLength(1);
  });
});

async function waitUntil(ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
