// The bot's Olm device with a fake homeserver (the real one is in test/integration/botCrypto):
// creation, the snapshot on disk, and the same device after a restart.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { CryptoHttp, HttpMethod } from "../../../appservice/src/crypto/http.ts";
import { OlmDevice } from "../../../appservice/src/crypto/olmDevice.ts";
import { SealedFileError } from "../../../appservice/src/crypto/sealedFile.ts";
import { configureLogging } from "../../../appservice/src/log.ts";

const BOT = "@parley:example.org";
const KEY = "k".repeat(64);

interface Call {
  method: HttpMethod;
  path: string;
  body: Record<string, unknown>;
  query: Record<string, string> | undefined;
}

/**
 * Answers what devices ask of a homeserver, for any number of them (told apart by the
 * masquerading query): device keys, one-time keys to claim, a to-device inbox.
 * `fail` makes a path throw while it returns true.
 */
function fakeHomeserver(fail: (path: string) => boolean = () => false) {
  const calls: Call[] = [];
  const deviceKeys: Record<string, Record<string, unknown>> = {};
  const oneTimeKeys = new Map<string, [string, unknown][]>();
  const inbox = new Map<string, Record<string, unknown>[]>();
  const http: CryptoHttp = {
    async request<T>(method: HttpMethod, p: string, body?: unknown, query?: Record<string, string>): Promise<T> {
      calls.push({ method, path: p, body: (body ?? {}) as Record<string, unknown>, query });
      if (fail(p)) throw Object.assign(new Error(`${p} unavailable`), { httpStatus: 502 });
      const me = `${query?.user_id}/${query?.device_id}`;
      if (p === "/keys/upload") {
        const upload = body as { one_time_keys?: Record<string, unknown>; device_keys?: { user_id: string; device_id: string } };
        const mine = oneTimeKeys.get(me) ?? [];
        mine.push(...Object.entries(upload.one_time_keys ?? {}));
        oneTimeKeys.set(me, mine);
        if (upload.device_keys) (deviceKeys[upload.device_keys.user_id] ??= {})[upload.device_keys.device_id] = upload.device_keys;
        return { one_time_key_counts: { signed_curve25519: mine.length } } as T;
      }
      if (p === "/keys/query") {
        const users = Object.keys((body as { device_keys: object }).device_keys);
        return { device_keys: Object.fromEntries(users.map((u) => [u, deviceKeys[u] ?? {}])), failures: {} } as T;
      }
      if (p === "/keys/claim") {
        const wanted = (body as { one_time_keys: Record<string, Record<string, string>> }).one_time_keys;
        const out: Record<string, Record<string, Record<string, unknown>>> = {};
        for (const [user, devices] of Object.entries(wanted)) {
          for (const device of Object.keys(devices)) {
            const key = oneTimeKeys.get(`${user}/${device}`)?.shift();
            if (key) (out[user] ??= {})[device] = Object.fromEntries([key]);
          }
        }
        return { one_time_keys: out, failures: {} } as T;
      }
      if (p.startsWith("/sendToDevice/")) {
        const type = decodeURIComponent(p.split("/")[2]!);
        const messages = (body as { messages: Record<string, Record<string, Record<string, unknown>>> }).messages;
        for (const [user, devices] of Object.entries(messages)) {
          for (const [device, content] of Object.entries(devices)) {
            const box = inbox.get(`${user}/${device}`) ?? [];
            box.push({ type, sender: query?.user_id, content });
            inbox.set(`${user}/${device}`, box);
          }
        }
      }
      return {} as T;
    },
  };
  /** Takes the to-device messages waiting for a device. */
  const take = (userId: string, deviceId: string) => {
    const box = inbox.get(`${userId}/${deviceId}`) ?? [];
    inbox.delete(`${userId}/${deviceId}`);
    return box;
  };
  return { http, calls, take, paths: () => calls.map((c) => `${c.method} ${c.path}`) };
}

