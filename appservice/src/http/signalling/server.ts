// The signalling WebSocket. The first message must be `hello` with the session granted by the
// call API (never a token in the URL: URLs end up in logs), within the hello timeout. Then each
// message type has one small handler; errors are Matrix-style and the socket lives on after a bad
// message. A seat that ends (leave/kick/ban, takeover, expiry, call end) closes its socket with
// the reason. Sockets per remote address are capped.
import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { PreparedMedia, Seat } from "../../calls/callMedia.ts";
import type { CallSeats } from "../../calls/callSeats.ts";
import type { SessionEndReason } from "../../calls/callService.ts";
import { TokenBucket } from "../../calls/rateLimit.ts";
import { ParleyError, type ErrCode } from "../../errors.ts";
import { getLogger, type Logger } from "../../log.ts";
import { clientMessage, MAX_MESSAGE_BYTES, type ClientMessage } from "./protocol.ts";

export const SIGNALLING_PATH = "/_parley/v1/signal";

/** Close codes: 4000 + the HTTP status of the reason. */
const closeCode = (errcode: ErrCode) => 4000 + new ParleyError(errcode, "").status;
/** How long an ended seat's client gets to complete the close handshake. */
const CLOSE_GRACE_MS = 1000;
/** Messages a socket may get wrong before its hello succeeds; the next one closes it (a caller
 *  without a session gets a few answers to learn from, not an error service). */
export const ERRORS_BEFORE_HELLO = 8;

export interface Connection {
  readonly log: Logger;
  /** The seat in a call, once hello succeeded. */
  seat: Seat | undefined;
  send(message: Record<string, unknown>): void;
}

export type Handler<T extends ClientMessage["type"]> = (
  conn: Connection,
  message: Extract<ClientMessage, { type: T }>,
) => Promise<Record<string, unknown> | void>;

export type HandlerTable = { [T in ClientMessage["type"]]?: Handler<T> };

export interface SignallingLimits {
  /** Open sockets per remote address; more are answered M_LIMIT_EXCEEDED and closed. */
  socketsPerAddress: number;
  /** A socket without a successful hello by then is closed. */
  helloTimeoutMs: number;
  /** A standby socket (hello with standby) without its real hello by then (or its session's end) is closed. */
  standbyMs: number;
  /** Messages per socket per second, sustained, and at once above that; faster closes the socket. */
  messagesPerSecond: number;
  messageBurst: number;
}

/** Told of each message taken (by its protocol type) and each error answered (metrics). */
export interface SignallingObserver {
  message(type: ClientMessage["type"]): void;
  rejected(errcode: ErrCode): void;
}

export interface SignallingServer {
  connections(): number;
  /** Sockets on standby: a pre-join's socket whose session is checked, waiting for its real hello. */
  standbys(): number;
  close(): Promise<void>;
}

