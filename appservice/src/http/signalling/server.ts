// The signalling WebSocket. The first message must be `hello` with the session granted by the
// call API (never a token in the URL: URLs end up in logs). Then each message type has one small
// handler (handlers.ts); errors are Matrix-style and the socket lives on after a bad message.
// A session that ends (leave/kick/ban, expiry, call end) closes its socket with the reason.
import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { CallService, CallSession, SessionCloser } from "../../calls/callService.ts";
import { ParleyError } from "../../errors.ts";
import { getLogger, type Logger } from "../../log.ts";
import { clientMessage, MAX_MESSAGE_BYTES, type ClientMessage } from "./protocol.ts";

export const SIGNALLING_PATH = "/_parley/v1/signal";

/** Close codes: 4000 + the HTTP status of the reason. */
const CLOSE = { M_FORBIDDEN: 4403, M_UNKNOWN_TOKEN: 4401, M_NOT_FOUND: 4404, M_MISSING_TOKEN: 4401 } as const;

export interface Connection {
  readonly log: Logger;
  session: CallSession | undefined;
  /** The Matrix device the client declared in hello. */
  deviceId: string | undefined;
  /** What ends this socket when its session ends (registered with the call service). */
  closer: SessionCloser | undefined;
  send(message: Record<string, unknown>): void;
  close(code: number, reason: string): void;
}

export type Handler<T extends ClientMessage["type"]> = (
  conn: Connection,
  message: Extract<ClientMessage, { type: T }>,
) => Promise<Record<string, unknown> | void>;

export type HandlerTable = { [T in ClientMessage["type"]]?: Handler<T> };

export interface SignallingServer {
  connections(): number;
  close(): Promise<void>;
}

export function attachSignalling(server: Server, calls: CallService, handlers: HandlerTable, hooks: { closed?: (conn: Connection) => void } = {}): SignallingServer {
  const log = getLogger("http.signalling");
  // Transport limit well above the message limit, so an oversize message gets an answer.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * MAX_MESSAGE_BYTES });
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (new URL(req.url ?? "/", "http://x").pathname !== SIGNALLING_PATH) return;
    wss.handleUpgrade(req, socket, head, (ws) => serve(ws));
  };
  server.on("upgrade", onUpgrade);

  function serve(ws: WebSocket): void {
    const conn: Connection = {
      log,
      session: undefined,
      deviceId: undefined,
      closer: undefined,
      send: (m) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m)),
      close: (code, reason) => ws.close(code, reason),
    };
    const fail = (err: ParleyError, msgId?: unknown) =>
      conn.send({ type: "error", ...(msgId === undefined ? {} : { id: msgId }), errcode: err.errcode, error: err.message });

    ws.on("message", async (data, isBinary) => {
      const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
      if (isBinary) return fail(new ParleyError("M_NOT_JSON", "binary messages are not accepted"));
      if (size > MAX_MESSAGE_BYTES) return fail(new ParleyError("M_TOO_LARGE", `messages are limited to ${MAX_MESSAGE_BYTES} bytes`));
      let raw: unknown;
      try {
        raw = JSON.parse(data.toString());
      } catch {
        return fail(new ParleyError("M_NOT_JSON", "message is not valid JSON"));
      }
      const parsed = clientMessage.safeParse(raw);
      const msgId = (raw as { id?: unknown } | null)?.id;
      if (!parsed.success) {
        const detail = parsed.error.issues.map((i) => `${i.path.join(".") || "message"}: ${i.message}`).join("; ");
        return fail(new ParleyError("M_BAD_JSON", detail), msgId);
      }
      const message = parsed.data;
      if (message.type !== "hello" && !conn.session) {
        return fail(new ParleyError("M_MISSING_TOKEN", "send hello with your session first"), msgId);
      }
      conn.log.debug({ type: message.type, userId: conn.session?.userId }, "signalling message");
      const handler = handlers[message.type] as Handler<typeof message.type> | undefined;
      if (!handler) return fail(new ParleyError("M_UNRECOGNIZED", `${message.type} is not supported here`), msgId);
      try {
        const result = await handler(conn, message as never);
        conn.send({ type: "result", ...(message.id === undefined ? {} : { id: message.id }), ...(result ?? {}) });
      } catch (err) {
        if (err instanceof ParleyError) return fail(err, message.id);
        conn.log.error({ err, type: message.type, userId: conn.session?.userId }, "signalling handler failed");
        fail(new ParleyError("M_UNKNOWN", "internal error"), message.id);
      }
    });
    ws.on("close", () => {
      if (conn.session) hooks.closed?.(conn);
      if (conn.session && conn.closer) {
        calls.detach(conn.session.token, conn.closer);
        void handlers.leave?.(conn, { type: "leave" }).catch(() => undefined);
      }
    });
    ws.on("error", (err) => log.warn({ err }, "signalling socket error"));
  }

  return {
    connections: () => wss.clients.size,
    close: async () => {
      server.off("upgrade", onUpgrade);
      for (const ws of wss.clients) ws.close(1001, "server stopping");
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

/** How a call's media is encrypted, told to the client in hello. */
export interface E2eeInfo {
  required: boolean;
  keys: "participant" | "provisioned";
  /** The bot whose Olm device sends provisioned keys (only keys from it are accepted). */
  bot: string;
}

/** hello, ping and leave: what every connection has, whatever the media handlers. */
export function sessionHandlers(
  calls: CallService,
  e2ee: (roomId: string) => E2eeInfo,
  hooks: { opened?: (conn: Connection, e2ee: E2eeInfo) => void } = {},
): Pick<HandlerTable, "hello" | "ping"> {
  return {
    hello: async (conn, m) => {
      if (conn.session) throw new ParleyError("M_FORBIDDEN", "this socket already has a session");
      const session = calls.session(m.session);
      if (!session) throw new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired session; join again");
      conn.session = session;
      conn.deviceId = m.device_id;
      conn.closer = (reason) => {
        conn.send({ type: "evicted", errcode: reason.errcode, error: reason.message });
        conn.close(CLOSE[reason.errcode], reason.message);
      };
      calls.attach(session.token, conn.closer);
      conn.log.info({ userId: session.userId, roomId: session.roomId, callId: session.callId }, "signalling session open");
      const info = e2ee(session.roomId);
      hooks.opened?.(conn, info);
      return { user_id: session.userId, room_id: session.roomId, call_id: session.callId, e2ee: info };
    },
    ping: async () => ({ pong: true }),
  };
}
