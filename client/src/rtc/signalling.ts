// The signalling client: one WebSocket to the hosting Parley. Requests carry an id and resolve
// with the matching result (or reject with its error); pushes go to listeners. A dropped socket
// is reopened at once and often at first, then with exponential backoff, and a fresh `hello`;
// listeners of `ready` then publish and subscribe again (the server ends a session's media when
// its socket closes), unless the hello says the media was kept (a Parley restart).
import { asErrCode, ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import { markStep } from "../timeline.ts";
import { Emitter, Store } from "../state/store.ts";
import { realTimers, type Timers } from "../timers.ts";
import { parseHeld, parseHello, parseIcePolicy, parseIceServers, parsePush, type ClientRequest, type HeldStream, type HelloResult, type Push } from "./protocol.ts";
import type { Requester } from "./publisher.ts";

/** The part of WebSocket we use (a fake in unit tests). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type SocketFactory = (url: string) => SocketLike;

const OPEN = 1;
const browserSocket: SocketFactory = (url) => new WebSocket(url) as unknown as SocketLike;
/** 4000 + HTTP status: the server ended the session on purpose; reconnecting would not help. */
const SESSION_ENDED = new Set([4401, 4403, 4404, 4410]);

export type SignallingPhase = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface SignallingState {
  phase: SignallingPhase;
  /** Reconnect attempts since the socket was last open. */
  attempt: number;
  /** Why the client stopped for good (phase "closed"), null when it was asked to. */
  error: ParleyClientError | null;
}

export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** 0..1: the share of each delay that is random. */
  jitter: number;
  /** Give up after this many failed attempts in a row. */
  maxAttempts: number;
  /** The first attempts wait only initialMs each (a server restarting comes back in seconds); then the delay grows. */
  fastAttempts: number;
}

export interface SignallingOptions {
  url: string;
  /** The session token for `hello`; `renew` when the server no longer knows the last one. */
  session: (renew: boolean) => Promise<string>;
  /** This client's Matrix device, declared in hello (others address media keys to it). */
  deviceId?: string;
  socketFactory?: SocketFactory;
  /** A socket opened ahead for `url` (the pre-join's StandbySocket), used by the first open if it gives one. */
  socketAhead?: (url: string) => SocketLike | null;
  timers?: Timers;
  backoff?: Partial<Backoff>;
  requestTimeoutMs?: number;
  /** Keep-alive: a ping this often; no answer within requestTimeoutMs means the socket is dead. */
  pingEveryMs?: number;
  random?: () => number;
}

export type Result = Record<string, unknown>;

interface Pending {
  resolve(r: Result): void;
  reject(e: ParleyClientError): void;
  timer: unknown;
  type: string;
}

export interface SignallingEvents extends Record<string, unknown> {
  push: Push;
  /** A session is open on a socket: the first time, and after every reconnect. */
  ready: { hello: HelloResult; reconnected: boolean };
}

export class SignallingClient {
  readonly state = new Store<SignallingState>({ phase: "idle", attempt: 0, error: null });
  readonly events = new Emitter<SignallingEvents>();
  private readonly o: Required<Omit<SignallingOptions, "backoff">> & { backoff: Backoff };
  private readonly log = getLogger("signalling");
  private socket: SocketLike | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private retryTimer: unknown;
  private pingTimer: unknown;
  private everReady = false;
  private stopped = false;
  /** The server forgot or expired our session: ask for a new one at the next hello. */
  private renewNext = false;
  /** `socketAhead` is asked once, by the first open. */
  private aheadTaken = false;

  constructor(opts: SignallingOptions) {
    this.o = {
      socketFactory: browserSocket,
      socketAhead: () => null,
      timers: realTimers,
      requestTimeoutMs: 10_000,
      pingEveryMs: 15_000,
      random: Math.random,
      deviceId: "",
      // An option passed as undefined keeps its default.
      ...(Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as SignallingOptions),
      // About 5 s of retries every quarter second (a Parley restart or upgrade is over by then),
      // then doubling up to 8 s; about a minute in all before giving up.
      backoff: { initialMs: 250, maxMs: 8000, factor: 2, jitter: 0.3, maxAttempts: 30, fastAttempts: 20, ...opts.backoff },
    };
  }

