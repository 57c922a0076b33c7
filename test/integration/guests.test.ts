// Guests by link against the real Synapse of the test stack and its Parley process: a guest is a
// namespaced user with a real device (its keys uploaded through the guest proxy by matrix-js-sdk's
// Rust crypto, which then receives Olm to-device messages), cannot create rooms or invite
// (403 M_FORBIDDEN from the proxy), knocks on the meeting, is admitted (an invite, as a host's
// admission is), and is deactivated a second after it leaves, or after it is denied.
import "fake-indexeddb/auto";
import { Method } from "matrix-js-sdk";
import { SyncedRoomFeed } from "../../client/src/matrix/roomFeed.ts";
import { MatrixHttp } from "../../client/src/matrix/http.ts";
import { homeserverMembershipTransport, MembershipManager } from "../../client/src/matrix/membership.ts";
import { homeserverOpenId } from "../../client/src/matrix/openid.ts";
import { joinRoom, roomSummary } from "../../client/src/matrix/rooms.ts";
import { setLogLevel } from "../../client/src/log.ts";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { asGuest, createGuest, type GuestSession } from "../support/guests.ts";
import { TestUser, waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution;
let alice: TestUser, bot: TestUser, admin: TestUser;
let aliceDevice: string;
let aliceToken: string;
let failed = false;
const clients: CryptoClient[] = [];

const V3 = "/_matrix/client/v3";
const e = encodeURIComponent;

beforeAll(async () => {
  stack = await startInstitutions({
    count: 1,
    janus: false,
    allow: () => [],
    governance: () => ({ access: "invited" }),
    // Every request of the test comes from one address: the per-address limit is the unit tests'.
    guests: () => ({ mode: "lobby", deactivateAfterSeconds: 1, lobbyWaitSeconds: 300, createRateLimit: { perMinute: 1000, burst: 100 } }),
  });
  A = stack.institutions[0]!;
  const a = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, a.userId, a.accessToken);
  aliceDevice = a.deviceId;
  aliceToken = a.accessToken;
  const root = await A.registerUser("root", { admin: true });
  admin = new TestUser(A.synapse.clientUrl, root.userId, root.accessToken);
  bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  for (const c of clients) await c.stop();
  await stack?.stop({ keep: failed || undefined });
});

/** A knock meeting made from an alias, with alice in it (the bot lets her in, as a host would). */
async function meeting(slug: string): Promise<{ alias: string; roomId: string }> {
  const alias = A.alias(slug);
  const roomId = await waitFor(`room of ${alias}`, () => alice.resolveAlias(alias));
  await bot.invite(roomId, alice.userId);
  await alice.join(roomId);
  return { alias, roomId };
}

const membership = async (roomId: string, userId: string) =>
  ((await bot.stateEvent(roomId, "m.room.member", userId)) as { membership?: string } | undefined)?.membership;

/** Whether Synapse says the account is deactivated (admin API). */
async function deactivated(userId: string): Promise<boolean> {
  const u = await admin.client.http.authedRequest<{ deactivated?: boolean }>(Method.Get, `/users/${e(userId)}`, undefined, undefined, { prefix: "/_synapse/admin/v2" });
  return u.deactivated === true;
}

