// start(config) -> a running Parley. Tests start the whole service in-process through this.
import { randomBytes, randomUUID } from "node:crypto";
import type { Server } from "node:http";
import express from "express";
import type { CallService } from "../calls/callService.ts";
import { FederationPolicy } from "../calls/policy.ts";
import { MeetingService } from "../calls/meetings.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { clientRouter } from "../http/client.ts";
import { errorHandler, ParleyError, sendError } from "../http/errors.ts";
import { createMetrics, type Metrics } from "../http/metrics.ts";
import { callApiRouter } from "../http/callApi.ts";
import { SIGNALLING_PATH } from "../http/signalling/server.ts";
import { BotCrypto } from "../crypto/botCrypto.ts";
import { clientHttp } from "../crypto/http.ts";
import { configureLogging, getLogger } from "../log.ts";
import { OpenIdVerifier } from "../matrix/openid.ts";
import { startCalls } from "./calls.ts";
import { appserviceRouter } from "../matrix/appserviceHttp.ts";
import { MatrixHomeserver } from "../matrix/homeserver.ts";
import { botUserId } from "../matrix/registration.ts";
import type { RawEvent } from "../matrix/events.ts";
import { EventRouter } from "../matrix/router.ts";
import { SqliteStore } from "../store/sqlite.ts";

export interface Parley {
  readonly url: string;
  readonly port: number;
  readonly store: SqliteStore;
  readonly meetings: MeetingService;
  readonly calls: CallService;
  readonly metrics: Metrics;
  /** The bot's Olm device, when crypto is configured. */
  readonly crypto: BotCrypto | undefined;
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
  // The bot's Olm device: opened below once the bot user exists; work that comes earlier waits.
  const crypto = config.crypto
    ? new BotCrypto({ userId: homeserver.botUserId, file: config.crypto.path, storeKey: config.crypto.storeKey, http: clientHttp(homeserver.client) })
    : undefined;
  if (!crypto) log.warn("no crypto section in the config: the bot neither reads nor answers in encrypted rooms");
  const policy = new FederationPolicy(config.homeserver.domain, config.federation.allow);
  const verifier = OpenIdVerifier.fromConfig(config, policy, { ledger: store });
  const ids = { callId: () => randomUUID(), sessionToken: () => randomBytes(32).toString("base64url") };
  const callParts = await startCalls(config, { homeserver, store, policy, verifier, clock: { now: () => Date.now() }, ids, crypto });
  const { calls } = callParts;
  const meetings = new MeetingService(
    {
      domain: config.homeserver.domain,
      aliasPrefix: config.meetings.aliasPrefix,
      publicUrl: config.meetings.publicUrl,
      joinRule: config.meetings.joinRule,
      encrypted: config.meetings.encrypted,
      aliasRooms: config.meetings.aliasRooms,
      // Provisioned keys need the bot's Olm device (the crypto section).
      e2ee: crypto ? config.calls.e2ee : { keys: "participant", provisionedRooms: [] },
    },
    {
      homeserver: crypto ? crypto.homeserver(homeserver) : homeserver,
      store,
      policy,
      clock: { now: () => Date.now() },
      ids,
      onCallEnded: (call) => calls.endCall(call),
      note: (what, details) => log.info(details, what),
      observe: (what, label) => {
        if (what === "room_created") metrics.roomsCreated.inc({ origin: label });
        else if (what === "alias") metrics.aliasRooms.inc({ outcome: label });
        else if (what === "command") metrics.commands.inc({ kind: label });
        else metrics.refusals.inc({ what: label });
      },
    },
  );
  const router = new EventRouter(meetings, homeserver.botUserId, (roomId, userId, membership) => {
    const ended = calls.evict(roomId, userId, membership);
    if (ended) log.info({ roomId, userId, membership, ended }, "sessions ended by a membership change");
  });

  const route = (event: RawEvent) => router.route(event);
  const app = express();
  app.disable("x-powered-by");
  app.use(express.json({ limit: "5mb" }));
  app.use(
    appserviceRouter({
      hsToken: config.appservice.hsToken,
      store,
      metrics,
      handlers: {
        onEvent: route,
        ...crypto?.handlers(route),
        onAliasQuery: async (alias) => (await meetings.provisionAlias(alias)) !== undefined,
      },
    }),
  );
  app.use(callApiRouter(calls, { signallingPath: SIGNALLING_PATH }));
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
  app.use(clientRouter(config));
  app.use((req, res) => sendError(res, new ParleyError("M_UNRECOGNIZED", `unrecognized request ${req.method} ${req.path}`)));
  app.use(errorHandler());

  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.appservice.port, config.appservice.bindAddress, () => resolve(s));
    s.once("error", reject);
  });
  callParts.attach(server);
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.appservice.port;

  try {
    await homeserver.waitUntilReachable(60_000);
    await homeserver.ensureBotRegistered("Parley");
    const settled = await meetings.reconcilePendingAliases();
    if (settled) log.info({ settled }, "settled alias claims left by an earlier run");
    // After the alias claims: opening the device takes seconds, and alias queries must not find
    // a claim left by a crash still unsettled meanwhile.
    await crypto?.start();
  } catch (err) {
    await callParts.stop();
    server.close();
    verifier.close();
    await crypto?.stop();
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
    calls,
    metrics,
    crypto,
    stop() {
      stopped ??= (async () => {
        clearInterval(pruneTimer);
        await callParts.stop();
        verifier.close();
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
        await crypto?.stop();
        store.close();
        log.info("Parley stopped");
      })();
      return stopped;
    },
  };
}
