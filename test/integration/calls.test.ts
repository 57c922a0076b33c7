// The call API and signalling socket against real components: two federating Synapses, each
// with its Parley process and Janus; OpenID tokens from the users' own homeservers.
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import path from "node:path";
import Database from "better-sqlite3";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { janusParticipants as roomParticipants, joinCall, signallingUrl } from "../support/callStack.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { MAX_MESSAGE_BYTES } from "../../appservice/src/http/signalling/protocol.ts";
import { SignallingClient } from "../support/signalling.ts";

let stack: Stack;
let A: Institution, B: Institution, C: Institution;
let alice: TestUser, bob: TestUser, dave: TestUser, carol: TestUser;
let roomId: string;
let failed = false;

const user = async (inst: Institution, localpart: string) => {
  const u = await inst.registerUser(localpart);
  return new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken);
};

/** An OpenID token whose validity has run out at its homeserver. Synapse issues them for an hour
 *  and checks `ts_valid_until_ms` on every userinfo request: moving that into the past in its
 *  database is what an hour's wait would do. */
async function expiredOpenIdToken(inst: Institution, u: TestUser) {
  const token = await u.openIdToken();
  const db = new Database(path.join(inst.synapse.dir, "homeserver.db"));
  try {
    const changed = db.prepare("UPDATE open_id_tokens SET ts_valid_until_ms = ? WHERE token = ?").run(Date.now() - 1000, token.access_token);
    if (changed.changes !== 1) throw new Error("the OpenID token is not in Synapse's database");
  } finally {
    db.close();
  }
  return token;
}

/** Participants of the call's Janus room, asked of Janus itself (undefined: no such room). */
async function janusParticipants(inst: Institution, room: string): Promise<string[] | undefined> {
  const call = await inst.parleyStore().activeCall(room);
  return call?.sfu ? roomParticipants(inst, call.sfu) : undefined;
}

