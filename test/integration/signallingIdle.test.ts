// A call nobody is in gives its Janus room back after calls.idleEndSeconds, against the real
// stack: a meeting-alias call ends (the next join starts a new call and room), a `!meet` call
// keeps its record and gets a new Janus room on its next join.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { audioOffer, callSession, janusParticipants, seated } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution;
let alice: TestUser;
let failed = false;

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, calls: () => ({ idleEndSeconds: 1 }) });
  A = stack.institutions[0]!;
  const u = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

/** Seats alice in the room's call, publishes, leaves; returns the call and its Janus room. */
async function visit(room: string) {
  const ws = await seated(A, await callSession(A, alice, room), "ALICEDEV");
  expect(await ws.request({ type: "publish", jsep: audioOffer(), e2ee: true })).toMatchObject({ type: "result" });
  const call = (await A.parleyStore().activeCall(room))!;
  expect(await janusParticipants(A, call.sfu!)).toEqual([alice.userId]);
  ws.close();
  await ws.closed;
  return call;
}

describe("an idle call", () => {
  it("by alias: ends, its Janus room destroyed; a later join starts a new call and room", async () => {
    const room = await alice.join(A.alias("idle"));
    const first = await visit(room);
    await waitFor("the idle alias call to end", async () => (await A.parleyStore().activeCall(room) ? undefined : true));
    expect(await A.parleyStore().lastCall(room)).toMatchObject({ callId: first.callId, endedBy: "idle" });
    expect(await janusParticipants(A, first.sfu!)).toBeUndefined(); // no such Janus room

    const second = await visit(room);
    expect(second.callId).not.toBe(first.callId);
    expect(second.sfu!.room).not.toBe(first.sfu!.room);
  });

  it("by !meet: keeps its call, its Janus room destroyed and made again on the next join", async () => {
    const room = await alice.createRoom({ preset: "public_chat", name: "Idle chat" });
    await alice.invite(room, A.botUserId);
    await waitFor("the bot to accept the invite", async () => ((await alice.stateEvent(room, "m.room.member", A.botUserId))?.membership === "join" ? true : undefined));
    await alice.send(room, "!meet");
    await waitFor("the call to start", async () => A.parleyStore().activeCall(room));

    const first = await visit(room);
    await waitFor("the idle call's Janus room to go", async () => ((await A.parleyStore().activeCall(room))?.sfu === null ? true : undefined));
    expect((await A.parleyStore().activeCall(room))?.callId).toBe(first.callId);
    expect(await janusParticipants(A, first.sfu!)).toBeUndefined();

    const second = await visit(room);
    expect(second.callId).toBe(first.callId);
    expect(second.sfu!.room).not.toBe(first.sfu!.room);
  });
});
