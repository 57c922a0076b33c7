// The in-call chat: the room's messages with senders' display names, our own messages echoed at
// once and confirmed when they come back from the homeserver, the unread count while closed.
// A message the homeserver cannot take now (it is down, or unreachable) stays pending and is sent
// again with the same transaction id (the homeserver keeps one event per id), sooner when the
// feed says its homeserver is back, until CHAT_GIVE_UP_MS; then it shows as not sent, with Retry.
import { toClientError, type ParleyClientError } from "../errors.ts";
import type { ChatMessage, RoomFeed } from "../matrix/timeline.ts";
import { realTimers, type Timers } from "../timers.ts";
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
/** How long a message keeps trying while the homeserver cannot be reached before it shows as not sent. */
export const CHAT_GIVE_UP_MS = 120_000;
/** Waits between attempts: doubling from the first, up to the last. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 10_000;

/** The homeserver could not take it now, but may soon: unreachable, overloaded, rate-limited. */
export function retryable(e: ParleyClientError): boolean {
  return e.code === "NETWORK" || e.code === "TIMEOUT" || e.code === "M_LIMIT_EXCEEDED" || e.code === "M_UNAVAILABLE" || (e.status ?? 0) >= 500;
}

export class ChatModel {
  readonly state = new Store<ChatState>({ lines: [], open: false, unread: 0, cannotSend: null, error: null, ready: false });
  private readonly feed: Pick<RoomFeed, "events" | "start" | "history" | "members" | "canSend" | "send">;
  private readonly userId: string;
  private readonly newTxnId: () => string;
  private readonly timers: Timers;
  private readonly giveUpMs: number;
  private readonly offs: (() => void)[] = [];
  /** Messages waiting to be tried again: each wakes early when the homeserver is back. */
  private readonly waiting = new Set<() => void>();
  /** The text of each own message not confirmed yet, by transaction id (what Retry sends). */
  private readonly unsent = new Map<string, string>();
  private disposed = false;

  constructor(
    feed: ChatModel["feed"],
    userId: string,
    newTxnId: () => string = () => `parley-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`,
    opts: { timers?: Timers; giveUpMs?: number } = {},
  ) {
    this.feed = feed;
    this.userId = userId;
    this.newTxnId = newTxnId;
    this.timers = opts.timers ?? realTimers;
    this.giveUpMs = opts.giveUpMs ?? CHAT_GIVE_UP_MS;
    this.offs.push(feed.events.on("message", (m) => this.add([m], true)));
    this.offs.push(feed.events.on("members", () => this.renameAll()));
    this.offs.push(feed.events.on("error", (e) => this.state.update({ error: e.human })));
    this.offs.push(
      feed.events.on("online", () => {
        this.state.update({ error: null });
        for (const wake of [...this.waiting]) wake();
      }),
    );
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

  /** Queues a message (false: refused, nothing queued); its line then shows it pending, sent or not sent. */
  send(text: string): boolean {
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
    this.unsent.set(txnId, body);
    void this.deliver(txnId, body);
    return true;
  }

  /** Sends a message that showed as not sent again (same transaction id: never twice in the room). */
  retry(id: string): void {
    const body = this.unsent.get(id);
    const line = this.state.get().lines.find((l) => l.id === id);
    if (body === undefined || !line?.failed) return;
    this.setLine(id, { pending: true, failed: false });
    this.state.update({ error: null });
    void this.deliver(id, body);
  }

  /** Tries until sent, refused, or CHAT_GIVE_UP_MS of not reaching the homeserver. */
  private async deliver(txnId: string, body: string): Promise<boolean> {
    const started = this.timers.now();
    for (let attempt = 0; ; attempt++) {
      try {
        const { eventId } = await this.feed.send(body, txnId);
        this.unsent.delete(txnId);
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
        if (this.disposed) return false;
        if (!retryable(e) || this.timers.now() - started >= this.giveUpMs) {
          this.setLine(txnId, { pending: false, failed: true });
          this.state.update({ error: e.human });
          return false;
        }
        await this.pause(Math.min(RETRY_FIRST_MS * 2 ** attempt, RETRY_MAX_MS));
        if (this.disposed) return false;
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.waiting.delete(wake);
        this.timers.clearTimeout(timer);
        resolve();
      };
      const timer = this.timers.setTimeout(wake, ms);
      this.waiting.add(wake);
    });
  }

  private setLine(id: string, patch: Partial<ChatLine>): void {
    this.state.set((s) => ({ ...s, lines: s.lines.map((l) => (l.id === id ? { ...l, ...patch } : l)) }));
  }

  dispose(): void {
    this.disposed = true;
    for (const wake of [...this.waiting]) wake();
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
