// Media keys from matrix-js-sdk's Rust crypto: the sender is the Olm-authenticated device, never
// the device the content claims.
import { describe, expect, it } from "vitest";
import { olmKeyMessage } from "../../../client/src/matrix/chat.ts";
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
