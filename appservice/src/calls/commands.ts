// Bot commands as text: parsing only, no side effects.

export type Command =
  | { kind: "start" }
  | { kind: "end" }
  | { kind: "help" }
  | { kind: "status" }
  | { kind: "unknown"; word: string };

export const COMMAND_PREFIX = "!meet";

/** Parses a message body; undefined when the message is not addressed to Parley. */
export function parseCommand(body: unknown): Command | undefined {
  if (typeof body !== "string") return undefined;
  const words = body.trim().split(/\s+/);
  if (words[0]?.toLowerCase() !== COMMAND_PREFIX) return undefined;
  const word = (words[1] ?? "").toLowerCase();
  switch (word) {
    case "":
    case "start":
      return { kind: "start" };
    case "end":
    case "stop":
      return { kind: "end" };
    case "help":
      return { kind: "help" };
    case "status":
    case "who":
      return { kind: "status" };
    default:
      return { kind: "unknown", word: words[1] ?? "" };
  }
}

export const HELP_TEXT = [
  "Parley video meetings:",
  "  !meet        start a call attached to this room and post its join link",
  "  !meet end    end the call",
  "  !meet status who is in the call",
  "  !meet help   this text",
  "Everyone joined to this room may join its call.",
].join("\n");
