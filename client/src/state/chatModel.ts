// The in-call chat: the room's messages with senders' display names, our own messages echoed at
// once and confirmed when they come back from the homeserver, the unread count while closed.
import { toClientError } from "../errors.ts";
import type { ChatMessage, RoomFeed } from "../matrix/timeline.ts";
import { Store } from "./store.ts";

export interface ChatLine {
  id: string;
  sender: string;
  senderName: string;
  body: string;
  ts: number;
  kind: ChatMessage["kind"];
  own: boolean;
  pending: boolean;
  failed: boolean;
}

export interface ChatState {
  lines: ChatLine[];
  open: boolean;
  unread: number;
  /** Why the composer is disabled (an encrypted room until E2EE lands), or null. */
  cannotSend: string | null;
  error: string | null;
  ready: boolean;
}

const MAX_LINES = 500;
const MAX_LENGTH = 4000;

export class ChatModel {
  readonly state = new Store<ChatState>({ lines: [], open: false, unread: 0, cannotSend: null, error: null, ready: false });
  private readonly feed: Pick<RoomFeed, "events" | "start" | "history" | "members" | "canSend" | "send">;
  private readonly userId: string;
  private readonly newTxnId: () => string;
  private readonly offs: (() => void)[] = [];

  constructor(feed: ChatModel["feed"], userId: string, newTxnId: () => string = () => `parley-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`) {
    this.feed = feed;
    this.userId = userId;
    this.newTxnId = newTxnId;
    this.offs.push(feed.events.on("message", (m) => this.add([m], true)));
    this.offs.push(feed.events.on("members", () => this.renameAll()));
    this.offs.push(feed.events.on("error", (e) => this.state.update({ error: e.human })));
  }

  async start(): Promise<void> {
    try {
      await this.feed.start();
      this.add(this.feed.history(), false);
      const check = this.feed.canSend();
      this.state.update({ ready: true, error: null, cannotSend: check.ok ? null : check.reason });
    } catch (err) {
      this.state.update({ error: `Chat isn't available: ${toClientError(err, "chat").human}` });
    }
  }

  setOpen(open: boolean): void {
    this.state.update({ open, ...(open ? { unread: 0 } : {}) });
  }

  async send(text: string): Promise<boolean> {
    const body = text.trim();
    if (!body) return false;
    if (body.length > MAX_LENGTH) {
      this.state.update({ error: `Messages are limited to ${MAX_LENGTH} characters.` });
      return false;
    }
    const check = this.feed.canSend();
    if (!check.ok) {
      this.state.update({ cannotSend: check.reason });
      return false;
    }
    const txnId = this.newTxnId();
    const pending: ChatLine = {
      id: txnId,
      sender: this.userId,
      senderName: this.nameOf(this.userId),
      body,
      ts: Date.now(),
      kind: "text",
      own: true,
      pending: true,
      failed: false,
    };
    this.state.update({ lines: [...this.state.get().lines, pending], error: null });
    try {
      const { eventId } = await this.feed.send(body, txnId);
      this.state.set((s) => {
        const confirmed = eventId && s.lines.some((l) => l.id === eventId);
        const lines = confirmed
          ? s.lines.filter((l) => l.id !== txnId)
          : s.lines.map((l) => (l.id === txnId ? { ...l, id: eventId ?? l.id, pending: false } : l));
        return { ...s, lines };
      });
      return true;
    } catch (err) {
      const e = toClientError(err, "chat");
      this.state.set((s) => ({ ...s, error: e.human, lines: s.lines.map((l) => (l.id === txnId ? { ...l, pending: false, failed: true } : l)) }));
      return false;
    }
  }

  dispose(): void {
    for (const off of this.offs.splice(0)) off();
  }

  private nameOf(userId: string): string {
    return this.feed.members().get(userId)?.displayName ?? userId;
  }

  private toLine(m: ChatMessage): ChatLine {
    return {
      id: m.id,
      sender: m.sender,
      senderName: this.nameOf(m.sender),
      body: m.body,
      ts: m.ts,
      kind: m.kind,
      own: m.sender === this.userId,
      pending: false,
      failed: false,
    };
  }

  private add(messages: ChatMessage[], live: boolean): void {
    if (!messages.length) return;
    this.state.set((s) => {
      let lines = s.lines;
      let fresh = 0;
      for (const m of messages) {
        // Our own message coming back: replace its local echo (by transaction id or event id).
        const echo = lines.findIndex((l) => l.id === m.id || (m.txnId !== undefined && l.id === m.txnId));
        if (echo >= 0) {
          lines = lines.map((l, i) => (i === echo ? this.toLine(m) : l));
          continue;
        }
        lines = [...lines, this.toLine(m)];
        if (live && m.sender !== this.userId) fresh += 1;
      }
      lines = [...lines].sort((a, b) => (a.pending === b.pending ? a.ts - b.ts : a.pending ? 1 : -1)).slice(-MAX_LINES);
      return { ...s, lines, unread: s.open ? 0 : s.unread + fresh };
    });
  }

  private renameAll(): void {
    this.state.set((s) => ({ ...s, lines: s.lines.map((l) => ({ ...l, senderName: this.nameOf(l.sender) })) }));
  }
}
