import { describe, expect, it } from "vitest";
import type { Homeserver, Notice } from "../../../appservice/src/calls/ports.ts";
import { EncryptedRooms, withEncryptedNotices } from "../../../appservice/src/crypto/encryptedRooms.ts";
import type { CryptoHttp, HttpMethod } from "../../../appservice/src/crypto/http.ts";
import type { MegolmSettings } from "../../../appservice/src/crypto/olmDevice.ts";

const ROOM = "!r:example.org";
const CLEAR = "!clear:example.org";

function setup() {
  const calls: { method: HttpMethod; path: string; body: unknown; query?: Record<string, string> | undefined }[] = [];
  const http: CryptoHttp = {
    async request<T>(method: HttpMethod, path: string, body?: unknown, query?: Record<string, string>): Promise<T> {
      calls.push({ method, path, body, query });
      if (path === `/rooms/${encodeURIComponent(ROOM)}/state/m.room.encryption/`) {
        return { algorithm: "m.megolm.v1.aes-sha2", rotation_period_msgs: 50 } as T;
      }
      if (path.endsWith("/state/m.room.encryption/")) throw Object.assign(new Error("not found"), { errcode: "M_NOT_FOUND" });
      if (path.endsWith("/members")) {
        return {
          chunk: [
            { state_key: "@alice:example.org", content: { membership: "join" } },
            { state_key: "@bob:remote.org", content: { membership: "invite" } },
            { state_key: "@carol:example.org", content: { membership: "ban" } },
            { state_key: "@parley:example.org", content: { membership: "join" } },
          ],
        } as T;
      }
      return {} as T;
    },
  };
  const encrypted: { roomId: string; type: string; content: Record<string, unknown>; members: string[]; settings: MegolmSettings }[] = [];
  const device = {
    userId: "@parley:example.org",
    deviceId: "PARLEYDEV",
    async encryptRoomEvent(roomId: string, type: string, content: Record<string, unknown>, members: string[], settings: MegolmSettings = {}) {
      encrypted.push({ roomId, type, content, members, settings });
      return { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "C" };
    },
  };
  const clearNotices: [string, Notice, string][] = [];
  const inner = {
    botUserId: "@parley:example.org",
    async sendNotice(roomId: string, notice: Notice, txnId: string) {
      clearNotices.push([roomId, notice, txnId]);
    },
    async joinRoom() {
      return undefined;
    },
  } as unknown as Homeserver;
  const rooms = new EncryptedRooms(device, http);
  return { rooms, calls, encrypted, clearNotices, hs: withEncryptedNotices(inner, async () => rooms) };
}

describe("withEncryptedNotices", () => {
  it("encrypts notices to an encrypted room for its joined and invited members, sent as the bot's device", async () => {
    const { hs, calls, encrypted, clearNotices } = setup();
    await hs.sendNotice(ROOM, { text: "Call started", html: "<b>Call</b> started" }, "parley-$1");
    expect(clearNotices).toEqual([]);
    expect(encrypted).toEqual([
      {
        roomId: ROOM,
        type: "m.room.message",
        content: { msgtype: "m.notice", body: "Call started", format: "org.matrix.custom.html", formatted_body: "<b>Call</b> started" },
        members: ["@alice:example.org", "@bob:remote.org", "@parley:example.org"],
        settings: { rotationPeriodMs: undefined, rotationPeriodMsgs: 50 },
      },
    ]);
    expect(calls.at(-1)).toEqual({
      method: "PUT",
      path: `/rooms/${encodeURIComponent(ROOM)}/send/m.room.encrypted/parley-%241`,
      body: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "C" },
      query: { user_id: "@parley:example.org", device_id: "PARLEYDEV" },
    });
  });

  it("sends notices to a room without m.room.encryption in the clear, through the inner port", async () => {
    const { hs, encrypted, clearNotices } = setup();
    await hs.sendNotice(CLEAR, { text: "hello" }, "t1");
    expect(clearNotices).toEqual([[CLEAR, { text: "hello" }, "t1"]]);
    expect(encrypted).toEqual([]);
  });

  it("passes everything else to the inner port", async () => {
    const { hs } = setup();
    expect(hs.botUserId).toBe("@parley:example.org");
    await expect(hs.joinRoom(ROOM)).resolves.toBeUndefined();
  });
});

describe("EncryptedRooms", () => {
  it("asks the homeserver once per room, and learns of encryption from the m.room.encryption event", async () => {
    const { rooms, calls } = setup();
    const asked = () => calls.filter((c) => c.path.includes("m.room.encryption")).length;
    expect(await rooms.encryption(ROOM)).toEqual({ rotationPeriodMs: undefined, rotationPeriodMsgs: 50 });
    expect(await rooms.encryption(ROOM)).toBeDefined();
    expect(asked()).toBe(1);
    expect(await rooms.encryption(CLEAR)).toBeUndefined();
    expect(await rooms.encryption(CLEAR)).toBeUndefined();
    expect(asked()).toBe(2);
    rooms.noteEncryption(CLEAR, { algorithm: "m.megolm.v1.aes-sha2", rotation_period_ms: 3_600_000 });
    expect(await rooms.encryption(CLEAR)).toEqual({ rotationPeriodMs: 3_600_000, rotationPeriodMsgs: undefined });
    expect(asked()).toBe(2);
  });

  it("lets other errors through (the transaction is retried)", async () => {
    const rooms = new EncryptedRooms(
      { userId: "@p:x", deviceId: "D", encryptRoomEvent: async () => ({}) },
      { request: async () => Promise.reject(Object.assign(new Error("bad gateway"), { httpStatus: 502 })) },
    );
    await expect(rooms.encryption(ROOM)).rejects.toThrow("bad gateway");
  });
});
