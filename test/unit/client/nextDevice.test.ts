// The device a sign-in will make, made ready before it (deviceCrypto.ts readyNextDevice): its id
// chosen by the page, its crypto store (the IndexedDB databases of matrix-sdk-crypto, here
// fake-indexeddb) opened before /login, claimed by the session that got that id, and the stores
// of sign-ins that never came deleted a day later; a device signed out loses its store.
import "fake-indexeddb/auto";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { cryptoStorePrefix, SPARE_DEVICE_MAX_AGE_MS } from "../../../client/src/matrix/deviceCrypto.ts";
import type * as DeviceCrypto from "../../../client/src/matrix/deviceCrypto.ts";
import { getLogger } from "../../../client/src/log.ts";
import type { KeyValueStorage } from "../../../client/src/matrix/session.ts";

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
