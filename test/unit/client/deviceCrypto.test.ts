// Letting a device's Matrix client go: its crypto (the OlmMachine) is freed only after the sync
// loop stopped processing and the feed's own crypto calls settled, never under them (Rust crypto
// then throws "null pointer passed to rust"); the device's next client waits for that.
import { ClientEvent, Filter, MatrixEvent, Method, PushRuleActionName, SyncState, type MatrixClient } from "matrix-js-sdk";
import { describe, expect, it, vi } from "vitest";
import { deviceKeysUploaded, deviceKeysUploadSettled, holdDeviceKeysUpload, isDeviceKeysUpload, isSyncRequest, newClient, newDeviceId, releaseDeviceClient, tapSyncResponses, traceCryptoCalls, warmSyncStartup } from "../../../client/src/matrix/deviceCrypto.ts";
import { seedFilter, syncFilterDefinition } from "../../../client/src/matrix/roomFeed.ts";
import { getLogger, setLogLevel } from "../../../client/src/log.ts";
import { Emitter } from "../../../client/src/state/store.ts";
import { tick } from "./fakes.ts";

function fakeClient(syncState: SyncState | null) {
  const events = new Emitter<Record<string, unknown>>();
  const log: string[] = [];
  const client = {
    log,
    events,
    syncApi: { stop: () => void log.push("sync stopped") },
    getSyncState: () => syncState,
    on: (event: string, fn: (s: unknown) => void) => events.on(event, fn),
    stopClient: () => void log.push("crypto freed"),
    removeAllListeners: () => void log.push("listeners removed"),
  };
  return client;
}

const asClient = (c: ReturnType<typeof fakeClient>) => c as unknown as MatrixClient;

