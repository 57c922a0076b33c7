// JanusPluginHandle: one plugin handle in a session (layer 3): plugin messages, trickle,
// hangup, detach, and the handle's own events, each Janus event kind parsed by its guard and
// dispatched through one table.
import { EventEmitter } from "node:events";
import type { Logger } from "../log.ts";
import { JanusClosedError, JanusReplyError } from "./errors.ts";
import {
  hangupEventSchema,
  mediaEventSchema,
  slowlinkEventSchema,
  trickleEventSchema,
  type JanusMessage,
  type Jsep,
  type MediaEvent,
  type SlowlinkEvent,
  type TrickleCandidate,
} from "./messages.ts";
import type { JanusSession } from "./session.ts";
import type { RequestOptions } from "./transport.ts";

/** A plugin's answer: its data, and the JSEP (offer/answer) when it sent one. */
export interface PluginReply {
  data: Record<string, unknown>;
  jsep?: Jsep | undefined;
}

export interface HandleEvents {
  /** A plugin event nobody waits for (notifications; replies that came after their timeout). */
  event: [data: Record<string, unknown>, jsep: Jsep | undefined];
  /** The PeerConnection is up (ICE and DTLS done). */
  webrtcup: [];
  media: [info: MediaEvent];
  slowlink: [info: SlowlinkEvent];
  /** The PeerConnection went away. */
  hangup: [reason: string];
  /** Janus trickled a candidate (or `completed`). */
  trickle: [candidate: TrickleCandidate];
  /** The handle no longer exists in Janus (detached, or its session ended). Emitted once. */
  detached: [];
}

/** The PeerConnection-level events of a handle as one union (for the call layer's dispatch). */
export type PeerEvent =
  | { kind: "webrtcup" }
  | { kind: "media"; info: MediaEvent }
  | { kind: "slowlink"; info: SlowlinkEvent }
  | { kind: "hangup"; reason: string }
  | { kind: "trickle"; candidate: TrickleCandidate }
  | { kind: "detached" };

export class JanusPluginHandle {
  readonly id: number;
  readonly plugin: string;
  readonly events = new EventEmitter<HandleEvents>();
  private readonly session: JanusSession;
  private readonly log: Logger;
  private isDetached = false;

  /** Made by JanusSession.attach(). */
  constructor(session: JanusSession, id: number, plugin: string, log: Logger) {
    this.session = session;
    this.id = id;
    this.plugin = plugin;
    this.log = log.child({ janusHandle: id });
  }

  get detached(): boolean {
    return this.isDetached;
  }

  /** A synchronous plugin request: the reply is the plugin's immediate "success". */
  async message(body: Record<string, unknown>, jsep?: Jsep, opts?: RequestOptions): Promise<PluginReply> {
    const reply = await this.session.request(this.messageBody(body, jsep), opts);
    return this.pluginReply(reply, body);
  }

  /** An asynchronous plugin request: "ack", then the plugin's "event" (with its JSEP, if any). */
  async messageAsync(body: Record<string, unknown>, jsep?: Jsep, opts?: Omit<RequestOptions, "ackIsReply">): Promise<PluginReply> {
    const reply = await this.session.requestAsync(this.messageBody(body, jsep), opts);
    return this.pluginReply(reply, body);
  }

  /** Trickles one candidate, several, or `null` for "gathering completed". */
  async trickle(candidates: TrickleCandidate | TrickleCandidate[] | null): Promise<void> {
    const payload =
      candidates === null ? { candidate: { completed: true } } : Array.isArray(candidates) ? { candidates } : { candidate: candidates };
    await this.session.request({ janus: "trickle", handle_id: this.id, ...payload }, { ackIsReply: true });
  }

  /** Closes the handle's PeerConnection; the handle stays attached. */
  async hangup(): Promise<void> {
    await this.session.request({ janus: "hangup", handle_id: this.id });
  }

