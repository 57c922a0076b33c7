// Meeting governance on the real stack (two institutions' Synapse, Janus, Parley): the first
// local joiner becomes host; every host action is refused to a participant by Parley and by
// Synapse; the lobby is Matrix knocks (an institution member's admitted at once, a remote user's
// admitted or denied by the host); a locked meeting refuses even an invited user; a co-host's
// forced mute reaches Janus and the muted client; remove and ban evict; end for all closes every
// session until a host starts again; the last host leaving promotes the longest-present co-host.
// The tests run in order and share the meeting.
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { awaitAdmission } from "../../client/src/matrix/knock.ts";
import { MatrixHttp } from "../../client/src/matrix/http.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { audioOffer, callSession, joinCall, seated, signallingUrl } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { SignallingClient, type Answer } from "../support/signalling.ts";

let stack: Stack;
let A: Institution, B: Institution;
let alice: TestUser, carol: TestUser, dave: TestUser, frank: TestUser, bob: TestUser, erin: TestUser;
let roomId: string;
let alias: string;
let aliceWs: SignallingClient, carolWs: SignallingClient, bobWs: SignallingClient;
let failed = false;

const enc = encodeURIComponent;
const userOf = async (inst: Institution, localpart: string) => {
  const u = await inst.registerUser(localpart);
  return new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken);
};
// The bot stays in the room throughout: the room's state is read as it sees it.
let bot: TestUser;
const levelOf = async (userId: string) => {
  const pl = await bot.stateEvent(roomId, "m.room.power_levels");
  return ((pl?.users ?? {}) as Record<string, number>)[userId];
};
const membershipOf = async (userId: string) => (await bot.stateEvent(roomId, "m.room.member", userId))?.membership;
const knock = (u: TestUser, reason?: string) =>
  u.request(Method.Post, `/knock/${enc(alias)}`, reason ? { reason } : {}, { server_name: A.serverName });
const moderate = (ws: SignallingClient, action: Record<string, unknown>) => ws.request({ type: "moderate", action });
const errcodeOf = async (p: Promise<unknown>) => {
  try {
    await p;
    return "ok";
  } catch (err) {
    return (err as { errcode?: string }).errcode ?? String(err);
  }
};
const meetingOf = (ws: SignallingClient, match: (m: Answer) => boolean) => ws.push("meeting", (p) => p.type === "meeting" && match(p));

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
  });
  [A, B] = stack.institutions as [Institution, Institution];
  [alice, carol, dave, frank, bob, erin] = await Promise.all([
    userOf(A, "alice"), userOf(A, "carol"), userOf(A, "dave"), userOf(A, "frank"), userOf(B, "bob"), userOf(B, "erin"),
  ]);
  alias = A.alias("governance");
  bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

