// SfuNode: one Janus from config, kept connected. A control session with a VideoRoom handle does
// the room administration; participants' sessions are opened here so that a reconnect can claim
// them all on the new socket. A dropped socket makes the node "down" and starts reconnecting
// with backoff; if the new connection finds the control session gone (Janus 1.1.2 reports no
// start time, so a failed claim is the sign of a restart, or of a reconnect later than
// reclaim_session_timeout) every session of the node is gone and the node emits `reset`. The
// lost sessions are held (not yet closed) until the pool has made the rooms again and calls
// releaseLost(): their clients are told to renegotiate only once there is a room to join.
import { EventEmitter } from "node:events";
import { getLogger, type Logger } from "../log.ts";
import { JANUS_ERROR, JanusError, SfuUnavailableError } from "./errors.ts";
import { JanusSession } from "./session.ts";
import { JanusTransport } from "./transport.ts";
import { VIDEOROOM_PLUGIN, VideoRoomAdmin } from "./videoroom.ts";

/** One entry of config.sfu.nodes. */
export interface SfuNodeConfig {
  id: string;
  url: string;
  apiSecret: string;
  adminKey: string;
}

export interface SfuNodeOptions {
  /** Janus request timeout (default 10 s). */
  requestTimeoutMs?: number | undefined;
  /** Session keepalive period (default 25 s). */
  keepaliveMs?: number | undefined;
  /**
   * Reconnect delay (default 250 ms): retried at this pace for the first reconnectFastMs after a
   * drop (a restarting Janus is back within a second or two and should be seen at once), then
   * doubling per failed attempt up to reconnectMaxMs.
   */
  reconnectMinMs?: number | undefined;
  /** How long after a drop reconnects stay at reconnectMinMs (default 5 s). */
  reconnectFastMs?: number | undefined;
  /** Longest reconnect delay (default 10 s). Keep it well below reclaim_session_timeout (30 s). */
  reconnectMaxMs?: number | undefined;
  /**
   * Sessions kept open ahead, each with WARM_HANDLES VideoRoom handles attached (default 0):
   * openSession() takes one instead of three round trips to Janus (create, attach, attach) on a
   * participant's way in (docs/join.md). Refilled in the background; not counted in the load.
   */
  warmSessions?: number | undefined;
  /** Told of each Janus request with the node's id (metrics); optional. */
  observeRequest?: ((node: string, request: string, seconds: number, error: Error | undefined) => void) | undefined;
}

/** Handles a participant uses: its publisher and its subscriber. */
const WARM_HANDLES = 2;

export type NodeState = "connecting" | "up" | "down" | "stopped";

export interface NodeEvents {
  up: [];
  down: [reason: string];
  /**
   * Janus no longer has this node's sessions (it restarted). The participant sessions are held
   * until releaseLost() closes them ("lost"), so that rooms can be made again first.
   */
  reset: [];
}

interface Control {
  session: JanusSession;
  admin: VideoRoomAdmin;
}

export class SfuNode {
  readonly id: string;
  readonly events = new EventEmitter<NodeEvents>();
  private readonly config: SfuNodeConfig;
  private readonly opts: SfuNodeOptions;
  private readonly log: Logger;
  private currentState: NodeState = "connecting";
  private transport: JanusTransport | undefined;
  private control: Control | undefined;
  private readonly sessions = new Set<JanusSession>();
  /** Sessions made ahead for openSession() (warmSessions), on the current transport. */
  private readonly warm: JanusSession[] = [];
  private warming: Promise<void> | undefined;
  /** Sessions Janus no longer has, waiting for releaseLost(). */
  private lost: JanusSession[] = [];
  /** When the current outage began (for the fast reconnect pace). */
  private downSince = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private attempts = 0;
  private resetPending = false;
  private connecting: Promise<void> | undefined;

  constructor(config: SfuNodeConfig, opts: SfuNodeOptions = {}) {
    this.id = config.id;
    this.config = config;
    this.opts = opts;
    this.log = getLogger("sfu.node", { sfuNode: config.id });
  }

  get state(): NodeState {
    return this.currentState;
  }

  /** A getter, so that checks after an await are not narrowed away by TypeScript. */
  private get stopped(): boolean {
    return this.currentState === "stopped";
  }

  /** Participant sessions open on this node. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Plugin handles of the participant sessions open on this node. */
  get handleCount(): number {
    let n = 0;
    for (const s of this.sessions) n += s.handleCount;
    return n;
  }

