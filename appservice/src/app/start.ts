// start(config) -> a running Parley. Tests start the whole service in-process through this.
import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import express from "express";
import { FederationPolicy } from "../calls/policy.ts";
import { MeetingService } from "../calls/meetings.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { clientRouter } from "../http/client.ts";
import { errorHandler, ParleyError, sendError } from "../http/errors.ts";
import { createMetrics, type Metrics } from "../http/metrics.ts";
import { configureLogging, getLogger } from "../log.ts";
import { appserviceRouter } from "../matrix/appserviceHttp.ts";
import { MatrixHomeserver } from "../matrix/homeserver.ts";
import { botUserId } from "../matrix/registration.ts";
import { EventRouter } from "../matrix/router.ts";
import { SqliteStore } from "../store/sqlite.ts";

export interface Parley {
  readonly url: string;
  readonly port: number;
  readonly store: SqliteStore;
  readonly meetings: MeetingService;
  readonly metrics: Metrics;
  stop(): Promise<void>;
}

const DAY = 24 * 3600 * 1000;

export async function start(config: ParleyConfig): Promise<Parley> {
  configureLogging(config.logging.level);
  const log = getLogger("app");
  const store = new SqliteStore(config.store.path);
  const metrics = createMetrics();
  const homeserver = new MatrixHomeserver({
    url: config.homeserver.url,
    asToken: config.appservice.asToken,
    botUserId: botUserId(config),
  });
  const policy = new FederationPolicy(config.homeserver.domain, config.federation.allow);
  const meetings = new MeetingService(
    {
      domain: config.homeserver.domain,
      aliasPrefix: config.meetings.aliasPrefix,
      publicUrl: config.meetings.publicUrl,
      joinRule: config.meetings.joinRule,
      encrypted: config.meetings.encrypted,
    },
    {
      homeserver,
      store,
      policy,
      clock: { now: () => Date.now() },
      ids: { callId: () => randomUUID() },
      observe: (what, label) => {
        if (what === "room_created") metrics.roomsCreated.inc({ origin: label });
        else if (what === "command") metrics.commands.inc({ kind: label });
        else metrics.refusals.inc({ what: label });
      },
    },
  );
  const router = new EventRouter(meetings, homeserver.botUserId);

  const app = express();
  app.disable("x-powered-by");
  app.use(express.json({ limit: "5mb" }));
  app.use(
    appserviceRouter({
      hsToken: config.appservice.hsToken,
      store,
      metrics,
      handlers: {
        onEvent: (event) => router.route(event),
        onAliasQuery: async (alias) => (await meetings.provisionAlias(alias)) !== undefined,
      },
    }),
  );
  app.get("/health", (_req, res) => {
    try {
      store.db.prepare("SELECT 1").get();
      res.json({ status: "ok", activeCalls: store.activeCalls().length });
    } catch (err) {
      log.error({ err }, "health check failed");
      sendError(res, new ParleyError("M_UNAVAILABLE", "store unavailable"));
    }
  });
  app.get("/metrics", async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.use(
    clientRouter({
      homeserverUrl: config.homeserver.publicUrl ?? config.homeserver.url,
      serverName: config.homeserver.domain,
      aliasPrefix: config.meetings.aliasPrefix,
    }),
  );
  app.use((req, res) => sendError(res, new ParleyError("M_UNRECOGNIZED", `unrecognized request ${req.method} ${req.path}`)));
  app.use(errorHandler());

  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.appservice.port, config.appservice.bindAddress, () => resolve(s));
    s.once("error", reject);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.appservice.port;

  try {
    await homeserver.waitUntilReachable(60_000);
    await homeserver.ensureBotRegistered("Parley");
    const settled = await meetings.reconcilePendingAliases();
    if (settled) log.info({ settled }, "settled alias claims left by an earlier run");
  } catch (err) {
    server.close();
    store.close();
    throw err;
  }
  store.prune(Date.now() - 7 * DAY);
  const pruneTimer = setInterval(() => store.prune(Date.now() - 7 * DAY), DAY);
  pruneTimer.unref();
  log.info({ port, bot: homeserver.botUserId }, "Parley is running");

  let stopped: Promise<void> | undefined;
  return {
    url: `http://${config.appservice.bindAddress}:${port}`,
    port,
    store,
    meetings,
    metrics,
    stop() {
      stopped ??= (async () => {
        clearInterval(pruneTimer);
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
        store.close();
        log.info("Parley stopped");
      })();
      return stopped;
    },
  };
}
