// The call wiring of start(): the SFU and its ports, the call service, seats and media rules,
// provisioned keys, the signalling socket, idle-call ending and restart recovery. Two steps,
// because the call API needs the call service before the HTTP server exists: startCalls() makes
// the parts, attach(server) opens the signalling socket on the listening server; stop() unwinds
// both, whatever was reached.
import { createHash, randomBytes } from "node:crypto";
import type { Server } from "node:http";
import { CallSeats } from "../calls/callSeats.ts";
import { CallService, type CallServiceDeps } from "../calls/callService.ts";
import { Governance, type GovernanceDeps } from "../calls/governance.ts";
import { IdleCalls } from "../calls/idleCalls.ts";
import type { RoomStateReader } from "../calls/callState.ts";
import { ProvisionedKeyService } from "../calls/provisionedKeys.ts";
import { recoverLostRooms } from "../calls/sfuRecovery.ts";
import type { ParleyConfig } from "../config/schema.ts";
import type { BotCrypto } from "../crypto/botCrypto.ts";
import { ParleyError } from "../errors.ts";
import { governanceHandlers } from "../http/signalling/governance.ts";
import { mediaHandlers } from "../http/signalling/media.ts";
import { attachSignalling, sessionHandlers, type SignallingServer } from "../http/signalling/server.ts";
import { getLogger } from "../log.ts";
import type { CallMetrics } from "../http/callMetrics.ts";
import { createSfu, type Sfu } from "../sfu/index.ts";
import { readTurnSecret } from "../turn/credentials.ts";
import type { CallRecord, ModerationStore, SeatStore } from "../store/store.ts";
import { sfuPorts, type SfuPorts } from "./sfuPorts.ts";

export interface CallsDeps extends Omit<CallServiceDeps, "sfu" | "homeserver" | "admission" | "recorder"> {
  homeserver: CallServiceDeps["homeserver"] & RoomStateReader & GovernanceDeps["homeserver"];
  store: CallServiceDeps["store"] & GovernanceDeps["store"] & SeatStore & ModerationStore;
  crypto: BotCrypto | undefined;
  /** Counts governance actions (metrics); optional. */
  observeGovernance?: GovernanceDeps["observe"];
  /** Persists governance's audit events (the attendance and audit log); optional. */
  audit?: GovernanceDeps["audit"];
  /** A user's first call session in a room began, or their last one ended (guests' accounts, attendance). */
  onPresence?: CallServiceDeps["onPresence"];
  /** A meeting was ended for all (guests' accounts go sooner). */
  onMeetingEnded?: GovernanceDeps["onMeetingEnded"];
  /** Call, lobby, key, Janus and signalling metrics; optional. */
  metrics?: CallMetrics | undefined;
}

export interface RunningCalls {
  readonly calls: CallService;
  readonly seats: CallSeats;
  readonly governance: Governance;
  readonly sfu: Sfu | undefined;
  readonly provisioned: ProvisionedKeyService | undefined;
  /** Ends an ended call's sessions (`message`, `by`: what they are told) and forgets its moderation. */
  endCall(call: Pick<CallRecord, "callId" | "sfu">, message?: string, by?: string): Promise<void>;
  /** Opens the signalling socket on the (listening) HTTP server; stop() closes it. */
  attach(server: Server): { stop(): Promise<void> };
  stop(): Promise<void>;
}

