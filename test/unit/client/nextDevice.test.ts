// The device a sign-in will make, made ready before it (deviceCrypto.ts readyNextDevice): its id
// chosen by the page, its crypto store (the IndexedDB databases of matrix-sdk-crypto, here
// fake-indexeddb) opened before /login, claimed by the session that got that id, and the stores
// of sign-ins that never came deleted a day later; a device signed out loses its store.
import "fake-indexeddb/auto";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { cryptoStorePrefix, SPARE_DEVICE_MAX_AGE_MS } from "../../../client/src/matrix/deviceCrypto.ts";
import type * as DeviceCrypto from "../../../client/src/matrix/deviceCrypto.ts";
import { getLogger } from "../../../client/src/log.ts";
import type { KeyValueStorage } from "../../../client/src/matrix/session.ts";
import type { MatrixClient } from "matrix-js-sdk";

function memoryStorage(): KeyValueStorage & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => void data.set(k, v), removeItem: (k) => void data.delete(k) };
}

const spares = (s: KeyValueStorage) => JSON.parse(s.getItem("parley.spareDevices.v1") ?? "[]") as { id: string; at: number }[];
const databases = async () => (await indexedDB.databases()).map((d) => d.name);
const storeOf = (deviceId: string) => `${cryptoStorePrefix(deviceId)}::matrix-sdk-crypto`;

/** The module afresh for each test: the page's next device is module state. */
let m: typeof DeviceCrypto;
beforeEach(async () => {
  vi.resetModules();
  m = await import("../../../client/src/matrix/deviceCrypto.ts");
});

describe("the device made ready before the sign-in", () => {
  it("opens its crypto store before any session, lists it as a spare, and deletes spares older than a day", async () => {
    const storage = memoryStorage();
    const now = 10 * SPARE_DEVICE_MAX_AGE_MS;
    // Two earlier pages that never signed in: one an hour ago, one two days ago.
    storage.setItem("parley.spareDevices.v1", JSON.stringify([{ id: "RECENTSPAR", at: now - 3600_000 }, { id: "STALESPARE", at: now - 2 * SPARE_DEVICE_MAX_AGE_MS }, { id: "bad" }]));
    const stale = indexedDB.open(storeOf("STALESPARE"));
    await new Promise((resolve) => (stale.onsuccess = resolve));
    stale.result.close();

    const next = m.readyNextDevice(storage, now);
    expect(next.deviceId).toMatch(/^[A-Z]{10}$/);
    expect(m.readyNextDevice(storage, now)).toBe(next); // the same until claimed
    expect(m.nextDeviceId()).toBe(next.deviceId);
    await next.store;
    expect(await databases()).toContain(storeOf(next.deviceId));
    expect(await databases()).not.toContain(storeOf("STALESPARE"));
    expect(spares(storage).map((e) => e.id)).toEqual(["RECENTSPAR", next.deviceId]);
  }, 60_000);

  it("is claimed by the session the homeserver gave that id: no longer a spare, its crypto opened on the store made ready", async () => {
    const storage = memoryStorage();
    const { deviceId, store } = m.readyNextDevice(storage);
    await store;
    // Another device's sign-in claims nothing; this one's, as /login answers, takes it off the list.
    m.nextDeviceSignedIn("OTHERDEVIC");
    expect(spares(storage).map((e) => e.id)).toEqual([deviceId]);
    m.nextDeviceSignedIn(deviceId);
    expect(spares(storage)).toEqual([]);
    expect(m.nextDeviceId()).toBe(deviceId); // still this page's, until its crypto starts
    const session = { homeserverUrl: "http://127.0.0.1:9", userId: "@alice:a.example", deviceId, accessToken: "t" };
    m.prepareDeviceCrypto(session);
    const { client, cryptoStarted } = await m.takeDeviceClient(session, getLogger("test"));
    expect(cryptoStarted).toBe(true);
    expect(client.getCrypto()).toBeDefined();
    expect(spares(storage)).toEqual([]);
    expect(m.nextDeviceId()).toBeUndefined();
    // Signed out: the device's store goes once its client has let it go.
    client.stopClient();
    m.deleteCryptoStore(deviceId);
    for (let i = 0; i < 100 && (await databases()).includes(storeOf(deviceId)); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await databases()).not.toContain(storeOf(deviceId));
  }, 60_000);
});

