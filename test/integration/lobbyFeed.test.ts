// The room's feed started while a knock waits in the lobby (what the web client does, so that a
// user let in finds the sync loop, the crypto and the device's keys ready), against two real
// Synapses federating: users of B knock on A's *institution* meeting. The device's keys go up in
// the lobby; let in, the same feed's sync sees the join, the room's members load, A's host knows
// the device and a media key reaches it over Olm, and back. The room's join never overlaps an
// upload of the keys (a device whose keys go up during the join can be missed by A for good:
// deviceCrypto.ts): tried with the upload slowed down while the join is asked, and the join
// slowed down while the upload would start.
import "fake-indexeddb/auto";
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OWN_JOIN_WAIT_MS, SyncedRoomFeed } from "../../client/src/matrix/roomFeed.ts";
import { isDeviceKeysUpload } from "../../client/src/matrix/deviceCrypto.ts";
import { MatrixHttp } from "../../client/src/matrix/http.ts";
import { joinRoom } from "../../client/src/matrix/rooms.ts";
import { awaitAdmission } from "../../client/src/matrix/knock.ts";
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
const keysOf = async (user: TestUser, deviceId: string) => (await user.devicesOf(user.userId))[deviceId];

/** A user of B knocking on A's meeting, with the feed the web client starts for the wait. */
async function knocker(localpart: string, alias: string, roomId: string) {
  const b = await B.registerUser(localpart);
  const user = new TestUser(B.synapse.clientUrl, b.userId, b.accessToken);
  const session = { homeserverUrl: B.synapse.clientUrl, userId: b.userId, deviceId: b.deviceId, accessToken: b.accessToken };
  const http = new MatrixHttp(session.homeserverUrl, session.accessToken);
  await user.request(Method.Post, `/knock/${enc(alias)}`, {}, { server_name: A.serverName });
  const feed = new SyncedRoomFeed(session, http, roomId, { crypto: true, knocking: true });
  feeds.push(feed);
  const join = () => joinRoom(http, alias, B.serverName);
  return { b, user, http, feed, join };
}

/** A's meeting with its host (a local user, let in at once) and the host's device. */
async function meeting(slug: string) {
  const a = await A.registerUser(`host-${slug}`);
  const host = new TestUser(A.synapse.clientUrl, a.userId, a.accessToken);
  const alias = A.alias(slug);
  const roomId = await enter(host, alias);
  const hostCrypto = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: a.userId, accessToken: a.accessToken, deviceId: a.deviceId, rooms: [roomId] });
  clients.push(hostCrypto);
  return { a, host, alias, roomId, hostCrypto };
}

/** Times of B's device-keys uploads and room joins (this device's, this alias's), some slowed down on the way back. */
function watchRequests(deviceId: string, alias: string) {
  const real = globalThis.fetch;
  const seen: { what: "upload" | "join"; start: number; end: number }[] = [];
  const slow = { upload: 0, join: 0 };
  globalThis.fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = input instanceof Request ? input.url : String(input);
    const body = typeof init?.body === "string" ? init.body : "";
    const what = isDeviceKeysUpload(url, init as { method?: string; body?: unknown }) && body.includes(deviceId) ? "upload" : init?.method === "POST" && url.includes(`/join/${enc(alias)}`) ? "join" : null;
    if (!what) return real(input, init);
    const r: (typeof seen)[number] = { what, start: performance.now(), end: Infinity };
    seen.push(r);
    try {
      const res = await real(input, init);
      if (slow[what]) await new Promise((resolve) => setTimeout(resolve, slow[what]));
      return res;
    } finally {
      r.end = performance.now();
    }
  };
  const overlaps = () => {
    const ups = seen.filter((r) => r.what === "upload"), joins = seen.filter((r) => r.what === "join");
    return ups.some((u) => joins.some((j) => u.start < j.end && j.start < u.end));
  };
  return { seen, slow, overlaps, restore: () => (globalThis.fetch = real) };
}

