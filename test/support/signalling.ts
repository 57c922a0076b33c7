// A signalling client for tests: requests answered by id, pushes collected, the close observed.
import WebSocket from "ws";

export interface Answer {
  type: string;
  id?: number | string;
  errcode?: string;
  error?: string;
  [k: string]: unknown;
}

export class SignallingClient {
  readonly pushes: Answer[] = [];
  readonly closed: Promise<{ code: number; reason: string; at: number }>;
  private readonly ws: WebSocket;
  private readonly waiting = new Map<number | string, (a: Answer) => void>();
  private readonly pushWaiters: ((a: Answer) => void)[] = [];
  private nextId = 1;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    this.closed = new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })));
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString()) as Answer;
      const resolve = msg.id === undefined ? undefined : this.waiting.get(msg.id);
      if (resolve) {
        this.waiting.delete(msg.id!);
        resolve(msg);
      } else {
        this.pushes.push(msg);
        for (const w of this.pushWaiters.splice(0)) w(msg);
      }
    });
  }

  static open(url: string): Promise<SignallingClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once("open", () => resolve(new SignallingClient(ws)));
      ws.once("error", reject);
    });
  }

  /** Sends a request and waits for the answer carrying its id. */
  request(message: Record<string, unknown>, timeoutMs = 10_000): Promise<Answer> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${String(message.type)}`)), timeoutMs);
      this.waiting.set(id, (a) => {
        clearTimeout(timer);
        resolve(a);
      });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /** Sends without waiting; its answer, if any, lands in `pushes`. */
  send(message: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(message));
  }

  /** Sends raw text (malformed-message tests) and waits for the next unsolicited answer. */
  sendRaw(text: string | Buffer, timeoutMs = 10_000): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no answer to raw message")), timeoutMs);
      this.pushWaiters.push((a) => {
        clearTimeout(timer);
        resolve(a);
      });
      this.ws.send(text);
    });
  }

  /** The first push (already received or still to come) that `match` accepts. */
  push(what: string, match: (a: Answer) => boolean, timeoutMs = 10_000): Promise<Answer> {
    const seen = this.pushes.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no push: ${what}; got ${JSON.stringify(this.pushes.map((p) => p.type))}`)), timeoutMs);
      const waiter = (a: Answer) => {
        if (!match(a)) return void this.pushWaiters.push(waiter);
        clearTimeout(timer);
        resolve(a);
      };
      this.pushWaiters.push(waiter);
    });
  }

  close(): void {
    this.ws.close();
  }

  /**
   * Stops reading from the connection, as a client whose network silently died: the server's
   * messages and close frame go unanswered. `resume()` undoes it.
   */
  stall(): void {
    (this.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  }

  resume(): void {
    (this.ws as unknown as { _socket: { resume(): void } })._socket.resume();
  }
}
