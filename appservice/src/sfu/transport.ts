// JanusTransport: one WebSocket to the Janus API (layer 1 of transport -> session -> handle ->
// plugin). Requests are matched to replies by a random transaction id; everything else Janus
// sends is handed to the listener of its session. The api_secret is added here and nowhere else,
// and no request body reaches a log line (it carries the secret, SDP and room secrets).
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { getLogger, type Logger } from "../log.ts";
import { JanusClosedError, JanusError, JanusTimeoutError } from "./errors.ts";
import { parseJanusFrame, type JanusMessage } from "./messages.ts";

export interface JanusTransportOptions {
  /** Janus API WebSocket URL, e.g. ws://127.0.0.1:8188. */
  url: string;
  /** general.api_secret; sent as "apisecret" on every request. */
  apiSecret: string;
  /** WebSocket subprotocol: "janus-protocol" (API, the default) or "janus-admin-protocol". */
  protocol?: string | undefined;
  /** Default timeout of request()/requestAsync() (default 10 s). */
  requestTimeoutMs?: number | undefined;
  /** Opening handshake timeout (default 10 s). */
  connectTimeoutMs?: number | undefined;
  log?: Logger | undefined;
  /** Told of each request once answered or failed (metrics): its kind ("attach", "message(join)"), seconds, error if any. */
  observe?: RequestObserver | undefined;
}

export type RequestObserver = (request: string, seconds: number, error: Error | undefined) => void;

/** A Janus API request without transaction and apisecret (the transport adds both). */
export interface JanusRequest {
  janus: string;
  session_id?: number;
  handle_id?: number;
  [field: string]: unknown;
}

export interface RequestOptions {
  timeoutMs?: number | undefined;
  /** The request's only answer is an "ack" (keepalive, trickle): resolve on it. */
  ackIsReply?: boolean | undefined;
}

type Listener = (message: JanusMessage) => void;

