// Small doors against a real Parley process (with its Synapse and Janus): request bodies are
// bounded per route and refused before they are read, the hs token is checked before a large
// body, broken encodings get an errcode (not a 500), /metrics lives on its own listener, the
// store and crypto files are the owner's alone, a bulk transaction does not delay an eviction,
// and a 58 KB member event leaves bounded log lines.
import { readFileSync, statSync } from "node:fs";
import http from "node:http";
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { JOIN_RATE_LIMIT_DEFAULT } from "../../appservice/src/config/schema.ts";
import { BODY_LIMITS } from "../../appservice/src/http/body.ts";
import { LOG_LIMITS } from "../../appservice/src/log.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { SignallingClient } from "../support/signalling.ts";

let stack: Stack;
let A: Institution;
let alice: TestUser;
let roomId: string;
let failed = false;

interface Partial {
  status: number;
  json: Record<string, unknown>;
  /** The answer came while the client had not finished sending its body. */
  beforeBodyEnd: boolean;
}

/**
 * Sends the headers and the first `first` bytes of a body, never the rest (the declared
 * Content-Length, or a chunked body that never ends), and returns the answer: a server that
 * reads bodies before answering would never answer (the test times out).
 */
function sendUnfinished(url: string, opts: { method: string; headers?: Record<string, string>; length?: number; first: number }): Promise<Partial> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { "content-type": "application/json", ...opts.headers };
    if (opts.length !== undefined) headers["content-length"] = String(opts.length);
    const req = http.request(url, { method: opts.method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, json: jsonOf(Buffer.concat(chunks).toString()), beforeBodyEnd: true });
      });
    });
    req.on("error", (err) => reject(err));
    req.write(Buffer.alloc(opts.first, "["));
    // Far beyond what an answer takes; a server waiting for the rest of the body never answers.
    setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer before the body was sent in full (${opts.method} ${url})`));
    }, 15_000).unref();
  });
}

function jsonOf(text: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { text: text.slice(0, 200) };
  }
}

/** A PUT whose body is fully sent when `sent` resolves; `answered` resolves with the answer's time. */
function putTracked(url: string, body: string, headers: Record<string, string>): { sent: Promise<void>; answered: Promise<{ status: number; at: number }> } {
  let sent!: () => void;
  const sentP = new Promise<void>((r) => (sent = r));
  const answered = new Promise<{ status: number; at: number }>((resolve, reject) => {
    const req = http.request(url, { method: "PUT", headers: { "content-type": "application/json", ...headers } }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, at: Date.now() }));
    });
    req.on("error", reject);
    req.end(body, () => sent());
  });
  return { sent: sentP, answered };
}

/** A JSON POST from a given local (loopback) address. */
function postFrom(localAddress: string, url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown>; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", localAddress, headers: { "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: jsonOf(Buffer.concat(chunks).toString()), retryAfter: res.headers["retry-after"] }));
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: headers["x-method"] ?? "POST", headers: { "content-type": "application/json", ...headers }, body });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const hsAuth = () => ({ authorization: `Bearer ${A.parley.config.appservice.hsToken}` });
const txnUrl = (txnId: string) => `${A.parley.url}/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`;
const run = Date.now().toString(36);

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, joinRateLimit: JOIN_RATE_LIMIT_DEFAULT });
  A = stack.institutions[0]!;
  const u = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
  roomId = await alice.join(A.alias("doors"));
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

describe("request bodies", () => {
  it("each route refuses a declared body over its limit with 413 M_TOO_LARGE before reading it", async () => {
    const routes: [string, string, Record<string, string>, number][] = [
      ["PUT", txnUrl(`big-${run}`), hsAuth(), BODY_LIMITS.transaction],
      ["POST", `${A.parley.url}/_matrix/app/v1/ping`, hsAuth(), BODY_LIMITS.appserviceSmall],
      ["POST", `${A.parley.url}/_parley/v1/calls/join`, {}, BODY_LIMITS.callJoin],
    ];
    for (const [method, url, headers, limit] of routes) {
      const answer = await sendUnfinished(url, { method, headers, length: limit + 1, first: 1024 });
      expect(answer, `${method} ${url}`).toMatchObject({ status: 413, json: { errcode: "M_TOO_LARGE" }, beforeBodyEnd: true });
    }
  });

  it("a streamed (chunked) body is refused as soon as it crosses the route's limit", async () => {
    const answer = await sendUnfinished(`${A.parley.url}/_parley/v1/calls/join`, { method: "POST", first: BODY_LIMITS.callJoin + 1 });
    expect(answer).toMatchObject({ status: 413, json: { errcode: "M_TOO_LARGE" } });
  });

  it("a call join body of a few KiB over the small limit is refused, not parsed", async () => {
    const body = JSON.stringify({ openid_token: { access_token: "x", matrix_server_name: A.serverName }, room: roomId, pad: "p".repeat(BODY_LIMITS.callJoin) });
    expect(await post(`${A.parley.url}/_parley/v1/calls/join`, body)).toMatchObject({ status: 413, json: { errcode: "M_TOO_LARGE" } });
  });

  it("a large transaction without the hs token is refused 401 before its body is read", async () => {
    const answer = await sendUnfinished(txnUrl(`anon-${run}`), { method: "PUT", length: 10 * 1024 * 1024, first: 64 * 1024 });
    expect(answer).toMatchObject({ status: 401, json: { errcode: "M_UNAUTHORIZED" }, beforeBodyEnd: true });
    const wrong = await sendUnfinished(txnUrl(`anon2-${run}`), { method: "PUT", headers: { authorization: "Bearer nope" }, length: 10 * 1024 * 1024, first: 64 * 1024 });
    expect(wrong).toMatchObject({ status: 403, json: { errcode: "M_FORBIDDEN" } });
  });

  it("a broken or unknown Content-Encoding answers 4xx with an errcode, and Parley stays up", async () => {
    const cases: [string, Record<string, string>][] = [
      [`${A.parley.url}/_parley/v1/calls/join`, { "content-encoding": "gzip" }],
      [`${A.parley.url}/_parley/v1/calls/join`, { "content-encoding": "x-unknown" }],
      [txnUrl(`gzip-${run}`), { "content-encoding": "gzip", "x-method": "PUT", ...hsAuth() }],
    ];
    for (const [url, headers] of cases) {
      const { status, json } = await post(url, "not gzip at all, just garbage", headers);
      expect(status, `${url} ${headers["content-encoding"]}`).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(500);
      expect(json.errcode).toMatch(/^M_/);
    }
    const health = await fetch(`${A.parley.url}/health`);
    expect(health.status).toBe(200);
  });
});

describe("small doors", () => {
  it("/metrics is not on the main port; it answers on the metrics listener", async () => {
    const main = await fetch(`${A.parley.url}/metrics`);
    expect(main.status).toBe(404);
    expect(((await main.json()) as { errcode: string }).errcode).toBe("M_UNRECOGNIZED");
    const metrics = await fetch(A.parley.metricsUrl);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("parley_appservice_transactions_total");
    expect(new URL(A.parley.metricsUrl).port).not.toBe(String(A.parley.config.appservice.port));
  });

  it("the store (with its -wal and -shm files) and the crypto file are mode 0600", async () => {
    const files = [A.parley.config.store.path, `${A.parley.config.store.path}-wal`, `${A.parley.config.store.path}-shm`, A.parley.config.crypto!.path];
    await waitFor("the crypto file", async () => (statSync(files[3]!, { throwIfNoEntry: false }) ? true : undefined));
    for (const f of files) expect((statSync(f).mode & 0o777).toString(8), f).toBe("600");
  });
});

describe("call join rate limit", () => {
  it("joins over the per-address limit get 429 M_LIMIT_EXCEEDED before any OpenID check; other addresses are served", async () => {
    const { burst } = A.parley.config.calls.joinRateLimit;
    const forged = (i: number) => ({ openid_token: { access_token: `forged-${i}`, token_type: "Bearer", matrix_server_name: A.serverName, expires_in: 3600 }, room: roomId });
    const statuses: number[] = [];
    let refusal: { status: number; json: Record<string, unknown>; retryAfter?: string } | undefined;
    for (let i = 0; i < burst + 3; i++) {
      const r = await postFrom("127.0.0.77", `${A.parley.url}/_parley/v1/calls/join`, forged(i));
      statuses.push(r.status);
      if (r.status === 429) refusal ??= r;
    }
    // Within the burst each token is checked (and refused: forged), after it none is.
    expect(statuses.slice(0, burst).every((s) => s >= 400 && s < 500 && s !== 429)).toBe(true);
    expect(statuses.slice(burst)).toEqual([429, 429, 429]);
    expect(refusal).toMatchObject({ json: { errcode: "M_LIMIT_EXCEEDED" }, retryAfter: expect.stringMatching(/^\d+$/) });
    expect((await postFrom("127.0.0.78", `${A.parley.url}/_parley/v1/calls/join`, forged(99))).status).not.toBe(429);
    expect(await (await fetch(A.parley.metricsUrl)).text()).toMatch(/parley_policy_refusals_total\{what="join_rate"\} 3/);
  });
});

describe("evictions and bulk work", () => {
  it("a leave evicts at once while an earlier bulk transaction is still unacknowledged", async () => {
    const join = await post(`${A.parley.url}/_parley/v1/calls/join`, JSON.stringify({ openid_token: await alice.openIdToken(), room: roomId }));
    expect(join.status).toBe(200);
    const ws = await SignallingClient.open(`${A.parley.url.replace(/^http/, "ws")}/_parley/v1/signal`);
    expect(await ws.request({ type: "hello", session: join.json.session, device_id: "ALICEDEV" })).toMatchObject({ type: "result" });

    // 5,000 events that each cost Parley a store round trip, as the homeserver would send them.
    const bulk = Array.from({ length: 5000 }, (_, i) => ({
      event_id: `$bulk-${run}-${i}`,
      type: "m.room.message",
      room_id: `!elsewhere-${run}:${A.serverName}`,
      sender: alice.userId,
      origin_server_ts: Date.now(),
      content: { msgtype: "m.text", body: `message ${i}` },
    }));
    const bulkTxn = putTracked(txnUrl(`bulk-${run}`), JSON.stringify({ events: bulk }), hsAuth());
    let bulkAnsweredAt = 0;
    void bulkTxn.answered.then((a) => (bulkAnsweredAt = a.at));
    await bulkTxn.sent;
    const leave = {
      event_id: `$leave-${run}`,
      type: "m.room.member",
      room_id: roomId,
      sender: alice.userId,
      state_key: alice.userId,
      origin_server_ts: Date.now(),
      content: { membership: "leave" },
    };
    const leaveTxn = putTracked(txnUrl(`leave-${run}`), JSON.stringify({ events: [leave] }), hsAuth());
    // The state when the socket closes: the bulk transaction is not done (not recorded in the
    // store, not acknowledged). Before, the leave was queued behind it: done, then the close.
    const bulkDoneAtClose = await ws.closed.then(() => A.parleyStore().isTxnDone(`bulk-${run}`));
    expect(bulkDoneAtClose, "the bulk transaction was done before the eviction").toBe(false);
    expect(bulkAnsweredAt).toBe(0);
    const [bulkAnswer, leaveAnswer] = await Promise.all([bulkTxn.answered, leaveTxn.answered]);
    expect(bulkAnswer.status).toBe(200);
    expect(leaveAnswer.status).toBe(200);
    expect(await A.parleyStore().isTxnDone(`bulk-${run}`)).toBe(true);
  });
});

describe("log lines", () => {
  it("58 KB member events (room and call membership) leave every log line within the bound", async () => {
    const put = (type: string, stateKey: string, content: Record<string, unknown>) =>
      alice.request<{ event_id: string }>(Method.Put, `/rooms/${encodeURIComponent(roomId)}/state/${type}/${encodeURIComponent(stateKey)}`, content);
    const room = await put("m.room.member", alice.userId, { membership: "join", displayname: "Alice", "org.example.bio": "D".repeat(58 * 1024) });
    // A call membership that is wrong in 20,000 ways, each refusal naming what it refuses.
    const call = await put("org.matrix.msc3401.call.member", `_${alice.userId}_DEV_m.call`, {
      device_id: "X".repeat(16 * 1024),
      call_id: "",
      application: "m.call",
      focus_active: { type: "livekit" },
      foci_preferred: Array.from({ length: 20_000 }, () => 0),
    });
    for (const e of [room, call]) {
      await waitFor("Parley to handle the event", async () => (await A.parleyStore().isEventProcessed(e.event_id) ? true : undefined));
    }
    const lines = readFileSync(A.parley.logFile, "utf8").split("\n");
    const longest = Math.max(...lines.map((l) => l.length));
    expect(longest).toBeLessThanOrEqual(LOG_LIMITS.lineChars);
    expect(lines.some((l) => l.includes("ignoring malformed event") && l.includes("foci_preferred"))).toBe(true);
  });
});