async function refusals(): Promise<Record<string, number>> {
  const text = await (await fetch(A.parley.metricsUrl)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^parley_guest_refusals_total\{family="([^"]*)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

describe("guests by link", () => {
  it("says guests wait in the lobby here", async () => {
    expect(await (await fetch(`${A.parley.url}/_parley/v1/guests`)).json()).toEqual({ mode: "lobby" });
  });

  it("a guest has a real device, knocks, is admitted, gets Olm messages, cannot create or invite, and is deactivated after leaving", async () => {
    const { alias, roomId } = await meeting("guests");
    const guest: GuestSession = await createGuest(A, "Ada", alias);
    expect(guest.roomId).toBe(roomId);
    expect(guest.userId).toMatch(new RegExp(`^@_parley_guest-[a-z0-9]+:${A.serverName.replace(/\./g, "\\.")}$`));
    expect(guest.homeserverUrl).toBe(`${A.parley.url}/_parley/guest`);
    expect(await asGuest(guest, "GET", `${V3}/account/whoami`)).toMatchObject({ status: 200, json: { user_id: guest.userId, device_id: guest.deviceId } });

    // Not admitted yet: no join; a knock goes through (by alias, as the link names it).
    expect((await asGuest(guest, "POST", `${V3}/join/${e(alias)}`, {})).json.errcode).toBe("M_FORBIDDEN");
    expect((await asGuest(guest, "POST", `${V3}/knock/${e(alias)}`, { reason: "Ada from the link", displayname: "Host" })).status).toBe(200);
    await waitFor("the knock", async () => ((await membership(roomId, guest.userId)) === "knock" ? true : undefined));
    const knock = (await bot.stateEvent(roomId, "m.room.member", guest.userId)) as { displayname?: string };
    expect(knock.displayname).toBe("Ada (guest)");

    // Never a creator or an inviter, whatever it asks.
    for (const [method, path, body] of [
      ["POST", `${V3}/createRoom`, { name: "mine" }],
      ["POST", `${V3}/rooms/${e(roomId)}/invite`, { user_id: alice.userId }],
      ["PUT", `${V3}/profile/${e(guest.userId)}/displayname`, { displayname: "Host" }],
    ] as const) {
      expect(await asGuest(guest, method, path, body), path).toMatchObject({ status: 403, json: { errcode: "M_FORBIDDEN" } });
    }

    // Admitted: the knock becomes an invite (what a host's admit does), and the guest joins.
    await bot.invite(roomId, guest.userId);
    expect((await asGuest(guest, "POST", `${V3}/join/${e(alias)}`, {})).status).toBe(200);
    await waitFor("the join", async () => ((await membership(roomId, guest.userId)) === "join" ? true : undefined));

    // A real device: matrix-js-sdk's Rust crypto runs for it through the proxy and uploads its keys.
    const before = await refusals();
    const guestDevice = await CryptoClient.start({ baseUrl: guest.homeserverUrl, userId: guest.userId, accessToken: guest.accessToken, deviceId: guest.deviceId, rooms: [roomId] });
    clients.push(guestDevice);
    const aliceCrypto = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: alice.userId, accessToken: aliceToken, deviceId: aliceDevice, rooms: [roomId] });
    clients.push(aliceCrypto);
    const keys = await aliceCrypto.identityKeys(guest.userId, guest.deviceId);
    expect(keys?.curve25519).toMatch(/^[A-Za-z0-9+/]{43}$/);
    // Media keys reach the guest over Olm like anyone else, and the guest's reach alice.
    await aliceCrypto.sendToDevice("io.element.call.encryption_keys", [{ userId: guest.userId, deviceId: guest.deviceId }], { keys: [{ index: 0, key: "k" }] });
    const got = await guestDevice.nextToDevice("io.element.call.encryption_keys");
    expect(got).toMatchObject({ encrypted: true, sender: alice.userId, senderDevice: aliceDevice, content: { keys: [{ index: 0, key: "k" }] } });
    await guestDevice.sendToDevice("io.element.call.encryption_keys", [{ userId: alice.userId, deviceId: aliceDevice }], { keys: [{ index: 0, key: "g" }] });
    expect(await aliceCrypto.nextToDevice("io.element.call.encryption_keys", (m) => m.sender === guest.userId)).toMatchObject({ encrypted: true, senderDevice: guest.deviceId });
    // The SDK's start needed nothing the proxy refuses.
    expect(await refusals()).toEqual(before);

    // An OpenID token for the call API comes through the proxy too.
    expect((await asGuest(guest, "POST", `${V3}/user/${e(guest.userId)}/openid/request_token`, {})).json).toMatchObject({ matrix_server_name: A.serverName });

    // Leaving: deactivated a second later (the token stops working, Synapse marks the account).
    await guestDevice.stop();
    expect((await asGuest(guest, "POST", `${V3}/rooms/${e(roomId)}/leave`, {})).status).toBe(200);
    await waitFor("the guest token refused", async () => ((await asGuest(guest, "GET", `${V3}/account/whoami`)).json.errcode === "M_UNKNOWN_TOKEN" ? true : undefined));
    await waitFor("the account deactivated", async () => ((await deactivated(guest.userId)) ? true : undefined));
  }, 120_000);

  it("the web client's own Matrix code runs through the proxy without a refusal", async () => {
    setLogLevel("error");
    const { alias, roomId } = await meeting("webclient");
    const guest = await createGuest(A, "Web", alias);
    const session = { homeserverUrl: guest.homeserverUrl, userId: guest.userId, deviceId: guest.deviceId, accessToken: guest.accessToken };
    const http = new MatrixHttp(session.homeserverUrl, session.accessToken);
    const before = await refusals();
    expect((await asGuest(guest, "POST", `${V3}/knock/${e(alias)}`, {})).status).toBe(200);
    await waitFor("the knock", async () => ((await membership(roomId, guest.userId)) === "knock" ? true : undefined));
    await bot.invite(roomId, guest.userId);
    // What the meeting screen does: join, read the room, start the synced feed with Rust crypto
    // (IndexedDB store), publish the call membership (MSC4140 delayed leave), ask for OpenID.
    expect(await joinRoom(http, alias)).toBe(roomId);
    const summary = await roomSummary(http, roomId, alias, { decide: () => ({ trust: "origin", api: A.parley.url, origin: A.parley.url, host: A.ip }) }, guest.userId);
    expect(summary).toMatchObject({ roomId, encrypted: true, selfName: "Web (guest)" });
    const feed = new SyncedRoomFeed(session, http, roomId, { crypto: true });
    await feed.start();
    const manager = new MembershipManager({ transport: homeserverMembershipTransport(http), roomId, userId: guest.userId, deviceId: guest.deviceId, callApi: A.parley.url });
    await manager.join();
    expect(manager.status.get()).toMatchObject({ joined: true, lastError: null });
    expect((await homeserverOpenId(http, guest.userId)()).matrix_server_name).toBe(A.serverName);
    // Its media key reaches a host's device over Olm (a fresh user: a device's Olm account lives in one client).
    const h = await A.registerUser("host2");
    await bot.invite(roomId, h.userId);
    await new TestUser(A.synapse.clientUrl, h.userId, h.accessToken).join(roomId);
    const hostCrypto = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: h.userId, accessToken: h.accessToken, deviceId: h.deviceId, rooms: [roomId] });
    clients.push(hostCrypto);
    await waitFor("the host's device known to the guest", async () => {
      const missing = await feed.keyTransport().send([{ userId: h.userId, deviceId: h.deviceId }], { keys: [{ index: 0, key: "w" }] } as never);
      return (missing ?? []).length === 0 ? true : undefined;
    });
    expect(await hostCrypto.nextToDevice("io.element.call.encryption_keys", (m) => m.sender === guest.userId)).toMatchObject({ encrypted: true, senderDevice: guest.deviceId });
    await manager.leave();
    feed.stop();
    expect(await refusals()).toEqual(before);
  }, 120_000);

  it("a denied guest is deactivated too", async () => {
    const { roomId } = await meeting("denied");
    const guest = await createGuest(A, "Bo", roomId);
    expect((await asGuest(guest, "POST", `${V3}/knock/${e(roomId)}`, {})).status).toBe(200);
    await waitFor("the knock", async () => ((await membership(roomId, guest.userId)) === "knock" ? true : undefined));
    await bot.kick(roomId, guest.userId, "denied"); // a host's deny
    await waitFor("the account deactivated", async () => ((await deactivated(guest.userId)) ? true : undefined));
    expect((await asGuest(guest, "GET", `${V3}/account/whoami`)).json.errcode).toBe("M_UNKNOWN_TOKEN");
  }, 60_000);

  it("a meeting without a lobby, or one that refuses guests, makes no guest", async () => {
    const { roomId } = await meeting("noguests");
    await bot.request(Method.Put, `/rooms/${e(roomId)}/state/org.parley.call/`, { ...(await bot.stateEvent(roomId, "org.parley.call")), guests: false });
    await expect(createGuest(A, "Cy", roomId)).rejects.toThrow(/403.*does not admit guests/);
    await bot.request(Method.Put, `/rooms/${e(roomId)}/state/org.parley.call/`, { ...(await bot.stateEvent(roomId, "org.parley.call")), guests: true });
    await bot.request(Method.Put, `/rooms/${e(roomId)}/state/m.room.join_rules/`, { join_rule: "public" });
    await expect(createGuest(A, "Cy", roomId)).rejects.toThrow(/403.*no lobby/);
    await expect(createGuest(A, "Cy", "#meet-nowhere:other.example")).rejects.toThrow(/403/);
  }, 60_000);
});
