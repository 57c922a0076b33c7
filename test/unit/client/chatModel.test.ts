import { describe, expect, it } from "vitest";
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
    const sending = chat.send("  on my way  ");
    expect(chat.state.get().lines).toMatchObject([{ id: "txn1", body: "on my way", pending: true, own: true }]);
    await sending;
    f.events.emit("message", msg("$9", "@a:x", "on my way", 10, "txn1"));
    expect(chat.state.get().lines).toMatchObject([{ id: "$9", pending: false, own: true }]);
    expect(f.sent).toEqual([{ text: "on my way", txnId: "txn1" }]);
  });

  it("doesn't duplicate a message whose remote echo beat the send result", async () => {
    const f = feed();
    const chat = new ChatModel(f, "@a:x", () => "txn1");
    await chat.start();
    const sending = chat.send("x");
    f.events.emit("message", msg("$sent", "@a:x", "x", 10));
    await sending;
    expect(chat.state.get().lines.map((l) => l.id)).toEqual(["$sent"]);
  });

  it("marks a failed message and says why", async () => {
    const f = feed();
    f.sendResult = new ParleyClientError("NETWORK", "chat");
    const chat = new ChatModel(f, "@a:x", () => "t");
    await chat.start();
    expect(await chat.send("x")).toBe(false);
    expect(chat.state.get().lines[0]).toMatchObject({ failed: true, pending: false });
    expect(chat.state.get().error).toBe("Your message couldn't be sent: no connection to your homeserver.");
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
    expect(await chat.send("x")).toBe(false);
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
