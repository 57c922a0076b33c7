// Parley's call metrics against the real stack (Synapse, Janus, Parley): a participant joining a
// call shows in the scrape (its pre-join's socket on standby first) as an active call, a seated
// session, a Janus session on a reachable node and the signalling messages it sent; leaving takes
// the gauges back down and counts why.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { audioOffer, callSession, joinCall, signallingUrl } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { metric } from "../support/metrics.ts";
import { SignallingClient } from "../support/signalling.ts";

let stack: Stack;
let A: Institution;
let alice: TestUser;
let roomId: string;
let node: string;
let failed = false;

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true });
  A = stack.institutions[0]!;
  const u = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
  roomId = await alice.join(A.alias("metrics"));
  node = A.parley.config.sfu.nodes[0]!.id;
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

/** Waits until the metric has the value (a scrape reads the state of then). */
const until = (name: string, value: number, labels: Record<string, string> = {}) =>
  waitFor(`${name}${JSON.stringify(labels)} = ${value}`, async () => ((await metric(A, name, labels)) === value ? true : undefined));

describe("metrics of a call", () => {
  it("a participant's join shows the call, the seated session and the Janus node; leaving takes them back down", async () => {
    await until("parley_janus_up", 1, { node });
    expect(await metric(A, "parley_calls_active")).toBe(0);
    expect(await metric(A, "parley_participant_sessions")).toBe(0);

    const refused = await joinCall(A, { openid_token: await alice.openIdToken(), room: "!nowhere:localhost" });
    expect(refused.status).toBe(404);
    expect(await metric(A, "parley_call_join_refusals_total", { errcode: "M_NOT_FOUND" })).toBe(1);

    // The pre-join's socket on standby first: counted as a socket and as standby, seating nobody.
    const session = await callSession(A, alice, roomId);
    const ws = await SignallingClient.open(signallingUrl(A));
    expect(await ws.request({ type: "hello", session, standby: true })).toMatchObject({ type: "result", standby: true });
    expect(await metric(A, "parley_signalling_standby_sockets")).toBe(1);
    expect(await metric(A, "parley_signalling_sockets")).toBe(1);
    expect(await metric(A, "parley_participant_sessions")).toBe(0);
    expect(await ws.request({ type: "hello", session, device_id: "ALICEDEV" })).toMatchObject({ type: "result" });
    expect(await metric(A, "parley_signalling_standby_sockets")).toBe(0);
    expect(await ws.request({ type: "publish", jsep: audioOffer(), e2ee: true })).toMatchObject({ type: "result" });
    await until("parley_participant_sessions", 1);
    expect(await metric(A, "parley_calls_active")).toBe(1);
    expect(await metric(A, "parley_calls_started_total", { origin: "alias" })).toBe(1);
    expect(await metric(A, "parley_participant_joins_total")).toBe(1);
    expect(await metric(A, "parley_call_sessions_count")).toBe(1);
    expect(await metric(A, "parley_signalling_sockets")).toBe(1);
    expect(await metric(A, "parley_signalling_messages_total", { type: "hello" })).toBe(2); // the standby's and the real one
    expect(await metric(A, "parley_signalling_messages_total", { type: "publish" })).toBe(1);
    expect(await metric(A, "parley_e2ee_admissions_total", { role: "publish", outcome: "encrypted" })).toBe(1);
    expect(await metric(A, "parley_janus_up", { node })).toBe(1);
    expect(await metric(A, "parley_janus_sessions", { node })).toBe(1);
    expect(await metric(A, "parley_janus_handles", { node })).toBeGreaterThanOrEqual(1);
    expect(await metric(A, "parley_janus_rooms", { node })).toBe(1);
    expect(await metric(A, "parley_janus_request_seconds_count", { node, request: "message(create)" })).toBeGreaterThanOrEqual(1);
    expect(await metric(A, "parley_janus_request_seconds_count", { node, request: "message(publish)" })).toBe(1);

    ws.close();
    await ws.closed;
    await until("parley_participant_sessions", 0);
    await until("parley_janus_sessions", 0, { node });
    expect(await metric(A, "parley_calls_active")).toBe(0);
    expect(await metric(A, "parley_signalling_sockets")).toBe(0);
    expect(await metric(A, "parley_janus_handles", { node })).toBe(0);
    expect(await metric(A, "parley_participant_leaves_total", { reason: "socket_closed" })).toBe(1);
    expect(await metric(A, "parley_call_sessions_count")).toBe(0);
    expect(await metric(A, "parley_janus_up", { node })).toBe(1);
  });
});
