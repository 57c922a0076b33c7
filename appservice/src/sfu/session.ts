// JanusSession: one Janus API session on a transport (layer 2). Keeps itself alive, owns its
// plugin handles and routes their events; `claim` moves it onto a new transport after the old
// socket dropped (Janus keeps it for reclaim_session_timeout, 30 s in Parley's config).
import { EventEmitter } from "node:events";
import { getLogger, type Logger } from "../log.ts";
import { JANUS_ERROR, JanusClosedError, JanusError, JanusReplyError } from "./errors.ts";
import { JanusPluginHandle } from "./handle.ts";
import type { JanusMessage } from "./messages.ts";
import type { JanusRequest, JanusTransport, RequestOptions } from "./transport.ts";

export interface JanusSessionOptions {
  /** Keepalive period (default 25 s; Janus's session_timeout is 60 s). */
  keepaliveMs?: number | undefined;
  log?: Logger | undefined;
}

/**
 * Why a session ended: "destroyed" by Parley, "timeout" reported by Janus, or "lost": Janus no
 * longer knows it (a claim or keepalive found it gone, e.g. after a Janus restart).
 */
export type SessionCloseReason = "destroyed" | "timeout" | "lost";

export interface SessionEvents {
  closed: [reason: SessionCloseReason];
}

export class JanusSession {
  readonly id: number;
  readonly events = new EventEmitter<SessionEvents>();
  private currentTransport: JanusTransport;
  private unsubscribe: () => void;
  private readonly handles = new Map<number, JanusPluginHandle>();
  /** Handles attached ahead (attachAhead), handed out by attach() without a round trip. */
  private readonly spares: JanusPluginHandle[] = [];
  private readonly keepaliveMs: number;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private closeReason: SessionCloseReason | undefined;
  private readonly log: Logger;

  private constructor(transport: JanusTransport, id: number, opts: JanusSessionOptions) {
    this.id = id;
    this.currentTransport = transport;
    this.keepaliveMs = opts.keepaliveMs ?? 25_000;
    this.log = (opts.log ?? getLogger("sfu.session")).child({ janusSession: id });
    this.unsubscribe = transport.onSession(id, (m) => this.dispatch(m));
    this.startKeepalive();
  }

  /** Creates a session on `transport` ({"janus":"create"}). */
  static async create(transport: JanusTransport, opts: JanusSessionOptions = {}): Promise<JanusSession> {
    const reply = await transport.request({ janus: "create" });
    const id = reply.data?.id;
    if (id === undefined) throw new JanusReplyError("create", "no data.id");
    return new JanusSession(transport, id, opts);
  }

  /**
   * Takes over a session another process (a Parley before its restart) opened on a transport
   * that is gone: claims it on `transport`. Janus keeps such a session for
   * reclaim_session_timeout; later (or after a Janus restart) the claim fails with 458.
   */
  static async adopt(transport: JanusTransport, id: number, opts: JanusSessionOptions = {}): Promise<JanusSession> {
    await transport.request({ janus: "claim", session_id: id });
    return new JanusSession(transport, id, opts);
  }

  /**
   * A plugin handle of an adopted session, known by its id (no attach: Janus has it already).
   * Janus says nothing about it until it sends an event or a request fails.
   */
  adoptHandle(id: number, plugin: string): JanusPluginHandle {
    if (this.closeReason !== undefined) throw new JanusClosedError(`adopt: the Janus session is closed (${this.closeReason})`);
    const handle = new JanusPluginHandle(this, id, plugin, this.log);
    this.handles.set(id, handle);
    handle.events.once("detached", () => this.handles.delete(id));
    return handle;
  }

  get transport(): JanusTransport {
    return this.currentTransport;
  }

