// The room as seen through a matrix-js-sdk sync loop with a small filter (this room only, its last
// 50 events, lazy-loaded members; no presence, account data, receipts or typing). With `crypto`,
// matrix-js-sdk's Rust crypto (vodozemac) decrypts and encrypts the room's messages (Megolm) and
// carries the call's media keys (Olm to-device).
// Timeline event types are not filtered: state events arriving in the timeline (m.room.create in
// a new room) must reach the SDK's room state. Messages are
// sent with a plain PUT so our transaction id comes back on the remote echo.
import {
  ClientEvent,
  EventStatus,
  EventType,
  MatrixError,
  MsgType,
  PendingEventOrdering,
  Filter,
  RoomEvent,
  RoomMemberEvent,
  RoomStateEvent,
  SyncState,
  type MatrixClient,
  type MatrixEvent,
  type Room,
} from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/CryptoEvent.js";
import { ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import { Emitter } from "../state/store.ts";
import { markStep } from "../timeline.ts";
import { MinuteBudget } from "../timers.ts";
import { claimsAfterIncoming, claimsRetrySooner } from "./keyClaims.ts";
import { cryptoStorePrefix, deviceKeysUploaded, deviceKeysUploadSettled, holdDeviceKeysUpload, newClient, releaseDeviceClient, sdkLogger, settledWithin, takeDeviceClient, tapSyncResponses, traceCryptoCalls, warmSyncStartup, type RustCryptoInternals, type SyncResponseListener } from "./deviceCrypto.ts";
import { enc, errorFromResponse, type MatrixHttp } from "./http.ts";
import type { MatrixSession } from "./session.ts";
import { participantId } from "../rtc/e2ee/cipher.ts";
import { keyModeFromCallState } from "../rtc/e2ee/keyMode.ts";
import { CALL_KEYS_EVENT, CALL_PREJOIN_EVENT, prejoinContent, type CallMembersPort, type DeviceRef, type KeySender, type KeyTransport } from "../rtc/e2ee/keyShare.ts";
import { CALL_MEMBER_EVENT, liveCallDevices } from "./membership.ts";
import { CALL_STATE_EVENT } from "./rooms.ts";
import type { SyncTap } from "./knock.ts";
import { ENCRYPTED_CHAT_REASON, toChatMessage, type ChatMessage, type RoomFeed, type RoomFeedEvents, type RoomMember, type SendCheck } from "./timeline.ts";

export function syncFilterDefinition(roomId: string) {
  return {
    presence: { not_types: ["*"] },
    account_data: { not_types: ["*"] },
    room: {
      rooms: [roomId],
      account_data: { not_types: ["*"] },
      ephemeral: { not_types: ["*"] },
      state: { lazy_load_members: true },
      timeline: { limit: 50 },
    },
  };
}

/** A to-device message as matrix-js-sdk hands it over (ClientEvent.ReceivedToDeviceMessage). */
export interface ReceivedToDevice {
  message: { type: string; content: Record<string, unknown> };
  encryptionInfo: { sender: string; senderDevice?: string | null | undefined } | null;
}

/**
 * A media-key message with its sender as Olm authenticates it, or null if it is not one. Keys
 * count only when Olm-encrypted, and the sender is who Olm says: the user and the device whose
 * session decrypted it (Rust crypto knows it for every to-device type but m.room_key), never what
 * the content claims. Without a device the key is passed on as such, and refused downstream.
 */
export function olmKeyMessage(m: ReceivedToDevice, type: string = CALL_KEYS_EVENT): { from: KeySender; content: unknown } | null {
  if (m.message.type !== type || !m.encryptionInfo) return null;
  return { from: { userId: m.encryptionInfo.sender, deviceId: m.encryptionInfo.senderDevice || null }, content: m.message.content };
}

/** Call member devices one pre-join announcement goes to (a larger call's others hear of the join from its membership). */
export const MAX_PREJOIN_DEVICES = 100;

/** The longest a room join waits for an upload of the device's keys in flight (SyncedRoomFeed.joining). */
export const KEYS_UPLOAD_WAIT_MS = 3000;

/**
 * The longest a question about another user's membership waits for this device's own join, when
 * its homeserver would not answer before it (SyncedRoomFeed.callMembers' joinedToRoom).
 */
export const OWN_JOIN_WAIT_MS = 5000;

/** Messages a feed keeps for the next chat that opens on it. */
const MAX_HISTORY = 200;
/** Users one preparation of Olm sessions covers (a large call's first key claims the rest). */
const MAX_PREPARED_USERS = 100;
/**
 * Knockers a device in the call prepares Olm sessions with at their knock, per minute (a key
 * query and a one-time-key claim each, over federation for a remote user); a knock past it is
 * prepared when let in, as before.
 */
export const KNOCK_PREPARES_PER_MINUTE = 20;
/** A knocker prepared for is not prepared again (its knock seen a second time) for this long. */
export const KNOCK_PREPARED_FOR_MS = 60_000;

/**
 * Which knockers a device in the call prepares Olm sessions with now: each once per
 * KNOCK_PREPARED_FOR_MS however often its knock is seen (the lobby's push, then the knock's event
 * in the sync; a lobby push lists everyone still waiting), and at most `perMinute` a minute. It
 * remembers at most `perMinute` knockers (only those taken in the last minute and a bit).
 */
export class KnockerPreparations {
  private readonly budget: MinuteBudget;
  private readonly taken = new Map<string, number>();
  private readonly now: () => number;
  private readonly forMs: number;

  constructor(perMinute: number, now: () => number = () => Date.now(), forMs = KNOCK_PREPARED_FOR_MS) {
    this.budget = new MinuteBudget(perMinute, now);
    this.now = now;
    this.forMs = forMs;
  }

  /** Whether to prepare `userId` now (and, if so, counts it). */
  take(userId: string): boolean {
    const now = this.now();
    for (const [u, at] of this.taken) if (now - at >= this.forMs) this.taken.delete(u);
    if (this.taken.has(userId) || !this.budget.take()) return false;
    this.taken.set(userId, now);
    return true;
  }

  /** Knockers remembered now (tests: bounded). */
  get size(): number {
    return this.taken.size;
  }
}

export class SyncedRoomFeed implements RoomFeed {
  readonly events = new Emitter<RoomFeedEvents>();
  private readonly log = getLogger("chat");
  private readonly session: MatrixSession;
  private readonly http: MatrixHttp;
  private readonly roomId: string;
  private client: MatrixClient | null = null;
  private readonly seen = new Set<string>();
  private initial: ChatMessage[] = [];
  private memberMap = new Map<string, RoomMember>();

  private readonly crypto: boolean;
  /** Our calls into the client's crypto in flight: it is freed only after them (deviceCrypto.ts). */
  private readonly cryptoWork = new Set<Promise<unknown>>();
  /** Media keys that arrived before anyone listened (the first sync can carry them). */
  private readonly keyBacklog: { from: KeySender; content: unknown }[] = [];
  private readonly keyListeners = new Set<(from: KeySender, content: unknown) => void>();
  /** Listeners to devices about to join (no backlog: an announcement is for those in the call now). */
  private readonly prejoinListeners = new Set<(from: KeySender, content: unknown) => void>();
  private startedResolve!: () => void;
  private startedReject!: (err: unknown) => void;
  private readonly started = new Promise<void>((resolve, reject) => {
    this.startedResolve = resolve;
    this.startedReject = reject;
  });
  private cryptoUpResolve!: () => void;
  /** The device's crypto is up and to-device messages reach this feed (keys wait in the backlog). */
  private readonly cryptoUp = new Promise<void>((resolve) => (this.cryptoUpResolve = resolve));
  private keysUpResolve!: () => void;
  private keysUpReject!: (err: unknown) => void;
  private readonly keysUp = new Promise<void>((resolve, reject) => {
    this.keysUpResolve = resolve;
    this.keysUpReject = reject;
  });

  /** Started while knocking: the room-bound part of the start waits for the room's join. */
  private readonly knocking: boolean;
  /** A room join in progress (joining): a device-keys upload waits for it. */
  private joinHold: Promise<void> | null = null;
  private joinSeenResolve!: () => void;
  private joinSeenReject!: (err: unknown) => void;
  /** Resolves when this feed's sync shows the room joined; rejects if the feed stops first. */
  private readonly joinSeen = new Promise<void>((resolve, reject) => {
    this.joinSeenResolve = resolve;
    this.joinSeenReject = reject;
  });
  private ownJoinResolve!: () => void;
  /** Resolves when this user's join of the room has answered (`joining`) or its sync shows it joined. */
  private readonly ownJoin = new Promise<void>((resolve) => (this.ownJoinResolve = resolve));

  /**
   * `crypto`: run matrix-js-sdk's Rust crypto (vodozemac), for media keys over Olm. `knocking`:
   * the user is asking to join the room and waits in the lobby: the sync loop and the crypto
   * start now, and the device's keys go up (the join is run through `joining`); the rest waits
   * for the room's join, seen in this feed's own sync (the room's history and members load then).
   * Let in, the feed is the room's without a first sync of its own, and the others can have Olm
   * sessions with the device before its call begins. `knockPreparesPerMinute`: knockers whose
   * Olm sessions a device in the call makes at their knock (KNOCK_PREPARES_PER_MINUTE).
   */
  constructor(session: MatrixSession, http: MatrixHttp, roomId: string, opts: { crypto?: boolean; knocking?: boolean; knockPreparesPerMinute?: number } = {}) {
    this.session = session;
    this.http = http;
    this.roomId = roomId;
    this.crypto = opts.crypto ?? false;
    this.knocking = opts.knocking ?? false;
    this.knockers = new KnockerPreparations(opts.knockPreparesPerMinute ?? KNOCK_PREPARES_PER_MINUTE);
    this.started.catch(() => undefined); // start() reports the failure; waiters see it too
    this.keysUp.catch(() => undefined);
    this.joinSeen.catch(() => undefined);
    void this.joinSeen.then(() => this.ownJoinResolve(), () => undefined);
  }

  private syncingResolve!: () => void;
  private readonly syncing = new Promise<void>((resolve) => (this.syncingResolve = resolve));

  /**
   * Runs the room's join so that no upload of the device's keys overlaps it (deviceCrypto.ts says
   * why; a knock's feed uploads them in the lobby): an upload that would start meanwhile waits
   * until the join has answered, and one in flight is waited out first (KEYS_UPLOAD_WAIT_MS at
   * most: an upload hanging that long is left to its fate).
   */
  async joining<T>(join: () => Promise<T>): Promise<T> {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    this.joinHold = held;
    const client = this.client;
    if (client) holdDeviceKeysUpload(client, held);
    try {
      if (client) await settledWithin(deviceKeysUploadSettled(client), KEYS_UPLOAD_WAIT_MS);
      const joined = await join();
      this.ownJoinResolve();
      return joined;
    } finally {
      release();
      if (this.joinHold === held) this.joinHold = null;
    }
  }

  private readonly syncListeners = new Set<SyncResponseListener>();
  private syncTapOff: (() => void) | null = null;

  /**
   * Calls `fn` with each /sync response of this feed's loop from now on (a loop not started yet:
   * from its first): the lobby's wait reads the knock's answer here (knock.ts). Returns the unsubscribe.
   */
  onSyncResponse(fn: SyncResponseListener): () => void {
    this.syncListeners.add(fn);
    this.updateSyncTap();
    return () => {
      this.syncListeners.delete(fn);
      this.updateSyncTap();
    };
  }

  /** This feed's loop as the lobby's wait listens to it (knock.ts SyncTap): its responses, and its start. */
  syncTap(): SyncTap {
    return { onResponse: (fn) => this.onSyncResponse(fn), running: this.whenStarted() };
  }

  /** The client's responses are tapped (a second parse of each) only while someone listens. */
  private updateSyncTap(): void {
    const want = this.syncListeners.size > 0 && !!this.client;
    if (want && !this.syncTapOff) {
      this.syncTapOff = tapSyncResponses(this.client!, (status, body) => {
        for (const l of [...this.syncListeners]) l(status, body);
      });
    } else if (!want && this.syncTapOff) {
      this.syncTapOff();
      this.syncTapOff = null;
    }
  }

  /** Resolves once the sync loop runs (its first sync done): for a knocking feed, before the join. */
  whenSyncing(): Promise<void> {
    return this.syncing;
  }

  /** Resolves once the feed has synced (and its crypto runs); rejects if it could not start. */
  whenStarted(): Promise<void> {
    return this.started;
  }

  /**
   * Resolves once this device's keys are on the homeserver (with crypto; without, once started),
   * usually before the first sync is done: the others can encrypt to the device from then on, so
   * its call membership need not wait for the sync (that is 200-400 ms of a quick join).
   */
  whenKeysUploaded(): Promise<void> {
    return this.crypto ? this.keysUp : this.started;
  }

  /**
   * Resolves once media keys can travel for this room: the first sync done with the room joined
   * (its call memberships and `org.parley.call` known) and this device's keys up (the others
   * authenticate its key messages by them). Not once the feed has started (feed-started): its
   * history and member list add nothing keys need (members are lazy-loaded, and one not loaded
   * yet counts as joined: callMembers), and for a knock let in they came 50-300 ms after the
   * room's join was synced, with the host's key already in the backlog. Rejects if the feed
   * cannot start.
   */
  whenKeysCanTravel(): Promise<void> {
    const ready = (async () => {
      await this.whenSyncing();
      if (this.knocking) await this.joinSeen;
      await this.whenKeysUploaded();
    })();
    // A start that fails ends the wait (the first sync would then never come).
    return Promise.race([ready, this.started]);
  }

  /**
   * Resolves once the call's media keys can come in before the room's first sync is processed
   * (on a busy page 100-400 ms after its response arrived) and before this device's keys are
   * uploaded (on a quick Join, up to 250 ms after it): the crypto up. A key that came in the
   * first sync waits in the backlog; keys go out once this device's keys are up
   * (`keyTransport().send` waits for them: the others authenticate our key messages by them); whom
   * to send them to (the call's memberships) comes with the sync, as a change of `callMembers`.
   * A knock let in does not wait for its sync to show the room joined either: the call starts
   * once the room's join is done on the homeserver, and the host's key sent at the admission often
   * comes in a sync before the one that shows the join (it waited 100-170 ms in the backlog).
   * Rejects if the feed cannot start.
   */
  whenKeysCanFlow(): Promise<void> {
    return Promise.race([this.crypto ? this.cryptoUp : this.started, this.started]);
  }

  private starting: Promise<void> | undefined;
  /** Stopped, perhaps while still starting: a start in progress stops its client when it gets there. */
  private stopped = false;

  /** Starts the sync loop (and the crypto); once: a feed warmed up during the pre-join is the call's. */
  start(): Promise<void> {
    this.starting ??= (async () => {
      try {
        await this.startSync();
        this.startedResolve();
        this.keysUpResolve(); // (already, unless the upload was never asked)
      } catch (err) {
        this.startedReject(err);
        this.keysUpReject(err);
        throw err;
      }
    })();
    return this.starting;
  }

  private async startSync(): Promise<void> {
    // With crypto: the device's prepared client (deviceCrypto.ts), its crypto most likely started already.
    if (this.crypto) markStep("feed-start");
    const filter = new Filter(this.session.userId);
    filter.setDefinition(syncFilterDefinition(this.roomId));
    // The sync's filter is uploaded now, beside the crypto's start, not by the sync's own start
    // after it (a request on the way to the first /sync): see seedFilter.
    const uploaded = this.uploadFilter(filter);
    const { client, cryptoStarted } = this.crypto ? await takeDeviceClient(this.session, this.log) : { client: warmSyncStartup(newClient(this.session, this.log)), cryptoStarted: false };
    this.client = client;
    this.updateSyncTap(); // before its first sync
    if (this.joinHold) holdDeviceKeysUpload(client, this.joinHold); // a join already under way (joining)

    client.on(RoomEvent.Timeline, (ev: MatrixEvent, room: Room | undefined, toStartOfTimeline: boolean | undefined) => {
      if (room?.roomId !== this.roomId || toStartOfTimeline) return;
      const prepare = olmPreparation(ev, { live: this.live, inCall: this.keyListeners.size > 0 });
      if (prepare?.track) this.prepareKnocker(prepare.userId);
      else if (prepare) this.prepareOlm([prepare.userId]);
      this.onEvent(ev, true);
    });
    // Once per burst: a member list loaded at once (lazy-loaded members, a room just joined) is
    // one event per member, and each refresh lists every member and redraws the call's tiles.
    let refreshQueued = false;
    const membersChanged = () => {
      if (refreshQueued) return;
      refreshQueued = true;
      queueMicrotask(() => {
        refreshQueued = false;
        this.refreshMembers();
      });
    };
    client.on(RoomStateEvent.Members, membersChanged);
    client.on(RoomMemberEvent.Name, membersChanged);
    client.on(RoomMemberEvent.Membership, membersChanged);
    client.on(ClientEvent.Sync, (state: SyncState, prev: SyncState | null) => {
      if (state === SyncState.Error) {
        this.events.emit("error", new ParleyClientError("NETWORK", "chat", { human: "Chat is offline; reconnecting to your homeserver…" }));
      } else if ((prev === SyncState.Error || prev === SyncState.Reconnecting) && state !== SyncState.Stopped && state !== SyncState.Reconnecting) {
        this.events.emit("online", undefined);
      }
    });

    if (this.crypto) {
      if (!cryptoStarted) await client.initRustCrypto({ cryptoDatabasePrefix: cryptoStorePrefix(this.session.deviceId) });
      markStep("feed-crypto");
      claimsAfterIncoming(client, this.log);
      claimsRetrySooner(client, await import("@matrix-org/matrix-sdk-crypto-wasm"), this.log);
      traceCryptoCalls(client, this.log);
      if (this.stopped) throw this.stoppedWhileStarting(client);
      client.on(ClientEvent.ReceivedToDeviceMessage, (m) => this.onToDevice(m));
      this.cryptoUpResolve();
    }
    const ready = new Promise<void>((resolve) => {
      const onSync = (state: SyncState) => {
        if (state === SyncState.Prepared || state === SyncState.Syncing) {
          client.off(ClientEvent.Sync, onSync);
          resolve();
        }
      };
      client.on(ClientEvent.Sync, onSync);
    });
    // The device's keys go up now, beside the first sync: the room is joined, or a knock waits in
    // the lobby and the join will keep clear of the upload (joining; deviceCrypto.ts says why).
    // The others encrypt our media keys to them as soon as they see us.
    const keysUp = this.crypto ? (client.getCrypto() as unknown as RustCryptoInternals).outgoingRequestsManager?.doProcessOutgoingRequests?.() : undefined;
    keysUp?.then(() => this.keysUpResolve(), () => undefined); // a failure is awaited (and so reported) after the first sync
    if (this.crypto) void deviceKeysUploaded(client).then(() => this.keysUpResolve());
    seedFilter(client, filter, await uploaded);
    await client.startClient({
      filter,
      initialSyncLimit: 50,
      lazyLoadMembers: true,
      disablePresence: true,
      threadSupport: false,
      // Our own messages appear by their remote echo only (the chat model keeps its local echo).
      pendingEventOrdering: PendingEventOrdering.Detached,
    });
    await ready;
    markStep("feed-synced");
    this.syncingResolve();
    if (this.stopped) throw this.stoppedWhileStarting(client);
    if (this.knocking) {
      // Waiting in the lobby: the rest once the sync shows the room joined.
      const check = () => {
        if (client.getRoom(this.roomId)?.getMyMembership() === "join") this.joinSeenResolve();
      };
      client.on(ClientEvent.Sync, check);
      check();
      try {
        await this.joinSeen;
      } catch {
        throw this.stoppedWhileStarting(client);
      } finally {
        client.off(ClientEvent.Sync, check);
      }
      markStep("feed-joined");
    }
    await keysUp;
    markStep("feed-keys");
    const room = client.getRoom(this.roomId);
    if (room) {
      const history = room.getLiveTimeline().getEvents();
      await this.usingCrypto(Promise.all(history.map((ev) => client.decryptEventIfNeeded(ev).catch(() => undefined))));
      for (const ev of history) this.onEvent(ev, false);
      await room.loadMembersIfNeeded().catch((err) => this.log.warn("could not load the member list", { err: String(err) }));
    }
    this.refreshMembers();
    markStep("feed-started");
    // The call's devices: our first media key to them goes out without a key query or claim.
    // From here on, each joiner as its event comes (olmPreparation).
    this.live = true;
    this.prepareOlm(this.callMembers().devices().map((d) => d.userId));
  }

  /**
   * The room's history is read (the first sync, or the one that shows a knocker's join): from
   * here, a joiner's event is one happening now, and its Olm sessions are prepared as it comes.
   */
  private live = false;

  /** Knockers whose Olm sessions are prepared at their knock (KNOCK_PREPARES_PER_MINUTE), each once. */
  private readonly knockers: KnockerPreparations;

  /**
   * Knockers as the call's Parley lists them in its lobby (its `lobby` push to a host, on the
   * signalling socket): their Olm sessions are prepared now, as their knock's event in this
   * room's sync would have them prepared (olmPreparation), but before that sync is even
   * processed: the push comes as the knock reaches Parley, and a host's page took 130 ms more to
   * start the key query from the sync (docs/join.md, twenty-fifth pass). Only while in the call,
   * within the same KNOCK_PREPARES_PER_MINUTE; each knocker once per KNOCK_PREPARED_FOR_MS,
   * whichever of the two saw the knock first. A push that names someone who did not knock
   * costs only a key query and a one-time-key claim, within that budget.
   */
  prepareKnockers(userIds: readonly string[]): void {
    if (this.keyListeners.size === 0) return;
    for (const u of userIds.slice(0, KNOCK_PREPARES_PER_MINUTE)) this.prepareKnocker(u);
  }

  private prepareKnocker(userId: string): void {
    if (this.knockers.take(userId)) this.prepareOlm([userId], true);
  }

  /** The user's membership of the room as this user's homeserver says it now (undefined: none, or no answer). */
  private async membershipOnServer(userId: string): Promise<unknown> {
    const content = await this.client?.getStateEvent(this.roomId, "m.room.member", userId).catch(() => undefined);
    return (content as { membership?: unknown } | undefined)?.membership;
  }

  /** Users whose Olm sessions are being prepared now. */
  private readonly preparing = new Set<string>();

  /**
   * Makes Olm sessions with these users' devices now, as Element does before a message is typed
   * (matrix-js-sdk's prepareToEncrypt): their keys queried, a one-time key of each device
   * claimed, nothing sent. The first media key to them then needs neither round trip (two
   * federation round trips each for a remote user). Best effort: sending does both anyway.
   */
  private prepareOlm(users: string[], track = false): void {
    const client = this.client;
    const internals = client?.getCrypto() as unknown as RustCryptoInternals | undefined;
    const ids = [...new Set(users)].filter((u) => u !== this.session.userId && !this.preparing.has(u)).slice(0, MAX_PREPARED_USERS);
    if (!client || !internals?.keyClaimManager || !ids.length) return;
    for (const u of ids) this.preparing.add(u);
    const started = performance.now();
    this.log.debug("preparing Olm sessions", { users: ids });
    void this.usingCrypto(async () => {
      const { UserId } = await import("@matrix-org/matrix-sdk-crypto-wasm");
      // (A knocker is not tracked by itself even in an encrypted room: not a member.)
      if (track || !client.getRoom(this.roomId)?.hasEncryptionStateEvent()) await trackUsers(internals, ids);
      await internals.outgoingRequestsManager?.doProcessOutgoingRequests?.();
      const userIds = () => ids.map((u) => new UserId(u));
      await internals.keyClaimManager?.ensureSessionsForUsers(sdkLogger(this.log), userIds());
      this.log.debug("Olm sessions prepared", { users: ids, ms: Math.round(performance.now() - started) });
    })
      .catch((err: unknown) => this.log.debug("could not prepare Olm sessions", { err: String(err) }))
      .finally(() => {
        for (const u of ids) this.preparing.delete(u);
      });
  }

  /** Stops the feed; its client's crypto is freed once the sync loop and our crypto calls are done. */
  stop(): void {
    this.stopped = true;
    this.joinSeenReject(new ParleyClientError("CLOSED", "chat", { detail: "stopped before the room was joined" }));
    const client = this.client;
    this.client = null;
    this.updateSyncTap();
    this.events.clear();
    if (client) void releaseDeviceClient(client, this.cryptoWork);
  }

  /** Stopped before the start finished: the client goes (stop() may have run before it was ours). */
  private stoppedWhileStarting(client: MatrixClient): ParleyClientError {
    if (this.client === client) this.client = null;
    void releaseDeviceClient(client, this.cryptoWork);
    return new ParleyClientError("CLOSED", "chat", { detail: "stopped while starting" });
  }

  /** The filter uploaded (its id), or null if that failed (the sync's start uploads it then). */
  private async uploadFilter(filter: Filter): Promise<string | null> {
    try {
      const res = await this.http.request<{ filter_id?: unknown }>("POST", `/user/${enc(this.session.userId)}/filter`, { body: filter.getDefinition() });
      return typeof res.filter_id === "string" && res.filter_id ? res.filter_id : null;
    } catch (err) {
      this.log.debug("could not upload the sync filter ahead", { err: String(err) });
      return null;
    }
  }

  /** Runs (or follows) a call into the crypto, so that the crypto is not freed under it. */
  private usingCrypto<T>(work: Promise<T> | (() => Promise<T>)): Promise<T> {
    const p = typeof work === "function" ? work() : work;
    this.cryptoWork.add(p);
    const done = () => void this.cryptoWork.delete(p);
    p.then(done, done);
    return p;
  }

  /** Media keys over Olm-encrypted to-device messages (needs `crypto`). */
  keyTransport(): KeyTransport {
    return {
      send: async (devices, content) => {
        // Not before this device's keys are up: a key message from a device its recipient cannot
        // look up is not Olm-authenticated there, and is dropped.
        await this.whenKeysUploaded();
        const client = this.client;
        if (!client?.getCrypto()) throw new ParleyClientError("E2EE_UNSUPPORTED", "join", { detail: "no Matrix crypto for media keys" });
        const missing = await this.usingCrypto(sendToDevices(client, devices, content as unknown as Record<string, unknown>, !client.getRoom(this.roomId)?.hasEncryptionStateEvent()));
        if (missing.length) this.log.info("media key not delivered yet: devices unknown to Matrix crypto", { devices: missing.map((d) => participantId(d.userId, d.deviceId)) });
        return missing;
      },
      onKeys: (fn) => {
        for (const k of this.keyBacklog.splice(0)) fn(k.from, k.content);
        this.keyListeners.add(fn);
        return () => this.keyListeners.delete(fn);
      },
      onPrejoin: (fn) => {
        this.prejoinListeners.add(fn);
        return () => this.prejoinListeners.delete(fn);
      },
      onDevicesUpdated: (fn) => {
        const client = this.client;
        if (!client) return () => undefined;
        client.on(CryptoEvent.DevicesUpdated, fn);
        return () => void client.off(CryptoEvent.DevicesUpdated, fn);
      },
    };
  }

  /**
   * This device is in the pre-join: the call's member devices are told so over Olm
   * (`org.parley.call.prejoin`, keyShare.ts), and send it their media keys now, which wait in the
   * key backlog for the call. The first frames then decrypt as soon as they arrive, and the Olm
   * sessions both ways are made before the join. Participant keys only (in a provisioned call the
   * bot's key comes with the join). Resolves with the devices told; never throws. `signal`: the
   * pre-join is over (the call started: its membership asks for the keys now, and an announcement
   * after it would only have every member answer it again): nothing is sent from then on.
   *
   * `early`: what the pre-join knows before the room's first sync (300-400 ms after the room
   * opened, so after a quick Join): the room's call state as the room was opened (its key mode),
   * and the devices in the call as the call API's grant asked ahead lists them. Those are told as
   * soon as this device's keys are up; the members the synced room shows that were not among
   * them, once it is synced. The list only says whom to tell (the announcement carries no key):
   * each member answers only a user its own homeserver sees joined to the room (keyShare.ts).
   */
  async announcePrejoin(signal?: AbortSignal, early?: { callState: unknown; devices: Promise<DeviceRef[] | null> }): Promise<number> {
    const told = new Set([participantId(this.session.userId, this.session.deviceId)]);
    const tell = async (devices: DeviceRef[], callState: unknown): Promise<number> => {
      const client = this.client;
      const mode = keyModeFromCallState(callState);
      if (signal?.aborted || !client?.getCrypto() || !("keys" in mode) || mode.keys !== "participant") return 0;
      const to = devices.filter((d) => !told.has(participantId(d.userId, d.deviceId))).slice(0, MAX_PREJOIN_DEVICES + 1 - told.size);
      if (!to.length) return 0;
      for (const d of to) told.add(participantId(d.userId, d.deviceId)); // before the send: the other path skips them
      const content = prejoinContent(this.roomId, { userId: this.session.userId, deviceId: this.session.deviceId }, Date.now());
      const track = !client.getRoom(this.roomId)?.hasEncryptionStateEvent();
      const missing = await this.usingCrypto(sendToDevices(client, to, content as unknown as Record<string, unknown>, track, CALL_PREJOIN_EVENT));
      markStep("prejoin-announced");
      this.log.info("told the call this device is about to join", { devices: to.length, unreached: missing.length });
      return to.length - missing.length;
    };
    const safely = (p: () => Promise<number>) =>
      p().catch((err: unknown) => {
        this.log.debug("could not announce the pre-join", { err: String(err) });
        return 0;
      });
    const fromGrant = safely(async () => {
      if (!early) return 0;
      const devices = await early.devices;
      if (!devices?.length) return 0;
      await this.whenKeysUploaded();
      return tell(devices, early.callState);
    });
    // Not after the history and the member list (feed-started), which on a busy page comes only
    // after a quick Join.
    const fromSync = safely(async () => {
      await this.whenKeysCanTravel();
      return tell(this.callMembers().devices(), this.callState());
    });
    const [a, b] = await Promise.all([fromGrant, fromSync]);
    return a + b;
  }

  private onToDevice(m: ReceivedToDevice): void {
    const prejoin = olmKeyMessage(m, CALL_PREJOIN_EVENT);
    if (prejoin) {
      for (const fn of this.prejoinListeners) fn(prejoin.from, prejoin.content);
      return;
    }
    const key = olmKeyMessage(m);
    if (!key) return;
    if (this.keyListeners.size === 0) {
      markStep("key-early"); // before the call: a key for the pre-join (or a first sync's)
      this.log.debug("a media key kept until a call takes keys", { from: `${key.from.userId}|${key.from.deviceId ?? ""}` });
      this.keyBacklog.push(key);
      this.keyBacklog.splice(0, Math.max(0, this.keyBacklog.length - 256));
      return;
    }
    for (const fn of this.keyListeners) fn(key.from, key.content);
  }

  /** The content of the room's org.parley.call state (state key ""), null if it has none. */
  callState(): unknown {
    return this.client?.getRoom(this.roomId)?.currentState.getStateEvents(CALL_STATE_EVENT, "")?.getContent() ?? null;
  }

  /** Devices with a live MatrixRTC membership in the room, from its state. */
  callMembers(): CallMembersPort {
    return {
      devices: () => {
        const room = this.client?.getRoom(this.roomId);
        if (!room) return [];
        // Members are lazy-loaded: one whose m.room.member we have not seen yet counts as joined
        // (the homeserver accepted its membership state, so it was joined); one seen as anything
        // else (left, kicked, banned) does not.
        const joined = { has: (userId: string) => (room.getMember(userId)?.membership ?? "join") === "join" };
        return liveCallDevices(
          room.currentState.getStateEvents(CALL_MEMBER_EVENT).map((ev) => ({ sender: ev.getSender() ?? "", stateKey: ev.getStateKey() ?? "", content: ev.getContent() })),
          joined,
          Date.now(),
        );
      },
      joinedToRoom: async (userId) => {
        const loaded = this.client?.getRoom(this.roomId)?.getMember(userId)?.membership;
        if (loaded !== undefined || !this.client) return loaded === "join";
        // Not loaded (lazy members): ask the homeserver, which knows.
        const answer = await this.membershipOnServer(userId);
        if (answer !== undefined || !this.client || this.client.getRoom(this.roomId)?.getMyMembership() === "join") return answer === "join";
        // No answer while this user is not in the room yet (a knocker let in, its call started
        // beside its room's join: its homeserver shows a room's state only to those in it). Asked
        // again once that join is in, within OWN_JOIN_WAIT_MS. (Before: the host's device in the
        // call's media was taken for a stranger's, and this device's key went to it only once its
        // sync showed the host's membership, 300-700 ms later.)
        await settledWithin(this.ownJoin, OWN_JOIN_WAIT_MS);
        return (await this.membershipOnServer(userId)) === "join";
      },
      // Asked of the homeserver every time: the member loaded here may still be the knock.
      invitedToRoom: async (userId) => (await this.membershipOnServer(userId)) === "invite",
      onRoomMembership: (fn) => {
        const client = this.client;
        if (!client) return () => undefined;
        const listener = (ev: MatrixEvent, room: Room | undefined, toStartOfTimeline: boolean | undefined) => {
          const change = room?.roomId === this.roomId && !toStartOfTimeline ? membershipChange(ev) : null;
          if (change) fn(change.userId, change.membership, change.previous);
        };
        client.on(RoomEvent.Timeline, listener);
        return () => void client.off(RoomEvent.Timeline, listener);
      },
      knownDevicesOf: async (userId) => {
        // As the machine knows them now: not after a key query under way (matrix-js-sdk's
        // getUserDeviceInfo waits up to a second for one; the invite's sync starts one).
        const machine = (this.client?.getCrypto() as unknown as RustCryptoInternals | undefined)?.olmMachine;
        if (!machine?.getUserDevices) return [];
        const [user] = await rustUserIds([userId]);
        const devices = await this.usingCrypto(machine.getUserDevices(user));
        try {
          return devices.keys().map((id) => ({ userId, deviceId: id.toString() }));
        } finally {
          devices.free();
        }
      },
      devicesOf: async (userId) => {
        // Asked of the homeserver itself: Rust crypto's own list of a user it has just begun to
        // track (an invited member of an encrypted room) is empty until its key query ran.
        const res = await this.http.request<{ device_keys?: Record<string, Record<string, unknown>> }>("POST", "/keys/query", { body: { device_keys: { [userId]: [] } } });
        return Object.keys(res.device_keys?.[userId] ?? {}).map((deviceId) => ({ userId, deviceId }));
      },
      onChange: (fn) => {
        const client = this.client;
        if (!client) return () => undefined;
        const listener = (ev: MatrixEvent) => {
          if (ev.getRoomId() === this.roomId && (ev.getType() === CALL_MEMBER_EVENT || ev.getType() === "m.room.member")) fn();
        };
        // Lazily loaded members arrive without state events: re-check on member list changes too.
        const members = (ev: MatrixEvent) => {
          if (ev.getRoomId() === this.roomId) fn();
        };
        client.on(RoomStateEvent.Events, listener);
        client.on(RoomStateEvent.Members, members);
        return () => {
          client.off(RoomStateEvent.Events, listener);
          client.off(RoomStateEvent.Members, members);
        };
      },
    };
  }

  history(): ChatMessage[] {
    return [...this.initial];
  }

  members(): ReadonlyMap<string, RoomMember> {
    return this.memberMap;
  }

  canSend(): SendCheck {
    const room = this.client?.getRoom(this.roomId);
    if (room?.hasEncryptionStateEvent() && !this.client?.getCrypto()) return { ok: false, reason: ENCRYPTED_CHAT_REASON };
    return { ok: true };
  }

  async send(text: string, txnId: string): Promise<{ eventId?: string }> {
    const check = this.canSend();
    if (!check.ok) throw new ParleyClientError("M_FORBIDDEN", "chat", { human: check.reason });
    const client = this.client;
    const room = client?.getRoom(this.roomId);
    if (client && room?.hasEncryptionStateEvent()) {
      // Megolm-encrypted by matrix-js-sdk's Rust crypto; our txnId comes back on the remote echo.
      // Sent before and not sent (the homeserver was down): the SDK keeps that event, send it again.
      const unsent = room.getPendingEvents().find((ev) => ev.getTxnId() === txnId && ev.status === EventStatus.NOT_SENT);
      const sending = unsent ? client.resendEvent(unsent, room) : client.sendEvent(this.roomId, EventType.RoomMessage, { msgtype: MsgType.Text, body: text }, txnId);
      const res = await this.usingCrypto(sending).catch((err: unknown) => {
        // The homeserver's own refusal keeps its errcode (not worth retrying); anything else is the way there.
        if (err instanceof MatrixError && err.httpStatus) throw errorFromResponse(err.httpStatus, { errcode: err.errcode, error: err.data.error ?? err.message }, "chat");
        throw new ParleyClientError("NETWORK", "chat", { detail: err instanceof Error ? err.message : String(err) });
      });
      return { eventId: res.event_id };
    }
    const res = await this.http.request<{ event_id?: unknown }>("PUT", `/rooms/${enc(this.roomId)}/send/m.room.message/${enc(txnId)}`, {
      body: { msgtype: "m.text", body: text },
      context: "chat",
    });
    return typeof res.event_id === "string" ? { eventId: res.event_id } : {};
  }

  private onEvent(ev: MatrixEvent, live: boolean): void {
    const id = ev.getId();
    if (!id || this.seen.has(id)) return;
    if (ev.shouldAttemptDecryption() || ev.isBeingDecrypted()) {
      // Shown once decrypted (or as "Encrypted message" if it cannot be).
      const client = this.client;
      if (client) void this.usingCrypto(client.decryptEventIfNeeded(ev)).then(() => this.onEvent(ev, live));
      return;
    }
    const msg = toChatMessage({
      event_id: id,
      sender: ev.getSender(),
      type: ev.getType(),
      content: ev.getContent(),
      origin_server_ts: ev.getTs(),
      unsigned: ev.getUnsigned(),
    });
    if (!msg) return;
    this.seen.add(id);
    // Every message joins the history (a feed outlives a call: the next one's chat starts with
    // it); live ones also go to whoever listens now.
    this.initial.push(msg);
    this.initial.splice(0, Math.max(0, this.initial.length - MAX_HISTORY));
    if (live && this.events.has("message")) this.events.emit("message", msg);
  }

  private refreshMembers(): void {
    const room = this.client?.getRoom(this.roomId);
    if (!room) return;
    const next = new Map<string, RoomMember>();
    for (const m of room.getJoinedMembers()) {
      next.set(m.userId, { userId: m.userId, displayName: m.name || m.userId, avatarMxc: m.getMxcAvatarUrl() ?? null });
    }
    this.memberMap = next;
    this.events.emit("members", next);
  }
}

/**
 * Whose Olm sessions a room event asks this device to prepare now (their keys queried, a one-time
 * key claimed: the media key to them then needs neither round trip), null for none. Someone who
 * joined the room, was let in from the lobby, or joined the call; someone who knocked, while this
 * device is in the call (`track`: a knocker is no member, so not tracked by itself). Only `live`:
 * the events of the room's history (the first sync's timeline, or the one a knocker's join brings,
 * 50 events of people who came and went) ask nothing; those in the call then are prepared at once
 * when the feed has started. Each prepared one holds matrix-js-sdk's one-at-a-time key claims: a
 * knocker's "Join again" sent its pre-join announcement 1.3-1.6 s late behind eight such claims
 * for people long gone (docs/join.md, twenty-third pass).
 */
export function olmPreparation(ev: MatrixEvent, o: { live: boolean; inCall: boolean }): { userId: string; track: boolean } | null {
  if (!o.live) return null;
  const change = membershipChange(ev);
  const admitted = change?.membership === "invite" && change.previous === "knock";
  if (change?.membership === "join" || admitted) return { userId: change.userId, track: false };
  const sender = ev.getSender();
  if (ev.getType() === CALL_MEMBER_EVENT && sender) return { userId: sender, track: false };
  if (change?.membership === "knock" && change.previous !== "knock" && o.inCall) return { userId: change.userId, track: true };
  return null;
}

/** A room membership event's change: whose, to what, from what (`unsigned.prev_content`); null for any other event. */
function membershipChange(ev: MatrixEvent): { userId: string; membership: string; previous: string | undefined } | null {
  const userId = ev.getStateKey();
  const membership = ev.getContent().membership;
  if (ev.getType() !== "m.room.member" || !userId || typeof membership !== "string") return null;
  const previous = ev.getPrevContent().membership;
  return { userId, membership, previous: typeof previous === "string" ? previous : undefined };
}

/**
 * Makes Rust crypto track these users' devices (a room that is not encrypted is not tracked by
 * itself). Users new to it get their keys queried now: the encryption that follows waits for a
 * pending query (up to 5 s in matrix-sdk-crypto), which otherwise goes out only after the next sync.
 */
async function trackUsers(internals: RustCryptoInternals, users: string[]): Promise<void> {
  const machine = internals.olmMachine;
  if (!machine?.updateTrackedUsers) return;
  const tracked = machine.trackedUsers ? new Set([...(await machine.trackedUsers())].map((u) => u.toString())) : null;
  const fresh = users.filter((u) => !tracked?.has(u));
  if (!fresh.length) return;
  await machine.updateTrackedUsers(await rustUserIds(fresh));
  if (tracked) await internals.outgoingRequestsManager?.doProcessOutgoingRequests?.();
}

/** Rust crypto's ids for these users, each once, the first `max` of them. */
async function rustUserIds(users: string[], max = Infinity): Promise<unknown[]> {
  const { UserId } = await import("@matrix-org/matrix-sdk-crypto-wasm");
  return [...new Set(users)].slice(0, max).map((u) => new UserId(u));
}

/** At most this many users in one key query made for a send (MAX_PREJOIN_DEVICES bounds a send's devices). */
export const MAX_QUERIED_USERS = 100;

/** One key query for `users` (at most MAX_QUERIED_USERS), now; a failure is left to the next try. */
async function queryKeysNow(internals: RustCryptoInternals, users: string[]): Promise<void> {
  const machine = internals.olmMachine;
  const processor = internals.outgoingRequestProcessor;
  if (!machine?.queryKeysForUsers || !processor) return;
  try {
    await processor.makeOutgoingRequest(machine.queryKeysForUsers(await rustUserIds(users, MAX_QUERIED_USERS)));
  } catch (err) {
    getLogger("chat").debug("a key query for new devices failed", { err: String(err) });
  }
}

/**
 * Hands matrix-js-sdk's sync the filter uploaded ahead (`filterId`), as its own store would
 * remember one: its start then finds it by name (matrix-js-sdk's `FILTER_SYNC_<user id>`) and
 * checks it against the store's copy, with no request. A name that no longer matches (another
 * matrix-js-sdk) only means the sync uploads its own, as before.
 */
export function seedFilter(client: MatrixClient, filter: Filter, filterId: string | null): void {
  if (!filterId) return;
  filter.filterId = filterId;
  client.store.storeFilter(filter);
  client.store.setFilterIdByName(`FILTER_SYNC_${filter.userId}`, filterId);
}

/** A batch's messages as the to-device API's map, by user then device. */
function toDeviceMap(messages: { userId: string; deviceId: string; payload: Record<string, unknown> }[]): Map<string, Map<string, Record<string, unknown>>> {
  const map = new Map<string, Map<string, Record<string, unknown>>>();
  for (const m of messages) (map.get(m.userId) ?? map.set(m.userId, new Map()).get(m.userId)!).set(m.deviceId, m.payload);
  return map;
}

/**
 * Olm-encrypts `content` for each device it can (a known device with an Olm session), one by one:
 * a device it cannot is left out, not a failure of the rest (as in matrix-js-sdk's own batch).
 */
async function encryptEach(internals: RustCryptoInternals, type: string, devices: DeviceRef[], content: Record<string, unknown>): Promise<{ eventType: string; batch: { userId: string; deviceId: string; payload: Record<string, unknown> }[] }> {
  const { DeviceId, UserId } = await import("@matrix-org/matrix-sdk-crypto-wasm");
  const machine = internals.olmMachine;
  const encrypted = await Promise.all(
    devices.map(async ({ userId, deviceId }) => {
      const device = await machine?.getDevice?.(new UserId(userId), new DeviceId(deviceId)).catch(() => undefined);
      if (!device) return undefined;
      try {
        return { userId, deviceId, payload: JSON.parse(await device.encryptToDeviceEvent(type, content)) as Record<string, unknown> };
      } catch {
        return undefined; // no Olm session yet
      } finally {
        device.free();
      }
    }),
  );
  return { eventType: "m.room.encrypted", batch: encrypted.filter((e) => e !== undefined) };
}

/**
 * Olm-encrypts `content` for each device and sends it; returns the devices it could not reach,
 * for the caller to try again later (a send the homeserver refuses throws, reaching nobody).
 *
 * Rust crypto encrypts only for devices whose keys it has already downloaded, and skips the others
 * silently. A call member's device is often brand new to us (its device-list update arrives in the
 * same sync as its call membership, and the key query runs only after that sync), so: send to the
 * known devices, run the pending key queries now, and try the rest again a few times.
 * `track`: the room is not encrypted, so Rust crypto does not track its members by itself.
 */
export async function sendToDevices(client: MatrixClient, devices: DeviceRef[], content: Record<string, unknown>, track: boolean, type: string = CALL_KEYS_EVENT): Promise<DeviceRef[]> {
  const crypto = client.getCrypto()!;
  const internals = crypto as unknown as RustCryptoInternals;
  if (track) await trackUsers(internals, devices.map((d) => d.userId));
  let pending = devices;
  for (let attempt = 0; attempt < 3 && pending.length; attempt++) {
    if (attempt > 0) {
      // Devices still unknown after a first try are newer than the last key query of their
      // users, who are tracked already (a device whose keys went up after its user was first
      // queried: a knocker let in, a joiner's fresh device). Their homeserver's device-list
      // update comes to our sync later (over federation, a transaction away): the second try
      // asks for those users' keys now, beside the queries the machine has pending.
      await Promise.all([internals.outgoingRequestsManager?.doProcessOutgoingRequests?.(), attempt === 1 ? queryKeysNow(internals, pending.map((d) => d.userId)) : undefined]);
      if (attempt > 1) await new Promise((r) => setTimeout(r, 200 * (attempt - 1)));
    }
    let batch: Awaited<ReturnType<typeof crypto.encryptToDeviceMessages>>;
    try {
      batch = await crypto.encryptToDeviceMessages(type, pending, content);
    } catch (err) {
      // One device without an Olm session throws the whole batch ("does not have a valid Olm
      // session"): a device that became known between matrix-js-sdk's one-time-key claim and the
      // encryption (its keys query answered in between: a device whose membership came right after
      // its keys went up), or one whose claim brought no key (its one-time keys not up yet:
      // keyClaims.ts). The others are encrypted one by one now, not held back with it; the next
      // attempt claims for those left, and after the last they are tried again later.
      getLogger("chat").debug("encrypting a media key failed; encrypting device by device", { attempt, err: String(err) });
      batch = await encryptEach(internals, type, pending, content);
    }
    // Sent at once, not through matrix-js-sdk's to-device queue, which sends one batch at a time
    // (a media key waited 30-60 ms behind another batch on a busy page). A failed send throws:
    // the caller sends the key again later (keyShare.ts), as the queue would have retried it.
    if (batch.batch.length) await client.sendToDevice(batch.eventType, toDeviceMap(batch.batch));
    const reached = new Set(batch.batch.map((b) => participantId(b.userId, b.deviceId)));
    pending = pending.filter((d) => !reached.has(participantId(d.userId, d.deviceId)));
  }
  return pending;
}
