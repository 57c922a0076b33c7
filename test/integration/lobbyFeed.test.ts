// The room's feed started while a knock waits in the lobby (what the web client does, so that a
// user let in finds the sync loop and crypto running), against two real Synapses federating: Bob
// of B knocks on A's *institution* meeting. While he waits, his device's keys stay off his
// homeserver (a device announced before its user shares a room with A may never reach A's
// cache: deviceCrypto.ts); let in, the same feed's sync sees the join, the keys go up, the room's
// members load, and a media key from A's host reaches the device over Olm, and back.
import "fake-indexeddb/auto";
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SyncedRoomFeed } from "../../client/src/matrix/chat.ts";
import { MatrixHttp } from "../../client/src/matrix/http.ts";
import { joinRoom } from "../../client/src/matrix/rooms.ts";
import { setLogLevel } from "../../client/src/log.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { TestUser, waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution, B: Institution;
let failed = false;
const clients: CryptoClient[] = [];
const feeds: SyncedRoomFeed[] = [];
const enc = encodeURIComponent;

beforeAll(async () => {
  setLogLevel("error");
  stack = await startInstitutions({ count: 2, allow: (i, hosts) => hosts.filter((_, j) => j !== i), janus: false, governance: (i) => (i === 0 ? { access: "institution" } : {}) });
  [A, B] = stack.institutions as [Institution, Institution];
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  for (const f of feeds) f.stop();
  for (const c of clients) await c.stop();
  await stack?.stop({ keep: failed || undefined });
});

/** A local user enters an institution meeting as the web client would: a knock, let in at once by Parley. */
async function enter(user: TestUser, alias: string): Promise<string> {
  await user.request(Method.Post, `/knock/${enc(alias)}`, {});
  const roomId = (await user.resolveAlias(alias))!;
  const bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
  await waitFor(`${user.userId} let in`, async () => ((await bot.stateEvent(roomId, "m.room.member", user.userId))?.membership === "invite" ? true : undefined));
  return user.join(roomId);
}

/** The device keys B's homeserver holds for this device (none: not uploaded). */
async function keysOf(user: TestUser, deviceId: string): Promise<unknown> {
  const res = await user.request<{ device_keys?: Record<string, Record<string, unknown>> }>(Method.Post, "/keys/query", { device_keys: { [user.userId]: [] } });
  return res.device_keys?.[user.userId]?.[deviceId];
}

describe("the room's feed during a knock", () => {
  it("runs its sync in the lobby with the device's keys held back; let in, the keys go up, members load, and media keys travel over Olm both ways", async () => {
    const a = await A.registerUser("host");
    const host = new TestUser(A.synapse.clientUrl, a.userId, a.accessToken);
    const alias = A.alias("lobby-feed");
    const roomId = await enter(host, alias); // the first local joiner: the host
    const hostCrypto = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: a.userId, accessToken: a.accessToken, deviceId: a.deviceId, rooms: [roomId] });
    clients.push(hostCrypto);

    const b = await B.registerUser("bob");
    const bob = new TestUser(B.synapse.clientUrl, b.userId, b.accessToken);
    const session = { homeserverUrl: B.synapse.clientUrl, userId: b.userId, deviceId: b.deviceId, accessToken: b.accessToken };
    const http = new MatrixHttp(session.homeserverUrl, session.accessToken);
    await bob.request(Method.Post, `/knock/${enc(alias)}`, {}, { server_name: A.serverName });
    const feed = new SyncedRoomFeed(session, http, roomId, { crypto: true, knocking: true });
    feeds.push(feed);
    let started = false;
    void feed.start().then(() => (started = true), () => undefined);
    // In the lobby: the sync runs, the feed has not started, and no keys go up (looked at for a
    // while: an upload not held back goes out beside the first sync or right after it).
    await feed.whenSyncing();
    for (let i = 0; i < 10; i++) {
      expect(await keysOf(bob, b.deviceId)).toBeUndefined();
      await new Promise((r) => setTimeout(r, 150));
    }
    expect(started).toBe(false);

    await host.invite(roomId, b.userId);
    expect(await joinRoom(http, alias, B.serverName)).toBe(roomId);
    await feed.whenStarted();
    expect(await keysOf(bob, b.deviceId)).toBeDefined();
    await waitFor("the host among the room's members", async () => (feed.members().has(a.userId) ? true : undefined));

    // A's host's device learns bob's new device through A's server, and his gets its key.
    const got = new Promise<{ from: { userId: string; deviceId: string | null }; content: unknown }>((resolve) => {
      feed.keyTransport().onKeys((from, content) => resolve({ from, content }));
    });
    await hostCrypto.sendToDevice("io.element.call.encryption_keys", [{ userId: b.userId, deviceId: b.deviceId }], { keys: [{ index: 0, key: "aG9zdA" }] });
    expect(await got).toMatchObject({ from: { userId: a.userId, deviceId: a.deviceId }, content: { keys: [{ index: 0, key: "aG9zdA" }] } });
    // And his key reaches the host's device.
    await waitFor("bob's key delivered", async () => (((await feed.keyTransport().send([{ userId: a.userId, deviceId: a.deviceId }], { keys: [{ index: 0, key: "Ym9i" }] } as never)) ?? []).length === 0 ? true : undefined));
    expect(await hostCrypto.nextToDevice("io.element.call.encryption_keys", (m) => m.sender === b.userId)).toMatchObject({ encrypted: true, senderDevice: b.deviceId });
  }, 120_000);

  it("stops in the lobby without sending the device's keys (the user went away before being let in)", async () => {
    const alias = A.alias("lobby-feed-gone");
    const c = await A.registerUser("host2");
    const roomId = await enter(new TestUser(A.synapse.clientUrl, c.userId, c.accessToken), alias);
    const b = await B.registerUser("erin");
    const erin = new TestUser(B.synapse.clientUrl, b.userId, b.accessToken);
    await erin.request(Method.Post, `/knock/${enc(alias)}`, {}, { server_name: A.serverName });
    const feed = new SyncedRoomFeed({ homeserverUrl: B.synapse.clientUrl, userId: b.userId, deviceId: b.deviceId, accessToken: b.accessToken }, new MatrixHttp(B.synapse.clientUrl, b.accessToken), roomId, { crypto: true, knocking: true });
    const start = feed.start();
    await feed.whenSyncing();
    feed.stop();
    await expect(start).rejects.toMatchObject({ code: "CLOSED" });
    expect(await keysOf(erin, b.deviceId)).toBeUndefined();
  }, 60_000);
});
