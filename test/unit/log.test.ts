import { Writable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { configureLogging, getLogger, LOG_LIMITS } from "../../appservice/src/log.ts";

/** Log lines written while `fn` runs. */
function capture(fn: () => void): string[] {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      done();
    },
  });
  configureLogging("info", sink);
  fn();
  return lines;
}

afterAll(() => configureLogging("silent"));

const memberEvent58k = () => ({
  type: "m.room.member",
  state_key: "@mallory:example.org",
  event_id: "$big",
  content: { membership: "join", displayname: "M".repeat(58 * 1024), extra: Array.from({ length: 500 }, (_, i) => ({ i, deep: { a: { b: { c: { d: { e: "x".repeat(100) } } } } } })) },
});

describe("bounded log lines", () => {
  it("a 58 KB member event logged whole gives one line within the limit, still JSON", () => {
    const lines = capture(() => getLogger("test").warn({ event: memberEvent58k(), err: new Error("E".repeat(100_000)) }, "ignoring event"));
    expect(lines).toHaveLength(1);
    expect(lines[0]!.length).toBeLessThanOrEqual(LOG_LIMITS.lineChars);
    const line = JSON.parse(lines[0]!) as { event: { content: { displayname: string; extra: unknown[] } }; err: { message: string } };
    expect(line.event.content.displayname).toMatch(/^M{2048}…\(\+57344 chars\)$/);
    expect(line.event.content.extra).toHaveLength(LOG_LIMITS.arrayItems + 1);
    expect(line.err.message.length).toBeLessThan(2100);
  });

  it("a long message or context is cut to one short line", () => {
    const lines = capture(() => {
      getLogger("test").info(`sdk said ${"y".repeat(200_000)}`);
      getLogger("test", { roomId: "!r".repeat(50_000) }).info("context");
    });
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(LOG_LIMITS.lineChars);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 30, msg: "log line too long; cut", chars: expect.any(Number) });
  });

  it("redaction still applies to bounded objects", () => {
    const lines = capture(() => getLogger("test").info({ cfg: { asToken: "secret-as", token: "secret-t" }, accessToken: "secret-a" }, "config"));
    expect(lines[0]).not.toContain("secret-");
  });
});