  /** Opens the first socket and says hello; rejects when that fails (nothing is retried yet). */
  connect(): Promise<HelloResult> {
    if (this.state.get().phase !== "idle") return Promise.reject(new ParleyClientError("CLOSED", "signalling", { detail: "connect() twice" }));
    return new Promise((resolve, reject) => {
      const offReady = this.events.on("ready", ({ hello }) => {
        offReady();
        offState();
        resolve(hello);
      });
      const offState = this.state.subscribe((s) => {
        if (s.phase === "reconnecting" || s.phase === "closed") {
          offReady();
          offState();
          const err = s.error ?? new ParleyClientError("NETWORK", "join", { detail: "signalling socket did not open" });
          this.close();
          reject(err);
        }
      });
      this.open();
    });
  }

  /** Sends a request and resolves with its result; rejects with the server's error or CLOSED. */
  request(message: ClientRequest, timeoutMs = this.o.requestTimeoutMs): Promise<Result> {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN || (this.state.get().phase !== "open" && message.type !== "hello")) {
      return Promise.reject(new ParleyClientError("CLOSED", "signalling", { detail: `${message.type} while ${this.state.get().phase}` }));
    }
    const id = this.nextId++;
    return new Promise<Result>((resolve, reject) => {
      const timer = this.o.timers.setTimeout(() => {
        this.pending.delete(id);
        reject(new ParleyClientError("TIMEOUT", "signalling", { detail: `no answer to ${message.type}` }));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, type: message.type });
      socket.send(JSON.stringify({ ...message, id }));
    });
  }

  /** Stops for good (after `leave`, or on hang-up); pending requests are rejected. */
  close(): void {
    this.stopped = true;
    this.o.timers.clearTimeout(this.retryTimer);
    this.o.timers.clearTimeout(this.pingTimer);
    this.dropSocket(1000, "bye");
    if (this.state.get().phase !== "closed") this.state.update({ phase: "closed" });
  }

  /** Skips the backoff wait (the browser says the network is back). */
  reconnectNow(): void {
    if (this.stopped || this.state.get().phase !== "reconnecting") return;
    this.o.timers.clearTimeout(this.retryTimer);
    this.open();
  }

  private open(): void {
    if (this.stopped) return;
    const phase = this.state.get().phase;
    this.state.update({ phase: phase === "idle" || phase === "connecting" ? "connecting" : "reconnecting" });
    let socket: SocketLike;
    // The first socket may be one opened ahead (open already: its hello goes out now, in this task).
    const ahead = this.aheadTaken ? null : this.o.socketAhead(this.o.url);
    this.aheadTaken = true;
    try {
      socket = ahead ?? this.o.socketFactory(this.o.url);
    } catch (err) {
      this.log.warn("could not open the signalling socket", { err: String(err) });
      return this.lost();
    }
    this.socket = socket;
    socket.onopen = () => void this.hello(socket);
    socket.onmessage = (ev) => this.onMessage(ev.data);
    socket.onerror = () => undefined; // a close follows
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onClose(ev.code, ev.reason);
    };
    if (socket.readyState === OPEN) void this.hello(socket);
  }

  private async hello(socket: SocketLike): Promise<void> {
    markStep("socket-open");
    try {
      let hello: HelloResult | null = null;
      const first = this.renewNext;
      this.renewNext = false;
      for (const renew of first ? [true] : [false, true]) {
        const session = await this.o.session(renew);
        if (this.socket !== socket) return;
        try {
          hello = parseHello(await this.request({ type: "hello", session, ...(this.o.deviceId ? { device_id: this.o.deviceId } : {}) }));
          break;
        } catch (err) {
          if (!renew && err instanceof ParleyClientError && err.code === "M_UNKNOWN_TOKEN") continue;
          throw err;
        }
      }
      if (!hello) throw new ParleyClientError("BAD_RESPONSE", "signalling", { detail: "hello result without user_id/room_id/call_id" });
      const reconnected = this.everReady;
      this.everReady = true;
      this.state.update({ phase: "open", attempt: 0, error: null });
      this.armPing();
      this.events.emit("ready", { hello, reconnected });
    } catch (err) {
      const e = err instanceof ParleyClientError ? err : new ParleyClientError("M_UNKNOWN", "signalling", { detail: String(err) });
      if (e.code === "CLOSED" || e.code === "TIMEOUT" || e.code === "NETWORK") {
        this.log.warn("hello failed; retrying", { code: e.code });
        this.dropSocket(4000, "hello failed");
        return this.lost();
      }
      this.fail(e);
    }
  }

  private onMessage(data: unknown): void {
    let m: Result;
    try {
      m = JSON.parse(String(data)) as Result;
      if (typeof m !== "object" || m === null) throw new Error("not an object");
    } catch {
      return this.log.warn("signalling message is not JSON");
    }
    // (An answer to no request of ours, such as a standby hello's, is dropped.)
    if ((m.type === "result" || m.type === "error") && m.id !== undefined) {
      const p = typeof m.id === "number" ? this.pending.get(m.id) : undefined;
      if (!p) return;
      this.pending.delete(m.id as number);
      this.o.timers.clearTimeout(p.timer);
      if (m.type === "result") p.resolve(m);
      else {
        const detail = `${p.type}: ${String(m.errcode)} ${typeof m.error === "string" ? m.error : ""}`.trim();
        p.reject(new ParleyClientError(asErrCode(m.errcode), "signalling", { detail }));
      }
      return;
    }
    if (m.type === "error") return this.log.warn("signalling error without a request", { errcode: m.errcode, error: m.error });
    // The pre-join's offer, pushed as this socket's call hello was on its way (the call took the
    // standby socket before the offer came, as when a knocker's call starts at the let-in): the
    // server drops that subscription at the hello, and the call subscribes by itself.
    if (m.type === "prepared") return this.log.debug("a pre-join offer crossed the call's hello: not the call's");
    const parsed = parsePush(m);
    if ("errors" in parsed) return this.log.warn("ignoring a malformed push", { type: String(m.type).slice(0, 40), errors: parsed.errors.join("; ").slice(0, 300) });
    if (parsed.push.type === "evicted") {
      const code = asErrCode(parsed.push.errcode);
      if (code === "M_UNKNOWN_TOKEN") return this.renew(parsed.push.error);
      // Listeners learn who ended the session (for the words on screen) before the state closes.
      this.events.emit("push", parsed.push);
      return this.fail(new ParleyClientError(code === "M_UNKNOWN" ? "EVICTED" : code, "signalling", { detail: parsed.push.error }));
    }
    this.events.emit("push", parsed.push);
  }

  private onClose(code: number, reason: string): void {
    this.o.timers.clearTimeout(this.pingTimer);
    this.rejectPending(`socket closed (${code})`);
    if (this.stopped) return;
    if (code === 4401) return this.renew(reason);
    if (SESSION_ENDED.has(code)) {
      const errcode = code === 4403 ? "M_FORBIDDEN" : code === 4404 ? "M_NOT_FOUND" : "M_UNKNOWN_TOKEN";
      return this.fail(new ParleyClientError(errcode, "signalling", { detail: reason || `closed with ${code}` }));
    }
    this.log.info("signalling socket closed; reconnecting", { code });
    this.lost();
  }

  /** The session expired (not a removal): reconnect with a fresh one from the call API. */
  private renew(why: string): void {
    this.log.info("call session expired; renewing it", { why });
    this.renewNext = true;
    this.dropSocket(1000, "renewing session");
    this.rejectPending("session expired");
    this.o.timers.clearTimeout(this.pingTimer);
    this.lost();
  }

  /** The socket is gone but the session may live on: try again after a backoff. */
  private lost(): void {
    if (this.stopped) return;
    const attempt = this.state.get().attempt + 1;
    const b = this.o.backoff;
    if (attempt > b.maxAttempts) {
      return this.fail(new ParleyClientError("CLOSED", "signalling", { detail: `gave up after ${b.maxAttempts} attempts` }));
    }
    const base = Math.min(b.maxMs, b.initialMs * b.factor ** Math.max(0, attempt - b.fastAttempts));
    const delay = Math.round(base * (1 - b.jitter + b.jitter * this.o.random()));
    this.state.update({ phase: "reconnecting", attempt });
    this.retryTimer = this.o.timers.setTimeout(() => this.open(), delay);
  }

  private fail(error: ParleyClientError): void {
    this.stopped = true;
    this.o.timers.clearTimeout(this.retryTimer);
    this.o.timers.clearTimeout(this.pingTimer);
    this.dropSocket(1000, "session ended");
    this.rejectPending("session ended");
    this.state.update({ phase: "closed", error });
  }

  private armPing(): void {
    this.o.timers.clearTimeout(this.pingTimer);
    this.pingTimer = this.o.timers.setTimeout(async () => {
      const socket = this.socket;
      if (!socket || this.state.get().phase !== "open") return;
      try {
        await this.request({ type: "ping" });
        this.armPing();
      } catch (err) {
        if (this.socket !== socket) return;
        this.log.warn("no answer to ping; reopening the socket", { err: String(err) });
        this.dropSocket(4000, "ping timeout");
        this.rejectPending("ping timeout");
        this.lost();
      }
    }, this.o.pingEveryMs);
  }

  private dropSocket(code: number, reason: string): void {
    const s = this.socket;
    this.socket = null;
    if (s) closeQuietly(s, code, reason);
  }

  private rejectPending(why: string): void {
    for (const [id, p] of this.pending) {
      this.o.timers.clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new ParleyClientError("CLOSED", "signalling", { detail: `${p.type}: ${why}` }));
    }
  }
}

