// The bot's Olm device against a real Synapse and Parley process: `!meet` in an encrypted room
// from a user whose client runs matrix-js-sdk's Rust crypto is answered with a Megolm-encrypted
// notice that the user decrypts; a restarted bot (clean stop, and SIGKILL) is the same device,
// with the same identity keys, and still decrypts and answers.
import { createClient, Method } from "matrix-js-sdk";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { clientHttp } from "../../appservice/src/crypto/http.ts";
import { OlmDevice } from "../../appservice/src/crypto/olmDevice.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { CryptoClient, loginDevice } from "../support/cryptoClient.ts";
import { TestUser, waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution;
let alice: TestUser;
let alicePassword: string;
let aliceDevice: CryptoClient;
const clients: CryptoClient[] = [];
let roomId: string;
let failed = false;

/** The bot's one device as a user's homeserver lists it (what a client Olm-encrypts to), with its identity keys. */
const onlyBotDevice = () => alice.onlyDeviceOf(A.botUserId);

/** Sends `text` from alice's E2EE device and waits for the bot's reply, decrypted. */
async function ask(text: string, reply: (body: string) => boolean) {
  const sent = await aliceDevice.sendText(roomId, text);
  const answer = await aliceDevice.nextMessage(roomId, (m) => m.sender === A.botUserId && reply(m.body), 45_000);
  // What the homeserver stored: ciphertext only, for the command and for the answer.
  const stored = await alice.messages(roomId, 30);
  expect(stored.find((e) => e.event_id === sent)?.type).toBe("m.room.encrypted");
  const ciphertext = stored.find((e) => e.event_id === answer.eventId);
  expect(ciphertext?.type).toBe("m.room.encrypted");
  expect(ciphertext?.content).toMatchObject({ algorithm: "m.megolm.v1.aes-sha2", device_id: (await onlyBotDevice()).deviceId });
  return { ...answer, megolmSession: String(ciphertext?.content.session_id) };
}

let firstSession: string;

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: false });
  [A] = stack.institutions as [Institution];
  const a = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, a.userId, a.accessToken);
  alicePassword = a.password;
  // A meeting room Parley creates on demand: encrypted (meetings.encrypted defaults to true).
  roomId = await alice.join(A.alias("secret"));
  aliceDevice = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, ...a, rooms: [roomId] });
  clients.push(aliceDevice);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.stop()));
  await stack?.stop({ keep: failed || undefined });
});

describe("the bot in an encrypted room", () => {
  it("the room is encrypted and the bot has one device with keys on the homeserver", async () => {
    expect(await alice.stateEvent(roomId, "m.room.encryption")).toMatchObject({ algorithm: "m.megolm.v1.aes-sha2" });
    const device = await onlyBotDevice();
    expect(device.deviceId).toMatch(/^PARLEY[A-Z]{8}$/);
    expect(device.curve25519).toMatch(/^[A-Za-z0-9+/]{43}$/);
  });

  it("answers !meet with a Megolm-encrypted notice that the user decrypts", async () => {
    const answer = await ask("!meet", (body) => body.startsWith("Call started by"));
    expect(answer).toMatchObject({ encrypted: true, msgtype: "m.notice", body: expect.stringContaining(alice.userId) });
    expect((await A.parleyStore().activeCall(roomId))?.startedBy).toBe(alice.userId);
    firstSession = answer.megolmSession;
  });

  it("keeps its device id and identity keys across a restart, and still decrypts and answers", async () => {
    const before = await onlyBotDevice();
    expect(await aliceDevice.identityKeys(A.botUserId, before.deviceId)).toEqual({ curve25519: before.curve25519, ed25519: before.ed25519 });
    await A.parley.restart();
    expect(await onlyBotDevice()).toEqual(before);
    const answer = await ask("!meet status", (body) => body.startsWith("A call is running"));
    expect(answer.encrypted).toBe(true);
    // The bot's outbound Megolm session came back from disk: no new session, no re-share.
    expect(answer.megolmSession).toBe(firstSession);
  });

  it("a SIGKILL loses nothing: same device after a crash, and the Olm and Megolm sessions still work", async () => {
    const before = await onlyBotDevice();
    await A.parley.kill9();
    await A.parley.restart();
    expect(await onlyBotDevice()).toEqual(before);
    const answer = await ask("!meet help", (body) => body.startsWith("Parley video meetings"));
    expect(answer.encrypted).toBe(true);
    expect(answer.megolmSession).toBe(firstSession);
  });

  it("keeps its device encrypted at rest and its key out of the logs", () => {
    const { path, storeKey } = A.parley.config.crypto!;
    const file = readFileSync(path);
    expect(file.subarray(0, 8).toString("ascii")).toBe("PARLEYv1");
    expect(file.includes(Buffer.from(A.botUserId))).toBe(false);
    expect(readFileSync(A.parley.logFile, "utf8")).not.toContain(storeKey);
  });
});