describe("the device's crypto started before the sign-in (prepareCryptoBeforeSignIn)", () => {
  const HS = "http://hs.example";
  /** Every request the page makes: its path and Authorization header. */
  let requests: { path: string; auth: string | null }[];
  beforeEach(() => {
    requests = [];
    vi.stubGlobal("fetch", async (input: string | Request, init?: RequestInit) => {
      requests.push({ path: new URL(input instanceof Request ? input.url : input).pathname, auth: new Headers(init?.headers).get("Authorization") });
      return new Response(JSON.stringify({ errcode: "M_NOT_FOUND", error: "no backup" }), { status: 404, headers: { "content-type": "application/json" } });
    });
  });
  afterEach(() => vi.unstubAllGlobals());
  const waitFor = async (ok: () => boolean | Promise<boolean>) => {
    for (let i = 0; i < 200 && !(await ok()); i++) await new Promise((r) => setTimeout(r, 20));
  };
  const identity = async (client: MatrixClient) => (await client.getCrypto()!.getOwnDeviceKeys()).ed25519;
  /** Lets a client go once the key backup's check (its one request at the crypto's start) is answered and done. */
  const letGo = async (client: MatrixClient, checks = 1) => {
    await waitFor(() => requests.filter((r) => r.path.endsWith("/room_keys/version")).length >= checks);
    await new Promise((r) => setTimeout(r, 50));
    client.stopClient();
  };

  it("makes the device's Olm account with no session, sends nothing until the sign-in, and is the session's client after it", async () => {
    const storage = memoryStorage();
    const { MatrixClient: Client } = await import("matrix-js-sdk"); // (the instance deviceCrypto.ts has)
    const starts = vi.spyOn(Client.prototype, "initRustCrypto");
    const { deviceId } = m.readyNextDevice(storage);
    m.prepareCryptoBeforeSignIn(HS, "@alice:a.example");
    m.prepareCryptoBeforeSignIn(HS, "@alice:a.example"); // the same user again: nothing new
    await waitFor(() => starts.mock.calls.length > 0);
    await starts.mock.results[0]!.value;
    expect(starts).toHaveBeenCalledTimes(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(requests).toEqual([]); // the key backup's check waits for the session
    const session = { homeserverUrl: HS, userId: "@alice:a.example", deviceId, accessToken: "tok" };
    expect(m.fitsEarlyDevice(session)).toBe(true);
    m.nextDeviceSignedIn(deviceId);
    m.prepareDeviceCrypto(session);
    const { client, cryptoStarted } = await m.takeDeviceClient(session, getLogger("test"));
    expect(cryptoStarted).toBe(true);
    expect(starts).toHaveBeenCalledTimes(1); // the crypto started before the sign-in is the session's
    expect(client.getUserId()).toBe("@alice:a.example");
    expect(client.getAccessToken()).toBe("tok");
    await waitFor(() => requests.some((r) => r.path.endsWith("/room_keys/version")));
    expect(requests.filter((r) => r.path.endsWith("/room_keys/version")).map((r) => r.auth)).toEqual(["Bearer tok"]);
    expect(requests.every((r) => r.auth === "Bearer tok")).toBe(true);
    expect(m.nextDeviceId()).toBeUndefined();
    expect(spares(storage)).toEqual([]);
    await letGo(client);
  }, 60_000);

  it("gives the device up when the form names another user: its store deleted, another device made ready for that one", async () => {
    const storage = memoryStorage();
    const first = m.readyNextDevice(storage).deviceId;
    m.prepareCryptoBeforeSignIn(HS, "@alic:a.example");
    m.prepareCryptoBeforeSignIn(HS, "@alice:a.example");
    const second = m.nextDeviceId()!;
    expect(second).not.toBe(first);
    await waitFor(async () => !(await databases()).includes(storeOf(first)) && (await databases()).includes(storeOf(second)));
    expect(await databases()).not.toContain(storeOf(first));
    expect(await databases()).toContain(storeOf(second));
    // The sign-in for the second device finds its crypto started for the right user.
    const session = { homeserverUrl: HS, userId: "@alice:a.example", deviceId: second, accessToken: "tok" };
    m.prepareDeviceCrypto(session);
    const { client, cryptoStarted } = await m.takeDeviceClient(session, getLogger("test"));
    expect(cryptoStarted).toBe(true);
    expect(client.getUserId()).toBe("@alice:a.example");
    await letGo(client);
  }, 60_000);

  it("does not fit a session of the same device for another user id (the homeserver's case): given up, the next sign-in gets a new device", async () => {
    const storage = memoryStorage();
    const { deviceId } = m.readyNextDevice(storage);
    m.prepareCryptoBeforeSignIn(HS, "@alice:a.example");
    const session = { homeserverUrl: HS, userId: "@Alice:a.example", deviceId, accessToken: "tok" };
    expect(m.fitsEarlyDevice(session)).toBe(false);
    expect(m.fitsEarlyDevice({ ...session, deviceId: "OTHERDEVIC" })).toBe(true);
    m.giveUpEarlyDevice();
    expect(m.nextDeviceId()).not.toBe(deviceId);
    expect(m.fitsEarlyDevice(session)).toBe(true);
    await waitFor(async () => !(await databases()).includes(storeOf(deviceId)));
    expect(await databases()).not.toContain(storeOf(deviceId));
    expect(requests).toEqual([]); // nothing of the given-up device's ever left
  }, 60_000);

  it("a sign-in the homeserver gives another id (its case) is signed out and made again on a new device", async () => {
    const storage = memoryStorage();
    const { deviceId } = m.readyNextDevice(storage);
    m.prepareCryptoBeforeSignIn(HS, "@alice:a.example");
    const asked: (string | undefined)[] = [];
    const signedOut: string[] = [];
    const session = await m.signInOnNextDevice(
      async (id) => (asked.push(id), { homeserverUrl: HS, userId: "@Alice:a.example", deviceId: id ?? "SERVERMADE", accessToken: `tok-${asked.length}` }),
      async (s) => void signedOut.push(s.deviceId),
    );
    expect(asked[0]).toBe(deviceId);
    expect(signedOut).toEqual([deviceId]);
    expect(asked[1]).toMatch(/^[A-Z]{10}$/);
    expect(asked[1]).not.toBe(deviceId);
    expect(session).toMatchObject({ userId: "@Alice:a.example", deviceId: asked[1], accessToken: "tok-2" });
    expect(spares(storage).map((e) => e.id)).not.toContain(asked[1]); // signed in: no longer a spare
    // The id the form gave, once: one sign-in, nothing signed out.
    const again = await m.signInOnNextDevice(async (id) => ({ homeserverUrl: HS, userId: "@bob:a.example", deviceId: id ?? "X", accessToken: "t" }), async () => expect.fail("signed out"));
    expect(again.userId).toBe("@bob:a.example");
  }, 60_000);

  it("a session at another homeserver address (the login's well-known) opens the same account in a new client, once the first let go", async () => {
    const storage = memoryStorage();
    const { deviceId } = m.readyNextDevice(storage);
    m.prepareCryptoBeforeSignIn(HS, "@alice:a.example");
    const session = { homeserverUrl: "https://matrix.a.example", userId: "@alice:a.example", deviceId, accessToken: "tok" };
    // The account made before the sign-in, as its store holds it.
    m.nextDeviceSignedIn(deviceId);
    m.prepareDeviceCrypto(session);
    const { client, cryptoStarted } = await m.takeDeviceClient(session, getLogger("test"));
    expect(cryptoStarted).toBe(true);
    expect(client.getHomeserverUrl()).toBe("https://matrix.a.example");
    const key = await identity(client);
    await letGo(client);
    // Opened again from its store (a page reload), the device's identity is the same.
    vi.resetModules();
    m = await import("../../../client/src/matrix/deviceCrypto.ts");
    m.prepareDeviceCrypto(session);
    const again = await m.takeDeviceClient(session, getLogger("test"));
    expect(await identity(again.client)).toBe(key);
    await letGo(again.client, 2);
  }, 60_000);
});