  /** Plugin handles attached on this session (metrics). */
  get handleCount(): number {
    return this.handles.size;
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  /**
   * Attaches `count` handles of `plugin` now, for later attach() calls to take at once (a warm
   * session, sfu/node.ts). They count as attached; destroy() detaches them with the session.
   */
  async attachAhead(plugin: string, count: number): Promise<void> {
    const made = await Promise.all(Array.from({ length: count }, () => this.attach(plugin)));
    this.spares.push(...made);
  }

  /** Attaches a plugin handle ({"janus":"attach"}), or takes one attached ahead. */
  async attach(plugin: string, opts: { opaqueId?: string } = {}): Promise<JanusPluginHandle> {
    if (opts.opaqueId === undefined) {
      // Taken before any await: two attaches at once never get the same spare.
      const i = this.spares.findIndex((h) => h.plugin === plugin && !h.detached);
      if (i >= 0) return this.spares.splice(i, 1)[0]!;
    }
    const reply = await this.request({ janus: "attach", plugin, ...(opts.opaqueId ? { opaque_id: opts.opaqueId } : {}) });
    const id = reply.data?.id;
    if (id === undefined) throw new JanusReplyError("attach", "no data.id");
    const handle = new JanusPluginHandle(this, id, plugin, this.log);
    this.handles.set(id, handle);
    handle.events.once("detached", () => this.handles.delete(id));
    return handle;
  }

  /** A request on this session (session_id added). */
  request(body: JanusRequest, opts?: RequestOptions): Promise<JanusMessage> {
    if (this.closeReason !== undefined) return Promise.reject(new JanusClosedError(`${body.janus}: the Janus session is closed (${this.closeReason})`));
    return this.currentTransport.request({ ...body, session_id: this.id }, opts);
  }

  /** An asynchronous plugin request on this session (see JanusTransport.requestAsync). */
  requestAsync(body: JanusRequest, opts?: Omit<RequestOptions, "ackIsReply">): Promise<JanusMessage> {
    if (this.closeReason !== undefined) return Promise.reject(new JanusClosedError(`${body.janus}: the Janus session is closed (${this.closeReason})`));
    return this.currentTransport.requestAsync({ ...body, session_id: this.id }, opts);
  }

  /**
   * Takes the session over on a new transport ({"janus":"claim"}) after the old socket went away.
   * If Janus no longer knows the session (restarted, or the reclaim timeout passed) the session
   * closes locally with reason "lost" and the JanusError (code 458) is thrown.
   */
  async claim(transport: JanusTransport): Promise<void> {
    if (this.closeReason !== undefined) throw new JanusClosedError(`claim: the Janus session is closed (${this.closeReason})`);
    try {
      await transport.request({ janus: "claim", session_id: this.id });
    } catch (err) {
      if (err instanceof JanusError && err.code === JANUS_ERROR.SESSION_NOT_FOUND) this.teardown("lost");
      throw err;
    }
    this.unsubscribe();
    this.currentTransport = transport;
    this.unsubscribe = transport.onSession(this.id, (m) => this.dispatch(m));
    this.log.debug("session claimed on a new connection");
  }

  /**
   * Destroys the session in Janus (which detaches its handles and hangs up their
   * PeerConnections) and locally. Local cleanup happens even when Janus cannot be reached.
   */
  async destroy(): Promise<void> {
    if (this.closeReason !== undefined) return;
    const transport = this.currentTransport;
    this.teardown("destroyed");
    if (transport.closed) return;
    try {
      await transport.request({ janus: "destroy", session_id: this.id });
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, "session destroy failed (already gone?)");
    }
  }

  /**
   * Lets go of the session locally and leaves it alive in Janus, for another process to adopt
   * (a Parley restart); ends like destroy() for this process's listeners.
   */
  release(): void {
    this.teardown("destroyed");
  }

  /** Ends the session locally without telling Janus, which no longer has it (reason "lost"). */
  forget(): void {
    this.teardown("lost");
  }

  private startKeepalive(): void {
    this.keepaliveTimer = setInterval(() => {
      if (this.currentTransport.closed) return; // waiting for a claim on a new connection
      this.request({ janus: "keepalive" }, { ackIsReply: true }).catch((err: unknown) => {
        if (err instanceof JanusError && err.code === JANUS_ERROR.SESSION_NOT_FOUND) this.teardown("lost");
        else this.log.warn({ err: (err as Error).message }, "keepalive failed");
      });
    }, this.keepaliveMs);
  }

  private dispatch(m: JanusMessage): void {
    if (m.janus === "timeout") {
      this.log.warn("Janus timed the session out");
      this.teardown("timeout");
      return;
    }
    const handle = m.sender === undefined ? undefined : this.handles.get(m.sender);
    if (handle) handle.dispatch(m);
    else this.log.debug({ janus: m.janus, sender: m.sender }, "event for an unknown handle dropped");
  }

  /** Local end of the session: no timer, no subscription, no handle left; `closed` emitted once. */
  private teardown(reason: SessionCloseReason): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = undefined;
    this.unsubscribe();
    for (const handle of [...this.handles.values()]) handle.gone();
    this.handles.clear();
    this.spares.length = 0;
    this.events.emit("closed", reason);
    this.events.removeAllListeners();
  }
}
