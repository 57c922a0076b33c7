// A Matrix device with end-to-end encryption for integration tests and benchmarks: matrix-js-sdk
// with its Rust crypto (WASM, in-memory store) against a real homeserver. It is what a call
// member's device is to Parley: it receives Olm-encrypted to-device media keys
// (`io.element.call.encryption_keys`) and reads and writes Megolm-encrypted room messages.
//
// Many in one process: the WASM module is loaded once and shared; each instance adds an Olm
// machine with an in-memory store and one /sync long-poll with a narrow filter (no presence, no
// account data, no receipts or typing).
//
// Device lists: the Rust crypto encrypts to-device messages only for devices of users whose
// device lists it tracks, and it tracks exactly the members of the encrypted rooms it has seen
// (matrix-js-sdk has no public call to track anyone else: getUserDeviceInfo(..., true) downloads
// an untracked user's keys without tracking them, and encryptAndSendToDevice then skips that
// user's devices with only a log line). So sender and recipient must share an encrypted room, as
// call members share the meeting room. Members are loaded in full (no lazy loading) so that
// every member of such a room is tracked from the first sync on.
import {
  ClientEvent,
  createClient,
  Filter,
  MatrixEventEvent,
  RoomEvent,
  SyncState,
  type IFilterDefinition,
  type MatrixClient,
  type MatrixEvent,
  type ReceivedToDeviceMessage,
} from "matrix-js-sdk";
import { logger as sdkModuleLogger } from "matrix-js-sdk/lib/logger.js";

const noop = () => undefined;
/** Tests read results, not matrix-js-sdk's (and the Rust crypto's) debug lines. */
const quiet = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, getChild: () => quiet };

/**
 * Rooms and MatrixRTC sessions log through matrix-js-sdk's module-level loglevel logger, not the
 * client's (a few lines per room and per message sent, times 50 devices in a benchmark). Its
 * children copy its method factory when made, so this quiets them too; errors still print.
 */
function quietSdkModuleLogger(): void {
  const root = sdkModuleLogger as unknown as { methodFactory: (method: string) => (...args: unknown[]) => void; rebuild(): void };
  root.methodFactory = (method) => (method === "error" ? (...args) => console.error(...args) : noop);
  root.rebuild();
}

export interface DeviceRef {
  userId: string;
  deviceId: string;
}

export interface ToDeviceMessage {
  type: string;
  /** The sender the homeserver names; for Olm the Rust crypto checks it against the ciphertext's. */
  sender: string;
  /** The sending device: known only for Olm-encrypted messages from a device whose keys we have. */
  senderDevice: string | undefined;
  encrypted: boolean;
  content: Record<string, unknown>;
}

export interface RoomMessage {
  eventId: string;
  roomId: string;
  sender: string;
  body: string;
  msgtype?: string | undefined;
  encrypted: boolean;
}

export interface StartOptions {
  baseUrl: string;
  userId: string;
  accessToken: string;
  deviceId: string;
  /** When given, /sync carries only these rooms (joined now or later). Default: every room. */
  rooms?: string[] | undefined;
  /** For the whole start (first sync and key upload). Default 30 s. */
  timeoutMs?: number | undefined;
}

/** How many received to-device messages wait for a nextToDevice() that has not been called yet. */
const BACKLOG = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function syncFilter(rooms: string[] | undefined): IFilterDefinition {
  const none = { types: [] as string[] };
  return {
    presence: none,
    account_data: none,
    room: {
      ...(rooms ? { rooms } : {}),
      // Full member lists: an encrypted room tracks all its members' devices from the first sync.
      state: { lazy_load_members: false },
      timeline: { limit: 10 },
      ephemeral: none,
      account_data: none,
    },
  };
}

/** Resolves on the first SyncState.Prepared; rejects on a sync error or after `timeoutMs`. */
function firstSync(client: MatrixClient, name: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (err?: Error) => {
      clearTimeout(timer);
      client.off(ClientEvent.Sync, onSync);
      if (err) reject(err);
      else resolve();
    };
    const onSync = (state: SyncState, _prev: SyncState | null, data?: { error?: Error }) => {
      if (state === SyncState.Prepared) finish();
      else if (state === SyncState.Error) finish(new Error(`${name}: first sync failed: ${data?.error?.message ?? "unknown error"}`));
    };
    const timer = setTimeout(() => finish(new Error(`${name}: first sync not done within ${timeoutMs} ms`)), timeoutMs);
    client.on(ClientEvent.Sync, onSync);
  });
}

export class CryptoClient {
  readonly userId: string;
  readonly deviceId: string;
  readonly client: MatrixClient;
  private readonly backlog: ToDeviceMessage[] = [];
  /** A listener returning true has taken the message (nextToDevice); others only look. */
  private readonly listeners = new Set<(m: ToDeviceMessage) => boolean>();