describe("the room's feed during a knock", () => {
  it("runs its sync and sends the device's keys in the lobby; let in, members load, A's host knows the device, and media keys travel over Olm both ways", async () => {
    const { a, roomId, alias, host, hostCrypto } = await meeting("lobby-feed");
    const { b, user: bob, feed, join } = await knocker("bob", alias, roomId);
    let started = false;
    let keysCanTravel = false;
    void feed.start().then(() => (started = true), () => undefined);
    void feed.whenKeysCanTravel().then(() => (keysCanTravel = true));
    // In the lobby: the sync runs and the keys are up; the room-bound part waits for the join.
    await feed.whenSyncing();
    await feed.whenKeysUploaded();
    // Keys may come in already (a key sent at the admission can come before the sync showing the join).
    await feed.whenKeysCanFlow();
    expect(await keysOf(bob, b.deviceId)).toBeDefined();
    expect(started).toBe(false);
    expect(keysCanTravel).toBe(false);

    await host.invite(roomId, b.userId);
    expect(await feed.joining(join)).toBe(roomId);
    // Media keys may travel once the sync has the room joined: its call state is there (the key
    // mode), not its history and member list, which come after.
    await feed.whenKeysCanTravel();
    expect(feed.callState()).toMatchObject({ api: expect.any(String) });
    await feed.whenStarted();
    await waitFor("the host among the room's members", async () => (feed.members().has(a.userId) ? true : undefined));
    await hostCrypto.waitForDevices([{ userId: b.userId, deviceId: b.deviceId }]);

    const got = new Promise<{ from: { userId: string; deviceId: string | null }; content: unknown }>((resolve) => {
      feed.keyTransport().onKeys((from, content) => resolve({ from, content }));
    });
    await hostCrypto.sendToDevice("io.element.call.encryption_keys", [{ userId: b.userId, deviceId: b.deviceId }], { keys: [{ index: 0, key: "aG9zdA" }] });
    expect(await got).toMatchObject({ from: { userId: a.userId, deviceId: a.deviceId }, content: { keys: [{ index: 0, key: "aG9zdA" }] } });
    await waitFor("bob's key delivered", async () => (((await feed.keyTransport().send([{ userId: a.userId, deviceId: a.deviceId }], { keys: [{ index: 0, key: "Ym9i" }] } as never)) ?? []).length === 0 ? true : undefined));
    expect(await hostCrypto.nextToDevice("io.element.call.encryption_keys", (m) => m.sender === b.userId)).toMatchObject({ encrypted: true, senderDevice: b.deviceId });
  }, 120_000);

  it("a join asked while the keys are going up waits for them; keys that would go up during a join wait for it; A's host knows the device either way", async () => {
    const { roomId, alias, host, hostCrypto } = await meeting("lobby-order");
    // The upload in flight (slowed down on its way back) when the join is asked.
    const carl = await knocker("carl", alias, roomId);
    await host.invite(roomId, carl.b.userId);
    const w1 = watchRequests(carl.b.deviceId, alias);
    try {
      w1.slow.upload = 800; // well inside KEYS_UPLOAD_WAIT_MS (3 s), which would let the join go
      void carl.feed.start().catch(() => undefined);
      await waitFor("carl's keys on their way", async () => (w1.seen.some((r) => r.what === "upload") ? true : undefined));
      await carl.feed.joining(carl.join);
      // (Synapse may refuse a join right after an invite once: the client joins again.)
      expect(w1.seen[0]?.what).toBe("upload");
      expect(w1.seen.some((r) => r.what === "join")).toBe(true);
      expect(w1.overlaps()).toBe(false);
    } finally {
      w1.restore();
    }
    // The join under way (slowed down) when the feed's client starts and would send the keys.
    const dora = await knocker("dora", alias, roomId);
    await host.invite(roomId, dora.b.userId);
    const w2 = watchRequests(dora.b.deviceId, alias);
    try {
      w2.slow.join = 2000;
      const joined = dora.feed.joining(dora.join);
      void dora.feed.start().catch(() => undefined);
      await joined;
      await dora.feed.whenKeysUploaded();
      expect(w2.seen[0]?.what).toBe("join");
      expect(w2.seen.some((r) => r.what === "upload")).toBe(true);
      expect(w2.overlaps()).toBe(false);
    } finally {
      w2.restore();
    }
    await hostCrypto.waitForDevices([{ userId: carl.b.userId, deviceId: carl.b.deviceId }, { userId: dora.b.userId, deviceId: dora.b.deviceId }]);
  }, 120_000);

  it("a device in the call looks a knocker's devices up at the knock, before any admission, at most knockPreparesPerMinute a minute", async () => {
    const { roomId, alias, host } = await meeting("lobby-prepare");
    // Another user of A in the call (the host's device runs a crypto client of its own here), with
    // the feed the web client runs in a call: the call's key share listens on it.
    const a = await A.registerUser("hana");
    await enter(new TestUser(A.synapse.clientUrl, a.userId, a.accessToken), alias);
    const session = { homeserverUrl: A.synapse.clientUrl, userId: a.userId, deviceId: a.deviceId, accessToken: a.accessToken };
    const hostHttp = new MatrixHttp(session.homeserverUrl, session.accessToken);
    const hostFeed = new SyncedRoomFeed(session, hostHttp, roomId, { crypto: true, knockPreparesPerMinute: 1 });
    feeds.push(hostFeed);
    await hostFeed.start();
    hostFeed.keyTransport().onKeys(() => undefined);
    const members = hostFeed.callMembers();
    const knocks: string[] = [];
    members.onRoomMembership!((userId, membership) => void (membership === "knock" && knocks.push(userId)));
    const known = async (userId: string) => (await members.knownDevicesOf!(userId)).map((d) => d.deviceId);
    const queried: string[] = []; // the users the host's device asked the keys of
    const real = globalThis.fetch;
    globalThis.fetch = (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      if (url.startsWith(A.synapse.clientUrl) && /\/keys\/(query|claim)/.test(url) && typeof init?.body === "string") queried.push(init.body);
      return real(input, init);
    };
    try {
      /** A user of B whose device's keys are up (the web client's lobby feed) before they knock. */
      const knockWithKeysUp = async (localpart: string) => {
        const b = await B.registerUser(localpart);
        const s = { homeserverUrl: B.synapse.clientUrl, userId: b.userId, deviceId: b.deviceId, accessToken: b.accessToken };
        const feed = new SyncedRoomFeed(s, new MatrixHttp(s.homeserverUrl, s.accessToken), roomId, { crypto: true, knocking: true });
        feeds.push(feed);
        void feed.start().catch(() => undefined);
        await feed.whenKeysUploaded();
        await new TestUser(B.synapse.clientUrl, b.userId, b.accessToken).request(Method.Post, `/knock/${enc(alias)}`, {}, { server_name: A.serverName });
        return b;
      };
      const fay = await knockWithKeysUp("fay");
      await waitFor("fay's device known to the host's crypto", async () => ((await known(fay.userId)).includes(fay.deviceId) ? true : undefined), 20_000);
      expect((await host.stateEvent(roomId, "m.room.member", fay.userId))?.membership).toBe("knock"); // nobody let her in

      // The minute's one preparation is spent: the next knock is looked up only when let in.
      const gus = await knockWithKeysUp("gus");
      await waitFor("gus's knock seen by the host's feed", async () => (knocks.includes(gus.userId) ? true : undefined), 20_000);
      // A sync round later (the host's own message back in its feed), a preparation would have asked.
      const echoed = new Promise<void>((resolve) => hostFeed.events.on("message", (m) => m.body === "after gus" && resolve()));
      await host.send(roomId, "after gus");
      await echoed;
      expect(queried.some((body) => body.includes(gus.userId))).toBe(false);
      expect(await known(gus.userId)).toEqual([]);
      await host.invite(roomId, gus.userId);
      await waitFor("gus's device known once let in", async () => ((await known(gus.userId)).includes(gus.deviceId) ? true : undefined), 20_000);
    } finally {
      globalThis.fetch = real;
    }
  }, 120_000);

  it("a member list loaded at once is one change, not one per member", async () => {
    const { roomId, alias, host } = await meeting("lobby-members");
    const others = 6;
    for (let i = 0; i < others; i++) {
      const r = await A.registerUser(`member${i}`);
      await enter(new TestUser(A.synapse.clientUrl, r.userId, r.accessToken), alias);
    }
    const { b, feed, join } = await knocker("ivy", alias, roomId);
    const changes: number[] = [];
    feed.events.on("members", (m) => void changes.push(m.size));
    void feed.start().catch(() => undefined);
    await feed.whenKeysUploaded();
    await host.invite(roomId, b.userId);
    await feed.joining(join);
    await feed.whenStarted(); // the member list loaded (lazy-loaded members: all at once)
    await waitFor("every member listed", async () => (feed.members().size >= others + 2 ? true : undefined));
    expect(changes.length).toBeLessThan(others);
  }, 120_000);

  it("the lobby's wait reads the answer from the feed's sync: one initial sync of its own (acknowledging no to-device message), no long-poll", async () => {
    const { roomId, alias, host } = await meeting("lobby-one-loop");
    const { b, feed } = await knocker("fred", alias, roomId);
    void feed.start().catch(() => undefined);
    // The wait's own requests, apart from the feed's (which go through its matrix-js-sdk client).
    const own: URL[] = [];
    const http = new MatrixHttp(B.synapse.clientUrl, b.accessToken, async (input, init) => {
      const res = await fetch(input, init);
      own.push(new URL(String(input))); // once answered
      return res;
    });
    const waiting = awaitAdmission(http, roomId, { signal: new AbortController().signal, tap: feed.syncTap() });
    await feed.whenSyncing();
    // Invited only once the wait's own first sync has answered (still knocking): the answer must come from the feed.
    await waitFor("the wait's first sync answered", async () => (own.length ? true : undefined));
    await host.invite(roomId, b.userId);
    expect(await waiting).toBe("invited");
    const syncs = own.filter((u) => u.pathname.endsWith("/sync"));
    expect(syncs.map((u) => [u.searchParams.get("since"), u.searchParams.get("timeout")])).toEqual([[null, "0"]]);
  }, 60_000);

  // A knocker's call starts beside its room's join, and the host's device shows in the call's
  // media before that join is in: B would not tell the knocker the host's membership then.
  it("asked whether a member is joined before its own join, answers once that join is in; with no join, no, after OWN_JOIN_WAIT_MS", async () => {
    const { a, roomId, alias } = await meeting("lobby-ask");
    const { b, feed, join } = await knocker("kim", alias, roomId);
    void feed.start().catch(() => undefined);
    await feed.whenSyncing();
    // Let in through Parley (a host's admit there): the invite is the bot's, and its stripped
    // state names none of the others' memberships.
    await new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken).invite(roomId, b.userId);
    let answer: boolean | undefined;
    const asked = feed.callMembers().joinedToRoom!(a.userId).then((yes) => (answer = yes));
    // B refuses the read (not in the room yet): the answer waits for the join, not "no".
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(answer).toBeUndefined();
    await feed.joining(join);
    await asked;
    expect(answer).toBe(true);

    // Never let in: no, once the wait is over (and not before).
    const stranger = await knocker("jack", alias, roomId);
    void stranger.feed.start().catch(() => undefined);
    await stranger.feed.whenSyncing();
    const t0 = performance.now();
    expect(await stranger.feed.callMembers().joinedToRoom!(a.userId)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(OWN_JOIN_WAIT_MS - 50);
  }, 60_000);

  it("stops in the lobby: its start ends, refused as closed", async () => {
    const { roomId, alias } = await meeting("lobby-gone");
    const { feed } = await knocker("erin", alias, roomId);
    const start = feed.start();
    const keys = feed.whenKeysCanTravel();
    await feed.whenSyncing();
    feed.stop();
    await expect(start).rejects.toMatchObject({ code: "CLOSED" });
    await expect(keys).rejects.toMatchObject({ code: "CLOSED" });
  }, 60_000);
});
