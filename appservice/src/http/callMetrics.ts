// Prometheus metrics of calls, participants, the lobby, provisioned keys, Janus and signalling
// (docs/metrics.md). Every label takes values from a set fixed in the code or the config (an
// errcode, a request kind, a node id from sfu.nodes): never a user, room or call id, so a busy
// day adds samples, not series. Counts that Parley keeps anyway (sessions, seats, knocks, Janus
// sessions) are read when Prometheus scrapes, through the accessors in CallSources, rather than
// kept twice with inc/dec that could drift.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { SeatEnd } from "../calls/callSeats.ts";
import type { E2eeObserver } from "../calls/e2eeAdmission.ts";
import { JanusClosedError, JanusError, JanusTimeoutError } from "../sfu/index.ts";
import type { SignallingObserver } from "./signalling/server.ts";

/** Why a call ended: nobody there (an alias call), a host's end for all in the call UI, or a room
 *  event (`!meet end`, the bot leaving or removed from the room: the record does not tell them apart). */
export type CallEnd = "idle" | "host" | "room_event";

/** What the metrics read at scrape time; bound once the parts exist (startCalls runs after createMetrics). */
export interface CallSources {
  /** Calls with at least one live session (granted or seated). */
  occupiedCalls(): number;
  /** Seated sessions (held by a signalling socket), one number per call. */
  seatsPerCall(): number[];
  /** Calls at or past the large-call size (docs/large-meetings.md). */
  largeCalls(): number;
  /** Knocks waiting in every lobby. */
  waitingKnocks(): number;
  /** Open signalling sockets (with or without a seat). */
  sockets(): number;
  /** Of those, the sockets on standby (a pre-join's, waiting for its Join). */
  standbySockets(): number;
  /** Per configured Janus node: up, and the sessions and handles Parley holds there. */
  janusNodes(): { id: string; up: boolean; sessions: number; handles: number; rooms: number }[];
}

export interface CallMetrics {
  callsStarted: Counter<"origin">;
  callsEnded: Counter<"origin" | "reason">;
  callSeconds: Histogram<"origin">;
  joins: Counter;
  seatsEnded: Counter<"reason">;
  joinRefusals: Counter<"errcode">;
  lobbyDecisions: Counter<"decision" | "by">;
  lobbyWaitSeconds: Histogram<"decision" | "by">;
  keyRotations: Counter;
  keyDevices: Counter<"outcome">;
  e2eeAdmissions: Counter<"role" | "outcome">;
  janusRequestSeconds: Histogram<"node" | "request">;
  janusErrors: Counter<"node" | "request" | "error">;
  signallingMessages: Counter<"type">;
  signallingRejected: Counter<"errcode">;
  /** Binds the scrape-time accessors (the gauges read nothing until then). */
  watch(sources: CallSources): void;
  /** The hooks the call parts are given (app/calls.ts). */
  readonly observe: {
    seat(what: "joined" | SeatEnd): void;
    e2ee: E2eeObserver;
    lobby(decision: "admitted" | "denied", by: "host" | "auto", waitedMs: number): void;
    keysRotated(rotation: { devices: number; unreachable: number }): void;
    janusRequest(node: string, request: string, seconds: number, error: Error | undefined): void;
    signalling: SignallingObserver;
  };
}