  private constructor(client: MatrixClient, userId: string, deviceId: string) {
    this.client = client;
    this.userId = userId;
    this.deviceId = deviceId;
    client.on(ClientEvent.ReceivedToDeviceMessage, (payload) => this.received(payload));
  }

  /**
   * Creates the device's Olm account (in memory), starts syncing, and resolves once the first
   * sync is processed and the homeserver lists this device's keys, so that others can query and
   * claim them at once.
   */
  static async start(opts: StartOptions): Promise<CryptoClient> {
    const { baseUrl, userId, accessToken, deviceId } = opts;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    quietSdkModuleLogger();
    const client = createClient({ baseUrl, userId, accessToken, deviceId, logger: quiet, localTimeoutMs: 60_000 });
    const self = new CryptoClient(client, userId, deviceId);
    try {
      await client.initRustCrypto({ useIndexedDB: false });
      const prepared = firstSync(client, self.name, timeoutMs);
      const filter = new Filter(userId);
      filter.setDefinition(syncFilter(opts.rooms));
      await client.startClient({ filter, initialSyncLimit: 10, disablePresence: true, lazyLoadMembers: false });
      await prepared;
      // The Rust crypto uploads the keys from the request loop that a completed sync starts.
      while (!(await client.downloadKeysForUsers([userId])).device_keys?.[userId]?.[deviceId]) {
        if (Date.now() > deadline) throw new Error(`${self.name}: device keys not uploaded within ${timeoutMs} ms`);
        await sleep(50);
      }
      return self;
    } catch (err) {
      await self.stop();
      throw err;
    }
  }

  /** "user/device", for messages. */
  get name(): string {
    return `${this.userId}/${this.deviceId}`;
  }

  private received({ message, encryptionInfo }: ReceivedToDeviceMessage): void {
    const m: ToDeviceMessage = {
      type: message.type,
      sender: message.sender,
      senderDevice: encryptionInfo?.senderDevice ?? undefined,
      encrypted: encryptionInfo !== null,
      content: message.content as Record<string, unknown>,
    };
    let taken = false;
    for (const l of [...this.listeners]) taken = l(m) || taken;
    if (taken) return;
    this.backlog.push(m);
    if (this.backlog.length > BACKLOG) this.backlog.shift();
  }

