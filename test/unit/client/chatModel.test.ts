import { afterEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { ChatMessage, RoomFeedEvents, RoomMember, SendCheck } from "../../../client/src/matrix/timeline.ts";
import { ChatModel } from "../../../client/src/state/chatModel.ts";
import { Emitter } from "../../../client/src/state/store.ts";
import { tick } from "./fakes.ts";

function feed(opts: { history?: ChatMessage[]; canSend?: SendCheck } = {}) {
  const members = new Map<string, RoomMember>([["@b:x", { userId: "@b:x", displayName: "Bob", avatarMxc: null }]]);
  const sent: { text: string; txnId: string }[] = [];
  const f = {
    events: new Emitter<RoomFeedEvents>(),
    members: () => members,
    history: () => opts.history ?? [],
    canSend: () => opts.canSend ?? { ok: true as const },
    start: async () => undefined,
    sent,
    sendResult: { eventId: "$sent" } as { eventId?: string } | Error,
    send: async (text: string, txnId: string) => {
      sent.push({ text, txnId });
      if (f.sendResult instanceof Error) throw f.sendResult;
      return f.sendResult;
    },
    membersMap: members,
  };
  return f;
}

const msg = (id: string, sender: string, body: string, ts: number, txnId?: string): ChatMessage => ({ id, sender, body, ts, kind: "text", ...(txnId ? { txnId } : {}) });

describe("ChatModel", () => {
  it("shows history and live messages with display names, oldest first", async () => {
    const f = feed({ history: [msg("$1", "@b:x", "hello", 1)] });
    const chat = new ChatModel(f, "@a:x");
    await chat.start();
    f.events.emit("message", msg("$2", "@c:x", "hi", 2));
    const lines = chat.state.get().lines;
    expect(lines.map((l) => [l.senderName, l.body])).toEqual([["Bob", "hello"], ["@c:x", "hi"]]);
    expect(chat.state.get().ready).toBe(true);
  });

  it("echoes our message at once and confirms it when the homeserver sends it back", async () => {
    const f = feed();
    f.sendResult = {};
    const chat = new ChatModel(f, "@a:x", () => "txn1");
    await chat.start();
    expect(chat.send("  on my way  ")).toBe(true);
    expect(chat.state.get().lines).toMatchObject([{ id: "txn1", body: "on my way", pending: true, own: true }]);
    await tick();
    f.events.emit("message", msg("$9", "@a:x", "on my way", 10, "txn1"));
    expect(chat.state.get().lines).toMatchObject([{ id: "$9", pending: false, own: true }]);
    expect(f.sent).toEqual([{ text: "on my way", txnId: "txn1" }]);
  });

  it("doesn't duplicate a message whose remote echo beat the send result", async () => {
    const f = feed();
    const chat = new ChatModel(f, "@a:x", () => "txn1");
    await chat.start();
    chat.send("x");
    f.events.emit("message", msg("$sent", "@a:x", "x", 10));
    await tick();
    expect(chat.state.get().lines.map((l) => l.id)).toEqual(["$sent"]);
  });

  it("marks a message the homeserver refuses as not sent at once, and says why", async () => {
    const f = feed();
    f.sendResult = new ParleyClientError("M_FORBIDDEN", "chat", { status: 403 });
    const chat = new ChatModel(f, "@a:x", () => "t");
    await chat.start();
    expect(chat.send("x")).toBe(true);
    await tick();
    expect(chat.state.get().lines[0]).toMatchObject({ failed: true, pending: false });
    expect(f.sent).toHaveLength(1);
    expect(chat.state.get().error).toBeTruthy();
  });

  describe("while the homeserver cannot be reached", () => {
    afterEach(() => vi.useRealTimers());

    /** "hello" sent (transaction t1) while every send fails for want of a connection, on fake timers. */
    async function sentWhileDown(giveUpMs?: number) {
      vi.useFakeTimers();
      const f = feed();
      f.sendResult = new ParleyClientError("NETWORK", "chat");
      const chat = new ChatModel(f, "@a:x", () => "t1", giveUpMs === undefined ? {} : { giveUpMs });
      await chat.start();
      chat.send("hello");
      return { f, chat };
    }

    it("keeps the message pending and sends it again (same transaction id) until it goes through", async () => {
      const { f, chat } = await sentWhileDown();
      await vi.advanceTimersByTimeAsync(3500);
      expect(chat.state.get().lines[0]).toMatchObject({ id: "t1", pending: true, failed: false });
      expect(chat.state.get().error).toBeNull();
      f.sendResult = { eventId: "$e" };
      await vi.advanceTimersByTimeAsync(10_000);
      expect(chat.state.get().lines[0]).toMatchObject({ id: "$e", pending: false, failed: false });
      expect(new Set(f.sent.map((s) => s.txnId))).toEqual(new Set(["t1"]));
      expect(f.sent.length).toBeGreaterThan(2);
    });

    it("tries at once when the feed says the homeserver is back", async () => {
      const { f, chat } = await sentWhileDown();
      await vi.advanceTimersByTimeAsync(7500); // attempts at 0, 1, 3, 7 s; the next at 15 s
      const tries = f.sent.length;
      f.sendResult = { eventId: "$e" };
      f.events.emit("online", undefined);
      await vi.advanceTimersByTimeAsync(0);
      expect(f.sent.length).toBe(tries + 1);
      expect(chat.state.get().lines[0]).toMatchObject({ id: "$e", pending: false });
    });

    it("gives up after the limit: not sent, and Retry sends it again", async () => {
      const { f, chat } = await sentWhileDown(30_000);
      await vi.advanceTimersByTimeAsync(29_000);
      expect(chat.state.get().lines[0]).toMatchObject({ pending: true, failed: false });
      await vi.advanceTimersByTimeAsync(15_000);
      expect(chat.state.get().lines[0]).toMatchObject({ pending: false, failed: true });
      expect(chat.state.get().error).toBe("Your message couldn't be sent: no connection to your homeserver.");
      f.sendResult = { eventId: "$e" };
      chat.retry("t1");
      expect(chat.state.get().lines[0]).toMatchObject({ pending: true, failed: false });
      await vi.advanceTimersByTimeAsync(0);
      expect(chat.state.get().lines[0]).toMatchObject({ id: "$e", pending: false, failed: false });
      expect(f.sent.at(-1)).toEqual({ text: "hello", txnId: "t1" });
    });
  });

  it("counts unread messages from others while closed", async () => {
    const f = feed();
    const chat = new ChatModel(f, "@a:x");
    await chat.start();
    f.events.emit("message", msg("$1", "@b:x", "a", 1));
    f.events.emit("message", msg("$2", "@a:x", "mine", 2));
    expect(chat.state.get().unread).toBe(1);
    chat.setOpen(true);
    f.events.emit("message", msg("$3", "@b:x", "b", 3));
    expect(chat.state.get().unread).toBe(0);
  });

  it("explains why the composer is off in an encrypted room", async () => {
    const f = feed({ canSend: { ok: false, reason: "This room is end-to-end encrypted." } });
    const chat = new ChatModel(f, "@a:x");
    await chat.start();
    expect(chat.state.get().cannotSend).toBe("This room is end-to-end encrypted.");
    expect(chat.send("x")).toBe(false);
    expect(f.sent).toEqual([]);
  });

  it("renames senders when the member list arrives", async () => {
    const f = feed();
    const chat = new ChatModel(f, "@a:x");
    await chat.start();
    f.events.emit("message", msg("$1", "@c:x", "a", 1));
    f.membersMap.set("@c:x", { userId: "@c:x", displayName: "Carol", avatarMxc: null });
    f.events.emit("members", f.membersMap);
    await tick();
    expect(chat.state.get().lines[0]!.senderName).toBe("Carol");
  });
});