/** What a standby socket may be asked to prepare: the pre-join's subscription (docs/join.md). */
export interface StandbyPrepare {
  /**
   * The server's `prepared` push: its offer (answer it with `request` on this socket), every m-line
   * paused; `held`: the video m-lines the offer left out (their publishers' mids), for the call to
   * subscribe to at Join; `ice`: the ICE servers a lobby grant's session (let in) gets with it, its
   * grant having had none.
   */
  onPrepared(push: {
    jsep: { type: "offer"; sdp: string };
    streams: unknown[];
    held: HeldStream[];
    ice?: { iceServers: RTCIceServer[]; iceTransportPolicy: RTCIceTransportPolicy };
  }): void;
  /** The socket went away before the call took it (refused, closed by the server, or `close`d). */
  onGone(): void;
}

/**
 * The pre-join's signalling socket, opened ahead as the call's grant is asked, with a `standby`
 * hello once the grant's session is in: the server checks the session, seats nobody, and keeps
 * the socket for the real hello (calls.limits.standbySeconds). At Join the call takes it (`take`)
 * and says its hello at once, instead of opening a socket on a page busy drawing the call (25-80
 * ms here; docs/join.md), even when Join comes before the grant (a knock let in). No session
 * (the grant refused, or for another socket), closed by the server (standby over, session gone)
 * or refused, it is simply not used. With `prepare`, the hello asks for the pre-join's
 * subscription too: its offer comes in a `prepared` push, and its answer and candidates go out on
 * this socket (`request`) until the call takes it.
 */