beforeAll(async () => {
  stack = await startInstitutions({ count: 3, allow: (i, hosts) => (i === 0 ? [hosts[1]!] : [hosts[0]!]), janus: true });
  [A, B, C] = stack.institutions as [Institution, Institution, Institution];
  [alice, bob, dave, carol] = await Promise.all([user(A, "alice"), user(B, "bob"), user(A, "dave"), user(C, "carol")]);
  roomId = await alice.join(A.alias("standup"));
  await bob.join(A.alias("standup"));
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

describe("joining a call", () => {
  it("a member gets a session with its OpenID token, and the socket accepts it", async () => {
    const { status, json } = await joinCall(A, { openid_token: await alice.openIdToken(), room: A.alias("standup") });
    expect(status).toBe(200);
    expect(json).toMatchObject({ room_id: roomId, signalling: "/_parley/v1/signal" });
    expect(typeof json.session).toBe("string");
    const ws = await SignallingClient.open(signallingUrl(A));
    const hello = await ws.request({ type: "hello", session: json.session, device_id: "ALICEDEV" });
    expect(hello).toMatchObject({
      type: "result",
      user_id: alice.userId,
      room_id: roomId,
      call_id: json.call_id,
      e2ee: { required: true, keys: "participant", bot: A.botUserId },
    });
    ws.close();
  });

  it("refuses media that is not end-to-end encrypted, from publishers and subscribers alike", async () => {
    const { json } = await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId });
    const ws = await SignallingClient.open(signallingUrl(A));
    await ws.request({ type: "hello", session: json.session, device_id: "ALICEDEV" });
    const offer = { type: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" };
    const refused = { type: "error", errcode: "M_FORBIDDEN", error: expect.stringContaining("end-to-end encrypted") };
    expect(await ws.request({ type: "publish", jsep: offer })).toMatchObject(refused);
    expect(await ws.request({ type: "publish", jsep: offer, e2ee: false })).toMatchObject(refused);
    expect(await ws.request({ type: "subscribe", feeds: [{ feed: "p-any" }] })).toMatchObject(refused);
    expect(await ws.request({ type: "answer", jsep: { type: "answer", sdp: "v=0\r\n" } })).toMatchObject(refused);
    // Refused before the SFU: nobody joined the Janus room.
    expect(await janusParticipants(A, roomId)).toEqual([]);
    ws.close();
  });

  it("a grant asked ahead lists the devices in the call; its device, announced once, is pushed to the call's seats", async () => {
    const plain = await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId });
    const aliceWs = await SignallingClient.open(signallingUrl(A));
    await aliceWs.request({ type: "hello", session: plain.json.session, device_id: "ALICEDEV" });
    const early = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId, ahead: true });
    expect(early.json.devices).toEqual([{ user_id: alice.userId, device_id: "ALICEDEV" }]);
    const arriving = (body: unknown) =>
      fetch(`${A.parley.url}/_parley/v1/calls/arriving`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, json: await r.json() }));
    expect(await arriving({ session: early.json.session, device_id: "BOBDEV" })).toEqual({ status: 200, json: {} });
    expect(await aliceWs.push("bob's device arriving", (p) => p.type === "arriving")).toMatchObject({ user_id: bob.userId, device_id: "BOBDEV" });
    // The same again (a retry, a second tab): answered, not pushed again.
    expect((await arriving({ session: early.json.session, device_id: "BOBDEV" })).status).toBe(200);
    // Not a session granted ahead, an unknown one, a malformed body: refused with their errcodes.
    // In the call already: only the device its hello named (its keys up after its hello).
    expect(await arriving({ session: plain.json.session, device_id: "X" })).toMatchObject({ status: 403, json: { errcode: "M_FORBIDDEN" } });
    const other = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId });
    expect(await arriving({ session: other.json.session, device_id: "X" })).toMatchObject({ status: 403, json: { errcode: "M_FORBIDDEN" } });
    expect(await arriving({ session: "nope", device_id: "X" })).toMatchObject({ status: 401, json: { errcode: "M_UNKNOWN_TOKEN" } });
    expect(await arriving({ session: early.json.session })).toMatchObject({ status: 400, json: { errcode: "M_BAD_JSON" } });
    expect(await arriving({ session: early.json.session, device_id: "x".repeat(256) })).toMatchObject({ status: 400, json: { errcode: "M_BAD_JSON" } });
    expect(await arriving({ session: "x".repeat(257), device_id: "X" })).toMatchObject({ status: 400, json: { errcode: "M_BAD_JSON" } });
    const bobWs = await SignallingClient.open(signallingUrl(A));
    await bobWs.request({ type: "hello", session: early.json.session, device_id: "BOBDEV" });
    expect((await arriving({ session: early.json.session, device_id: "BOBDEV" })).status).toBe(200); // announced already
    expect(await arriving({ session: plain.json.session, device_id: "ALICEDEV" })).toEqual({ status: 200, json: {} });
    expect(await bobWs.push("alice's device, its keys up after its hello", (p) => p.type === "arriving")).toMatchObject({ user_id: alice.userId, device_id: "ALICEDEV" });
    expect((await arriving({ session: plain.json.session, device_id: "ALICEDEV" })).status).toBe(200); // once
    expect(aliceWs.pushes.filter((p) => p.type === "arriving" && p.user_id === bob.userId)).toHaveLength(1);
    expect(bobWs.pushes.filter((p) => p.type === "arriving")).toHaveLength(1);
    bobWs.close();
    aliceWs.close();
  });

  it("a user of a federated homeserver joins with a token from their own homeserver", async () => {
    const { status, json } = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId });
    expect(status).toBe(200);
    expect(json.room_id).toBe(roomId);
  });

  it("denials, each with its errcode", async () => {
    const token = await alice.openIdToken();
    const cases: [string, unknown, number, string][] = [
      ["no token", { room: roomId }, 401, "M_MISSING_TOKEN"],
      ["forged token", { openid_token: { ...token, access_token: "forged" }, room: roomId }, 401, "M_UNKNOWN_TOKEN"],
      ["expired token", { openid_token: await expiredOpenIdToken(A, alice), room: roomId }, 401, "M_UNKNOWN_TOKEN"],
      ["B's token claimed as A's", { openid_token: { ...(await bob.openIdToken()), matrix_server_name: A.serverName }, room: roomId }, 401, "M_UNKNOWN_TOKEN"],
      ["a user not in the room", { openid_token: await dave.openIdToken(), room: roomId }, 403, "M_FORBIDDEN"],
      ["a server not on the allow-list", { openid_token: await carol.openIdToken(), room: roomId }, 403, "M_FORBIDDEN"],
      ["a room with no call", { openid_token: token, room: await alice.createRoom({ preset: "private_chat" }) }, 404, "M_NOT_FOUND"],
      ["not JSON", "{nope", 400, "M_NOT_JSON"],
      ["no room", { openid_token: token }, 400, "M_BAD_JSON"],
    ];
    for (const [what, body, status, errcode] of cases) {
      const res = await joinCall(A, body);
      expect({ what, status: res.status, errcode: res.json.errcode }).toEqual({ what, status, errcode });
    }
    expect(await janusParticipants(A, roomId)).toEqual([]);
  });

  it("Janus killed mid-call: the call's room is recreated on the restarted Janus, same id", async () => {
    const before = (await A.parleyStore().activeCall(roomId))!.sfu!;
    expect(await janusParticipants(A, roomId)).toEqual([]);
    await A.janus!.restart({ kill9: true });
    const recreated = await waitFor("the SFU room to be recreated", () => janusParticipants(A, roomId), 20_000);
    expect(recreated).toEqual([]);
    expect((await A.parleyStore().activeCall(roomId))!.sfu).toEqual(before);
    const { status } = await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId });
    expect(status).toBe(200);
  });
});