  /** Detaches the handle in Janus and locally (locally even when Janus cannot be reached). */
  async detach(): Promise<void> {
    if (this.isDetached) return;
    try {
      if (!this.session.closed && !this.session.transport.closed) await this.session.request({ janus: "detach", handle_id: this.id });
    } catch (err) {
      if (!(err instanceof JanusClosedError)) this.log.debug({ err: (err as Error).message }, "detach failed (already gone?)");
    } finally {
      this.gone();
    }
  }

  /** Subscribes to the handle's PeerConnection events; returns the unsubscribe function. */
  onPeer(listener: (e: PeerEvent) => void): () => void {
    const on = {
      webrtcup: () => listener({ kind: "webrtcup" }),
      media: (info: MediaEvent) => listener({ kind: "media", info }),
      slowlink: (info: SlowlinkEvent) => listener({ kind: "slowlink", info }),
      hangup: (reason: string) => listener({ kind: "hangup", reason }),
      trickle: (candidate: TrickleCandidate) => listener({ kind: "trickle", candidate }),
      detached: () => listener({ kind: "detached" }),
    };
    for (const [k, fn] of Object.entries(on)) (this.events as unknown as EventEmitter).on(k, fn);
    return () => {
      for (const [k, fn] of Object.entries(on)) (this.events as unknown as EventEmitter).off(k, fn);
    };
  }

  /** Called by the session for every message whose sender is this handle. */
  dispatch(m: JanusMessage): void {
    const handler = HANDLERS[m.janus];
    if (handler) handler(this, m);
    else this.log.debug({ janus: m.janus }, "unhandled Janus event kind");
  }

  /** The handle is gone: emits `detached` once and drops every listener. */
  gone(): void {
    if (this.isDetached) return;
    this.isDetached = true;
    this.events.emit("detached");
    this.events.removeAllListeners();
  }

  /** @internal for the dispatch table */
  emitParsed<K extends keyof HandleEvents>(kind: K, parse: () => HandleEvents[K] | undefined): void {
    const args = parse();
    if (args === undefined) this.log.warn({ kind }, "dropped a malformed Janus event");
    else (this.events as unknown as EventEmitter).emit(kind, ...(args as unknown[]));
  }

  private messageBody(body: Record<string, unknown>, jsep: Jsep | undefined) {
    return { janus: "message", handle_id: this.id, body, ...(jsep ? { jsep } : {}) };
  }

  private pluginReply(reply: JanusMessage, body: Record<string, unknown>): PluginReply {
    if (!reply.plugindata) throw new JanusReplyError(`message(${String(body["request"])})`, `"${reply.janus}" without plugindata`);
    return { data: reply.plugindata.data, jsep: reply.jsep };
  }
}

type Handler = (h: JanusPluginHandle, m: JanusMessage) => void;

/** One Janus event kind, one small handler (habit 10). */
const HANDLERS: Record<string, Handler> = {
  event: (h, m) => h.emitParsed("event", () => (m.plugindata ? [m.plugindata.data, m.jsep] : undefined)),
  webrtcup: (h) => h.emitParsed("webrtcup", () => []),
  media: (h, m) => h.emitParsed("media", () => one(mediaEventSchema.safeParse(m))),
  slowlink: (h, m) => h.emitParsed("slowlink", () => one(slowlinkEventSchema.safeParse(m))),
  hangup: (h, m) => h.emitParsed("hangup", () => {
    const r = hangupEventSchema.safeParse(m);
    return r.success ? [r.data.reason ?? ""] : undefined;
  }),
  trickle: (h, m) => h.emitParsed("trickle", () => {
    const r = trickleEventSchema.safeParse(m);
    return r.success ? [r.data.candidate] : undefined;
  }),
  detached: (h) => h.gone(),
};

function one<T>(r: { success: true; data: T } | { success: false }): [T] | undefined {
  return r.success ? [r.data] : undefined;
}
