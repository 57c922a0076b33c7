// A fake Janus for unit tests: a ws WebSocketServer on 127.0.0.1 (port 0). Tests either script
// every answer (`onRequest`) or use `emulate()`, a tiny model of the Janus API and VideoRoom
// (sessions, claim, rooms) good enough for the pool's placement and restart logic.
import { WebSocketServer, type WebSocket } from "ws";

export type Json = Record<string, unknown>;
export type RequestHandler = (msg: Json, socket: WebSocket) => void;

export class FakeJanus {
  readonly received: Json[] = [];
  private readonly wss: WebSocketServer;
  private handler: RequestHandler = () => {};
  private waiters: ((m: { msg: Json; socket: WebSocket }) => void)[] = [];
  readonly port: number;

  private constructor(wss: WebSocketServer) {
    this.wss = wss;
    this.port = (wss.address() as { port: number }).port;
    wss.on("connection", (socket) => {
      socket.on("message", (data) => {
        const msg = JSON.parse(String(data)) as Json;
        this.received.push(msg);
        const waiter = this.waiters.shift();
        if (waiter) waiter({ msg, socket });
        this.handler(msg, socket);
      });
    });
  }

  static start(port = 0): Promise<FakeJanus> {
    return new Promise((resolve, reject) => {
      const wss = new WebSocketServer({
        host: "127.0.0.1",
        port,
        handleProtocols: (protocols) => (protocols.has("janus-protocol") ? "janus-protocol" : false),
      });
      wss.once("listening", () => resolve(new FakeJanus(wss)));
      wss.once("error", reject);
    });
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  get clients(): number {
    return this.wss.clients.size;
  }

  onRequest(handler: RequestHandler): void {
    this.handler = handler;
  }

  /** The next request any client sends. */
  nextRequest(): Promise<{ msg: Json; socket: WebSocket }> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Sends to every connected client. */
  broadcast(msg: Json | string): void {
    for (const c of this.wss.clients) c.send(typeof msg === "string" ? msg : JSON.stringify(msg));
  }

  /** Drops every client without a closing handshake. */
  dropClients(): void {
    for (const c of this.wss.clients) c.terminate();
  }

  close(): Promise<void> {
    this.dropClients();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }

  /** A small Janus: sessions, handles, claim, keepalive and VideoRoom admin + publisher join. */
  emulate(opts: { adminKey: string }): JanusModel {
    const model = new JanusModel(opts.adminKey);
    this.onRequest((msg, socket) => model.answer(msg, (reply) => socket.send(JSON.stringify(reply))));
    return model;
  }
}

export function send(socket: WebSocket, msg: Json): void {
  socket.send(JSON.stringify(msg));
}

export class JanusModel {
  readonly sessions = new Set<number>();
  readonly rooms = new Map<string, { secret: string; participants: string[] }>();
  private nextId = 1000;
  private readonly adminKey: string;

  constructor(adminKey: string) {
    this.adminKey = adminKey;
  }

  /** What a restarted Janus knows: nothing. */
  restart(): void {
    this.sessions.clear();
    this.rooms.clear();
  }

  answer(m: Json, reply: (r: Json) => void): void {
    const transaction = m["transaction"];
    const session_id = m["session_id"] as number | undefined;
    const ok = (extra: Json = {}) => reply({ janus: "success", transaction, ...(session_id ? { session_id } : {}), ...extra });
    const error = (code: number, reason: string) => reply({ janus: "error", transaction, error: { code, reason } });
    if (m["janus"] !== "create" && m["janus"] !== "info" && !this.sessions.has(session_id ?? -1)) return error(458, `No such session ${session_id}`);
    switch (m["janus"]) {
      case "create": {
        const id = this.nextId++;
        this.sessions.add(id);
        return ok({ data: { id } });
      }
      case "attach":
        return ok({ data: { id: this.nextId++ } });
      case "claim":
      case "detach":
        return ok();
      case "keepalive":
        return reply({ janus: "ack", transaction, session_id });
      case "destroy":
        this.sessions.delete(session_id!);
        return ok();
      case "message":
        return this.videoroom(m["body"] as Json, m["handle_id"] as number, (data, async) => {
          const base = { transaction, session_id, sender: m["handle_id"], plugindata: { plugin: "janus.plugin.videoroom", data } };
          if (async) reply({ janus: "ack", transaction, session_id });
          reply({ janus: async ? "event" : "success", ...base });
        });
      default:
        return error(457, "Unhandled request");
    }
  }

  private videoroom(body: Json, _handle: number, reply: (data: Json, async: boolean) => void): void {
    const room = body["room"] as string;
    const r = this.rooms.get(room);
    const fail = (error_code: number, error: string, async = false) => reply({ videoroom: "event", error_code, error }, async);
    switch (body["request"]) {
      case "create":
        if (body["admin_key"] !== this.adminKey) return fail(433, "Unauthorized (wrong admin_key)");
        if (r) return fail(427, `Room ${room} already exists`);
        this.rooms.set(room, { secret: body["secret"] as string, participants: [] });
        return reply({ videoroom: "created", room, permanent: false }, false);
      case "exists":
        return reply({ videoroom: "success", room, exists: r !== undefined }, false);
      case "destroy":
        if (!r) return fail(426, `No such room (${room})`);
        if (body["secret"] !== r.secret) return fail(433, "Unauthorized (wrong secret)");
        this.rooms.delete(room);
        return reply({ videoroom: "destroyed", room, permanent: false }, false);
      case "listparticipants":
        if (!r) return fail(426, `No such room (${room})`);
        return reply({ videoroom: "participants", room, participants: r.participants.map((id) => ({ id, publisher: false })) }, false);
      case "kick":
        if (!r) return fail(426, `No such room (${room})`);
        r.participants = r.participants.filter((p) => p !== body["id"]);
        return reply({ videoroom: "success" }, false);
      case "join":
        if (!r) return fail(426, `No such room (${room})`, true);
        r.participants.push(body["id"] as string);
        return reply({ videoroom: "joined", room, id: body["id"], private_id: 7, publishers: [] }, true);
      default:
        return fail(423, "Unsupported request", true);
    }
  }
}
