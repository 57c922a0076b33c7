import { describe, expect, it } from "vitest";
import { COMMAND_PREFIX, HELP_TEXT, parseCommand } from "../../../appservice/src/calls/commands.ts";

describe("parseCommand", () => {
  it.each([
    ["!meet", { kind: "start" }],
    ["!meet start", { kind: "start" }],
    ["!meet end", { kind: "end" }],
    ["!meet stop", { kind: "end" }],
    ["!meet help", { kind: "help" }],
    ["!MEET  end ", { kind: "end" }],
    ["  !Meet\tHELP\n", { kind: "help" }],
    ["!meet end now", { kind: "end" }],
  ])("parses %j", (body, command) => {
    expect(parseCommand(body)).toEqual(command);
  });

  it("keeps an unknown word as written", () => {
    expect(parseCommand("!meet Dance")).toEqual({ kind: "unknown", word: "Dance" });
    expect(parseCommand("!meet  tomorrow at 10")).toEqual({ kind: "unknown", word: "tomorrow" });
  });

  it.each(["hello", "meet", "!meeting", "!meetend", "please !meet", "", "   ", "!mee"])(
    "ignores the non-command %j",
    (body) => {
      expect(parseCommand(body)).toBeUndefined();
    },
  );

  it.each([undefined, null, 42, { body: "!meet" }, ["!meet"], true])("ignores the non-string body %j", (body) => {
    expect(parseCommand(body)).toBeUndefined();
  });

  it("has a help text naming every command", () => {
    expect(COMMAND_PREFIX).toBe("!meet");
    expect(HELP_TEXT).toContain("!meet end");
    expect(HELP_TEXT).toContain("!meet help");
    expect(HELP_TEXT.split("\n")[1]).toMatch(/^\s+!meet\s+start a call/);
  });
});