describe("MatrixRTC membership", () => {
  it("!meet status lists the users whose clients published call membership", async () => {
    await alice.request(
      Method.Put,
      `/rooms/${encodeURIComponent(roomId)}/state/org.matrix.msc3401.call.member/${encodeURIComponent(`_${alice.userId}_ALICEDEV`)}`,
      {
        application: "m.call",
        call_id: "",
        scope: "m.room",
        device_id: "ALICEDEV",
        focus_active: { type: "org.parley.janus" },
        foci_preferred: [{ type: "org.parley.janus", call_api: A.parley.url, room_id: roomId }],
        created_ts: Date.now(),
        expires: 3_600_000,
      },
    );
    // The meeting room is encrypted: the bot's answer is a Megolm notice, read with a crypto client.
    const erin = await A.registerUser("erin");
    await new TestUser(A.synapse.clientUrl, erin.userId, erin.accessToken).join(roomId);
    const reader = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: erin.userId, accessToken: erin.accessToken, deviceId: erin.deviceId, rooms: [roomId] });
    try {
      await reader.sendText(roomId, "!meet status");
      const status = await reader.nextMessage(roomId, (m) => m.sender === A.botUserId && m.body.includes("In the call:"), 30_000);
      expect(status.encrypted).toBe(true);
      expect(status.body).toContain(`In the call: ${alice.userId}`);
    } finally {
      await reader.stop();
    }
  });
});

describe("the signalling socket", () => {
  it("answers malformed, oversize and premature messages with errors and lives on", async () => {
    const ws = await SignallingClient.open(signallingUrl(A));
    expect(await ws.sendRaw("{not json")).toMatchObject({ type: "error", errcode: "M_NOT_JSON" });
    expect(await ws.sendRaw("x".repeat(MAX_MESSAGE_BYTES + 1))).toMatchObject({ type: "error", errcode: "M_TOO_LARGE" });
    expect(await ws.request({ type: "publish", jsep: { type: "offer", sdp: "v=0" } })).toMatchObject({ errcode: "M_MISSING_TOKEN" });
    expect(await ws.request({ type: "nonsense" })).toMatchObject({ errcode: "M_BAD_JSON" });
    expect(await ws.request({ type: "hello", session: "made-up" })).toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
    const { json } = await joinCall(A, { openid_token: await alice.openIdToken(), room: roomId });
    expect(await ws.request({ type: "hello", session: json.session })).toMatchObject({ type: "result", user_id: alice.userId });
    expect(await ws.request({ type: "publish", jsep: { type: "offer", sdp: "not sdp" } })).toMatchObject({ errcode: "M_BAD_JSON" });
    expect(await ws.request({ type: "ping" })).toMatchObject({ type: "result", pong: true });
    ws.close();
  });

  it("a user banned during the call is evicted within 1 s", async () => {
    const { json } = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId });
    const ws = await SignallingClient.open(signallingUrl(A));
    await ws.request({ type: "hello", session: json.session });
    // The bot created the meeting room: it is the one with the power to ban.
    const bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
    const bannedAt = Date.now();
    await bot.ban(roomId, bob.userId, "test eviction");
    const closed = await ws.closed;
    expect(closed.code).toBe(4403);
    expect(closed.at - bannedAt).toBeLessThan(1000);
    expect(ws.pushes).toContainEqual(expect.objectContaining({ type: "evicted", errcode: "M_FORBIDDEN" }));
    // And the session is gone for good.
    const again = await SignallingClient.open(signallingUrl(A));
    expect(await again.request({ type: "hello", session: json.session })).toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
    again.close();
    await waitFor("bob's ban to be visible", async () =>
      (await alice.stateEvent(roomId, "m.room.member", bob.userId))?.membership === "ban" ? true : undefined,
    );
  });
});