describe("releaseDeviceClient", () => {
  it("stops the sync loop first and frees the crypto only once the loop says Stopped and our calls settled", async () => {
    const c = fakeClient(SyncState.Syncing);
    let finishWork!: () => void;
    const work = new Promise<void>((r) => (finishWork = r));
    const released = releaseDeviceClient(asClient(c), [work]);
    await tick();
    expect(c.log).toEqual(["sync stopped"]);
    c.events.emit(ClientEvent.Sync, SyncState.Stopped);
    await tick();
    expect(c.log).toEqual(["sync stopped"]);
    finishWork();
    await released;
    expect(c.log).toEqual(["sync stopped", "crypto freed", "listeners removed"]);
  });

  it("waits for a loop in its first sync (state null) to say Stopped, and frees the crypto anyway after the cap", async () => {
    vi.useFakeTimers();
    try {
      const c = fakeClient(null);
      const released = releaseDeviceClient(asClient(c));
      await vi.advanceTimersByTimeAsync(4000);
      expect(c.log).toEqual(["sync stopped"]);
      await vi.advanceTimersByTimeAsync(1000);
      await released;
      expect(c.log).toEqual(["sync stopped", "crypto freed", "listeners removed"]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("does not wait for a client whose sync never started", async () => {
    const c = fakeClient(null);
    delete (c as { syncApi?: unknown }).syncApi;
    await releaseDeviceClient(asClient(c));
    expect(c.log).toEqual(["crypto freed", "listeners removed"]);
  });

  it("lets each client go once", async () => {
    const c = fakeClient(SyncState.Stopped);
    const a = releaseDeviceClient(asClient(c));
    expect(releaseDeviceClient(asClient(c))).toBe(a);
    await a;
    expect(c.log.filter((l) => l === "crypto freed")).toHaveLength(1);
  });
});

describe("deviceKeysUploaded", () => {
  const session = { homeserverUrl: "https://hs.example", accessToken: "tok", userId: "@a:hs.example", deviceId: "DEV" };

  it("knows a device-key upload from an upload of one-time keys only, and from other requests", () => {
    const body = (o: object) => ({ method: "POST", body: JSON.stringify(o) });
    const url = "https://hs.example/_matrix/client/v3/keys/upload";
    expect(isDeviceKeysUpload(url, body({ device_keys: { device_id: "DEV" }, one_time_keys: {} }))).toBe(true);
    expect(isDeviceKeysUpload(url, body({ one_time_keys: {} }))).toBe(false);
    expect(isDeviceKeysUpload("https://hs.example/_matrix/client/v3/keys/query", body({ device_keys: { "@a:hs": [] } }))).toBe(false);
    expect(isDeviceKeysUpload(url, { method: "GET" })).toBe(false);
  });

  it("resolves once the homeserver accepted the device's keys, not on a refusal or another request", async () => {
    const answers: number[] = [];
    vi.stubGlobal("fetch", async (_url: string) => new Response("{}", { status: answers.shift() ?? 200, headers: { "content-type": "application/json" } }));
    try {
      const client = newClient(session, getLogger("test"));
      let up = false;
      void deviceKeysUploaded(client).then(() => (up = true));
      const upload = (body: object) => client.http.authedRequest(Method.Post, "/keys/upload", undefined, body).catch(() => undefined);
      await upload({ one_time_keys: {} });
      answers.push(500);
      await upload({ device_keys: { device_id: "DEV" } });
      await tick();
      expect(up).toBe(false);
      await upload({ device_keys: { device_id: "DEV" } });
      await tick();
      expect(up).toBe(true);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe("holdDeviceKeysUpload and deviceKeysUploadSettled (a room join kept clear of the keys upload)", () => {
  const session = { homeserverUrl: "https://hs.example", accessToken: "tok", userId: "@a:hs.example", deviceId: "DEV" };

  it("sends the device's keys only once the hold resolves; other requests, and one-time keys, go at once", async () => {
    const sent: string[] = [];
    vi.stubGlobal("fetch", async (url: string, init?: { body?: string }) => {
      sent.push(`${new URL(url).pathname} ${init?.body ?? ""}`);
      return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
    });
    try {
      const client = newClient(session, getLogger("test"));
      let joined!: () => void;
      holdDeviceKeysUpload(client, new Promise<void>((r) => (joined = r)));
      let up = false;
      void deviceKeysUploaded(client).then(() => (up = true));
      const keys = client.http.authedRequest(Method.Post, "/keys/upload", undefined, { device_keys: { device_id: "DEV" } });
      await client.http.authedRequest(Method.Post, "/keys/upload", undefined, { one_time_keys: {} });
      await client.http.authedRequest(Method.Post, "/keys/query", undefined, { device_keys: {} });
      await tick(5);
      expect(sent.map((s) => s.split(" ")[0])).toEqual(["/_matrix/client/v3/keys/upload", "/_matrix/client/v3/keys/query"]);
      expect(up).toBe(false);
      joined();
      await keys;
      expect(sent.at(-1)).toContain("device_keys");
      expect(up).toBe(true);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it("tells when no upload of the device's keys is in flight, counting one that starts while waiting", async () => {
    const answers: (() => void)[] = [];
    vi.stubGlobal("fetch", (_url: string) => new Promise<Response>((resolve) => answers.push(() => resolve(new Response("{}", { status: 200, headers: { "content-type": "application/json" } })))));
    try {
      const client = newClient(session, getLogger("test"));
      let settled = false;
      await deviceKeysUploadSettled(client); // none yet: at once
      const upload = () => client.http.authedRequest(Method.Post, "/keys/upload", undefined, { device_keys: { device_id: "DEV" } });
      const first = upload();
      await tick();
      void deviceKeysUploadSettled(client).then(() => (settled = true));
      const query = client.http.authedRequest(Method.Post, "/keys/query", undefined, { device_keys: {} });
      await tick();
      answers[1]!(); // the query: not an upload
      await query;
      expect(settled).toBe(false);
      const second = upload(); // starts while the first is out
      await tick();
      answers[0]!();
      await first;
      await tick(5);
      expect(settled).toBe(false);
      answers[2]!();
      await second;
      await tick(5);
      expect(settled).toBe(true);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it("fails the held upload without sending it when the hold is rejected", async () => {
    const sent: string[] = [];
    vi.stubGlobal("fetch", async (url: string) => {
      sent.push(url);
      return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
    });
    try {
      const client = newClient(session, getLogger("test"));
      let stopped!: (e: Error) => void;
      const hold = new Promise<void>((_, reject) => (stopped = reject));
      hold.catch(() => undefined);
      holdDeviceKeysUpload(client, hold);
      const keys = client.http.authedRequest(Method.Post, "/keys/upload", undefined, { device_keys: { device_id: "DEV" } });
      stopped(new Error("stopped"));
      await expect(keys).rejects.toThrow();
      expect(sent).toEqual([]);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe("newClient", () => {
  it("computes no push actions for the events a sync brings (Parley notifies nothing by them)", () => {
    const client = newClient({ homeserverUrl: "https://hs.example", accessToken: "tok", userId: "@a:hs.example", deviceId: "DEV" }, getLogger("test"));
    // A rule every event matches, which would notify.
    client.pushRules = { global: { override: [{ rule_id: "all", default: false, enabled: true, conditions: [], actions: [PushRuleActionName.Notify] }] } };
    const ev = new MatrixEvent({ type: "m.room.message", room_id: "!r:hs", sender: "@b:hs.example", event_id: "$e", content: { body: "hi" } });
    expect(client.getPushActionsForEvent(ev)).toBeNull();
    expect(client.getPushActionsForEvent(ev, true)).toBeNull();
    expect(ev.getPushActions()).toBeNull();
  });

  it("hands its /sync responses (status and body) to those who tap them, only while they do; matrix-js-sdk still reads each whole", async () => {
    const bodies = [{ next_batch: "s1", rooms: { invite: { "!r:x": {} } } }, { errcode: "M_UNKNOWN_TOKEN" }, { next_batch: "s3" }];
    const statuses = [200, 401, 200];
    vi.stubGlobal("fetch", async (url: URL) =>
      String(url).includes("/sync") ? new Response(JSON.stringify(bodies.shift()), { status: statuses.shift()! }) : new Response(JSON.stringify({ one_time_key_counts: {} }), { status: 200 }),
    );
    try {
      const client = newClient({ homeserverUrl: "https://hs.example", accessToken: "tok", userId: "@a:hs.example", deviceId: "DEV" }, getLogger("test"));
      const heard: [number, unknown][] = [];
      const off = tapSyncResponses(client, (status, body) => void heard.push([status, body]));
      const sync = () => client.http.authedRequest<{ next_batch?: string }>(Method.Get, "/sync", { since: "s0" });
      expect(await sync()).toEqual({ next_batch: "s1", rooms: { invite: { "!r:x": {} } } });
      await client.http.authedRequest(Method.Post, "/keys/upload", undefined, {}); // not a sync: not handed
      await expect(sync()).rejects.toThrow();
      await tick();
      off();
      await sync();
      await tick();
      expect(heard).toEqual([
        [200, { next_batch: "s1", rooms: { invite: { "!r:x": {} } } }],
        [401, { errcode: "M_UNKNOWN_TOKEN" }],
      ]);
      expect(isSyncRequest("https://hs/_matrix/client/v3/sync?since=s1")).toBe(true);
      expect(isSyncRequest("https://hs/_matrix/client/v3/keys/query")).toBe(false);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe("newDeviceId", () => {
  it("makes ids as Synapse does (ten capital letters), a different one each time", () => {
    const ids = Array.from({ length: 200 }, () => newDeviceId());
    for (const id of ids) expect(id).toMatch(/^[A-Z]{10}$/);
    expect(new Set(ids).size).toBe(200);
    // Every letter turns up (no letter left out by the byte-to-letter mapping).
    expect(new Set(ids.join("")).size).toBe(26);
  });
});

describe("the sync's start, asked ahead (warmSyncStartup, seedFilter)", () => {
  const session = { homeserverUrl: "https://hs.example", accessToken: "tok", userId: "@a:hs.example", deviceId: "DEV" };
  const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });

  it("asks the versions and push rules once, at once; the sync's own ask gets the answer, and the next ask goes to the server", async () => {
    const sent: string[] = [];
    vi.stubGlobal("fetch", async (url: string) => {
      const path = new URL(url).pathname;
      sent.push(path);
      return json(path.endsWith("/versions") ? { versions: ["v1.11"] } : { global: {} });
    });
    try {
      const client = warmSyncStartup(newClient(session, getLogger("test")));
      await tick(5);
      expect(sent.sort()).toEqual(["/_matrix/client/v3/pushrules/", "/_matrix/client/versions"]);
      await client.getVersions();
      await client.getPushRules();
      expect(sent).toHaveLength(2);
      await client.getPushRules();
      expect(sent).toHaveLength(3);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it("a failed early ask is asked again when the sync wants it", async () => {
    let fail = true;
    vi.stubGlobal("fetch", async () => (fail ? new Response("{}", { status: 500 }) : json({ global: {} })));
    try {
      const client = warmSyncStartup(newClient(session, getLogger("test")));
      await tick(5);
      fail = false;
      await expect(client.getPushRules()).resolves.toBeDefined();
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it("the filter uploaded ahead is the one matrix-js-sdk's sync start finds, with no request (its name as matrix-js-sdk makes it)", async () => {
    const sent: string[] = [];
    vi.stubGlobal("fetch", async (url: string, init?: { method?: string }) => {
      sent.push(`${init?.method ?? "GET"} ${new URL(url).pathname}`);
      return json({ filter_id: "fresh" });
    });
    // matrix-js-sdk's memory store keeps filter names in the page's localStorage.
    const items = new Map<string, string>();
    vi.stubGlobal("localStorage", { getItem: (k: string) => items.get(k) ?? null, setItem: (k: string, v: string) => void items.set(k, v), removeItem: (k: string) => void items.delete(k) });
    try {
      const client = newClient(session, getLogger("test"));
      const filter = new Filter(session.userId);
      filter.setDefinition(syncFilterDefinition("!room:hs.example"));
      seedFilter(client, filter, "f1");
      // As SyncApi names the sync's filter (getFilterName in matrix-js-sdk's sync.ts).
      const syncFilter = new Filter(session.userId);
      syncFilter.setDefinition(syncFilterDefinition("!room:hs.example"));
      syncFilter.setLazyLoadMembers(true);
      expect(await client.getOrCreateFilter(`FILTER_SYNC_${session.userId}`, syncFilter)).toBe("f1");
      expect(sent).toEqual([]);
      // None uploaded ahead: the sync uploads its own, as before.
      const other = newClient({ ...session, userId: "@b:hs.example" }, getLogger("test"));
      seedFilter(other, new Filter("@b:hs.example"), null);
      expect(await other.getOrCreateFilter("FILTER_SYNC_@b:hs.example", syncFilter)).toBe("fresh");
      expect(sent).toEqual(["POST /_matrix/client/v3/user/%40b%3Ahs.example/filter"]);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe("traceCryptoCalls (a debug log's account of the crypto calls)", () => {
  /** A client whose crypto has a machine call that ends when the test says, and one that never ends. */
  function tracedClient() {
    let finish!: () => void;
    const machine = {
      receiveSyncChanges: vi.fn(() => new Promise<void>((r) => (finish = r))),
      getUserDevices: vi.fn(() => new Promise<never>(() => undefined)),
    };
    const crypto = { olmMachine: machine, processSyncChanges: vi.fn(async () => []) };
    return { client: { getCrypto: () => crypto } as unknown as MatrixClient, machine, crypto, finish: () => finish() };
  }

  it("logs each call as it starts and as it ends, at debug level: a call that never ends shows without its end", async () => {
    const lines: string[] = [];
    const log = { debug: (m: string) => lines.push(m), info: vi.fn(), warn: vi.fn(), error: vi.fn() };
    setLogLevel("debug");
    try {
      const { client, machine, crypto, finish } = tracedClient();
      const original = machine.receiveSyncChanges;
      traceCryptoCalls(client, log);
      const synced = machine.receiveSyncChanges();
      void machine.getUserDevices();
      await crypto.processSyncChanges();
      expect(lines).toEqual(["crypto call receiveSyncChanges #1", "crypto call getUserDevices #2", "crypto call sync.processSyncChanges #3", "crypto call sync.processSyncChanges #3 done"]);
      finish();
      await synced;
      expect(lines.at(-1)).toBe("crypto call receiveSyncChanges #1 done");
      expect(lines.filter((l) => l.startsWith("crypto call getUserDevices"))).toEqual(["crypto call getUserDevices #2"]); // never ended
      expect(original).toHaveBeenCalledTimes(1); // the call itself, unchanged
    } finally {
      setLogLevel("error");
    }
  });

  it("traces a device's to-device encryption (the Device getDevice gives)", async () => {
    const lines: string[] = [];
    const log = { debug: (m: string) => lines.push(m), info: vi.fn(), warn: vi.fn(), error: vi.fn() };
    setLogLevel("debug");
    try {
      const device = { encryptToDeviceEvent: vi.fn(async () => "{}") };
      const original = device.encryptToDeviceEvent;
      const machine = { getDevice: vi.fn(async () => device) };
      traceCryptoCalls({ getCrypto: () => ({ olmMachine: machine }) } as unknown as MatrixClient, log);
      const got = await machine.getDevice();
      expect(got).toBe(device);
      expect(await got.encryptToDeviceEvent()).toBe("{}");
      expect(original).toHaveBeenCalledTimes(1);
      expect(lines).toEqual(["crypto call getDevice #1", "crypto call getDevice #1 done", "crypto call device.encryptToDeviceEvent #2", "crypto call device.encryptToDeviceEvent #2 done"]);
    } finally {
      setLogLevel("error");
    }
  });

  it("wraps nothing at any other level", () => {
    setLogLevel("info");
    try {
      const { client, machine } = tracedClient();
      const original = machine.receiveSyncChanges;
      traceCryptoCalls(client, getLogger("test"));
      expect(machine.receiveSyncChanges).toBe(original);
    } finally {
      setLogLevel("error");
    }
  });
});