/** A well-formed Megolm message (version, index 0, 16 bytes of ciphertext, MAC, signature) of no known session. */
function megolmMessage(): string {
  const body = Buffer.concat([Buffer.from([0x03, 0x08, 0x00, 0x12, 0x10]), Buffer.alloc(16, 1), Buffer.alloc(8, 2), Buffer.alloc(64, 3)]);
  return body.toString("base64").replace(/=+$/, "");
}

let dir: string;
let file: string;
const open: OlmDevice[] = [];

async function openDevice(http: CryptoHttp, opts: { storeKey?: string; userId?: string; file?: string } = {}): Promise<OlmDevice> {
  const d = await OlmDevice.open({ userId: opts.userId ?? BOT, file: opts.file ?? file, storeKey: opts.storeKey ?? KEY, http });
  open.push(d);
  return d;
}

beforeAll(() => configureLogging("silent"));

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-olm-"));
  file = path.join(dir, "crypto.bin");
});

afterEach(async () => {
  for (const d of open.splice(0)) await d.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("OlmDevice.open", () => {
  it("creates a device: snapshot first, then the device on the homeserver (MSC4190), then its keys as that device", async () => {
    const hs = fakeHomeserver();
    const device = await openDevice(hs.http);
    const { deviceId, curve25519, ed25519 } = device.identity();
    expect(deviceId).toMatch(/^PARLEY[A-Z]{8}$/);
    expect(curve25519).toMatch(/^[A-Za-z0-9+/]{43}$/);
    expect(ed25519).toMatch(/^[A-Za-z0-9+/]{43}$/);
    expect(hs.paths().slice(0, 2)).toEqual([`PUT /devices/${deviceId}`, "POST /keys/upload"]);
    expect(hs.calls[0]!.query).toEqual({ user_id: BOT });
    expect(hs.calls[0]!.body).toEqual({ display_name: "Parley" });
    // Masquerading as the bot's device (MSC3202).
    expect(hs.calls[1]!.query).toEqual({ user_id: BOT, device_id: deviceId });
    const upload = hs.calls[1]!.body as { device_keys: { keys: Record<string, string> }; one_time_keys: object };
    expect(upload.device_keys.keys[`curve25519:${deviceId}`]).toBe(curve25519);
    expect(Object.keys(upload.one_time_keys).length).toBeGreaterThan(0);
    expect(existsSync(file)).toBe(true);
    expect(device.snapshotBytes).toBeGreaterThan(1000);
  });

  it("a restarted device is the same device: id, identity keys, and no second upload of its keys", async () => {
    const first = await openDevice(fakeHomeserver().http);
    const identity = first.identity();
    await first.close();
    const hs = fakeHomeserver();
    const again = await openDevice(hs.http);
    expect(again.identity()).toEqual(identity);
    expect(hs.paths()).toEqual([`PUT /devices/${identity.deviceId}`]);
  });

  it("a start that died uploading its keys: the next start is the same device and uploads the very same keys", async () => {
    // The homeserver may have stored keys that the client never heard back about: uploading
    // other keys under the same key ids would be refused for ever. So the snapshot is written
    // before a request leaves, and a restart sends the same one-time keys again.
    const down = fakeHomeserver((p) => p === "/keys/upload");
    await expect(openDevice(down.http)).rejects.toThrow(/keys\/upload unavailable/);
    const putDevice = down.calls.find((c) => c.path.startsWith("/devices/"))!.path;
    const failed = down.calls.find((c) => c.path === "/keys/upload")!.body;
    const hs = fakeHomeserver();
    const device = await openDevice(hs.http);
    expect(`/devices/${device.deviceId}`).toBe(putDevice);
    expect(hs.paths().slice(0, 2)).toEqual([`PUT ${putDevice}`, "POST /keys/upload"]);
    expect(hs.calls[1]!.body.one_time_keys).toEqual(failed.one_time_keys);
    expect(Object.keys(failed.one_time_keys as object).length).toBeGreaterThan(0);
  });

  it("refuses a store key that does not open the snapshot, and leaves the file alone", async () => {
    await (await openDevice(fakeHomeserver().http)).close();
    const before = readFileSync(file);
    await expect(openDevice(fakeHomeserver().http, { storeKey: "w".repeat(64) })).rejects.toThrow(SealedFileError);
    expect(readFileSync(file).equals(before)).toBe(true);
  });

  it("refuses the snapshot of another user", async () => {
    await (await openDevice(fakeHomeserver().http)).close();
    await expect(openDevice(fakeHomeserver().http, { userId: "@other:example.org" })).rejects.toThrow(
      /holds the device of @parley:example.org, not of @other:example.org/,
    );
  });

  it("an older snapshot still opens (the file is replaced whole, never half-written)", async () => {
    const first = await openDevice(fakeHomeserver().http);
    const identity = first.identity();
    const older = path.join(dir, "older.bin");
    copyFileSync(file, older);
    await first.receive({ toDevice: [], changed: [], left: [], oneTimeKeyCounts: { signed_curve25519: 0 } });
    await first.close();
    copyFileSync(older, file);
    expect((await openDevice(fakeHomeserver().http)).identity()).toEqual(identity);
  });
});

describe("OlmDevice at work", () => {
  it("uploads one-time keys when the homeserver counts none left; a failed upload is retried later", async () => {
    let down = true;
    const hs = fakeHomeserver((p) => down && p === "/keys/upload");
    down = false;
    const device = await openDevice(hs.http);
    down = true;
    hs.calls.length = 0;
    await device.receive({ toDevice: [], changed: [], left: [], oneTimeKeyCounts: {} });
    expect(hs.paths()).toEqual(["POST /keys/upload"]); // failed, logged, kept by the machine
    down = false;
    await device.retryOutgoing();
    expect(hs.paths()).toEqual(["POST /keys/upload", "POST /keys/upload"]);
    await device.retryOutgoing();
    expect(hs.paths()).toHaveLength(2);
  });

  it("what is on disk when a request leaves is the state it came from (a crash right after sending loses nothing)", async () => {
    let crashCopy: string | undefined;
    const hs = fakeHomeserver();
    const device = await openDevice({
      request: async (method, p, body, query) => {
        // The process dies the moment the new one-time keys are on the wire: keep the file as it is now.
        if (p === "/keys/upload" && crashCopy === undefined && open.length === 1) {
          crashCopy = path.join(dir, "at-crash.bin");
          copyFileSync(file, crashCopy);
        }
        return hs.http.request(method, p, body, query);
      },
    });
    hs.calls.length = 0;
    await device.receive({ toDevice: [], changed: [], left: [], oneTimeKeyCounts: {} });
    const sent = hs.calls.find((c) => c.path === "/keys/upload")!.body.one_time_keys;
    expect(Object.keys(sent as object).length).toBeGreaterThan(0);
    await device.close();
    open.length = 0;
    copyFileSync(crashCopy!, file);
    const again = fakeHomeserver();
    await openDevice(again.http);
    await (open[0] as OlmDevice).receive({ toDevice: [], changed: [], left: [], oneTimeKeyCounts: {} });
    expect(again.calls.find((c) => c.path === "/keys/upload")?.body.one_time_keys).toEqual(sent);
  });

  it("key counts left out mean unchanged: nothing to upload", async () => {
    const hs = fakeHomeserver();
    const device = await openDevice(hs.http);
    hs.calls.length = 0;
    await device.receive({ toDevice: [], changed: [], left: [] });
    expect(hs.paths()).toEqual([]);
  });

  it("answers an undecryptable room event with a reason, never a throw", async () => {
    const device = await openDevice(fakeHomeserver().http);
    const event = {
      event_id: "$e",
      room_id: "!r:example.org",
      sender: "@alice:example.org",
      type: "m.room.encrypted",
      origin_server_ts: 1,
      content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: megolmMessage(), device_id: "ALICE", sender_key: "A".repeat(43), session_id: "B".repeat(43) },
    };
    expect(await device.decryptRoomEvent(event)).toMatchObject({ ok: false, retry: true });
    expect(await device.decryptRoomEvent({ ...event, content: { algorithm: "m.unknown" } })).toMatchObject({ ok: false, retry: false });
    expect(await device.decryptRoomEvent({ ...event, room_id: undefined })).toEqual({ ok: false, retry: false, reason: "no room_id" });
  });
});

describe("OlmDevice.sendToDevices", () => {
  const ALICE = "@alice:example.org";
  const noChanges = { changed: [], left: [] };

  it("Olm-encrypts for each device, which decrypts it; an unknown device is reported, not thrown", async () => {
    const hs = fakeHomeserver();
    const bot = await openDevice(hs.http);
    const alice = await openDevice(hs.http, { userId: ALICE, file: path.join(dir, "alice.bin") });
    const target = { userId: ALICE, deviceId: alice.deviceId };
    const ghost = { userId: ALICE, deviceId: "GHOST" };
    expect(await bot.sendToDevices("org.parley.key", [target, ghost], { key: "media-key-1" })).toEqual({ sent: [target], unreachable: [ghost] });
    const inbox = hs.take(ALICE, alice.deviceId);
    expect(inbox).toMatchObject([{ type: "m.room.encrypted", sender: BOT, content: { algorithm: "m.olm.v1.curve25519-aes-sha2" } }]);
    expect(JSON.stringify(inbox)).not.toContain("media-key"); // "-" is not base64: only clear text could hold it
    const clear = await alice.receive({ toDevice: inbox, ...noChanges });
    expect(clear).toEqual([{ type: "org.parley.key", sender: BOT, content: { key: "media-key-1" }, encrypted: true }]);
    // The Olm session goes on: a second message needs no new one-time key.
    hs.calls.length = 0;
    await bot.sendToDevices("org.parley.key", [target], { key: "k2" });
    expect(hs.paths().filter((p) => p.includes("/keys/claim"))).toEqual([]);
    expect(await alice.receive({ toDevice: hs.take(ALICE, alice.deviceId), ...noChanges })).toMatchObject([{ content: { key: "k2" } }]);
  });

  it("a device newer than the bot's copy of its user's device list is found by asking again", async () => {
    const hs = fakeHomeserver();
    const bot = await openDevice(hs.http);
    // The bot tracks alice while she has no device yet...
    expect(await bot.sendToDevices("org.parley.key", [{ userId: ALICE, deviceId: "LATER" }], { key: "k0" })).toMatchObject({ sent: [] });
    // ...then her device appears, and no device-list change reaches the bot.
    const alice = await openDevice(hs.http, { userId: ALICE, file: path.join(dir, "alice.bin") });
    const target = { userId: ALICE, deviceId: alice.deviceId };
    expect(await bot.sendToDevices("org.parley.key", [target], { key: "k1" })).toEqual({ sent: [target], unreachable: [] });
    expect(await alice.receive({ toDevice: hs.take(ALICE, alice.deviceId), ...noChanges })).toMatchObject([{ content: { key: "k1" } }]);
  });

  it("survives a restart of the bot: the Olm session with the device comes back from disk", async () => {
    const hs = fakeHomeserver();
    let bot = await openDevice(hs.http);
    const alice = await openDevice(hs.http, { userId: ALICE, file: path.join(dir, "alice.bin") });
    const target = { userId: ALICE, deviceId: alice.deviceId };
    await bot.sendToDevices("org.parley.key", [target], { key: "k1" });
    await alice.receive({ toDevice: hs.take(ALICE, alice.deviceId), ...noChanges });
    await bot.close();
    open.splice(open.indexOf(bot), 1);
    bot = await openDevice(hs.http);
    hs.calls.length = 0;
    await bot.sendToDevices("org.parley.key", [target], { key: "k2" });
    expect(hs.paths().filter((p) => p.includes("/keys/claim"))).toEqual([]);
    expect(await alice.receive({ toDevice: hs.take(ALICE, alice.deviceId), ...noChanges })).toMatchObject([{ content: { key: "k2" } }]);
  });
});
