// The E2EE test device (test/support/cryptoClient.ts) against two federating Synapses: Olm
// to-device media keys between users of different homeservers, only to the devices addressed,
// and a Megolm room message, in a meeting room that Parley created encrypted.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { CryptoClient, loginDevice, type DeviceRef } from "../support/cryptoClient.ts";
import { TestUser } from "../support/matrix.ts";

const KEYS = "io.element.call.encryption_keys";

let stack: Stack;
let A: Institution, B: Institution;
let roomId: string;
let alice: CryptoClient, bob: CryptoClient, bob2: CryptoClient, dave: CryptoClient;
const clients: CryptoClient[] = [];
let failed = false;

const ref = (c: CryptoClient): DeviceRef => ({ userId: c.userId, deviceId: c.deviceId });

/** What an Element Call member sends its peers (MSC4143 to-device key transport), tagged. */
const keysContent = (from: CryptoClient, tag: string) => ({
  keys: { index: 0, key: Buffer.from(`media key ${tag}`).toString("base64") },
  member: { claimed_device_id: from.deviceId },
  room_id: roomId,
  session: { application: "m.call", call_id: "", scope: "m.room" },
  tag,
});

async function start(inst: Institution, u: { userId: string; accessToken: string; deviceId: string }): Promise<CryptoClient> {
  const t0 = performance.now();
  const c = await CryptoClient.start({ baseUrl: inst.synapse.clientUrl, ...u, rooms: [roomId] });
  console.log(`[cryptoClient] ${c.name} started in ${Math.round(performance.now() - t0)} ms`);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  stack = await startInstitutions({ count: 2, allow: (i, hosts) => hosts.filter((_, j) => j !== i), janus: false });
  [A, B] = stack.institutions as [Institution, Institution];
  const [a, b, d] = await Promise.all([A.registerUser("alice"), B.registerUser("bob"), A.registerUser("dave")]);
  // The meeting room Parley provisions on A, encrypted (meetings.encrypted defaults to true).
  roomId = await new TestUser(A.synapse.clientUrl, a.userId, a.accessToken).join(A.alias("e2ee"));
  await new TestUser(B.synapse.clientUrl, b.userId, b.accessToken).join(roomId, [A.serverName]);
  const b2 = await loginDevice(B.synapse.clientUrl, "bob", b.password, "BOBSECOND");
  expect(b2).toMatchObject({ userId: b.userId, deviceId: "BOBSECOND" });
  [alice, bob, bob2] = await Promise.all([start(A, a), start(B, b), start(B, b2)]);
  // dave shares no room with anyone.
  dave = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, ...d });
  clients.push(dave);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.stop()));
  await stack?.stop({ keep: failed || undefined });
});

describe("CryptoClient: Olm to-device messages across two homeservers", () => {
  it("A's device sends media keys to one of B's devices; it arrives decrypted, from A's device", async () => {
    const content = keysContent(alice, "a-to-b");
    await alice.sendToDevice(KEYS, [ref(bob)], content);
    const got = await bob.nextToDevice(KEYS, (m) => m.content.tag === "a-to-b");
    expect(got).toEqual({ type: KEYS, sender: alice.userId, senderDevice: alice.deviceId, encrypted: true, content });
    // The device B's crypto names is the one that holds A's identity keys.
    const own = await alice.client.getCrypto()!.getOwnDeviceKeys();
    expect(await bob.identityKeys(alice.userId, alice.deviceId)).toEqual(own);
  });

  it("B's other device, not addressed, receives nothing", async () => {
    // A later message to bob2 only: once it is in, anything sent to bob2 before it would be too.
    await alice.sendToDevice(KEYS, [ref(bob2)], keysContent(alice, "sentinel"));
    const sentinel = await bob2.nextToDevice(KEYS, (m) => m.content.tag === "sentinel");
    expect(sentinel).toMatchObject({ sender: alice.userId, senderDevice: alice.deviceId, encrypted: true });
    expect(bob2.pendingToDevice(KEYS)).toEqual([]);
  });

  it("B's device sends media keys back to A's device", async () => {
    const content = keysContent(bob, "b-to-a");
    await bob.sendToDevice(KEYS, [ref(alice)], content);
    const got = await alice.nextToDevice(KEYS, (m) => m.content.tag === "b-to-a");
    expect(got).toEqual({ type: KEYS, sender: bob.userId, senderDevice: bob.deviceId, encrypted: true, content });
  });

  it("one send reaches several devices of two users, each decrypting its own copy", async () => {
    const content = keysContent(bob2, "fan-out");
    await bob2.sendToDevice(KEYS, [ref(alice), ref(bob)], content);
    for (const c of [alice, bob]) {
      const got = await c.nextToDevice(KEYS, (m) => m.content.tag === "fan-out");
      expect(got).toEqual({ type: KEYS, sender: bob2.userId, senderDevice: bob2.deviceId, encrypted: true, content });
    }
  });

  it("a device of a user who shares no encrypted room is never known: sending to it fails by name", async () => {
    await expect(alice.waitForDevices([ref(dave)], 2_000)).rejects.toThrow(`${dave.userId}/${dave.deviceId}`);
  });
});

describe("CryptoClient: Megolm room messages", () => {
  it("a message in the encrypted meeting room is ciphertext on the server and plain text to the other side", async () => {
    const body = `hello from A ${Date.now()}`;
    const eventId = await alice.sendText(roomId, body);
    const got = await bob.nextMessage(roomId, (m) => m.body === body);
    expect(got).toEqual({ eventId, roomId, sender: alice.userId, body, msgtype: "m.text", encrypted: true });
    const onServer = (await alice.client.fetchRoomEvent(roomId, eventId)) as { type: string; content: Record<string, unknown> };
    expect(onServer.type).toBe("m.room.encrypted");
    expect(JSON.stringify(onServer.content)).not.toContain(body);
  });
});