export function createCallMetrics(registry: Registry): CallMetrics {
  const registers = [registry];
  let sources: CallSources | undefined;
  const gauge = (name: string, help: string, read: (s: CallSources) => number) =>
    new Gauge({
      name, help, registers,
      collect() {
        if (sources) this.set(read(sources));
      },
    });
  gauge("parley_calls_active", "Calls with at least one live session", (s) => s.occupiedCalls());
  gauge("parley_participant_sessions", "Seated sessions: signalling sockets holding a session in a call", (s) => s.seatsPerCall().reduce((a, b) => a + b, 0));
  gauge("parley_large_calls", "Calls in large-call mode (members at or past meetings.media.largeCall.from)", (s) => s.largeCalls());
  gauge("parley_lobby_waiting", "Knocks waiting in meeting lobbies", (s) => s.waitingKnocks());
  gauge("parley_signalling_sockets", "Open signalling WebSockets", (s) => s.sockets());
  gauge("parley_signalling_standby_sockets", "Signalling WebSockets on standby: a pre-join's socket waiting for its Join (counted in parley_signalling_sockets too)", (s) => s.standbySockets());
  new Histogram({
    name: "parley_call_sessions",
    help: "Seated sessions per call, a snapshot taken at each scrape (not cumulative: use histogram_quantile without rate)",
    buckets: [1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100],
    registers,
    collect() {
      if (!sources) return;
      this.reset();
      for (const n of sources.seatsPerCall()) this.observe(n);
    },
  });
  const nodeGauge = (name: string, help: string, read: (n: ReturnType<CallSources["janusNodes"]>[number]) => number) =>
    new Gauge({
      name, help, labelNames: ["node"], registers,
      collect() {
        if (!sources) return;
        for (const n of sources.janusNodes()) this.set({ node: n.id }, read(n));
      },
    });
  nodeGauge("parley_janus_up", "1 when Parley is connected to the Janus node (label: node id from sfu.nodes)", (n) => (n.up ? 1 : 0));
  nodeGauge("parley_janus_sessions", "Participant Janus sessions Parley holds on the node", (n) => n.sessions);
  nodeGauge("parley_janus_handles", "Plugin handles of Parley's participant sessions on the node", (n) => n.handles);
  nodeGauge("parley_janus_rooms", "VideoRoom rooms Parley placed on the node", (n) => n.rooms);

  const m = {
    callsStarted: new Counter({ name: "parley_calls_started_total", help: "Calls started, by origin (alias: a meeting link's first join; command: !meet)", labelNames: ["origin"], registers }),
    callsEnded: new Counter({ name: "parley_calls_ended_total", help: "Calls ended, by origin and reason (idle, host, room_event)", labelNames: ["origin", "reason"], registers }),
    callSeconds: new Histogram({
      name: "parley_call_duration_seconds",
      help: "How long calls ran, from start to end",
      labelNames: ["origin"],
      buckets: [60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400],
      registers,
    }),
    joins: new Counter({ name: "parley_participant_joins_total", help: "Seats opened: a signalling hello accepted with a granted session", registers }),
    seatsEnded: new Counter({
      name: "parley_participant_leaves_total",
      help: "Seats ended, by reason: socket_closed, taken_over, expired, call_ended (leaves) and left_room, removed (evictions by membership)",
      labelNames: ["reason"],
      registers,
    }),
    joinRefusals: new Counter({ name: "parley_call_join_refusals_total", help: "Refused call joins (POST /_parley/v1/calls/join), by errcode", labelNames: ["errcode"], registers }),
    lobbyDecisions: new Counter({ name: "parley_lobby_decisions_total", help: "Knocks decided: admitted or denied, by host or auto (the meeting's access policy)", labelNames: ["decision", "by"], registers }),
    lobbyWaitSeconds: new Histogram({
      name: "parley_lobby_wait_seconds",
      help: "From a knock to its decision",
      labelNames: ["decision", "by"],
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800],
      registers,
    }),
    keyRotations: new Counter({ name: "parley_provisioned_key_rotations_total", help: "Provisioned call keys made and sent by the bot (participant-key rotations happen in browsers only)", registers }),
    keyDevices: new Counter({ name: "parley_provisioned_key_devices_total", help: "Devices a provisioned key was sent to, or could not be", labelNames: ["outcome"], registers }),
    e2eeAdmissions: new Counter({
      name: "parley_e2ee_admissions_total",
      help: "End-to-end encryption checks of publish and subscribe: encrypted, plain (allowed: not required), refused",
      labelNames: ["role", "outcome"],
      registers,
    }),
    janusRequestSeconds: new Histogram({
      name: "parley_janus_request_seconds",
      help: "Parley's Janus API requests, by node and request kind (e.g. attach, message(join)), until answered or failed",
      labelNames: ["node", "request"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    janusErrors: new Counter({ name: "parley_janus_request_errors_total", help: "Failed Janus requests by node, request kind and error (janus, timeout, closed)", labelNames: ["node", "request", "error"], registers }),
    signallingMessages: new Counter({ name: "parley_signalling_messages_total", help: "Signalling messages accepted, by type (the protocol's message types)", labelNames: ["type"], registers }),
    signallingRejected: new Counter({ name: "parley_signalling_rejected_total", help: "Signalling messages answered with an error, by errcode", labelNames: ["errcode"], registers }),
  };
  return {
    ...m,
    watch(s) {
      sources = s;
    },
    observe: {
      seat: (what) => (what === "joined" ? m.joins.inc() : m.seatsEnded.inc({ reason: what })),
      e2ee: (role, outcome) => m.e2eeAdmissions.inc({ role, outcome }),
      lobby: (decision, by, waitedMs) => {
        m.lobbyDecisions.inc({ decision, by });
        m.lobbyWaitSeconds.observe({ decision, by }, waitedMs / 1000);
      },
      keysRotated: (r) => {
        m.keyRotations.inc();
        m.keyDevices.inc({ outcome: "sent" }, r.devices);
        m.keyDevices.inc({ outcome: "unreachable" }, r.unreachable);
      },
      janusRequest: (node, request, seconds, error) => {
        m.janusRequestSeconds.observe({ node, request }, seconds);
        if (error) m.janusErrors.inc({ node, request, error: janusErrorKind(error) });
      },
      signalling: {
        message: (type) => m.signallingMessages.inc({ type }),
        rejected: (errcode) => m.signallingRejected.inc({ errcode }),
      },
    },
  };
}

function janusErrorKind(error: Error): "timeout" | "closed" | "janus" | "other" {
  if (error instanceof JanusTimeoutError) return "timeout";
  if (error instanceof JanusClosedError) return "closed";
  return error instanceof JanusError ? "janus" : "other";
}

/** The reason of an ended call record: its `endedBy` and `endEventId` say it. */
export function callEndReason(ended: { endedBy: string | null; endEventId: string | null }): CallEnd {
  if (ended.endedBy === "idle") return "idle";
  return ended.endEventId ? "room_event" : "host";
}

interface CallRecordLike {
  origin: string;
  startedAt: number;
  endedAt: number | null;
  endedBy: string | null;
  endEventId: string | null;
}

/**
 * The store, counting call starts and ends as they are recorded: every start and end passes
 * through startCall/endCall, whichever part asks (a meeting link's first join, `!meet`, a host,
 * the idle sweep, the bot's removal), so no call site needs a metric line. Works for a store
 * whose methods answer now or with a promise.
 */
export function observedCallStore<T extends object>(store: T, metrics: Pick<CallMetrics, "callsStarted" | "callsEnded" | "callSeconds">): T {
  const started = (call: CallRecordLike | undefined) => {
    if (call) metrics.callsStarted.inc({ origin: call.origin });
  };
  const ended = (call: CallRecordLike | undefined) => {
    if (!call) return;
    metrics.callsEnded.inc({ origin: call.origin, reason: callEndReason(call) });
    if (call.endedAt !== null) metrics.callSeconds.observe({ origin: call.origin }, Math.max(0, (call.endedAt - call.startedAt) / 1000));
  };
  const observers: Record<string, (call: CallRecordLike | undefined) => void> = { startCall: started, endCall: ended };
  // Methods are bound once (the store is asked for one on every event and request).
  const methods = new Map<PropertyKey, unknown>();
  const method = (target: T, prop: PropertyKey, fn: (...args: unknown[]) => unknown) => {
    const observe = typeof prop === "string" ? observers[prop] : undefined;
    if (!observe) return fn.bind(target);
    return (...args: unknown[]) => {
      const result: unknown = fn.apply(target, args);
      if (result instanceof Promise) void result.then((r: CallRecordLike | undefined) => observe(r), () => undefined);
      else observe(result as CallRecordLike | undefined);
      return result;
    };
  };
  return new Proxy(store, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      let m = methods.get(prop);
      if (!m) methods.set(prop, (m = method(target, prop, value as (...args: unknown[]) => unknown)));
      return m;
    },
  });
}
