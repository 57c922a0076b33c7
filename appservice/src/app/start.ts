// start(config) -> a running Parley. Tests start the whole service in-process through this.
import { randomBytes, randomUUID } from "node:crypto";
import type { Server } from "node:http";
import express from "express";
import { CallService } from "../calls/callService.ts";
import { FederationPolicy } from "../calls/policy.ts";
import type { SfuMedia, SfuRooms } from "../calls/ports.ts";
import { MeetingService } from "../calls/meetings.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { clientRouter } from "../http/client.ts";
import { errorHandler, ParleyError, sendError } from "../http/errors.ts";
import { BODY_LIMITS, jsonBody } from "../http/body.ts";
import { createMetrics, serveMetrics, type Metrics } from "../http/metrics.ts";
import { AddressRateLimiter, rateLimited } from "../http/rateLimit.ts";
import { callApiRouter } from "../http/callApi.ts";
import { CallMembers, mediaHandlers } from "../http/signalling/media.ts";
import { ProvisionedKeyService } from "../calls/provisionedKeys.ts";
import { attachSignalling, sessionHandlers, SIGNALLING_PATH } from "../http/signalling/server.ts";
import { BotCrypto } from "../crypto/botCrypto.ts";
import { clientHttp } from "../crypto/http.ts";
import { configureLogging, getLogger, type Logger } from "../log.ts";
import { type Lifecycle, withLifecycle } from "./lifecycle.ts";
import { OpenIdVerifier } from "../matrix/openid.ts";
import { createSfu, type Sfu } from "../sfu/index.ts";
import { sfuPorts } from "./sfuPorts.ts";
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
  const store = life.add("store", new SqliteStore(config.store.path), (s) => s.close());
  const metrics = createMetrics();
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
  const verifier = life.add("openid verifier", OpenIdVerifier.fromConfig(config, policy), (v) => v.close());
  const sfu: Sfu | undefined = config.sfu.nodes.length ? await life.start("sfu", () => createSfu(config.sfu)) : undefined;
  const requireE2ee = config.calls.e2ee.required;
  const ports: SfuRooms & SfuMedia = sfu ? sfuPorts(sfu, { requireE2ee }) : noSfu();
  const ids = { callId: () => randomUUID(), sessionToken: () => randomBytes(32).toString("base64url") };
  const calls = life.add(
    "call sessions",
    new CallService(
      { sessionTtlMs: config.calls.sessionTtlSeconds * 1000, iceServers: config.calls.iceServers },
      { homeserver, store, policy, verifier, sfu: ports, clock: { now: () => Date.now() }, ids },
    ),
  );
  const meetings = new MeetingService(
    {
      domain: config.homeserver.domain,
      aliasPrefix: config.meetings.aliasPrefix,
      publicUrl: config.meetings.publicUrl,
      joinRule: config.meetings.joinRule,
      encrypted: config.meetings.encrypted,
    },
    {
      homeserver: crypto ? crypto.homeserver(homeserver) : homeserver,
      store,
      policy,
      clock: { now: () => Date.now() },
      ids,
      onCallEnded: (call) => calls.endCall(call),
      observe: (what, label) => {
        if (what === "room_created") metrics.roomsCreated.inc({ origin: label });
        else if (what === "command") metrics.commands.inc({ kind: label });
        else metrics.refusals.inc({ what: label });
      },
    },
  );
  const evict = (roomId: string, userId: string, membership: string) => {
    const ended = calls.evict(roomId, userId, membership);
    if (ended) log.info({ roomId, userId, membership, ended }, "sessions ended by a membership change");
  };
  const router = new EventRouter(meetings, homeserver.botUserId, evict);

  const route = (event: RawEvent) => router.route(event);
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
  app.use(
    clientRouter({
      homeserverUrl: config.homeserver.publicUrl ?? config.homeserver.url,
      serverName: config.homeserver.domain,
      aliasPrefix: config.meetings.aliasPrefix,
    }),
  );
  app.use((req, res) => sendError(res, new ParleyError("M_UNRECOGNIZED", `unrecognized request ${req.method} ${req.path}`)));
  app.use(errorHandler());

  const server = await life.start("http server", () => listen(app, config.appservice.port, config.appservice.bindAddress));
  const metricsListener = config.metrics.enabled ? await life.start("metrics listener", () => serveMetrics(metrics.registry, config.metrics)) : undefined;
  const members = new CallMembers();
  // Provisioned keys need the bot's Olm device: without a crypto section calls use participant keys.
  const provisioned = crypto
    ? life.add(
        "provisioned keys",
        new ProvisionedKeyService({
          sender: {
            userId: homeserver.botUserId,
            deviceId: async () => (await crypto.device()).identity().deviceId,
            sendToDevices: async (type, devices, content) => (await crypto.device()).sendToDevices(type, devices, content),
          },
          random: () => randomBytes(32),
        }),
      )
    : undefined;
  const wantsProvisioned = config.calls.e2ee.keys === "provisioned" || config.calls.e2ee.provisionedRooms.length > 0;
  if (wantsProvisioned && !provisioned) log.warn("provisioned keys need the crypto section: calls use participant keys");
  const keysFor = (roomId: string) =>
    provisioned && (config.calls.e2ee.keys === "provisioned" || config.calls.e2ee.provisionedRooms.includes(roomId)) ? "provisioned" : "participant";
  const signalling = attachSignalling(
    server.http,
    calls,
    {
      ...sessionHandlers(calls, (roomId) => ({ required: requireE2ee, keys: keysFor(roomId), bot: homeserver.botUserId }), {
        opened: (conn, e2ee) => {
          const s = conn.session;
          if (provisioned && s && e2ee.keys === "provisioned" && conn.deviceId) provisioned.join(s.callId, s.roomId, conn, { userId: s.userId, deviceId: conn.deviceId });
        },
      }),
      ...mediaHandlers(calls, ports, members, { requireE2ee }),
    },
    { closed: (conn) => conn.session && provisioned?.leave(conn.session.callId, conn) },
  );
  life.add("signalling", signalling, (s) => s.close());
  // A restarted Janus lost its rooms: recreate each active call's room (same id and secret);
  // the participants' sessions died with it, and their clients are told to renegotiate.
  sfu?.onNodeRestarted((nodeId, lost) => {
    for (const call of store.activeCalls()) {
      if (call.sfu?.node !== nodeId || !lost.includes(call.sfu.room)) continue;
      const room = { node: call.sfu.node, roomId: call.sfu.room, secret: call.sfu.secret };
      sfu
        .recreateRoom(room)
        .then((r) => store.setCallSfu(call.callId, { node: r.node, room: r.roomId, secret: r.secret }))
        .then(() => log.info({ callId: call.callId, nodeId }, "SFU room recreated after a Janus restart"))
        .catch((err: unknown) => log.error({ err, callId: call.callId, nodeId }, "could not recreate the SFU room"));
    }
  });

  await homeserver.waitUntilReachable(60_000);
  await homeserver.ensureBotRegistered("Parley");
  const settled = await meetings.reconcilePendingAliases();
  if (settled) log.info({ settled }, "settled alias claims left by an earlier run");
  // After the alias claims: opening the device takes seconds, and alias queries must not find
  // a claim left by a crash still unsettled meanwhile.
  await crypto?.start();
  store.prune(Date.now() - 7 * DAY);
  life.add("store pruning", setInterval(() => store.prune(Date.now() - 7 * DAY), DAY).unref(), clearInterval);
  log.info({ port: server.port, metrics: metricsListener?.url, bot: homeserver.botUserId }, "Parley is running");

  return {
    url: `http://${config.appservice.bindAddress}:${server.port}`,
    port: server.port,
    metricsUrl: metricsListener?.url,
    store,
    meetings,
    calls,
    metrics,
    crypto,
    async stop() {
      await life.stop();
      log.info("Parley stopped");
    },
  };
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

/** Without an SFU node in the config, calls cannot carry media: joins say so. */
function noSfu(): SfuRooms & SfuMedia {
  const unavailable = async (): Promise<never> => {
    throw new ParleyError("M_UNAVAILABLE", "no media server (sfu.nodes) is configured");
  };
  return { createRoom: unavailable, destroyRoom: async () => undefined, roomExists: async () => false, open: unavailable };
}