export async function startCalls(config: ParleyConfig, deps: CallsDeps): Promise<RunningCalls> {
  const log = getLogger("app.calls");
  const { limits } = config.calls;
  const requireE2ee = config.calls.e2ee.required;
  const metrics = deps.metrics;
  const observe = metrics?.observe;
  const sfu = config.sfu.nodes.length ? await createSfu(config.sfu, { observeRequest: observe?.janusRequest, deadAfterMs: config.sfu.deadNodeSeconds * 1000, warmSessions: config.sfu.warmSessions }) : undefined;
  const media = config.meetings.media;
  const ports = sfu
    ? sfuPorts(sfu, {
        requireE2ee,
        maxEarlyCandidates: limits.iceCandidatesBeforeMedia,
        talking: { audioActivePackets: media.audioActivePackets, audioLevelAverage: media.audioLevelAverage },
        opusDtx: media.opusDtx,
        publishers: limits.sessionsPerCall,
      })
    : noSfu();
  // Governance and the seats need each other (roles shown in the roster, pushes to seats): bound late.
  const late: { governance?: Governance } = {};
  const calls = new CallService(
    {
      sessionTtlMs: config.calls.sessionTtlSeconds * 1000,
      iceServers: config.calls.iceServers,
      turn: config.turn && { ...config.turn, secret: readTurnSecret(config.turn.secretFile) },
      sessionsPerUserPerCall: limits.sessionsPerUserPerCall,
      sessionsPerCall: limits.sessionsPerCall,
      invitedJoinWaitMs: limits.invitedJoinWaitMs,
      lobbyGrantsPerCall: limits.lobbyGrantsPerCall,
    },
    {
      ...deps,
      sfu: ports,
      admission: (roomId, userId, inCall, ahead, atHello) => late.governance!.admit(roomId, userId, inCall, ahead, atHello),
      // Sessions (and their SFU sessions) outlive a restart of this process: docs/resilience.md.
      recorder: {
        key: (token) => createHash("sha256").update(token).digest("base64url"),
        save: (seat) => deps.store.saveSeat(seat),
        media: (key, media, at) => deps.store.setSeatMedia(key, media, at),
        forget: (key) => deps.store.forgetSeat(key),
      },
      recordFailed: (err) => log.warn({ err }, "call session not recorded; a restart would end it"),
    },
  );
  // Provisioned keys need the bot's Olm device: without a crypto section no keys are provisioned.
  const crypto = deps.crypto;
  const provisioned = crypto
    ? new ProvisionedKeyService({
        sender: {
          userId: deps.homeserver.botUserId,
          deviceId: async () => (await crypto.device()).identity().deviceId,
          sendToDevices: async (type, devices, content) => (await crypto.device()).sendToDevices(type, devices, content),
        },
        random: () => randomBytes(32),
        onRotated: observe?.keysRotated,
      })
    : undefined;
  const g = config.meetings.governance;
  const seats = new CallSeats({
    calls,
    sfu: ports,
    rooms: deps.homeserver,
    keyMode: (roomId) => late.governance!.keyMode(roomId),
    keys: provisioned,
    botUserId: deps.homeserver.botUserId,
    requireE2ee,
    clock: deps.clock,
    moderation: { reactions: { perMinute: g.reactionsPerMinute, burst: g.reactionBurst } },
    preparedPerCall: limits.prejoinSubscriptionsPerCall,
    roleOf: (roomId, userId) => late.governance?.roleOf(roomId, userId),
    onSeated: async (roomId, userId, push) => late.governance?.onSeated(roomId, userId, push),
    onSeat: observe?.seat,
    observeE2ee: observe?.e2ee,
    // Forced mutes, stopped shares and raised hands outlive a restart too: docs/resilience.md.
    recordModeration: {
      save: (record) => deps.store.saveModeration(record),
      forget: (callId) => deps.store.forgetCallModeration(callId),
      failed: (err) => log.warn({ err }, "call moderation not recorded; a restart would forget it"),
    },
    media: {
      lastN: media.lastN,
      layerKbps: media.layerKbps,
      keyframeIntervalMs: media.keyframeIntervalMs,
      speakerHoldMs: media.speakerHoldMs,
      speakerGapMs: media.speakerGapMs,
      speakersPushIntervalMs: media.speakersPushIntervalMs,
      recentMax: 50,
      largeCall: media.largeCall,
    },
  });
  const endCall: RunningCalls["endCall"] = async (call, message, by) => {
    await calls.endCall(call, message, by);
    seats.media.forgetCall(call.callId);
  };
  const governance = (late.governance = new Governance(
    {
      domain: config.homeserver.domain,
      cohostLevel: g.cohostLevel,
      hosts: g.hosts,
      hostUsers: g.hostUsers,
      trustedServers: g.trustedServers,
      externalServers: g.externalServers,
      guestPrefix: config.appservice.userPrefix,
      guestsLobby: config.guests.mode === "lobby",
      defaults: { access: g.access, guests: config.guests.mode === "lobby" },
    },
    {
      homeserver: deps.homeserver,
      store: deps.store,
      clock: deps.clock,
      moderation: seats.media.moderation,
      seats,
      endCall: (call) => endCall(call, call.endedBy ? `the meeting was ended by ${call.endedBy}` : undefined, call.endedBy ?? undefined),
      ...(deps.observeGovernance ? { observe: deps.observeGovernance } : {}),
      ...(deps.audit ? { audit: deps.audit } : {}),
      ...(deps.onMeetingEnded ? { onMeetingEnded: deps.onMeetingEnded } : {}),
      observeLobby: observe?.lobby,
      letIn: { ahead: (roomId, userId) => calls.letInAhead(roomId, userId), failed: (roomId, userId) => calls.letInFailed(roomId, userId) },
    },
  ));

  await resumeSessions(deps.store, ports, seats, config.calls.resumeGraceSeconds * 1000, deps.clock.now());

  const idleMs = config.calls.idleEndSeconds * 1000;
  const idle = new IdleCalls(idleMs, {
    clock: deps.clock,
    activeCalls: () => deps.store.activeCalls(),
    occupied: (callId) => calls.occupied(callId),
    endIdle: async (call) => {
      await calls.endIdle(call);
      if (!calls.occupied(call.callId)) seats.media.forgetCall(call.callId);
      log.info({ callId: call.callId, roomId: call.roomId, origin: call.origin }, "idle call: SFU room destroyed");
    },
  });
  const idleTimer = setInterval(() => void idle.sweep().catch((err: unknown) => log.warn({ err }, "idle call sweep failed")), IdleCalls.periodMs(idleMs));
  idleTimer.unref();
  // Awaited by the pool: the lost participants' clients are told to renegotiate only after this.
  const unwatch = sfu?.onNodeRestarted((nodeId, lost) => recoverLostRooms({ store: deps.store, recreateRoom: (r) => ports.recreateRoom(r) }, nodeId, lost));

  let signalling: SignallingServer | undefined;
  metrics?.watch({
    occupiedCalls: () => calls.occupiedCalls(),
    seatsPerCall: () => seats.seatsPerCall(),
    largeCalls: () => seats.media.large.largeCalls(),
    waitingKnocks: () => governance.waitingKnocks(),
    sockets: () => signalling?.connections() ?? 0,
    standbySockets: () => signalling?.standbys() ?? 0,
    janusNodes: () => (sfu?.health() ?? []).map((n) => ({ id: n.id, up: n.state === "up", sessions: n.participants, handles: n.handles, rooms: n.rooms })),
  });
  const closeSignalling = async () => {
    // The sockets closing now end no session: the next process takes them and their media over.
    seats.suspend();
    const s = signalling;
    signalling = undefined;
    await s?.close();
  };
  return {
    calls,
    seats,
    governance,
    sfu,
    provisioned,
    endCall,
    attach(server) {
      const opened = attachSignalling(server, seats, { ...sessionHandlers, ...mediaHandlers(seats.media), ...governanceHandlers(governance, seats.media) }, {
        socketsPerAddress: limits.socketsPerAddress,
        helloTimeoutMs: limits.helloTimeoutSeconds * 1000,
        standbyMs: limits.standbySeconds * 1000,
        messagesPerSecond: limits.messagesPerSecond,
        messageBurst: limits.messageBurst,
      }, observe?.signalling);
      signalling = opened;
      return { stop: () => closeSignalling() };
    },
    async stop() {
      clearInterval(idleTimer);
      unwatch?.();
      await closeSignalling();
      provisioned?.stop();
      calls.stop();
      // Rooms and participants' sessions stay in Janus for the next process (a restart, an upgrade).
      await sfu?.stop({ keepMedia: true });
    },
  };
}