export class StandbySocket implements Requester {
  private socket: SocketLike | null;
  readonly url: string;
  private prepare: StandbyPrepare | undefined;
  /** The session the standby hello went out with (undefined: not sent yet). */
  private standbySession: string | undefined;
  private readonly pending = new Map<string, { resolve(r: Result): void; reject(e: ParleyClientError): void }>();
  private nextId = 1;
  /** An answer to the prepared subscription went out on this socket (the server then seats it at the real hello). */
  answerSent = false;

  constructor(url: string, session: string | Promise<string | null>, factory: SocketFactory = browserSocket, prepare?: StandbyPrepare) {
    this.url = url;
    this.prepare = prepare;
    let socket: SocketLike | null = null;
    try {
      socket = factory(url);
    } catch {
      // no socket ahead: Join opens one
    }
    this.socket = socket;
    if (!socket) {
      prepare?.onGone();
      return;
    }
    // The standby hello, once the socket is open and the session known (in either order), and
    // only while nobody has taken the socket.
    let token = typeof session === "string" ? session : undefined;
    const standBy = () => {
      if (this.socket === socket && token !== undefined && socket.readyState === OPEN && this.standbySession === undefined) {
        this.standbySession = token;
        socket.send(JSON.stringify({ type: "hello", id: "standby", session: token, standby: true, ...(this.prepare ? { prepare: true } : {}) }));
      }
    };
    socket.onopen = standBy;
    if (typeof session !== "string") {
      void session.then(
        (t) => {
          if (t === null) return this.socket === socket ? this.close() : undefined;
          token = t;
          standBy();
        },
        () => (this.socket === socket ? this.close() : undefined),
      );
    }
    socket.onmessage = (ev) => {
      let m: Result | null;
      try {
        m = JSON.parse(String(ev.data)) as Result | null;
      } catch {
        m = null;
      }
      if (m === null || typeof m !== "object") return this.close();
      const mine = typeof m.id === "string" ? this.pending.get(m.id) : undefined;
      if (mine && (m.type === "result" || m.type === "error")) {
        this.pending.delete(m.id as string);
        if (m.type === "result") mine.resolve(m);
        else mine.reject(new ParleyClientError(asErrCode(m.errcode), "signalling", { detail: `standby: ${String(m.errcode)} ${String(m.error ?? "")}`.trim() }));
        return;
      }
      if (m.type === "prepared" && this.prepare && isOffer(m.jsep) && Array.isArray(m.streams)) {
        const ice = Array.isArray(m.ice_servers) ? { ice: { iceServers: parseIceServers(m.ice_servers), iceTransportPolicy: parseIcePolicy(m.ice_transport_policy) } } : {};
        return this.prepare.onPrepared({ jsep: m.jsep, streams: m.streams, held: parseHeld(m.held), ...ice });
      }
      // Refused (an unknown session, a full server): the socket is of no use to the call.
      if (m.type !== "result") this.close();
    };
    socket.onerror = () => undefined;
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.settlePending();
      this.prepare?.onGone();
    };
  }

  /**
   * Asks for the pre-join's subscription on a socket opened without (a knocker's lobby grant: no
   * media before the let-in): with the standby hello if it has not gone out yet, else with a
   * second standby hello saying `prepare` (the server makes it once the user is let in). False
   * (nothing asked) if this socket asked already, or is gone or taken.
   */
  prepareNow(prepare: StandbyPrepare): boolean {
    const s = this.socket;
    if (this.prepare || !s || s.readyState > OPEN) return false;
    this.prepare = prepare;
    if (this.standbySession !== undefined) s.send(JSON.stringify({ type: "hello", id: "standby-prepare", session: this.standbySession, standby: true, prepare: true }));
    return true;
  }

  /** Whether the socket is still there for the taking (not refused, closed or taken). */
  get alive(): boolean {
    return this.socket !== null && this.socket.readyState <= OPEN;
  }

  /**
   * A request on the standby (the prepared subscription's answer and candidates): refused once
   * the socket is taken or gone; answered by the server, or with nothing when the call takes the
   * socket first (its hello's `prepared` then says whether the answer counted).
   */
  request(message: ClientRequest): Promise<Result> {
    const s = this.socket;
    if (!s || s.readyState !== OPEN) return Promise.reject(new ParleyClientError("CLOSED", "signalling", { detail: `${message.type} on a standby socket gone or taken` }));
    const id = `standby-${this.nextId++}`;
    if (message.type === "answer") this.answerSent = true;
    return new Promise<Result>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      s.send(JSON.stringify({ ...message, id }));
    });
  }

  /** The socket for `url`, once, while it is opening or open (its handlers the taker's to set); else null. */
  take(url: string): SocketLike | null {
    const s = this.socket;
    if (!s || url !== this.url || s.readyState > OPEN) {
      this.close();
      return null;
    }
    this.socket = null;
    s.onopen = s.onmessage = s.onerror = s.onclose = null;
    this.settlePending();
    return s;
  }

  /** Not used after all (another pre-join, the meeting closed). */
  close(): void {
    const s = this.socket;
    this.socket = null;
    this.settlePending();
    if (s) closeQuietly(s, 1000, "not joining");
    if (s) this.prepare?.onGone();
  }

  /** Requests of the standby still unanswered are answered with nothing: their answers go to whoever has the socket now. */
  private settlePending(): void {
    for (const p of this.pending.values()) p.resolve({});
    this.pending.clear();
  }
}

function isOffer(v: unknown): v is { type: "offer"; sdp: string } {
  return typeof v === "object" && v !== null && (v as { type?: unknown }).type === "offer" && typeof (v as { sdp?: unknown }).sdp === "string";
}

/** Closes a socket whose events nobody is to hear any more. */
function closeQuietly(s: SocketLike, code: number, reason: string): void {
  s.onopen = s.onmessage = s.onerror = s.onclose = null;
  try {
    s.close(code, reason);
  } catch {
    // already closed
  }
}