describe("a chat room that turns encrypted after the bot joined", () => {
  it("answers in the clear first, then Megolm-encrypted once m.room.encryption arrives", async () => {
    const chat = await alice.createRoom({ preset: "private_chat", name: "Team chat" });
    await alice.invite(chat, A.botUserId);
    await waitFor("the bot to join", async () => ((await alice.stateEvent(chat, "m.room.member", A.botUserId))?.membership === "join" ? true : undefined));
    const login = await loginDevice(A.synapse.clientUrl, "alice", alicePassword, "ALICECHAT");
    const device = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, ...login, rooms: [chat] });
    clients.push(device);

    await device.sendText(chat, "!meet help");
    const clear = await device.nextMessage(chat, (m) => m.sender === A.botUserId && m.body.startsWith("Parley video meetings"), 30_000);
    expect(clear.encrypted).toBe(false);

    await alice.request(Method.Put, `/rooms/${encodeURIComponent(chat)}/state/m.room.encryption/`, { algorithm: "m.megolm.v1.aes-sha2" });
    await waitFor("alice's client to see the room encrypted", async () => (device.client.getRoom(chat)?.hasEncryptionStateEvent() ? true : undefined));
    await device.sendText(chat, "!meet status");
    const answer = await device.nextMessage(chat, (m) => m.sender === A.botUserId && m.body.startsWith("No call is running"), 30_000);
    expect(answer.encrypted).toBe(true);
  });
});

describe("sendToDevices", () => {
  it("Olm-encrypts a message for each device, which the device decrypts; unknown devices are reported", async () => {
    // A second device of the same code, in this process, for a user in Parley's namespace (the
    // bot's own device lives in the Parley process).
    const { asToken, userPrefix } = A.parley.config.appservice;
    const userId = `@${userPrefix}keys:${A.serverName}`;
    const http = clientHttp(createClient({ baseUrl: A.synapse.clientUrl, accessToken: asToken, userId }));
    await http.request("POST", "/register", { type: "m.login.application_service", username: `${userPrefix}keys`, inhibit_login: true });
    const dir = mkdtempSync(path.join(tmpdir(), "parley-olm-"));
    const device = await OlmDevice.open({ userId, file: path.join(dir, "device.bin"), storeKey: "k".repeat(64), http });
    try {
      const alices = { userId: alice.userId, deviceId: aliceDevice.deviceId };
      const nobody = { userId: alice.userId, deviceId: "NOSUCHDEVICE" };
      const outcome = await device.sendToDevices("org.parley.test", [alices, nobody], { hello: "alice" });
      expect(outcome).toEqual({ sent: [alices], unreachable: [nobody] });
      const got = await aliceDevice.nextToDevice("org.parley.test", (m) => m.sender === userId, 30_000);
      expect(got).toMatchObject({ encrypted: true, content: { hello: "alice" } });
    } finally {
      await device.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
