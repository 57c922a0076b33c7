// A lean signalling socket for synthetic participants: requests answered by id (the server's
// error becomes a SignalError carrying its errcode), pushes handed to listeners by type. Nothing
// is kept that grows with time (a bench runs for minutes with dozens of these).
import WebSocket from "ws";

export type Message = Record<string, unknown> & { type: string };

export class SignalError extends Error {
  readonly errcode: string;

  constructor(errcode: string, message: string) {
    super(`${errcode}: ${message}`);
    this.errcode = errcode;
  }
}

export class SignalSocket {
  private readonly ws: WebSocket;
  private readonly waiting = new Map<number, { resolve(m: Message): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private readonly listeners = new Map<string, Set<(m: Message) => void>>();
  private nextId = 1;
  closed = false;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data) => this.onMessage(String(data)));
    ws.once("close", () => {
      this.closed = true;
      for (const [id, w] of this.waiting) {
        clearTimeout(w.timer);
        this.waiting.delete(id);
        w.reject(new SignalError("CLOSED", "signalling socket closed"));
      }
      for (const fn of this.listeners.get("close") ?? []) fn({ type: "close" });
    });
  }

  static open(url: string): Promise<SignalSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once("open", () => resolve(new SignalSocket(ws)));
      ws.once("error", reject);
    });
  }

  /** Resolves with the `result`, rejects with a SignalError for an `error` or a timeout. */
  request(message: Message, timeoutMs = 15_000): Promise<Message> {
    if (this.closed) return Promise.reject(new SignalError("CLOSED", `${message.type} on a closed socket`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new SignalError("TIMEOUT", `no answer to ${message.type}`));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /** Calls `fn` for every push of `type` ("close" when the socket closes); returns the unsubscribe. */
  on(type: string, fn: (m: Message) => void): () => void {
    const set = this.listeners.get(type) ?? new Set();
    set.add(fn);
    this.listeners.set(type, set);
    return () => set.delete(fn);
  }

  close(): void {
    this.ws.close();
  }

  private onMessage(text: string): void {
    let m: Message;
    try {
      m = JSON.parse(text) as Message;
    } catch {
      return;
    }
    const w = typeof m.id === "number" ? this.waiting.get(m.id) : undefined;
    if (w && (m.type === "result" || m.type === "error")) {
      this.waiting.delete(m.id as number);
      clearTimeout(w.timer);
      if (m.type === "result") w.resolve(m);
      else w.reject(new SignalError(String(m.errcode), String(m.error ?? "")));
      return;
    }
    for (const fn of this.listeners.get(m.type) ?? []) fn(m);
  }
}