interface Pending {
  what: string;
  accept: (m: JanusMessage) => boolean;
  resolve: (m: JanusMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class JanusTransport {
  private readonly ws: WebSocket;
  private readonly apiSecret: string;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private readonly observe: RequestObserver | undefined;
  private readonly pending = new Map<string, Pending>();
  private readonly sessions = new Map<number, Listener>();
  private readonly closeListeners = new Set<(reason: string) => void>();
  private closeReason: string | undefined;

  private constructor(ws: WebSocket, opts: JanusTransportOptions, log: Logger) {
    this.ws = ws;
    this.apiSecret = opts.apiSecret;
    this.timeoutMs = opts.requestTimeoutMs ?? 10_000;
    this.log = log;
    this.observe = opts.observe;
    ws.on("message", (data, isBinary) => this.receive(isBinary ? "<binary>" : String(data)));
    ws.on("error", (err) => this.log.warn({ err: err.message }, "janus socket error"));
    ws.on("close", (code, reason) => this.socketClosed(`socket closed (${code}${reason.length ? ` ${String(reason)}` : ""})`));
  }

  /** Opens the WebSocket; rejects if the handshake fails or takes longer than connectTimeoutMs. */
  static connect(opts: JanusTransportOptions): Promise<JanusTransport> {
    const log = opts.log ?? getLogger("sfu.transport", { url: opts.url });
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(opts.url, opts.protocol ?? "janus-protocol", {
        handshakeTimeout: opts.connectTimeoutMs ?? 10_000,
        perMessageDeflate: false,
      });
      const fail = (err: Error) => {
        ws.removeAllListeners();
        ws.on("error", () => {});
        ws.terminate();
        reject(new JanusClosedError(`cannot connect to Janus at ${opts.url}: ${err.message}`));
      };
      ws.once("error", fail);
      ws.once("open", () => {
        ws.off("error", fail);
        resolve(new JanusTransport(ws, opts, log));
      });
    });
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  /** Resolves on the first answer that is not an "ack" (or on the ack with ackIsReply). */
  request(body: JanusRequest, opts: RequestOptions = {}): Promise<JanusMessage> {
    return this.send(body, opts, (m) => m.janus !== "ack" || opts.ackIsReply === true);
  }

  /**
   * For asynchronous plugin requests: Janus answers "ack", then an "event" with the same
   * transaction (Janus 1.1.2 sometimes sends the event before the ack). Resolves on that event,
   * jsep included, or on "success" should the plugin answer synchronously after all.
   */
  requestAsync(body: JanusRequest, opts: Omit<RequestOptions, "ackIsReply"> = {}): Promise<JanusMessage> {
    return this.send(body, opts, (m) => m.janus === "event" || m.janus === "success");
  }

  /** Routes every message carrying this session_id and no pending transaction to `listener`. */
  onSession(sessionId: number, listener: Listener): () => void {
    this.sessions.set(sessionId, listener);
    return () => {
      if (this.sessions.get(sessionId) === listener) this.sessions.delete(sessionId);
    };
  }

  /** Called once when the socket closes, for any reason (immediately if it already has). */
  onClose(listener: (reason: string) => void): () => void {
    if (this.closeReason !== undefined) {
      const reason = this.closeReason;
      queueMicrotask(() => listener(reason));
      return () => {};
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** Closes the socket; outstanding requests reject with JanusClosedError. */
  async close(): Promise<void> {
    if (this.closeReason !== undefined) return;
    const done = new Promise<void>((resolve) => this.ws.once("close", () => resolve()));
    this.ws.close(1000);
    // A peer that never answers the closing handshake must not hold Parley's shutdown.
    const force = setTimeout(() => this.ws.terminate(), 2000);
    await done;
    clearTimeout(force);
  }

  /** Drops the socket without a closing handshake (a dead peer; tests). */
  terminate(): void {
    this.ws.terminate();
  }

  private send(body: JanusRequest, opts: RequestOptions, accept: (m: JanusMessage) => boolean): Promise<JanusMessage> {
    const transaction = randomBytes(12).toString("base64url");
    const what = describe(body);
    if (this.closeReason !== undefined) return Promise.reject(new JanusClosedError(`Janus connection closed; ${what} not sent`));
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const sentAt = performance.now();
    const reply = new Promise<JanusMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(transaction);
        reject(new JanusTimeoutError(what, timeoutMs));
      }, timeoutMs);
      this.pending.set(transaction, { what, accept, resolve, reject, timer });
      this.log.trace({ transaction, request: what }, "janus request");
      this.ws.send(JSON.stringify({ ...body, transaction, apisecret: this.apiSecret }), (err) => {
        if (!err) return;
        this.settle(transaction)?.reject(new JanusClosedError(`${what} not sent: ${err.message}`));
      });
    }).then((reply) => {
      if (reply.janus === "error") throw new JanusError(reply.error?.code ?? 0, reply.error?.reason ?? "", what);
      return reply;
    });
    if (this.observe) {
      const observe = this.observe;
      const took = () => (performance.now() - sentAt) / 1000;
      reply.then(() => observe(kindOf(body), took(), undefined), (err: Error) => observe(kindOf(body), took(), err));
    }
    return reply;
  }

  private settle(transaction: string): Pending | undefined {
    const p = this.pending.get(transaction);
    if (!p) return undefined;
    this.pending.delete(transaction);
    clearTimeout(p.timer);
    return p;
  }

  private receive(text: string): void {
    const parsed = parseJanusFrame(text);
    if (!parsed.ok) {
      this.log.warn({ problem: parsed.error, bytes: text.length }, "dropped a malformed Janus message");
      return;
    }
    const m = parsed.message;
    const tx = m.transaction;
    const p = tx === undefined ? undefined : this.pending.get(tx);
    if (p && tx !== undefined && (m.janus === "error" || p.accept(m))) {
      this.settle(tx)!.resolve(m);
      return;
    }
    if (p || m.janus === "ack") return; // an ack before the event, or after it
    // Events (with a transaction nobody waits for any more, or none) go to their session.
    if (m.session_id !== undefined && m.janus !== "success") {
      const listener = this.sessions.get(m.session_id);
      if (listener) listener(m);
      else this.log.debug({ janus: m.janus, session: m.session_id }, "Janus message for a session without listener");
      return;
    }
    const level = m.janus === "error" ? "warn" : "debug";
    this.log[level]({ janus: m.janus, transaction: tx, code: m.error?.code, reason: m.error?.reason }, "unmatched Janus message dropped");
  }

  private socketClosed(reason: string): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    this.log.debug({ reason }, "janus socket closed");
    for (const [tx, p] of [...this.pending]) {
      this.settle(tx);
      p.reject(new JanusClosedError(`Janus connection closed before ${p.what} was answered`));
    }
    this.sessions.clear();
    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const l of listeners) l(reason);
  }
}

/** The request's kind for metrics: its Janus verb and, for a plugin message, the plugin's request
 *  ("message(join)"); both come from Parley's code, but a name that does not look like one is "other". */
function kindOf(body: JanusRequest): string {
  const what = describe(body);
  return /^[a-z_]{1,32}(\([a-z_]{1,32}\))?$/.test(what) ? what : "other";
}

/** "message(join)" / "keepalive": names a request in logs and errors, never with its fields. */
function describe(body: JanusRequest): string {
  const inner = body["body"];
  const request = typeof inner === "object" && inner !== null ? (inner as { request?: unknown }).request : undefined;
  return typeof request === "string" ? `${body.janus}(${request})` : body.janus;
}
