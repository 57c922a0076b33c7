import { describe, expect, it } from "vitest";
import { readKeyMode, roomKeyMode } from "../../../appservice/src/calls/callState.ts";

describe("roomKeyMode (org.parley.call content)", () => {
  it("provisioned only when the room says so, with the bot it names", () => {
    expect(roomKeyMode({ version: 1, e2ee: { keys: "provisioned", bot: "@parley:a" } })).toEqual({ keys: "provisioned", bot: "@parley:a" });
    expect(roomKeyMode({ e2ee: { keys: "provisioned" } })).toEqual({ keys: "provisioned", bot: undefined });
  });

  it("participant for no state, no e2ee, or anything malformed", () => {
    for (const c of [undefined, {}, { e2ee: null }, { e2ee: [] }, { e2ee: "provisioned" }, { e2ee: { keys: "PROVISIONED" } }, { e2ee: { keys: "participant", bot: "@x:y" } }]) {
      expect(roomKeyMode(c as Record<string, unknown> | undefined)).toEqual({ keys: "participant", bot: undefined });
    }
  });

  it("reads the room's state event org.parley.call with state key ''", async () => {
    const asked: unknown[] = [];
    const mode = await readKeyMode({ stateEvent: async (...args) => (asked.push(args), { sender: "@parley:a", content: { e2ee: { keys: "provisioned" } } }) }, "!r:a");
    expect(asked).toEqual([["!r:a", "org.parley.call", ""]]);
    expect(mode.keys).toBe("provisioned");
  });
});
