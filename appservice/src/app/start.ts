// start(config) -> a running Parley. Tests start the whole service in-process through this.
import { randomBytes, randomUUID } from "node:crypto";
import type { Server } from "node:http";
import express from "express";
import type { CallService } from "../calls/callService.ts";
import type { Governance } from "../calls/governance.ts";
import { FederationPolicy } from "../calls/policy.ts";
import { MeetingService } from "../calls/meetings.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { clientRouter } from "../http/client.ts";
import { errorHandler, ParleyError, sendError } from "../http/errors.ts";
import { BODY_LIMITS, jsonBody } from "../http/body.ts";
import { HealthMonitor, healthRoute } from "../http/health.ts";
import { createMetrics, serveMetrics, type Metrics } from "../http/metrics.ts";
import { observedCallStore } from "../http/callMetrics.ts";
import { AddressRateLimiter, rateLimited } from "../http/rateLimit.ts";
import { callApiRouter } from "../http/callApi.ts";
import { meetingInfoRouter } from "../http/meetingInfo.ts";
import { SIGNALLING_PATH } from "../http/signalling/server.ts";
import { BotCrypto } from "../crypto/botCrypto.ts";
import { clientHttp } from "../crypto/http.ts";
import { configureLogging, getLogger, type Logger } from "../log.ts";
import { type Lifecycle, withLifecycle } from "./lifecycle.ts";
import { OpenIdVerifier } from "../matrix/openid.ts";
import { startCalls } from "./calls.ts";
import { startGuests } from "./guests.ts";
import { appserviceRouter, type MembershipCause } from "../matrix/appserviceHttp.ts";
import { MatrixHomeserver } from "../matrix/homeserver.ts";
import { botUserId } from "../matrix/botUser.ts";
import type { RawEvent } from "../matrix/events.ts";
import { EventRouter } from "../matrix/router.ts";
import { AuditLog } from "../privacy/auditLog.ts";
import { purgeExpired } from "../privacy/retention.ts";
import { UserIds } from "../privacy/userIds.ts";
import { openStore } from "../store/open.ts";
import type { Store } from "../store/store.ts";

export interface Parley {
  readonly url: string;
  readonly port: number;
  readonly store: Store;
  readonly meetings: MeetingService;
  readonly calls: CallService;
  readonly governance: Governance;
  readonly metrics: Metrics;
  /** The attendance and audit log's writer (flush() in tests). */
  readonly audit: AuditLog;
  /** Where GET /metrics answers (its own listener), unless metrics are disabled. */
  readonly metricsUrl: string | undefined;
  /** The bot's Olm device, when crypto is configured. */
  readonly crypto: BotCrypto | undefined;
  stop(): Promise<void>;
}

const DAY = 24 * 3600 * 1000;

export async function start(config: ParleyConfig): Promise<Parley> {
  configureLogging(config.logging.level);
  const log = getLogger("app");
  // Everything that starts is recorded in `life`; a failed start and stop() both unwind it.
  return withLifecycle(log, (life) => run(config, life, log));
}