  /** First connection attempt; never throws: a node that cannot be reached is down and retried. */
  async start(): Promise<void> {
    await this.attempt();
  }

  /** The control handle's room administration; throws SfuUnavailableError while the node is not up. */
  admin(): VideoRoomAdmin {
    if (this.currentState !== "up" || !this.control) throw new SfuUnavailableError(`node ${this.id} is ${this.currentState}`);
    return this.control.admin;
  }

  /** Sessions made ahead and not taken yet (warmSessions). */
  get warmCount(): number {
    return this.warm.length;
  }

  /**
   * A Janus session for one participant, made ahead if one is warm; it leaves the node's count
   * when it closes.
   */
  async openSession(): Promise<JanusSession> {
    if (this.currentState !== "up" || !this.transport) throw new SfuUnavailableError(`node ${this.id} is ${this.currentState}`);
    const ready = this.warm.shift();
    this.warmUp();
    const session = ready ?? (await JanusSession.create(this.transport, { keepaliveMs: this.opts.keepaliveMs, log: this.log }));
    if (this.stopped) {
      await session.destroy();
      throw new SfuUnavailableError(`node ${this.id} stopped`);
    }
    this.sessions.add(session);
    session.events.once("closed", () => this.sessions.delete(session));
    return session;
  }

  /**
   * A participant session a previous Parley process opened on this node (see JanusSession.adopt);
   * counted in the node's load like one opened here. Throws JanusError 458 if Janus lost it.
   */
  async adoptSession(id: number): Promise<JanusSession> {
    if (this.currentState !== "up" || !this.transport) throw new SfuUnavailableError(`node ${this.id} is ${this.currentState}`);
    const session = await JanusSession.adopt(this.transport, id, { keepaliveMs: this.opts.keepaliveMs, log: this.log });
    this.sessions.add(session);
    session.events.once("closed", () => this.sessions.delete(session));
    return session;
  }

