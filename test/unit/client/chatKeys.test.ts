// Media keys from matrix-js-sdk's Rust crypto: the sender is the Olm-authenticated device, never
// the device the content claims.
import type { MatrixClient } from "matrix-js-sdk";
import { describe, expect, it, vi } from "vitest";
import { MAX_QUERIED_USERS, olmKeyMessage, sendToDevices } from "../../../client/src/matrix/roomFeed.ts";
import { CALL_KEYS_EVENT } from "../../../client/src/rtc/e2ee/keyShare.ts";

const content = { member: { claimed_device_id: "ALICEDEV" }, keys: { index: 0, key: "AA" } };

describe("olmKeyMessage", () => {
  it("names the device Olm decrypted the message from", () => {
    expect(olmKeyMessage({ message: { type: CALL_KEYS_EVENT, content }, encryptionInfo: { sender: "@carol:a", senderDevice: "CAROLDEV" } })).toEqual({
      from: { userId: "@carol:a", deviceId: "CAROLDEV" },
      content,
    });
  });

  it("does not fall back to the claimed device when Olm names none", () => {
    for (const senderDevice of [undefined, null, ""]) {
      expect(olmKeyMessage({ message: { type: CALL_KEYS_EVENT, content }, encryptionInfo: { sender: "@alice:a", senderDevice } })?.from).toEqual({ userId: "@alice:a", deviceId: null });
    }
  });

  it("ignores what was not Olm-encrypted, and other types", () => {
    expect(olmKeyMessage({ message: { type: CALL_KEYS_EVENT, content }, encryptionInfo: null })).toBeNull();
    expect(olmKeyMessage({ message: { type: "m.other", content }, encryptionInfo: { sender: "@a:a", senderDevice: "A" } })).toBeNull();
  });
});

// The key query's user ids (the real ones need the wasm module loaded, as the browser has it).
const { FakeId } = vi.hoisted(() => ({
  FakeId: class {
    readonly id: string;
    constructor(id: string) {
      this.id = id;
    }
    toString(): string {
      return this.id;
    }
  },
}));
vi.mock("@matrix-org/matrix-sdk-crypto-wasm", () => ({ UserId: FakeId, DeviceId: FakeId }));

describe("sendToDevices", () => {
  const BOB = { userId: "@bob:b", deviceId: "BDEV" };
  const CAROL = { userId: "@carol:c", deviceId: "CDEV" };

  function fakeClient(results: ("throw" | "ok" | "unknown-carol" | "none")[], sendFails = false) {
    const queued: string[][] = [];
    const passes: number[] = [];
    /** The users of each key query made outside the machine's own (queryKeysForUsers, sent at once). */
    const queried: string[][] = [];
    const crypto = {
      outgoingRequestsManager: { doProcessOutgoingRequests: async () => void passes.push(passes.length) },
      olmMachine: { queryKeysForUsers: (users: { toString(): string }[]) => ({ users: users.map(String) }) },
      outgoingRequestProcessor: { makeOutgoingRequest: async (req: { users: string[] }) => void queried.push(req.users) },
      encryptToDeviceMessages: async (_type: string, devices: { userId: string; deviceId: string }[]) => {
        const r = results.shift() ?? "ok";
        if (r === "throw") throw new Error("encryption failed because the device does not have a valid Olm session with us");
        const reached = r === "none" ? [] : r === "unknown-carol" ? devices.filter((d) => d.deviceId !== "CDEV") : devices;
        return { eventType: "m.room.encrypted", batch: reached.map((d) => ({ userId: d.userId, deviceId: d.deviceId, payload: {} })) };
      },
    };
    const client = {
      getCrypto: () => crypto,
      sendToDevice: async (type: string, map: Map<string, Map<string, unknown>>) => {
        if (type !== "m.room.encrypted") throw new Error(`sent as ${type}`);
        if (sendFails) throw new Error("M_UNKNOWN: the homeserver failed");
        queued.push([...map.values()].flatMap((devices) => [...devices.keys()]));
        return {};
      },
    };
    return { client: client as unknown as MatrixClient, queued, passes, queried };
  }

  it("tries again when the encryption throws for a device with no Olm session yet (known after the claim)", async () => {
    const f = fakeClient(["throw", "ok"]);
    expect(await sendToDevices(f.client, [BOB, CAROL], {}, false)).toEqual([]);
    expect(f.queued).toEqual([["BDEV", "CDEV"]]);
    expect(f.passes).toHaveLength(1); // the key query and claim ran again before the second try
  });

  it("returns the devices it could not reach, for the caller to try later, when it keeps failing", async () => {
    const f = fakeClient(["throw", "throw", "throw"]);
    expect(await sendToDevices(f.client, [BOB, CAROL], {}, false)).toEqual([BOB, CAROL]);
    expect(f.queued).toEqual([]);
  });

  it("sends to the devices it can and tries the rest again, after asking at once for the keys of the users whose devices it did not know", async () => {
    const f = fakeClient(["unknown-carol", "ok"]);
    expect(await sendToDevices(f.client, [BOB, CAROL], {}, false)).toEqual([]);
    expect(f.queued).toEqual([["BDEV"], ["CDEV"]]);
    expect(f.queried).toEqual([[CAROL.userId]]);
    // Every device known: no query of its own.
    const known = fakeClient(["ok"]);
    await sendToDevices(known.client, [BOB, CAROL], {}, false);
    expect(known.queried).toEqual([]);
  });

  it(`asks the keys of at most MAX_QUERIED_USERS (${MAX_QUERIED_USERS}) users at once, each once`, async () => {
    const f = fakeClient(["none", "ok"]);
    const devices = Array.from({ length: MAX_QUERIED_USERS + 5 }, (_, i) => ({ userId: `@u${i}:x`, deviceId: "D" }));
    expect(await sendToDevices(f.client, [...devices, { userId: "@u0:x", deviceId: "D2" }], {}, false)).toEqual([]);
    expect(f.queried).toHaveLength(1);
    expect(f.queried[0]).toEqual(devices.slice(0, MAX_QUERIED_USERS).map((d) => d.userId));
  });

  it("sends at once (not through the to-device queue), by user then device, and a failed send throws for the caller to try again", async () => {
    const f = fakeClient(["ok"]);
    expect(await sendToDevices(f.client, [BOB, CAROL, { userId: BOB.userId, deviceId: "B2" }], {}, false)).toEqual([]);
    expect(f.queued).toEqual([["BDEV", "B2", "CDEV"]]);
    const failing = fakeClient(["ok"], true);
    await expect(sendToDevices(failing.client, [BOB], {}, false)).rejects.toThrow(/homeserver failed/);
  });
});