  /**
   * Waits until this device's crypto knows every one of `devices` (its user's device list
   * tracked and downloaded), which Olm encryption needs. A device whose user shares no encrypted
   * room with us never becomes known: that fails here, naming it.
   */
  async waitForDevices(devices: DeviceRef[], timeoutMs = 15_000): Promise<void> {
    const crypto = this.crypto();
    const users = [...new Set(devices.map((d) => d.userId))];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const known = await crypto.getUserDeviceInfo(users);
      const missing = devices.filter((d) => !known.get(d.userId)?.has(d.deviceId));
      if (missing.length === 0) return;
      if (Date.now() > deadline) {
        const names = missing.map((d) => `${d.userId}/${d.deviceId}`).join(", ");
        throw new Error(`${this.name}: devices still unknown after ${timeoutMs} ms (no shared encrypted room?): ${names}`);
      }
      await sleep(100);
    }
  }

  /**
   * Olm-encrypts `content` for each device and sends it; resolves when the homeserver took it.
   * (client.encryptAndSendToDevice resolves once queued and skips unknown devices silently; this
   * does its two steps itself so that both become errors.)
   */
  async sendToDevice(type: string, devices: DeviceRef[], content: Record<string, unknown>): Promise<void> {
    await this.waitForDevices(devices);
    const batch = await this.crypto().encryptToDeviceMessages(type, devices, content);
    if (batch.batch.length !== devices.length) {
      throw new Error(`${this.name}: ${type} encrypted for ${batch.batch.length} of ${devices.length} devices`);
    }
    const byUser = new Map<string, Map<string, Record<string, unknown>>>();
    for (const { userId, deviceId, payload } of batch.batch) {
      let forUser = byUser.get(userId);
      if (!forUser) byUser.set(userId, (forUser = new Map()));
      forUser.set(deviceId, payload);
    }
    await this.client.sendToDevice(batch.eventType, byUser);
  }

  /** Calls `fn` for each to-device message of `type` from now on; returns the unsubscribe. */
  onToDevice(type: string, fn: (m: ToDeviceMessage) => void): () => void {
    const l = (m: ToDeviceMessage) => {
      if (m.type === type) fn(m);
      return false;
    };
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /**
   * The first to-device message of `type` matching `predicate` that no other nextToDevice call
   * has taken, including one that arrived before this call.
   */
  nextToDevice(type: string, predicate: (m: ToDeviceMessage) => boolean = () => true, timeoutMs = 15_000): Promise<ToDeviceMessage> {
    const match = (m: ToDeviceMessage) => m.type === type && predicate(m);
    const i = this.backlog.findIndex(match);
    if (i >= 0) return Promise.resolve(this.backlog.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const l = (m: ToDeviceMessage) => {
        if (!match(m)) return false;
        this.listeners.delete(l);
        clearTimeout(timer);
        resolve(m);
        return true;
      };
      const timer = setTimeout(() => {
        this.listeners.delete(l);
        reject(new Error(`${this.name}: no matching ${type} to-device message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.listeners.add(l);
    });
  }

  /** Received to-device messages of `type` that no nextToDevice call has taken. */
  pendingToDevice(type: string): ToDeviceMessage[] {
    return this.backlog.filter((m) => m.type === type);
  }

  /** m.text; Megolm-encrypted when the room is encrypted. Resolves to the event id. */
  async sendText(roomId: string, body: string): Promise<string> {
    return (await this.client.sendTextMessage(roomId, body)).event_id;
  }

  /**
   * The first m.room.message in `roomId` matching `predicate`, decrypted: looks through the live
   * timeline already synced, then waits for new events. The timeout's error names the events
   * that failed to decrypt meanwhile.
   */
  nextMessage(roomId: string, predicate: (m: RoomMessage) => boolean, timeoutMs = 15_000): Promise<RoomMessage> {
    const failures = new Map<string, string>();
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (settle: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.client.off(RoomEvent.Timeline, onTimeline);
        this.client.off(MatrixEventEvent.Decrypted, onDecrypted);
        settle();
      };
      const check = async (ev: MatrixEvent) => {
        if (ev.getRoomId() !== roomId) return;
        await this.client.decryptEventIfNeeded(ev);
        if (ev.isDecryptionFailure()) {
          failures.set(ev.getId() ?? "?", ev.decryptionFailureReason ?? "unknown reason");
          return;
        }
        if (ev.getType() !== "m.room.message") return;
        const content = ev.getContent();
        const m: RoomMessage = {
          eventId: ev.getId() ?? "",
          roomId,
          sender: ev.getSender() ?? "",
          body: typeof content.body === "string" ? content.body : "",
          msgtype: typeof content.msgtype === "string" ? content.msgtype : undefined,
          encrypted: ev.isEncrypted(),
        };
        if (predicate(m)) finish(() => resolve(m));
      };
      const onTimeline = (ev: MatrixEvent, _room: unknown, toStart: boolean | undefined) => {
        if (!toStart) void check(ev);
      };
      // A failed decryption is retried when the room key arrives later: check such events again.
      const onDecrypted = (ev: MatrixEvent) => void check(ev);
      const timer = setTimeout(() => {
        const why = failures.size ? `; undecryptable: ${[...failures].map(([id, r]) => `${id} (${r})`).join(", ")}` : "";
        finish(() => reject(new Error(`${this.name}: no matching message in ${roomId} within ${timeoutMs} ms${why}`)));
      }, timeoutMs);
      this.client.on(RoomEvent.Timeline, onTimeline);
      this.client.on(MatrixEventEvent.Decrypted, onDecrypted);
      for (const ev of this.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) void check(ev);
    });
  }

  /** A device's identity keys as this device knows them (downloaded if its user is untracked). */
  async identityKeys(userId: string, deviceId: string): Promise<{ curve25519?: string; ed25519?: string } | null> {
    const device = (await this.crypto().getUserDeviceInfo([userId], true)).get(userId)?.get(deviceId);
    if (!device) return null;
    return { curve25519: device.getIdentityKey(), ed25519: device.getFingerprint() };
  }

  /** Stops syncing and closes the Olm machine (its WASM memory is freed). */
  async stop(): Promise<void> {
    this.listeners.clear();
    this.client.stopClient();
    this.client.removeAllListeners();
  }

  private crypto() {
    const c = this.client.getCrypto();
    if (!c) throw new Error(`${this.name}: crypto not initialised`);
    return c;
  }
}

/**
 * Logs in one more device of an existing user (m.login.password), named `deviceId` when given.
 * `user` is a localpart or a user id. Users come from Institution.registerUser (which also
 * returns their first device).
 */
export async function loginDevice(
  baseUrl: string,
  user: string,
  password: string,
  deviceId?: string,
): Promise<{ userId: string; accessToken: string; deviceId: string }> {
  const res = await createClient({ baseUrl, logger: quiet }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    ...(deviceId ? { device_id: deviceId } : {}),
  });
  return { userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id };
}