  /**
   * Destroys every session, closes the socket, clears the reconnect timer. With `keepSessions`
   * the participants' sessions are left in Janus (only the socket closes): the next Parley
   * process claims them within reclaim_session_timeout, so a restart does not cut media.
   */
  async stop(opts: { keepSessions?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.currentState = "stopped";
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    await this.connecting;
    await this.warming;
    // Nobody would adopt a session that was never a participant's: destroyed even with keepSessions.
    await this.dropWarm();
    this.releaseLost();
    if (opts.keepSessions) for (const s of [...this.sessions]) s.release();
    await Promise.all([...this.sessions].map((s) => s.destroy()));
    await this.control?.session.destroy();
    this.control = undefined;
    await this.transport?.close();
    this.transport = undefined;
    this.events.removeAllListeners();
  }

  /**
   * Closes ("lost") the participant sessions Janus lost: after a reset, once their rooms exist
   * again; or every session of a node given up as dead (abandonSessions first).
   */
  releaseLost(): void {
    for (const s of this.lost.splice(0)) s.forget();
  }

  /**
   * The node is given up (down too long): its participant sessions are held as lost, to be
   * released once their calls live on another node. Janus, if it comes back, times them out.
   */
  abandonSessions(): void {
    this.lost.push(...this.sessions);
    this.sessions.clear();
  }

  /** Drops the socket as if the network failed (tests; a node that stopped answering). */
  dropConnection(): void {
    this.transport?.terminate();
  }

  private async attempt(): Promise<void> {
    this.connecting = this.connect().catch((err: unknown) => {
      if (this.stopped) return;
      this.currentState = "down";
      this.log.warn({ err: (err as Error).message, attempt: this.attempts }, "Janus node unreachable");
      this.scheduleReconnect();
    });
    await this.connecting;
    this.connecting = undefined;
  }

  private async connect(): Promise<void> {
    const observeRequest = this.opts.observeRequest;
    const transport = await JanusTransport.connect({
      url: this.config.url,
      apiSecret: this.config.apiSecret,
      requestTimeoutMs: this.opts.requestTimeoutMs,
      log: this.log,
      observe: observeRequest && ((request, seconds, error) => observeRequest(this.id, request, seconds, error)),
    });
    // stop() waits for this attempt, then destroys the sessions and closes this.transport.
    if (this.stopped) {
      this.transport = transport;
      return;
    }
    try {
      await this.resume(transport);
    } catch (err) {
      await transport.close();
      throw err;
    }
    this.transport = transport;
    if (this.stopped) return;
    const reset = this.resetPending;
    this.resetPending = false;
    this.currentState = "up";
    this.attempts = 0;
    this.downSince = 0;
    transport.onClose((reason) => this.connectionLost(transport, reason));
    this.log.info({ reset }, "Janus node up");
    this.events.emit("up");
    if (reset) this.events.emit("reset");
    this.warmUp();
  }

  /**
   * Makes sessions ahead until warmSessions are ready, one at a time, in the background; stops
   * when the node is no longer up on the transport it began on. A failure is left to the next call.
   */
  private warmUp(): void {
    const target = this.opts.warmSessions ?? 0;
    if (this.warming || target <= 0) return;
    const transport = this.transport;
    const current = () => this.currentState === "up" && this.transport === transport;
    this.warming = (async () => {
      while (transport && current() && this.warm.length < target) {
        const session = await JanusSession.create(transport, { keepaliveMs: this.opts.keepaliveMs, log: this.log });
        try {
          await session.attachAhead(VIDEOROOM_PLUGIN, WARM_HANDLES);
        } catch (err) {
          await session.destroy();
          throw err;
        }
        if (!current()) {
          await session.destroy();
          return;
        }
        session.events.once("closed", () => {
          const i = this.warm.indexOf(session);
          if (i >= 0) this.warm.splice(i, 1);
        });
        this.warm.push(session);
      }
    })()
      .catch((err: unknown) => this.log.debug({ err: (err as Error).message }, "a warm Janus session could not be made"))
      .finally(() => {
        this.warming = undefined;
      });
  }

  /** Destroys the sessions made ahead (on a closed transport: locally only; Janus reaps them). */
  private async dropWarm(): Promise<void> {
    await Promise.all(this.warm.splice(0).map((s) => s.destroy()));
  }

  /** Claims the sessions on the new socket, or replaces the control session if Janus lost them. */
  private async resume(transport: JanusTransport): Promise<void> {
    const previous = this.control;
    if (previous && !previous.session.closed && (await this.claimAll(previous.session, transport))) return;
    if (previous) {
      this.log.warn({ sessions: this.sessions.size }, "Janus lost this node's sessions (restarted?)");
      this.control = undefined;
      this.resetPending = true; // reported once a new control session works
      this.abandonSessions();
    }
    const session = await JanusSession.create(transport, { keepaliveMs: this.opts.keepaliveMs, log: this.log });
    try {
      const handle = await session.attach(VIDEOROOM_PLUGIN);
      this.control = { session, admin: new VideoRoomAdmin(handle, this.config.adminKey) };
    } catch (err) {
      await session.destroy();
      throw err;
    }
    // Janus timing the control session out (a stalled event loop) is handled like a restart.
    session.events.once("closed", (reason) => {
      if (reason !== "destroyed" && this.control?.session === session) this.transport?.terminate();
    });
  }

  /** Claims the control session, then every participant session; false if the control session is gone. */
  private async claimAll(control: JanusSession, transport: JanusTransport): Promise<boolean> {
    const gone = (err: unknown) => err instanceof JanusError && err.code === JANUS_ERROR.SESSION_NOT_FOUND;
    try {
      await control.claim(transport);
    } catch (err) {
      if (gone(err)) return false;
      throw err;
    }
    for (const s of [...this.sessions]) {
      // A participant session may have timed out on its own: claim closed it as "lost".
      await s.claim(transport).catch((err: unknown) => {
        if (!gone(err)) throw err;
      });
    }
    return true;
  }

  private connectionLost(transport: JanusTransport, reason: string): void {
    if (this.stopped || this.transport !== transport) return;
    this.transport = undefined;
    this.currentState = "down";
    this.downSince = Date.now();
    void this.dropWarm();
    this.log.warn({ reason }, "Janus node down");
    this.events.emit("down", reason);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const min = this.opts.reconnectMinMs ?? 250;
    const max = this.opts.reconnectMaxMs ?? 10_000;
    // Right after a drop, a steady fast pace: a restarted Janus is used as soon as it listens.
    const fast = this.downSince > 0 && Date.now() - this.downSince < (this.opts.reconnectFastMs ?? 5000);
    const delay = fast ? min : Math.min(max, min * 2 ** this.attempts) * (0.8 + Math.random() * 0.4);
    if (!fast) this.attempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.attempt();
    }, delay);
  }
}