export function attachSignalling(server: Server, seats: CallSeats, handlers: HandlerTable, limits: SignallingLimits, observe?: SignallingObserver): SignallingServer {
  const log = getLogger("http.signalling");
  // Transport limit well above the message limit, so an oversize message gets an answer.
  // A frame past twice the largest message is not even read (the socket is closed, 1009).
  const wss = new WebSocketServer({ noServer: true, maxPayload: 2 * MAX_MESSAGE_BYTES });
  const perAddress = new Map<string, number>();
  /** The standby socket of each session (by its key): one each, a newer one closes the older. */
  const standbys = new Map<string, () => void>();
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (new URL(req.url ?? "/", "http://x").pathname !== SIGNALLING_PATH) return;
    wss.handleUpgrade(req, socket, head, (ws) => serve(ws, req.socket.remoteAddress ?? ""));
  };
  server.on("upgrade", onUpgrade);

  function serve(ws: WebSocket, address: string): void {
    const conn: Connection = { log, seat: undefined, send: (m) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m)) };
    let errorsBeforeHello = 0;
    const fail = (err: ParleyError, msgId?: unknown) => {
      if (!conn.seat && ++errorsBeforeHello > ERRORS_BEFORE_HELLO) {
        return shut(new ParleyError(err.errcode, `${err.message}; too many errors before hello`));
      }
      observe?.rejected(err.errcode);
      conn.send({ type: "error", ...(msgId === undefined ? {} : { id: msgId }), errcode: err.errcode, error: err.message });
    };
    const messages = new TokenBucket({ perMinute: limits.messagesPerSecond * 60, burst: limits.messageBurst }, { now: () => Date.now() });
    const shut = (err: ParleyError, code = closeCode(err.errcode), type = "error", extra: Record<string, unknown> = {}) => {
      if (type === "error") observe?.rejected(err.errcode);
      conn.send({ type, errcode: err.errcode, error: err.message, ...extra });
      ws.close(code, err.message);
      setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    };

    const open = (perAddress.get(address) ?? 0) + 1;
    perAddress.set(address, open);
    ws.on("close", () => {
      clearTimeout(helloTimer);
      leaveStandby();
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
      if (conn.seat) seats.closed(conn.seat);
    });
    ws.on("error", (err) => log.warn({ err }, "signalling socket error"));
    let helloTimer = setTimeout(
      () => shut(new ParleyError("M_MISSING_TOKEN", `no hello within ${limits.helloTimeoutMs} ms`), 4408),
      limits.helloTimeoutMs,
    );
    /**
     * This socket's standby (a hello with standby: true), until its real hello or its close; with
     * the pre-join's subscription it asked for (`prepare`) and the client's answer to it, if any.
     */
    let standby:
      | {
          key: string;
          token: string;
          userId: string;
          roomId: string;
          callId: string;
          replaced: () => void;
          release: () => void;
          prepared?: Promise<PreparedMedia | undefined>;
          answering?: Promise<unknown>;
        }
      | undefined;
    /** Ends the standby; its pre-join subscription is closed unless `keep` (its real hello takes it). */
    const leaveStandby = (keep = false) => {
      if (standby && standbys.get(standby.key) === standby.replaced) standbys.delete(standby.key);
      standby?.release();
      if (!keep) void standby?.prepared?.then((p) => p?.close());
      standby = undefined;
    };
    if (open > limits.socketsPerAddress) {
      return shut(new ParleyError("M_LIMIT_EXCEEDED", `at most ${limits.socketsPerAddress} signalling sockets per address`));
    }

    let helloPending = false;
    const hello: Handler<"hello"> = async (_conn, message) => {
      if (conn.seat || helloPending) throw new ParleyError("M_FORBIDDEN", "this socket already has a session");
      if (message.standby) return standBy(message.session, message.prepare === true);
      // The pre-join's subscription is the call's only if its answer came first on this socket (the
      // client takes it for the call only then). One not answered (its offer crossed this hello, as
      // when a knocker's call starts at the let-in, or still being made) is closed as it comes,
      // and the hello does not wait for it.
      const prepared = standby?.prepared && standby.answering ? { media: standby.prepared, answering: standby.answering } : undefined;
      leaveStandby(prepared !== undefined);
      helloPending = true;
      try {
        const { seat, e2ee, resumed, ice, prepared: seatedPrepared, preparedUpdate } = await seats.open(
          {
            push: (event) => conn.send(event),
            ended: (reason: SessionEndReason) =>
              shut(new ParleyError(reason.errcode, reason.message), undefined, "evicted", {
                ...(reason.by ? { by: reason.by } : {}),
                ...(reason.reason ? { reason: reason.reason } : {}),
              }),
          },
          message.session,
          message.device_id,
          prepared,
        );
        conn.seat = seat;
        clearTimeout(helloTimer);
        // The socket went away while the session was being opened: the seat goes with it.
        if (ws.readyState !== ws.OPEN) seats.closed(seat);
        const s = seat.session;
        log.info({ userId: s.userId, roomId: s.roomId, callId: s.callId, resumed }, "signalling session open");
        // resumed: the media the client had before a Parley restart is this seat's (nothing to publish again).
        // ice: a session granted in the lobby (or restored after a restart) gets its ICE servers here.
        const iceFields = ice ? { ice_servers: ice.iceServers, ice_transport_policy: ice.iceTransportPolicy } : {};
        // prepared_update: the held videos' offer pushed on the standby that its hello crossed (the call answers it).
        const update = preparedUpdate ? { prepared_update: { jsep: { type: "offer", sdp: preparedUpdate.sdp }, streams: preparedUpdate.streams } } : {};
        return { user_id: s.userId, room_id: s.roomId, call_id: s.callId, e2ee, resumed, ...iceFields, ...(seatedPrepared ? { prepared: true } : {}), ...update };
      } finally {
        helloPending = false;
      }
    };

    /**
     * The pre-join's socket, opened ahead so that Join's hello goes out at once: the session is
     * checked, nobody is seated, and the socket waits for its real hello up to `standbyMs` (or the
     * session's grant, if shorter). Synchronous: a real hello right behind it finds it done.
     */
    const standBy = (token: string, prepare: boolean) => {
      if (standby) {
        // Asked again with prepare, for the same session, none asked before: a knocker's lobby
        // standby (no media while knocking) once its client saw the invite. Nothing else.
        if (!prepare || standby.prepared || standby.token !== token) throw new ParleyError("M_FORBIDDEN", "this socket is on standby already");
        prepareOn(standby);
        return { standby: true, user_id: standby.userId, room_id: standby.roomId, call_id: standby.callId };
      }
      // The session ending first (a knocker denied, an eviction, its expiry) closes the socket now.
      const s = seats.standby(token, (reason) => shut(new ParleyError(reason.errcode, reason.message)));
      const replaced = () => shut(new ParleyError("M_FORBIDDEN", "a newer standby socket took this session"));
      standbys.get(s.key)?.();
      standbys.set(s.key, replaced);
      standby = { key: s.key, token, userId: s.userId, roomId: s.roomId, callId: s.callId, replaced, release: s.release };
      clearTimeout(helloTimer);
      const waitMs = Math.max(0, Math.min(limits.standbyMs, s.lifeMs));
      helloTimer = setTimeout(() => shut(new ParleyError("M_MISSING_TOKEN", `no hello within ${waitMs} ms of standby`), 4408), waitMs);
      if (prepare) prepareOn(standby);
      return { standby: true, user_id: s.userId, room_id: s.roomId, call_id: s.callId };
    };

    /** The standby's pre-join subscription, asked now; after the standby's answer (sent once this returns), the SFU's offer when it comes. */
    const prepareOn = (mine: NonNullable<typeof standby>) => {
      const wanted = () => standby === mine && ws.readyState === ws.OPEN;
      mine.prepared = seats
        .prepare(mine.token, wanted)
        .then(async (p) => {
          if (!p) return p;
          if (!wanted()) return void (await p.close());
          // A lobby grant's (let in) carries the ICE servers its grant did not: its peer connection is made before the hello.
          const ice = p.ice ? { ice_servers: p.ice.iceServers, ice_transport_policy: p.ice.iceTransportPolicy } : {};
          const held = p.held.length ? { held: p.held } : {};
          conn.send({ type: "prepared", jsep: { type: "offer", sdp: p.offerSdp }, streams: p.streams, ...held, ...ice });
          // The held videos' offer, once the connection is up: a second `prepared` (while on standby).
          p.onUpdate = (offer) => {
            if (wanted()) conn.send({ type: "prepared", jsep: { type: "offer", sdp: offer.sdp }, streams: offer.streams });
          };
          return p;
        })
        .catch((err: unknown) => void log.warn({ err }, "pre-join subscription not made"));
    };

    /**
     * The standby's pre-join subscription: its answer and its candidates, nothing else. The
     * answer is noted before anything is awaited, so that a real hello right behind it waits for it.
     */
    const standbyMedia = (message: ClientMessage): (() => Promise<Record<string, unknown> | void>) | undefined => {
      const s = standby;
      if (!s?.prepared) return undefined;
      const prepared = s.prepared;
      const none = () => new ParleyError("M_NOT_FOUND", "no subscription was prepared on this socket");
      if (message.type === "answer") {
        const answering = (async () => {
          const p = await prepared;
          if (!p) throw none();
          await p.answer(message.jsep.sdp, message.e2ee);
        })();
        answering.catch(() => undefined); // (its request reports it)
        s.answering = answering;
        return () => answering;
      }
      if (message.type === "trickle" && message.target === "subscriber") {
        return async () => {
          const p = await prepared;
          if (!p) throw none();
          await p.trickle(message.candidate);
        };
      }
      return undefined;
    };

    ws.on("message", async (data, isBinary) => {
      if (ws.readyState !== ws.OPEN) return; // closing: nothing more is answered
      if (messages.take() > 0) {
        return shut(new ParleyError("M_LIMIT_EXCEEDED", `at most ${limits.messagesPerSecond} messages per second (${limits.messageBurst} at once)`));
      }
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
      const onStandby = conn.seat ? undefined : standbyMedia(message);
      if (message.type !== "hello" && !conn.seat && !onStandby) {
        return fail(new ParleyError("M_MISSING_TOKEN", "send hello with your session first"), msgId);
      }
      const userId = conn.seat?.session.userId;
      conn.log.debug({ type: message.type, userId }, "signalling message");
      const handler = onStandby ? () => onStandby() : message.type === "hello" ? hello : (handlers[message.type] as Handler<typeof message.type> | undefined);
      if (!handler) return fail(new ParleyError("M_UNRECOGNIZED", `${message.type} is not supported here`), msgId);
      observe?.message(message.type);
      try {
        const result = await handler(conn, message as never);
        conn.send({ type: "result", ...(message.id === undefined ? {} : { id: message.id }), ...(result ?? {}) });
      } catch (err) {
        if (err instanceof ParleyError) return fail(err, message.id);
        conn.log.error({ err, type: message.type, userId }, "signalling handler failed");
        fail(new ParleyError("M_UNKNOWN", "internal error"), message.id);
      }
    });
  }

  return {
    connections: () => wss.clients.size,
    standbys: () => standbys.size,
    close: async () => {
      server.off("upgrade", onUpgrade);
      for (const ws of wss.clients) ws.close(1001, "server stopping");
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

/** ping: what every connection has, whatever the media handlers. */
export const sessionHandlers: Pick<HandlerTable, "ping"> = { ping: async () => ({ pong: true }) };
