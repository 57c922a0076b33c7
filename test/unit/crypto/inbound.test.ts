import { beforeAll, describe, expect, it } from "vitest";
import { changesFor, CryptoInbound, PENDING_LIMIT, PENDING_TTL_MS } from "../../../appservice/src/crypto/inbound.ts";
import type { ClearToDevice, RoomDecryption, SyncChanges } from "../../../appservice/src/crypto/olmDevice.ts";
import { configureLogging } from "../../../appservice/src/log.ts";
import type { TransactionParts } from "../../../appservice/src/matrix/appserviceHttp.ts";
import type { RawEvent } from "../../../appservice/src/matrix/events.ts";

const BOT = "@parley:example.org";
const DEV = "PARLEYDEV";

const parts = (p: Partial<TransactionParts>): TransactionParts => ({
  toDevice: [],
  deviceLists: { changed: [], left: [] },
  oneTimeKeyCounts: {},
  unusedFallbackKeyTypes: {},
  ...p,
});

const encrypted = (id: string, sender = "@alice:example.org"): RawEvent => ({
  event_id: id,
  room_id: "!r:example.org",
  sender,
  type: "m.room.encrypted",
  content: { algorithm: "m.megolm.v1.aes-sha2", session_id: "s" },
});

/** A device whose keys are the set `known`: events decrypt once their id is in it. */
function fakeDevice() {
  const known = new Set<string>();
  const received: SyncChanges[] = [];
  let toDeviceOut: ClearToDevice[] = [];
  return {
    known,
    received,
    willReceive(events: ClearToDevice[]) {
      toDeviceOut = events;
    },
    device: {
      userId: BOT,
      deviceId: DEV,
      async receive(changes: SyncChanges) {
        received.push(changes);
        return toDeviceOut;
      },
      async decryptRoomEvent(event: Record<string, unknown>): Promise<RoomDecryption> {
        if (event.event_id === "$broken") return { ok: false, retry: false, reason: "bad MAC" };
        if (!known.has(String(event.event_id))) return { ok: false, retry: true, reason: "missing room key" };
        return { ok: true, type: "m.room.message", content: { msgtype: "m.text", body: `clear ${String(event.event_id)}` }, senderDevice: "ALICE" };
      },
    },
  };
}

function setup(now = () => 0) {
  const fake = fakeDevice();
  const routed: RawEvent[] = [];
  const noted: [string, Record<string, unknown>][] = [];
  const inbound = new CryptoInbound({
    device: fake.device,
    rooms: { noteEncryption: (roomId, content) => noted.push([roomId, content]) },
    route: async (e) => {
      routed.push(e);
    },
    now,
  });
  return { fake, inbound, routed, noted };
}

const roomKey: ClearToDevice = { type: "m.room_key", sender: "@alice:example.org", content: {}, encrypted: true };

beforeAll(() => configureLogging("silent"));

describe("changesFor", () => {
  it("keeps the to-device messages and counts of this device only, without the recipient fields", () => {
    const mine = { type: "m.room.encrypted", sender: "@a:x", content: { c: 1 }, to_user_id: BOT, to_device_id: DEV };
    const p = parts({
      toDevice: [mine, { ...mine, to_device_id: "OTHER" }, { ...mine, to_user_id: "@_parley_guest:example.org" }],
      deviceLists: { changed: ["@a:x"], left: ["@b:x"] },
      oneTimeKeyCounts: { [BOT]: { [DEV]: { signed_curve25519: 3 }, OTHER: { signed_curve25519: 9 } } },
      unusedFallbackKeyTypes: { [BOT]: { [DEV]: [] } },
    });
    expect(changesFor(p, BOT, DEV)).toEqual({
      toDevice: [{ type: "m.room.encrypted", sender: "@a:x", content: { c: 1 } }],
      changed: ["@a:x"],
      left: ["@b:x"],
      oneTimeKeyCounts: { signed_curve25519: 3 },
      unusedFallbackKeyTypes: [],
    });
  });

  it("is undefined when nothing concerns this device", () => {
    const other = { type: "t", sender: "@a:x", content: {}, to_user_id: BOT, to_device_id: "OTHER" };
    expect(changesFor(parts({ toDevice: [other], oneTimeKeyCounts: { [BOT]: { OTHER: {} } } }), BOT, DEV)).toBeUndefined();
  });

  it("keeps an empty count map: the device has no one-time key left", () => {
    expect(changesFor(parts({ oneTimeKeyCounts: { [BOT]: { [DEV]: {} } } }), BOT, DEV)?.oneTimeKeyCounts).toEqual({});
  });
});

