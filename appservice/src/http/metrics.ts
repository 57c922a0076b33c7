// Prometheus metrics, one registry per running service (tests start several in one process).
import { createServer } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { createCallMetrics, type CallMetrics } from "./callMetrics.ts";
import type { DependencyMetrics } from "./health.ts";

export interface Metrics {
  registry: Registry;
  transactions: Counter<"result">;
  events: Counter<"type" | "result">;
  commands: Counter<"kind">;
  refusals: Counter<"what">;
  roomsCreated: Counter<"origin">;
  aliasRooms: Counter<"outcome">;
  aliasQuerySeconds: Histogram<"result">;
  moderation: Counter<"action" | "outcome">;
  /** Calls, participants, lobby, keys, Janus and signalling (callMetrics.ts). */
  calls: CallMetrics;
  /** Each dependency up or not, and its outages and recoveries (the health checks, health.ts). */
  dependencies: DependencyMetrics;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "parley_" });
  return {
    registry,
    calls: createCallMetrics(registry),
    dependencies: createDependencyMetrics(registry),
    transactions: new Counter({ name: "parley_appservice_transactions_total", help: "Appservice transactions by outcome", labelNames: ["result"], registers: [registry] }),
    events: new Counter({ name: "parley_appservice_events_total", help: "Events handled by type and outcome", labelNames: ["type", "result"], registers: [registry] }),
    commands: new Counter({ name: "parley_commands_total", help: "Bot commands by kind", labelNames: ["kind"], registers: [registry] }),
    refusals: new Counter({ name: "parley_policy_refusals_total", help: "Requests refused by the federation policy or a rate limit", labelNames: ["what"], registers: [registry] }),
    moderation: new Counter({ name: "parley_moderation_actions_total", help: "Meeting governance actions (host actions, lobby admissions, host assignment) by outcome", labelNames: ["action", "outcome"], registers: [registry] }),
    roomsCreated: new Counter({ name: "parley_rooms_created_total", help: "Meeting rooms created", labelNames: ["origin"], registers: [registry] }),
    aliasRooms: new Counter({
      name: "parley_alias_rooms_total",
      help: "New meeting rooms asked for by alias lookups: created, adopted (made but unrecorded), refused_rate, refused_cap",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    aliasQuerySeconds: new Histogram({
      name: "parley_alias_query_seconds",
      help: "Time to answer an alias query (room creation included)",
      labelNames: ["result"],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
  };
}

function createDependencyMetrics(registry: Registry): DependencyMetrics {
  const labelNames = ["dependency", "node"] as const;
  const registers = [registry];
  const what = "(dependency: homeserver, store, janus, crypto; node: the Janus node id from sfu.nodes, else empty)";
  return {
    up: new Gauge({ name: "parley_dependency_up", help: `1 when the dependency passed its last health check ${what}`, labelNames, registers }),
    outages: new Counter({ name: "parley_dependency_outages_total", help: `Times the dependency was found down after being up, or down at the first check ${what}`, labelNames, registers }),
    recoveries: new Counter({ name: "parley_dependency_recoveries_total", help: `Times the dependency was found up again after being down ${what}`, labelNames, registers }),
  };
}

/** Event types Parley acts on, and the common room events; any other (a type is anyone's to
 *  invent, and a remote server sends what it likes) is counted as "other", one series. */
const EVENT_TYPES: ReadonlySet<string> = new Set([
  "m.room.member", "m.room.message", "m.room.encrypted", "m.room.encryption", "m.room.create", "m.room.power_levels",
  "m.room.join_rules", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias", "m.room.history_visibility",
  "m.room.guest_access", "m.room.redaction", "m.reaction", "org.parley.call", "org.matrix.msc3401.call.member", "im.vector.modular.widgets",
]);

/** An event's type as a metric label (bounded). */
export function eventTypeLabel(type: unknown): string {
  return typeof type === "string" && EVENT_TYPES.has(type) ? type : "other";
}

/** A listener that answers GET /metrics only (and 404 M_UNRECOGNIZED for anything else). */
export interface MetricsListener {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

export async function serveMetrics(registry: Registry, at: { bindAddress: string; port: number }): Promise<MetricsListener> {
  const server = createServer((req, res) => {
    const answer = (status: number, type: string, body: string) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" }).end(body);
    };
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || path !== "/metrics") {
      return answer(404, "application/json", JSON.stringify({ errcode: "M_UNRECOGNIZED", error: "only GET /metrics here" }));
    }
    registry.metrics().then(
      (text) => answer(200, registry.contentType, text),
      () => answer(500, "application/json", JSON.stringify({ errcode: "M_UNKNOWN", error: "metrics unavailable" })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(at.port, at.bindAddress, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : at.port;
  const host = at.bindAddress.includes(":") ? `[${at.bindAddress}]` : at.bindAddress;
  return {
    url: `http://${host}:${port}/metrics`,
    port,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
