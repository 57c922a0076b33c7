import { describe, expect, it } from "vitest";
import { RoomPower } from "../../../appservice/src/calls/roles.ts";

const BOT = "@parley:a.example";
const power = (opts: { version?: string; sender?: string; extra?: string[]; pl?: Record<string, unknown> | undefined }) =>
  new RoomPower(
    {
      create: { sender: opts.sender ?? BOT, content: { room_version: opts.version ?? "12", ...(opts.extra ? { additional_creators: opts.extra } : {}) } },
      powerLevels: "pl" in opts ? opts.pl : { users: { "@host:a.example": 100, "@co:a.example": 50 }, invite: 50, kick: 50, ban: 50, events: { "org.parley.moderate": 50, "org.parley.call": 100 } },
    },
    { cohostLevel: 50, botUserId: BOT },
  );

describe("roles from the room", () => {
  it("hosts are privileged creators (v12: sender and additional_creators) and PL 100; co-hosts PL >= the co-host level", () => {
    const p = power({ sender: "@maker:a.example", extra: ["@second:a.example"] });
    expect(p.roleOf("@maker:a.example")).toBe("host");
    expect(p.roleOf("@second:a.example")).toBe("host");
    expect(p.roleOf("@host:a.example")).toBe("host");
    expect(p.roleOf("@co:a.example")).toBe("cohost");
    expect(p.roleOf("@anyone:b.example")).toBe("participant");
  });

  it("creators of older room versions are not privileged: their power level decides", () => {
    const p = power({ version: "10", sender: "@maker:a.example", pl: { users: { "@maker:a.example": 50 } } });
    expect(p.roleOf("@maker:a.example")).toBe("cohost");
  });

  it("the co-host level is configurable", () => {
    const p = new RoomPower({ create: undefined, powerLevels: { users: { "@x:a": 40 } } }, { cohostLevel: 40, botUserId: BOT });
    expect(p.roleOf("@x:a")).toBe("cohost");
  });

  it("each action needs the level the room's power levels give it; custom actions use org.parley.moderate", () => {
    const p = power({ pl: { users: { "@co:a.example": 50, "@low:a.example": 20 }, invite: 20, kick: 50, ban: 60, events: { "org.parley.moderate": 50, "org.parley.call": 100 } } });
    expect(p.may("@low:a.example", "admit")).toBe(true);
    expect(p.may("@low:a.example", "deny")).toBe(false);
    expect(p.may("@co:a.example", "mute")).toBe(true);
    expect(p.may("@co:a.example", "end")).toBe(true);
    expect(p.may("@co:a.example", "ban")).toBe(false);
    expect(p.may("@co:a.example", "settings")).toBe(false);
    expect(p.may("@co:a.example", "set_role")).toBe(false);
    expect(p.allowed("@low:a.example")).toEqual(["admit", "admit_all"]);
  });

  it("remove, ban and role changes need more power than the target (Matrix's rule); the bot never acts for itself", () => {
    const p = power({});
    expect(p.may("@co:a.example", "remove", "@anyone:b.example")).toBe(true);
    expect(p.may("@co:a.example", "remove", "@host:a.example")).toBe(false);
    expect(p.may("@host:a.example", "set_role", "@co:a.example")).toBe(true);
    expect(p.may(BOT, "mute")).toBe(false);
  });

  it("withLevel changes one user's level and drops an entry back at users_default", () => {
    const p = power({});
    expect((p.withLevel("@new:a.example", 50).users as Record<string, number>)["@new:a.example"]).toBe(50);
    expect(p.withLevel("@co:a.example", 0).users).not.toHaveProperty("@co:a.example");
  });

  it("malformed power levels read as absent values, not as power", () => {
    const p = power({ pl: { users: { "@x:a.example": "100" }, kick: "0", events: [] } });
    expect(p.roleOf("@x:a.example")).toBe("participant");
    expect(p.may("@x:a.example", "remove")).toBe(false);
  });
});