describe("CryptoInbound", () => {
  it("routes clear events as they are, and decrypted ones as the event they carry", async () => {
    const { fake, inbound, routed } = setup();
    fake.known.add("$1");
    const clear = { event_id: "$0", room_id: "!r:example.org", sender: "@alice:example.org", type: "m.room.message", content: { body: "hi" } };
    await inbound.onEvent(clear);
    await inbound.onEvent(encrypted("$1"));
    expect(routed).toEqual([clear, { ...encrypted("$1"), type: "m.room.message", content: { msgtype: "m.text", body: "clear $1" } }]);
  });

  it("notes m.room.encryption and still routes it", async () => {
    const { inbound, routed, noted } = setup();
    const ev = { event_id: "$e", room_id: "!r:example.org", sender: "@a:x", type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } };
    await inbound.onEvent(ev);
    expect(noted).toEqual([["!r:example.org", { algorithm: "m.megolm.v1.aes-sha2" }]]);
    expect(routed).toEqual([ev]);
  });

  it("ignores the bot's own encrypted notices coming back", async () => {
    const { inbound, routed } = setup();
    await inbound.onEvent(encrypted("$mine", BOT));
    expect(routed).toEqual([]);
    expect(inbound.pendingCount).toBe(0);
  });

  it("an event whose room key comes later is routed when a transaction brings the key", async () => {
    const { fake, inbound, routed } = setup();
    await inbound.onEvent(encrypted("$late"));
    expect(routed).toEqual([]);
    expect(inbound.pendingCount).toBe(1);
    // A transaction without room keys changes nothing.
    await inbound.onTransactionParts(parts({ deviceLists: { changed: ["@a:x"], left: [] } }));
    expect(inbound.pendingCount).toBe(1);
    fake.known.add("$late");
    fake.willReceive([roomKey]);
    await inbound.onTransactionParts(parts({ toDevice: [{ type: "m.room.encrypted", sender: "@alice:example.org", content: {}, to_user_id: BOT, to_device_id: DEV }] }));
    expect(routed.map((e) => e.content)).toEqual([{ msgtype: "m.text", body: "clear $late" }]);
    expect(inbound.pendingCount).toBe(0);
  });

  it("drops events that cannot decrypt for good, or whose key never came, without throwing", async () => {
    let t = 0;
    const { fake, inbound, routed } = setup(() => t);
    await inbound.onEvent(encrypted("$broken"));
    expect(inbound.pendingCount).toBe(0);
    await inbound.onEvent(encrypted("$old"));
    t = PENDING_TTL_MS + 1;
    await inbound.onEvent(encrypted("$new"));
    expect(inbound.pendingCount).toBe(1); // $old expired when $new came
    t = 2 * PENDING_TTL_MS + 2;
    fake.willReceive([roomKey]);
    await inbound.onTransactionParts(parts({ deviceLists: { changed: ["@a:x"], left: [] } }));
    expect(inbound.pendingCount).toBe(0);
    expect(routed).toEqual([]);
  });

  it("keeps at most PENDING_LIMIT events waiting, forgetting the oldest", async () => {
    const { fake, inbound, routed } = setup();
    for (let i = 0; i <= PENDING_LIMIT; i++) await inbound.onEvent(encrypted(`$${i}`));
    expect(inbound.pendingCount).toBe(PENDING_LIMIT);
    fake.known.add("$0");
    fake.known.add(`$${PENDING_LIMIT}`);
    fake.willReceive([roomKey]);
    await inbound.onTransactionParts(parts({ deviceLists: { changed: ["@a:x"], left: [] } }));
    expect(routed.map((e) => e.event_id)).toEqual([`$${PENDING_LIMIT}`]);
  });

  it("a failure while handling a late event is logged, not thrown (its transaction is long acknowledged)", async () => {
    const fake = fakeDevice();
    const inbound = new CryptoInbound({
      device: fake.device,
      rooms: { noteEncryption: () => undefined },
      route: async () => {
        throw new Error("homeserver down");
      },
    });
    await inbound.onEvent(encrypted("$x"));
    fake.known.add("$x");
    fake.willReceive([roomKey]);
    await expect(inbound.onTransactionParts(parts({ deviceLists: { changed: ["@a:x"], left: [] } }))).resolves.toBeUndefined();
  });

  it("hands the clear to-device events to onToDevice", async () => {
    const { fake, inbound } = setup();
    const seen: ClearToDevice[] = [];
    inbound.onToDevice = (events) => seen.push(...events);
    const keys: ClearToDevice = { type: "io.element.call.encryption_keys", sender: "@a:x", content: { k: 1 }, encrypted: true };
    fake.willReceive([keys]);
    await inbound.onTransactionParts(parts({ deviceLists: { changed: ["@a:x"], left: [] } }));
    expect(seen).toEqual([keys]);
    expect(fake.received).toHaveLength(1);
  });
});