async function run(config: ParleyConfig, life: Lifecycle, log: Logger): Promise<Parley> {
  const metrics = createMetrics();
  // Every call start and end is counted as the store records it (http/callMetrics.ts).
  const store = observedCallStore(life.add("store", await openStore(config.store), (s) => s.close()), metrics.calls);
  log.info({ backend: config.store.backend }, "store open");
  const clock = { now: () => Date.now() };
  const { privacy } = config;
  // Stops after everything that records events, before the store closes: what is queued is written.
  const audit = life.add(
    "audit log",
    new AuditLog(
      { maxQueued: privacy.auditQueueMax, batchSize: privacy.auditBatchSize, flushMs: privacy.auditFlushMs },
      { store, clock, ids: userIds(config) },
    ),
  );
  const homeserver = new MatrixHomeserver({
    url: config.homeserver.url,
    asToken: config.appservice.asToken,
    botUserId: botUserId(config),
  });
  // The bot's Olm device: opened below once the bot user exists; work that comes earlier waits.
  const crypto = config.crypto
    ? life.add("crypto", new BotCrypto({ userId: homeserver.botUserId, file: config.crypto.path, storeKey: config.crypto.storeKey, http: clientHttp(homeserver.client) }))
    : undefined;
  if (!crypto) log.warn("no crypto section in the config: the bot neither reads nor answers in encrypted rooms");
  const policy = new FederationPolicy(config.homeserver.domain, config.federation.allow);
  const verifier = life.add("openid verifier", OpenIdVerifier.fromConfig(config, policy, { ledger: store }), (v) => v.close());
  const ids = { callId: () => randomUUID(), sessionToken: () => randomBytes(32).toString("base64url") };
  const guests = life.add("guests", startGuests(config, { homeserver, store, metrics, audit: audit.record }));
  const callParts = await life.start("calls", () =>
    startCalls(config, {
      homeserver, store, policy, verifier, clock: { now: () => Date.now() }, ids, crypto,
      observeGovernance: (action, outcome) => metrics.moderation.inc({ action, outcome }),
      metrics: metrics.calls,
      audit: audit.record,
      onMeetingEnded: (roomId) => void guests.service.onMeetingEnded(roomId).catch((err: unknown) => log.warn({ err, roomId }, "guests of an ended meeting not rescheduled")),
      onPresence: (roomId, userId, present, callId) => {
        audit.record({ action: present ? "call_join" : "call_leave", roomId, callId, actor: userId });
        void guests.service.onCallPresence(roomId, userId, present).catch((err: unknown) => log.warn({ err, roomId }, "guest presence not recorded"));
      },
    }),
  );
  const { calls, governance } = callParts;
  const meetings = new MeetingService(
    {
      domain: config.homeserver.domain,
      aliasPrefix: config.meetings.aliasPrefix,
      publicUrl: config.meetings.publicUrl,
      encrypted: config.meetings.encrypted,
      governance: {
        access: config.meetings.governance.access,
        guests: config.guests.mode === "lobby",
        cohostLevel: config.meetings.governance.cohostLevel,
        hasExternalServers: config.meetings.governance.externalServers.length > 0,
        guestsLobby: config.guests.mode === "lobby",
      },
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
      // (`!meet end`, the bot removed: the call's moderation goes with it, as after a host's end.)
      onCallEnded: (call) => callParts.endCall(call),
      note: (what, details) => log.info(details, what),
      observe: (what, label) => {
        if (what === "room_created") metrics.roomsCreated.inc({ origin: label });
        else if (what === "alias") metrics.aliasRooms.inc({ outcome: label });
        else if (what === "command") metrics.commands.inc({ kind: label });
        else metrics.refusals.inc({ what: label });
      },
    },
  );
  const evict = (roomId: string, userId: string, membership: string, cause: MembershipCause = {}) => {
    // The bot kicks and bans for hosts: the eviction names the host who asked.
    const by = (cause.by === homeserver.botUserId && governance.actorOf(roomId, userId)) || cause;
    // A knock answered leaves the lobby first: the invite lets the knocker's lobby grant in just below.
    governance.answeredOnArrival(roomId, userId, membership);
    const ended = calls.evict(roomId, userId, membership, by);
    if (ended) {
      log.info({ roomId, userId, membership, ended }, "sessions ended by a membership change");
      // A kick or ban that ended sessions (a host's through Parley is also recorded by governance).
      if (by.by && by.by !== userId) audit.record({ action: `membership_${membership}`, roomId, target: userId, actor: by.by });
    }
  };
  const router = new EventRouter(meetings, homeserver.botUserId, evict, governance, (roomId, userId) => calls.memberJoined(roomId, userId));

  const route = async (event: RawEvent) => {
    await guests.onEvent(event);
    return router.route(event);
  };
  const app = express();
  app.disable("x-powered-by");
  // No body parser for the whole app: each route that takes a body reads it with its own limit.
  app.use(
    appserviceRouter({
      hsToken: config.appservice.hsToken,
      store,
      metrics,
      handlers: {
        onEvent: route,
        onMembershipLost: evict,
        ...crypto?.handlers(route),
        onAliasQuery: async (alias) => (await meetings.provisionAlias(alias)) !== undefined,
      },
    }),
  );
  // Refusals before the call API's router (rate limit, body) carry its CORS origin header too.
  app.use("/_parley/v1/calls", (_req, res, next) => {
    res.setHeader("Access-Control-Allow-Origin", "*");
    next();
  });
  const joinLimiter = new AddressRateLimiter(config.calls.joinRateLimit);
  app.post("/_parley/v1/calls/join", rateLimited(joinLimiter, "call joins", () => metrics.refusals.inc({ what: "join_rate" })));
  app.use("/_parley/v1/calls", jsonBody(BODY_LIMITS.callJoin));
  app.use(
    callApiRouter(calls, {
      signallingPath: SIGNALLING_PATH,
      onRefused: (errcode) => metrics.calls.joinRefusals.inc({ errcode }),
      onArriving: (s, deviceId) => callParts.seats.pushEach(s.roomId, () => ({ type: "arriving", user_id: s.userId, device_id: deviceId })),
    }),
  );
  app.use(meetingInfoRouter({ aliases: store, meetings, limit: config.meetings.lookupRateLimit, onRefused: () => metrics.refusals.inc({ what: "lookup_rate" }) }));
  // Healthy once started (the bot registered, alias claims settled, its Olm device open: a load
  // balancer, and the test stack, must not send users to a Parley still starting), then as healthy
  // as its dependencies (http/health.ts).
  let running = false;
  const health = new HealthMonitor(config.health, { homeserver, store, sfu: callParts.sfu, crypto, clock, metrics: metrics.dependencies });
  app.get("/health", healthRoute(health, () => running));
  app.use(guests.routers);
  app.use(clientRouter(config));
  app.use((req, res) => sendError(res, new ParleyError("M_UNRECOGNIZED", `unrecognized request ${req.method} ${req.path}`)));
  app.use(errorHandler());

  const server = await life.start("http server", () => listen(app, config.appservice.port, config.appservice.bindAddress));
  const metricsListener = config.metrics.enabled ? await life.start("metrics listener", () => serveMetrics(metrics.registry, config.metrics)) : undefined;
  // The signalling socket closes before the HTTP server (the lifecycle unwinds in reverse).
  life.add("signalling", callParts.attach(server.http));
  await homeserver.waitUntilReachable(60_000);
  await homeserver.ensureBotRegistered("Parley");
  const settled = await meetings.reconcilePendingAliases();
  if (settled) log.info({ settled }, "settled alias claims left by an earlier run");
  // After the alias claims: opening the device takes seconds, and alias queries must not find
  // a claim left by a crash still unsettled meanwhile.
  await crypto?.start();
  const retention = async () => {
    await store.prune(Date.now() - 7 * DAY);
    const purged = await purgeExpired({ store, clock }, privacy.retentionDays);
    if (purged.audit || purged.calls || purged.guests) log.info({ ...purged, retentionDays: privacy.retentionDays }, "records older than the retention period purged");
  };
  await retention();
  const prune = () => void retention().catch((err: unknown) => log.warn({ err }, "store pruning failed; tried again tomorrow"));
  life.add("store pruning", setInterval(prune, DAY).unref(), clearInterval);
  life.add("health checks", health).start();
  running = true;
  log.info({ port: server.port, metrics: metricsListener?.url, bot: homeserver.botUserId }, "Parley is running");

  return {
    url: `http://${config.appservice.bindAddress}:${server.port}`,
    port: server.port,
    metricsUrl: metricsListener?.url,
    store,
    meetings,
    calls,
    governance,
    metrics,
    audit,
    crypto,
    async stop() {
      await life.stop();
      log.info("Parley stopped");
    },
  };
}

/** How the attendance and audit log names users (pseudonyms for remote users, if configured). */
export function userIds(config: ParleyConfig): UserIds {
  return new UserIds(config.homeserver.domain, config.privacy.pseudonymizeRemoteUsers ? config.privacy.pseudonymKey : undefined);
}

/** The main HTTP listener; stop() closes it with its open connections. */
async function listen(app: express.Express, port: number, host: string): Promise<{ http: Server; port: number; stop(): Promise<void> }> {
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, () => resolve(s));
    s.once("error", reject);
  });
  const address = server.address();
  return {
    http: server,
    port: typeof address === "object" && address ? address.port : port,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