/**
 * What an earlier Parley process left running (docs/resilience.md): its calls' SFU rooms are
 * this process's own again, and its call sessions live on, their SFU sessions adopted, until
 * their clients reattach. Sessions of calls that ended meanwhile are forgotten.
 */
async function resumeSessions(store: CallsDeps["store"], ports: SfuPorts, seats: CallSeats, graceMs: number, now: number): Promise<void> {
  const log = getLogger("app.calls");
  const active = await store.activeCalls();
  for (const call of active) if (call.sfu) ports.adoptRoom?.(call.sfu, call.callId);
  const live = new Set(active.map((c) => c.callId));
  // Moderation first: the restored members' roster shows it, and their seats' pushes replay it.
  const moderation = await store.moderation();
  const ended = [...new Set(moderation.filter((r) => !live.has(r.callId)).map((r) => r.callId))];
  await Promise.all(ended.map((callId) => store.forgetCallModeration(callId)));
  seats.media.moderation.restore(moderation.filter((r) => live.has(r.callId)));
  const records = await store.seats();
  const kept: typeof records = [];
  const stale: typeof records = [];
  for (const r of records) (live.has(r.callId) && (r.expiresAt === null || r.expiresAt > now) ? kept : stale).push(r);
  await Promise.all(stale.map((r) => store.forgetSeat(r.tokenHash)));
  if (!kept.length) return;
  const resumed = await seats.restore(kept, graceMs, now);
  log.info({ ...resumed, graceMs }, "call sessions of the previous run resumed; their clients may reattach");
}

/** Without an SFU node in the config, calls cannot carry media: joins say so. */
function noSfu(): SfuPorts {
  const unavailable = async (): Promise<never> => {
    throw new ParleyError("M_UNAVAILABLE", "no media server (sfu.nodes) is configured");
  };
  return { createRoom: unavailable, destroyRoom: async () => undefined, roomExists: async () => false, open: unavailable, recreateRoom: unavailable };
}