describe("meeting governance", () => {
  it("the first local user who joins an alias meeting becomes its host (power level 100); the next does not", async () => {
    roomId = await alice.join(alias);
    await waitFor("alice at power level 100", async () => ((await levelOf(alice.userId)) === 100 ? true : undefined));
    await carol.join(roomId);
    await waitFor("carol's join seen", async () => ((await membershipOf(carol.userId)) === "join" ? true : undefined));
    expect(await levelOf(carol.userId)).toBeUndefined();
    const pl = (await alice.stateEvent(roomId, "m.room.power_levels"))!;
    expect(pl).toMatchObject({ invite: 50, kick: 50, ban: 50, events: { "org.parley.moderate": 50, "org.parley.call": 100 } });
    expect(await alice.stateEvent(roomId, "org.parley.call")).toMatchObject({ access: "open", locked: false });
  });

  it("a seat is told the meeting's settings and its role: a host may act, a participant may not", async () => {
    aliceWs = await seated(A, await callSession(A, alice, roomId));
    carolWs = await seated(A, await callSession(A, carol, roomId));
    const forAlice = await meetingOf(aliceWs, () => true);
    expect(forAlice).toMatchObject({ access: "open", locked: false, ended: null, you: { role: "host" } });
    expect((forAlice.you as { can: string[] }).can).toEqual(expect.arrayContaining(["mute", "admit", "remove", "ban", "end", "settings", "set_role"]));
    expect(await meetingOf(carolWs, () => true)).toMatchObject({ you: { role: "participant", can: [] } });
  });

  it("a participant's attempt at each host action gets M_FORBIDDEN from Parley and from Synapse", async () => {
    const actions = [
      { action: "mute", user_id: alice.userId, kind: "audio" },
      { action: "mute_all", kind: "audio" },
      { action: "stop_share", user_id: alice.userId },
      { action: "lower_hand", user_id: alice.userId },
      { action: "remove", user_id: alice.userId },
      { action: "ban", user_id: alice.userId },
      { action: "end" },
      { action: "admit", user_id: bob.userId },
      { action: "deny", user_id: bob.userId },
      { action: "admit_all" },
      { action: "set_role", user_id: carol.userId, role: "cohost" },
      { action: "settings", locked: true },
    ];
    for (const action of actions) {
      expect(await moderate(carolWs, action), action.action).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    }
    const pl = (await carol.stateEvent(roomId, "m.room.power_levels"))!;
    const synapse = {
      kick: await errcodeOf(carol.kick(roomId, alice.userId)),
      ban: await errcodeOf(carol.ban(roomId, alice.userId)),
      invite: await errcodeOf(carol.invite(roomId, bob.userId)),
      powerLevels: await errcodeOf(
        carol.request(Method.Put, `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl, users: { ...(pl.users as object), [carol.userId]: 100 } }),
      ),
      joinRules: await errcodeOf(carol.request(Method.Put, `/rooms/${enc(roomId)}/state/m.room.join_rules/`, { join_rule: "invite" })),
      callState: await errcodeOf(carol.request(Method.Put, `/rooms/${enc(roomId)}/state/org.parley.call/`, { locked: true })),
      moderate: await errcodeOf(carol.request(Method.Put, `/rooms/${enc(roomId)}/state/org.parley.moderate/${enc(alice.userId)}`, { audio: true })),
    };
    expect(synapse).toEqual({
      kick: "M_FORBIDDEN", ban: "M_FORBIDDEN", invite: "M_FORBIDDEN", powerLevels: "M_FORBIDDEN", joinRules: "M_FORBIDDEN", callState: "M_FORBIDDEN", moderate: "M_FORBIDDEN",
    });
  });

  it("institution access: a local user's knock is admitted at once; a remote user's waits in the lobby until the host admits", async () => {
    expect(await moderate(aliceWs, { action: "settings", access: "institution" })).toMatchObject({ type: "result", access: "institution" });
    expect(await alice.stateEvent(roomId, "m.room.join_rules")).toMatchObject({ join_rule: "knock" });
    await meetingOf(carolWs, (m) => m.access === "institution");

    await knock(dave);
    await waitFor("dave invited", async () => ((await membershipOf(dave.userId)) === "invite" ? true : undefined));
    await dave.join(roomId);

    // A remote user may not join directly, nor get a call session.
    expect(await errcodeOf(bob.join(alias))).toBe("M_FORBIDDEN");
    await knock(bob, "from B, for the budget");
    const lobby = await aliceWs.push("bob in the lobby", (p) => p.type === "lobby" && (p.waiting as { user_id: string }[]).some((w) => w.user_id === bob.userId));
    expect((lobby.waiting as Record<string, unknown>[]).find((w) => w.user_id === bob.userId)).toMatchObject({
      server: B.serverName, reason: "from B, for the budget", display_name: expect.any(String),
    });
    // A participant is not shown the lobby.
    expect(carolWs.pushes.some((p) => p.type === "lobby")).toBe(false);
    expect((await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId })).json).toMatchObject({ errcode: "M_FORBIDDEN" });
    // Asked from the lobby (ahead), a grant is given (calls.limits.lobbyGrantsPerCall): no TURN
    // credentials, no devices, and nothing it opens while Bob only knocks. Its hello is refused
    // (and ends it), its device is not announced; a standby socket may wait on another.
    const lobbyGrant = async () => joinCall(A, { openid_token: await bob.openIdToken(), room: roomId, ahead: true });
    const [refusedAtHello, lobbyAsked] = await Promise.all([lobbyGrant(), lobbyGrant()]);
    expect(lobbyAsked).toMatchObject({ status: 200, json: { ice_servers: [], devices: [] } });
    const refusedWs = await SignallingClient.open(signallingUrl(A));
    expect(await refusedWs.request({ type: "hello", session: refusedAtHello.json.session })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN", error: `${bob.userId} is not let in to ${roomId} yet` });
    refusedWs.close();
    const arriving = await fetch(`${A.parley.url}/_parley/v1/calls/arriving`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ session: lobbyAsked.json.session, device_id: "BOBDEV" }) });
    expect([arriving.status, ((await arriving.json()) as { errcode?: string }).errcode]).toEqual([403, "M_FORBIDDEN"]);
    const lobbyWs = await SignallingClient.open(signallingUrl(A));
    expect(await lobbyWs.request({ type: "hello", session: lobbyAsked.json.session, standby: true })).toMatchObject({ type: "result", standby: true, user_id: bob.userId });

    // Bob's client waits for the answer as the web client does; the invite's stripped state names
    // the call API (Synapse's room_prejoin_state), so it asks its grant beside its room join.
    const told: unknown[] = [];
    const answered = awaitAdmission(new MatrixHttp(B.synapse.clientUrl, bob.client.getAccessToken()!), roomId, { signal: AbortSignal.timeout(30_000), onInvite: { userId: bob.userId, invited: (s) => void told.push(s.call) } });
    expect(await moderate(aliceWs, { action: "admit", user_id: bob.userId })).toMatchObject({ type: "result" });
    expect(await answered).toBe("invited");
    // Every device in the call hears of the admission from the invite's transaction (let_in), a
    // participant too; dave, let in by the policy before anyone watched, was told the same way.
    for (const ws of [aliceWs, carolWs]) await ws.push("bob let in", (p) => p.type === "let_in" && p.user_id === bob.userId);
    expect(aliceWs.pushes.some((p) => p.type === "let_in" && p.user_id === dave.userId)).toBe(true);
    const announced = (await alice.stateEvent(roomId, "org.parley.call"))!;
    expect(told).toEqual([{ api: announced.api, sender: A.botUserId }]);
    await waitFor("bob invited", async () => ((await membershipOf(bob.userId)) === "invite" ? true : undefined));
    // The invite carries the profile Bob's knock stated (Parley passes it on; A's homeserver asks B nothing for it).
    const bobKnock = (await alice.client.getStateEvent(roomId, "m.room.member", bob.userId).catch(() => undefined)) as Record<string, unknown> | undefined;
    expect(bobKnock).toMatchObject({ membership: "invite", reason: `admitted by ${alice.userId}` });
    const bobProfile = await bob.client.getProfileInfo(bob.userId);
    expect(bobProfile.displayname).toEqual(expect.any(String));
    expect(bobKnock?.displayname).toBe(bobProfile.displayname);
    // Let in, not joined yet: a grant asked ahead is given, a plain one is not; a hello before the
    // room's join goes on (the invite is the host's admission), and the join then has
    // calls.limits.invitedJoinWaitMs (3 s here) to reach A (the end at that limit: callService.test.ts).
    expect((await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId })).json).toMatchObject({ errcode: "M_FORBIDDEN" });
    const early = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId, ahead: true });
    const beforeJoin = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId, ahead: true });
    expect([early.status, beforeJoin.status]).toEqual([200, 200]);
    const soonWs = await SignallingClient.open(signallingUrl(A));
    const helloAt = Date.now();
    expect(await soonWs.request({ type: "hello", session: beforeJoin.json.session })).toMatchObject({ type: "result", user_id: bob.userId });
    // The lobby's grant, let in: its hello on the socket that stood by goes on, with its ICE servers.
    const lobbyHello = await lobbyWs.request({ type: "hello", session: lobbyAsked.json.session });
    expect(lobbyHello).toMatchObject({ type: "result", user_id: bob.userId, ice_servers: expect.any(Array), ice_transport_policy: "all" });
    expect(await membershipOf(bob.userId)).toBe("invite");
    await waitFor("bob's invite reached B", async () => (await errcodeOf(bob.join(roomId, [A.serverName]))) === "ok" || undefined);
    bobWs = await seated(A, early.json.session as string);
    // Joined in time: the session seated before the join is still there past the wait.
    await new Promise((r) => setTimeout(r, Math.max(0, helloAt + 3000 + 300 - Date.now())));
    for (const ws of [soonWs, lobbyWs]) {
      expect(await ws.request({ type: "ping" })).toMatchObject({ type: "result", pong: true });
      ws.close();
    }
    await aliceWs.push("the lobby empty again", (p) => p.type === "lobby" && (p.waiting as unknown[]).length === 0);
  });

  it("a denied user is not let in and gets no call session", async () => {
    await knock(erin);
    await aliceWs.push("erin in the lobby", (p) => p.type === "lobby" && (p.waiting as { user_id: string }[]).some((w) => w.user_id === erin.userId));
    const lobby = await joinCall(A, { openid_token: await erin.openIdToken(), room: roomId, ahead: true });
    expect(lobby.status).toBe(200);
    expect(await moderate(aliceWs, { action: "deny", user_id: erin.userId })).toMatchObject({ type: "result" });
    await waitFor("erin's knock turned down", async () => ((await membershipOf(erin.userId)) === "leave" ? true : undefined));
    // The grant she asked from the lobby ended with the deny's transaction.
    await waitFor("erin's lobby grant ended", async () => {
      const ws = await SignallingClient.open(signallingUrl(A));
      try {
        return (await ws.request({ type: "hello", session: lobby.json.session, standby: true })).errcode === "M_UNKNOWN_TOKEN" || undefined;
      } finally {
        ws.close();
      }
    });
    expect(await errcodeOf(erin.join(roomId, [A.serverName]))).toBe("M_FORBIDDEN");
    expect((await joinCall(A, { openid_token: await erin.openIdToken(), room: roomId })).json).toMatchObject({ errcode: "M_FORBIDDEN" });
    // Admitting someone who is not waiting is refused.
    expect(await moderate(aliceWs, { action: "admit", user_id: erin.userId })).toMatchObject({ errcode: "M_NOT_FOUND" });
  });

  it("a locked meeting refuses an invited user a session and takes no knocks; those in the call stay", async () => {
    // Dave's pre-join asked for his grant before the lock: its hello is admitted again, and refused.
    const early = await joinCall(A, { openid_token: await dave.openIdToken(), room: roomId, ahead: true });
    expect(early.status).toBe(200);
    expect(await moderate(aliceWs, { action: "settings", locked: true })).toMatchObject({ type: "result", locked: true });
    const daveWs = await SignallingClient.open(signallingUrl(A));
    expect(await daveWs.request({ type: "hello", session: early.json.session })).toMatchObject({ errcode: "M_FORBIDDEN", error: expect.stringContaining("locked") });
    expect(await daveWs.request({ type: "hello", session: early.json.session })).toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
    daveWs.close();
    expect(await alice.stateEvent(roomId, "m.room.join_rules")).toMatchObject({ join_rule: "invite" });
    await alice.invite(roomId, frank.userId);
    await frank.join(roomId);
    expect((await joinCall(A, { openid_token: await frank.openIdToken(), room: roomId })).json).toMatchObject({
      errcode: "M_FORBIDDEN", error: expect.stringContaining("locked"),
    });
    expect(await errcodeOf(knock(erin))).toBe("M_FORBIDDEN");
    // carol holds a session in the call: reconnecting is not someone new.
    expect((await joinCall(A, { openid_token: await carol.openIdToken(), room: roomId })).status).toBe(200);
    expect(await moderate(aliceWs, { action: "settings", locked: false })).toMatchObject({ locked: false });
    expect(await alice.stateEvent(roomId, "m.room.join_rules")).toMatchObject({ join_rule: "knock" });
  });

  it("a co-host's mute is enforced at the SFU: the muted client is told and may not unmute until allowed", async () => {
    expect(await moderate(aliceWs, { action: "set_role", user_id: carol.userId, role: "cohost" })).toMatchObject({ type: "result" });
    await waitFor("carol at 50", async () => ((await levelOf(carol.userId)) === 50 ? true : undefined));
    await meetingOf(carolWs, (m) => (m.you as { role: string }).role === "cohost");

    expect(await bobWs.request({ type: "publish", jsep: audioOffer(), e2ee: true })).toMatchObject({ type: "result" });
    expect(await moderate(carolWs, { action: "mute", user_id: bob.userId, kind: "audio" })).toMatchObject({ type: "result", seats: 1 });
    expect(await bobWs.push("bob told", (p) => p.type === "moderated")).toMatchObject({ kind: "audio", muted: true, by: carol.userId });
    expect(await bobWs.request({ type: "mute", kind: "audio", muted: false })).toMatchObject({ errcode: "M_FORBIDDEN" });
    // Another seat of bob's (a reconnect) is told the mute still holds, and who made it.
    const again = await seated(A, await callSession(A, bob, roomId));
    expect(await again.push("the mute told again", (p) => p.type === "moderated")).toMatchObject({ kind: "audio", muted: true, by: carol.userId });
    again.close();
    await again.closed;
    // A co-host may not mute a host.
    expect(await moderate(carolWs, { action: "mute", user_id: alice.userId, kind: "audio" })).toMatchObject({ errcode: "M_FORBIDDEN" });

    expect(await moderate(carolWs, { action: "allow", user_id: bob.userId, kind: "audio" })).toMatchObject({ type: "result" });
    await bobWs.push("bob allowed", (p) => p.type === "moderated" && p.muted === false);
    expect(await bobWs.request({ type: "mute", kind: "audio", muted: false })).toMatchObject({ type: "result" });
  });

  it("raised hands show in the participant list; a host lowers them", async () => {
    expect(await bobWs.request({ type: "hand", raised: true })).toMatchObject({ type: "result" });
    const hand = (p: Answer) => (p.participants as { user_id: string; hand: number | null }[] | undefined)?.find((x) => x.user_id === bob.userId)?.hand;
    await bobWs.push("hand up", (p) => p.type === "participants" && typeof hand(p) === "number");
    const before = bobWs.pushes.length;
    expect(await moderate(aliceWs, { action: "lower_hand", user_id: bob.userId })).toMatchObject({ type: "result" });
    await bobWs.push("hand down", (p) => bobWs.pushes.indexOf(p) >= before && p.type === "participants" && hand(p) === null);
  });

  it("remove evicts the user's sessions within a second", async () => {
    const t0 = Date.now();
    expect(await moderate(aliceWs, { action: "remove", user_id: bob.userId, reason: "test" })).toMatchObject({ type: "result" });
    const closed = await bobWs.closed;
    expect(closed.code).toBe(4403);
    expect(closed.at - t0).toBeLessThan(1000);
    // The eviction names the host the bot acted for, and the host's own reason.
    expect(bobWs.pushes.at(-1)).toMatchObject({ type: "evicted", by: alice.userId, reason: "test" });
    expect(await membershipOf(bob.userId)).toBe("leave");
  });

  it("ban evicts and keeps the user out", async () => {
    const daveWs = await seated(A, await callSession(A, dave, roomId));
    const t0 = Date.now();
    expect(await moderate(aliceWs, { action: "ban", user_id: dave.userId })).toMatchObject({ type: "result" });
    expect((await daveWs.closed).code).toBe(4403);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(await membershipOf(dave.userId)).toBe("ban");
    expect(await errcodeOf(dave.join(roomId))).not.toBe("ok");
    expect((await joinCall(A, { openid_token: await dave.openIdToken(), room: roomId })).json).toMatchObject({ errcode: "M_FORBIDDEN" });
  });

  it("end for all closes every session; nobody rejoins until a host starts the meeting again", async () => {
    // The actor's own session ends with everyone's: its answer is the eviction that names it.
    carolWs.send({ type: "moderate", action: { action: "end" } });
    for (const ws of [aliceWs, carolWs]) {
      expect((await ws.closed).code).toBe(4404);
      expect(ws.pushes.at(-1)).toMatchObject({ type: "evicted", by: carol.userId, error: expect.stringContaining(`ended by ${carol.userId}`) });
    }
    expect(await alice.stateEvent(roomId, "org.parley.call")).toMatchObject({ ended: { by: carol.userId } });
    expect((await joinCall(A, { openid_token: await carol.openIdToken(), room: roomId })).json).toMatchObject({ errcode: "M_FORBIDDEN" });
    // A host's pre-join (a grant asked ahead) does not start it again; their join does.
    expect((await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId, ahead: true })).json).toMatchObject({
      errcode: "M_FORBIDDEN", error: expect.stringContaining("joining starts it again"),
    });
    expect(await alice.stateEvent(roomId, "org.parley.call")).toMatchObject({ ended: { by: carol.userId } });
    aliceWs = await seated(A, await callSession(A, alice, roomId));
    expect((await alice.stateEvent(roomId, "org.parley.call"))!.ended).toBeUndefined();
    carolWs = await seated(A, await callSession(A, carol, roomId));
  });

  it("when the last host leaves, the co-host present longest becomes host", async () => {
    await alice.leave(roomId);
    await waitFor("carol promoted", async () => ((await levelOf(carol.userId)) === 100 ? true : undefined));
    await meetingOf(carolWs, (m) => (m.you as { role: string }).role === "host");
  });
});