describe("sendToDevices: one device without an Olm session (its one-time keys not up when claimed)", () => {
  /** A crypto with Olm sessions with the devices in `sessions` only, and a client recording what it sends. */
  function sessionsClient(sessions: Set<string>, onQueries: () => void = () => undefined) {
    const sent: Record<string, Record<string, unknown>>[] = [];
    const batches = vi.fn(async (_type: string, devices: { userId: string; deviceId: string }[], payload: unknown) => {
      const missing = devices.find((d) => !sessions.has(`${d.userId}|${d.deviceId}`));
      if (missing) throw new Error(`device ${missing.deviceId} does not have a valid Olm session`);
      return { eventType: "m.room.encrypted", batch: devices.map((d) => ({ ...d, payload: { ciphertext: JSON.stringify(payload) } })) };
    });
    const crypto = {
      encryptToDeviceMessages: batches,
      outgoingRequestsManager: { doProcessOutgoingRequests: async () => onQueries() },
      olmMachine: {
        getDevice: async (user: { toString(): string }, device: { toString(): string }) => {
          const id = `${user.toString()}|${device.toString()}`;
          return {
            encryptToDeviceEvent: async (_type: string, content: unknown) => {
              if (!sessions.has(id)) throw new Error("does not have a valid Olm session");
              return JSON.stringify({ ciphertext: JSON.stringify(content) });
            },
            free: () => undefined,
          };
        },
      },
    };
    const client = {
      getCrypto: () => crypto,
      sendToDevice: vi.fn(async (_type: string, map: Map<string, Map<string, Record<string, unknown>>>) => {
        sent.push(Object.fromEntries([...map].map(([u, ds]) => [u, Object.fromEntries(ds)])));
        return {};
      }),
    };
    return { client: client as unknown as MatrixClient, sent, batches };
  }

  it("sends to every device it has a session with, and returns only the device without one", async () => {
    const { client, sent } = sessionsClient(new Set(["@bob:b|BOB", "@carol:a|CAROL"]));
    const devices = [
      { userId: "@bob:b", deviceId: "BOB" },
      { userId: "@erin:b", deviceId: "ERIN" },
      { userId: "@carol:a", deviceId: "CAROL" },
    ];
    const missing = await sendToDevices(client, devices, { keys: { index: 1, key: "k" } }, false);
    expect(missing).toEqual([{ userId: "@erin:b", deviceId: "ERIN" }]);
    // Bob and Carol got it in the first send, not after the retries.
    expect(Object.keys(sent[0]!).sort()).toEqual(["@bob:b", "@carol:a"]);
    expect(sent.flatMap((m) => Object.keys(m))).not.toContain("@erin:b");
  });

  it("a device whose session comes in a later attempt is sent it then, once", async () => {
    const sessions = new Set(["@bob:b|BOB"]);
    // The second attempt runs the machine's pending requests first: Erin's keys and claim come in.
    const { client, sent } = sessionsClient(sessions, () => sessions.add("@erin:b|ERIN"));
    expect(await sendToDevices(client, [{ userId: "@bob:b", deviceId: "BOB" }, { userId: "@erin:b", deviceId: "ERIN" }], { k: 1 }, false)).toEqual([]);
    expect(sent.map((m) => Object.keys(m))).toEqual([["@bob:b"], ["@erin:b"]]);
  });
});
