// Prometheus metrics, one registry per running service (tests start several in one process).
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface Metrics {
  registry: Registry;
  transactions: Counter<"result">;
  events: Counter<"type" | "result">;
  commands: Counter<"kind">;
  refusals: Counter<"what">;
  roomsCreated: Counter<"origin">;
  aliasRooms: Counter<"outcome">;
  aliasQuerySeconds: Histogram<"result">;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "parley_" });
  return {
    registry,
    transactions: new Counter({ name: "parley_appservice_transactions_total", help: "Appservice transactions by outcome", labelNames: ["result"], registers: [registry] }),
    events: new Counter({ name: "parley_appservice_events_total", help: "Events handled by type and outcome", labelNames: ["type", "result"], registers: [registry] }),
    commands: new Counter({ name: "parley_commands_total", help: "Bot commands by kind", labelNames: ["kind"], registers: [registry] }),
    refusals: new Counter({ name: "parley_policy_refusals_total", help: "Requests refused by the federation policy", labelNames: ["what"], registers: [registry] }),
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
