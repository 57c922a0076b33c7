import { describe, expect, it } from "vitest";
import { keyModeFromCallState, keyModeText } from "../../../../client/src/rtc/e2ee/keyMode.ts";

describe("keyModeFromCallState", () => {
  it("no state, or state without e2ee: participant keys", () => {
    expect(keyModeFromCallState(null)).toEqual({ keys: "participant" });
    expect(keyModeFromCallState({ version: 1, api: "https://p.example" })).toEqual({ keys: "participant" });
    expect(keyModeFromCallState({ version: 1, e2ee: { keys: "participant" } })).toEqual({ keys: "participant" });
  });

  it("provisioned keys name the bot whose keys are accepted", () => {
    expect(keyModeFromCallState({ version: 1, e2ee: { keys: "provisioned", bot: "@parley:b.example" } })).toEqual({ keys: "provisioned", bot: "@parley:b.example" });
  });

  it("refuses what is neither (no guessing): an unknown mode, provisioned without a bot, a malformed field", () => {
    for (const content of [
      { e2ee: { keys: "server" } },
      { e2ee: { keys: "provisioned" } },
      { e2ee: { keys: "provisioned", bot: "parley" } },
      { e2ee: "provisioned" },
      { e2ee: null },
      "state",
    ]) {
      expect(keyModeFromCallState(content)).toHaveProperty("error");
    }
  });
});

describe("keyModeText", () => {
  it("says who makes the keys", () => {
    expect(keyModeText("participant", null)).toBe("Keys: each participant");
    expect(keyModeText("provisioned", "@parley:b.example")).toBe("Keys: provisioned by @parley:b.example");
  });
});
