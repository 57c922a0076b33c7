// The bot's Olm device: vodozemac through matrix-sdk-crypto-wasm's OlmMachine, its IndexedDB
// store (fake-indexeddb in Node) sealed into one file after every change, so that a restarted
// Parley is the same device (same id, same curve25519/ed25519 keys, same Olm and Megolm sessions).
//  - Every use of the machine runs one at a time (`exclusive`) and ends by writing the snapshot
//    when it changed anything; callers awaiting a method know its effects are on disk.
//  - The snapshot is also written before anything leaves for the homeserver (one-time keys,
//    Olm-encrypted messages): a crash after sending must not roll the device back to before what
//    others now hold (same key ids with other keys, or a spent Olm ratchet step).
//  - Requests the machine asks for (keys upload/query/claim, to-device, signatures) go out as the
//    appservice masquerading as the bot's device (MSC3202: ?user_id=&device_id=).
//  - The device is created on the homeserver with MSC4190 (PUT /devices/{id} as the appservice).
import { createHash, randomBytes, randomUUID } from "node:crypto";
import v8 from "node:v8";
import {
  CollectStrategy,
  DecryptionSettings,
  DeviceId,
  DeviceLists,
  EncryptionSettings,
  initAsync,
  KeysBackupRequest,
  KeysClaimRequest,
  KeysQueryRequest,
  KeysUploadRequest,
  MegolmDecryptionError,
  OlmMachine,
  ProcessedToDeviceEventType,
  RoomId,
  RoomMessageRequest,
  SignatureUploadRequest,
  ToDeviceRequest,
  TrustRequirement,
  UserId,
  type DecryptedToDeviceEvent,
  type UTDToDeviceEvent,
} from "@matrix-org/matrix-sdk-crypto-wasm";
import { getLogger, type Logger } from "../log.ts";
import type { CryptoHttp } from "./http.ts";
import { dumpDatabases, restoreDatabases, type DatabaseDump } from "./idbSnapshot.ts";
import { freshIndexedDb, withIndexedDb } from "./indexedDb.ts";
import type { BotDevice, BotIdentity, DeviceRef, ToDeviceOutcome } from "./port.ts";
import { deriveKey, SealedFile } from "./sealedFile.ts";

type OutgoingRequest =
  | KeysUploadRequest
  | KeysQueryRequest
  | KeysClaimRequest
  | ToDeviceRequest
  | SignatureUploadRequest
  | RoomMessageRequest
  | KeysBackupRequest;

const STORE_NAME = "parley-bot";
const SNAPSHOT_FORMAT = 1;
const MAX_REQUEST_ROUNDS = 8;

interface Snapshot {
  format: number;
  userId: string;
  deviceId: string;
  databases: DatabaseDump[];
}

export interface OlmDeviceOptions {
  userId: string;
  /** Where the sealed snapshot lives. */
  file: string;
  /** The config secret (crypto.storeKey); keys for the file and the store passphrase derive from it. */
  storeKey: string;
  http: CryptoHttp;
  displayName?: string;
}

/** What a transaction (or a sync) tells the device, already narrowed to this device. */
export interface SyncChanges {
  toDevice: Record<string, unknown>[];
  changed: string[];
  left: string[];
  /** Unused one-time keys by algorithm; undefined when the homeserver said nothing (unchanged). */
  oneTimeKeyCounts?: Record<string, number> | undefined;
  unusedFallbackKeyTypes?: string[] | undefined;
}

export interface ClearToDevice {
  type: string;
  sender: string;
  content: Record<string, unknown>;
  /** Whether it arrived Olm-encrypted (false: sent in the clear). */
  encrypted: boolean;
}

export type RoomDecryption =
  | { ok: true; type: string; content: Record<string, unknown>; senderDevice: string | undefined }
  /** `retry`: the room key may still arrive (it travels separately, as a to-device message). */
  | { ok: false; retry: boolean; reason: string };

export type MegolmSettings = { rotationPeriodMs?: number | undefined; rotationPeriodMsgs?: number | undefined };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Fresh UserId objects: the bindings take ownership of (and free) every one passed in an array,
 * so an array can be used for one call only.
 */
function userIds(users: string[]): UserId[] {
  return users.map((u) => new UserId(u));
}

/** A device id in upper-case letters like the ones Synapse makes, marked as Parley's. */
function newDeviceId(): string {
  const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  return `PARLEY${Array.from(randomBytes(8), (b) => letters.charAt(b % 26)).join("")}`;
}

export class OlmDevice implements BotDevice {
  readonly userId: string;
  readonly deviceId: string;
  private readonly machine: OlmMachine;
  private readonly factory: IDBFactory;
  private readonly file: SealedFile;
  private readonly http: CryptoHttp;
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private lastSnapshotBytes = 0;
  private lastSnapshotDigest = "";

  private constructor(o: { userId: string; deviceId: string; machine: OlmMachine; factory: IDBFactory; file: SealedFile; http: CryptoHttp }) {
    this.userId = o.userId;
    this.deviceId = o.deviceId;
    this.machine = o.machine;
    this.factory = o.factory;
    this.file = o.file;
    this.http = o.http;
    this.log = getLogger("crypto.device", { deviceId: o.deviceId });
  }

  /**
   * Restores the device from its snapshot (or makes a new one), makes sure the homeserver has the
   * device and its keys, and writes the snapshot. Throws if the snapshot does not open with the key.
   */
  static async open(opts: OlmDeviceOptions): Promise<OlmDevice> {
    const log = getLogger("crypto.device");
    const file = new SealedFile(opts.file, deriveKey(opts.storeKey, "olm-snapshot"));
    const passphrase = deriveKey(opts.storeKey, "olm-store-passphrase").toString("base64");
    await initAsync();
    const factory = freshIndexedDb();
    const plain = await file.read();
    let deviceId: string;
    if (plain) {
      const snap = v8.deserialize(plain) as Snapshot;
      if (snap.format !== SNAPSHOT_FORMAT) throw new Error(`${opts.file}: unknown snapshot format ${String(snap.format)}`);
      if (snap.userId !== opts.userId) {
        throw new Error(`${opts.file} holds the device of ${snap.userId}, not of ${opts.userId}; move it away to start a new device`);
      }
      await restoreDatabases(factory, snap.databases);
      deviceId = snap.deviceId;
    } else {
      deviceId = newDeviceId();
    }
    const machine = await withIndexedDb(factory, () =>
      OlmMachine.initialize(new UserId(opts.userId), new DeviceId(deviceId), STORE_NAME, passphrase, wasmLogger(log)),
    );
    const device = new OlmDevice({ userId: opts.userId, deviceId, machine, factory, file, http: opts.http });
    // On disk before the homeserver hears of it: a crash here must not leave a device we lost.
    if (!plain) await device.exclusive(() => device.save());
    await opts.http.request("PUT", `/devices/${encodeURIComponent(deviceId)}`, { display_name: opts.displayName ?? "Parley" }, { user_id: opts.userId });
    await device.exclusive(async () => {
      await device.sendOutgoing();
      await device.save();
    });
    device.log.info({ created: !plain, snapshotBytes: device.lastSnapshotBytes, ...device.identity() }, "bot device ready");
    return device;
  }

  identity(): BotIdentity {
    const keys = this.machine.identityKeys;
    return { deviceId: this.deviceId, curve25519: keys.curve25519.toBase64(), ed25519: keys.ed25519.toBase64() };
  }

  /** Size of the last snapshot written, in bytes (before sealing, which adds 36). */
  get snapshotBytes(): number {
    return this.lastSnapshotBytes;
  }

  /** Feeds to-device messages, device-list changes and key counts to the machine; returns the clear to-device events. */
  async receive(changes: SyncChanges): Promise<ClearToDevice[]> {
    return this.exclusive(async () => {
      const lists = new DeviceLists(userIds(changes.changed), userIds(changes.left));
      const fallback = changes.unusedFallbackKeyTypes ? new Set(changes.unusedFallbackKeyTypes) : undefined;
      const args = [JSON.stringify(changes.toDevice), lists] as const;
      const settings = new DecryptionSettings(TrustRequirement.Untrusted);
      // Counts present: sync v2 semantics (a missing algorithm means none left). Absent: unchanged.
      const processed = changes.oneTimeKeyCounts
        ? await this.machine.receiveSyncChanges(...args, new Map(Object.entries(changes.oneTimeKeyCounts)), fallback, settings)
        : await this.machine.receiveSyncChangesMsc4186(...args, new Map(), fallback, settings);
      const clear: ClearToDevice[] = [];
      for (const p of processed) {
        if (p.type === ProcessedToDeviceEventType.Decrypted || p.type === ProcessedToDeviceEventType.PlainText) {
          const ev = JSON.parse((p as DecryptedToDeviceEvent).rawEvent) as Record<string, unknown>;
          if (typeof ev.type === "string" && typeof ev.sender === "string" && isRecord(ev.content)) {
            clear.push({ type: ev.type, sender: ev.sender, content: ev.content, encrypted: p.type === ProcessedToDeviceEventType.Decrypted });
          }
        } else if (p.type === ProcessedToDeviceEventType.UnableToDecrypt) {
          const raw = JSON.parse((p as UTDToDeviceEvent).rawEvent) as { sender?: unknown };
          this.log.warn({ sender: raw.sender, reason: (p as UTDToDeviceEvent).utdInfo.reason }, "could not decrypt a to-device message");
        } else {
          this.log.debug("ignored an invalid to-device message");
        }
      }
      await this.sendOutgoingLogged();
      await this.save();
      return clear;
    });
  }

  /** Decrypts a Megolm room event (m.room.encrypted). Never throws for a bad or unknown event. */
  async decryptRoomEvent(event: Record<string, unknown>): Promise<RoomDecryption> {
    const roomId = event.room_id;
    if (typeof roomId !== "string") return { ok: false, retry: false, reason: "no room_id" };
    return this.exclusive(async () => {
      try {
        const settings = new DecryptionSettings(TrustRequirement.Untrusted);
        const decrypted = await this.machine.decryptRoomEvent(JSON.stringify(event), new RoomId(roomId), settings);
        if (decrypted.sender.toString() !== event.sender) return { ok: false, retry: false, reason: "the room key belongs to another sender" };
        const clear = JSON.parse(decrypted.event) as Record<string, unknown>;
        if (typeof clear.type !== "string" || !isRecord(clear.content)) return { ok: false, retry: false, reason: "decrypted payload is not an event" };
        return { ok: true, type: clear.type, content: clear.content, senderDevice: decrypted.senderDevice?.toString() };
      } catch (err) {
        if (err instanceof MegolmDecryptionError) {
          return { ok: false, retry: err.code === 0 /* MissingRoomKey */, reason: err.description };
        }
        return { ok: false, retry: false, reason: (err as Error).message ?? String(err) };
      }
    });
  }

  /**
   * Megolm-encrypts `content` for the room: tracks `members`, queries their devices, opens Olm
   * sessions and shares the room key where missing. Returns the m.room.encrypted content.
   */
  async encryptRoomEvent(roomId: string, type: string, content: Record<string, unknown>, members: string[], megolm: MegolmSettings = {}): Promise<Record<string, unknown>> {
    return this.exclusive(async () => {
      await this.prepareSessions(members);
      const settings = new EncryptionSettings();
      settings.sharingStrategy = CollectStrategy.allDevices();
      if (megolm.rotationPeriodMs) settings.rotationPeriod = BigInt(megolm.rotationPeriodMs) * 1000n;
      if (megolm.rotationPeriodMsgs) settings.rotationPeriodMessages = BigInt(megolm.rotationPeriodMsgs);
      const shares = await this.machine.shareRoomKey(new RoomId(roomId), userIds(members), settings);
      if (shares.length) await this.save();
      for (const request of shares) await this.send(request);
      const encrypted = JSON.parse(await this.machine.encryptRoomEvent(new RoomId(roomId), type, JSON.stringify(content))) as Record<string, unknown>;
      await this.save();
      return encrypted;
    });
  }

  async sendToDevices(type: string, devices: DeviceRef[], content: Record<string, unknown>): Promise<ToDeviceOutcome> {
    return this.exclusive(async () => {
      const usersOf = (refs: DeviceRef[]) => [...new Set(refs.map((d) => d.userId))];
      await this.prepareSessions(usersOf(devices));
      const messages: Record<string, Record<string, unknown>> = {};
      const outcome: ToDeviceOutcome = { sent: [], unreachable: [] };
      let unknown = await this.encryptEach(type, devices, content, messages, outcome);
      if (unknown.length) {
        // A device newer than our copy of its user's list (its change may not have reached us
        // yet): ask the homeserver now, once, then try those devices again.
        await this.send(this.machine.queryKeysForUsers(userIds(usersOf(unknown))));
        const claim = await this.machine.getMissingSessions(userIds(usersOf(unknown)));
        if (claim) await this.send(claim);
        unknown = await this.encryptEach(type, unknown, content, messages, outcome);
      }
      outcome.unreachable.push(...unknown);
      await this.save();
      if (outcome.sent.length) {
        await this.http.request("PUT", `/sendToDevice/m.room.encrypted/${encodeURIComponent(randomUUID())}`, { messages }, this.as());
      }
      return outcome;
    });
  }

  /** Sends whatever the machine still wants sent (requests that failed earlier); for a timer. */
  async retryOutgoing(): Promise<void> {
    await this.exclusive(async () => {
      if ((await this.sendOutgoingLogged()) > 0) await this.save();
    });
  }

  /**
   * Resolves once the machine, behind the work queued before, reads its own identity keys: the
   * device is open and not wedged (the health check; it changes nothing, so writes nothing).
   */
  async probe(): Promise<void> {
    await this.exclusive(async () => void this.identity());
  }

  /** Waits for the work in progress, writes the snapshot a last time and closes the machine. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.exclusive(() => this.save());
    this.closed = true;
    try {
      this.machine.close();
    } catch (err) {
      // Still borrowed by a call that failed inside the bindings; the process ends anyway.
      this.log.debug({ err }, "could not free the Olm machine");
    }
  }

  // --- internals; callers hold the queue ---

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error("the bot's Olm device is closed"));
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Device lists known and Olm sessions open for every device of `users`. */
  private async prepareSessions(users: string[]): Promise<void> {
    await this.machine.updateTrackedUsers(userIds(users));
    await this.sendOutgoing();
    const claim = await this.machine.getMissingSessions(userIds(users));
    if (claim) await this.send(claim);
  }

  /** Encrypts for each device it can, into `messages`; returns the devices it does not know. */
  private async encryptEach(
    type: string,
    devices: DeviceRef[],
    content: Record<string, unknown>,
    messages: Record<string, Record<string, unknown>>,
    outcome: ToDeviceOutcome,
  ): Promise<DeviceRef[]> {
    const unknown: DeviceRef[] = [];
    for (const ref of devices) {
      const device = await this.machine.getDevice(new UserId(ref.userId), new DeviceId(ref.deviceId));
      if (!device) {
        unknown.push(ref);
        continue;
      }
      try {
        (messages[ref.userId] ??= {})[ref.deviceId] = JSON.parse(await device.encryptToDeviceEvent(type, content));
        outcome.sent.push(ref);
      } catch (err) {
        // No one-time key to start a session with, or a device that is deleted or blacklisted.
        this.log.warn({ err, userId: ref.userId, targetDevice: ref.deviceId }, "cannot Olm-encrypt for a device");
        outcome.unreachable.push(ref);
      }
    }
    return unknown;
  }

  private as(): Record<string, string> {
    return { user_id: this.userId, device_id: this.deviceId };
  }

  private async send(request: OutgoingRequest): Promise<void> {
    const enc = encodeURIComponent;
    const body = JSON.parse(request.body) as unknown;
    let response: unknown;
    if (request instanceof KeysUploadRequest) response = await this.http.request("POST", "/keys/upload", body, this.as());
    else if (request instanceof KeysQueryRequest) response = await this.http.request("POST", "/keys/query", body, this.as());
    else if (request instanceof KeysClaimRequest) response = await this.http.request("POST", "/keys/claim", body, this.as());
    else if (request instanceof SignatureUploadRequest) response = await this.http.request("POST", "/keys/signatures/upload", body, this.as());
    else if (request instanceof ToDeviceRequest) {
      response = await this.http.request("PUT", `/sendToDevice/${enc(request.event_type)}/${enc(request.txn_id)}`, body, this.as());
    } else if (request instanceof RoomMessageRequest) {
      response = await this.http.request("PUT", `/rooms/${enc(request.room_id)}/send/${enc(request.event_type)}/${enc(request.txn_id)}`, body, this.as());
    } else {
      // Key backup is never enabled for the bot.
      this.log.debug({ requestType: request.type }, "ignoring a key backup request");
      return;
    }
    // A signature upload made outside outgoingRequests() has no id and nothing to mark.
    if (request.id !== undefined) await this.machine.markRequestAsSent(request.id, request.type, JSON.stringify(response ?? {}));
  }

  /** Sends the machine's outgoing requests until none is left; throws on the first failure. */
  private async sendOutgoing(): Promise<number> {
    let sent = 0;
    for (let round = 0; round < MAX_REQUEST_ROUNDS; round++) {
      const requests = (await this.machine.outgoingRequests()) as OutgoingRequest[];
      const wanted = requests.filter((r) => !(r instanceof KeysBackupRequest));
      if (wanted.length === 0) return sent;
      await this.save();
      for (const request of wanted) {
        await this.send(request);
        sent++;
      }
    }
    return sent;
  }

  /** As sendOutgoing, but a failure is logged: the machine keeps the request and it is sent later. */
  private async sendOutgoingLogged(): Promise<number> {
    try {
      return await this.sendOutgoing();
    } catch (err) {
      this.log.warn({ err }, "an Olm request failed; it will be retried");
      return 0;
    }
  }

  /** Writes the snapshot, unless it is what the file already holds. */
  private async save(): Promise<void> {
    const snapshot: Snapshot = {
      format: SNAPSHOT_FORMAT,
      userId: this.userId,
      deviceId: this.deviceId,
      databases: await dumpDatabases(this.factory, `${STORE_NAME}::`),
    };
    const plain = v8.serialize(snapshot);
    const digest = createHash("sha256").update(plain).digest("hex");
    if (digest === this.lastSnapshotDigest) return;
    await this.file.write(plain);
    this.lastSnapshotDigest = digest;
    this.lastSnapshotBytes = plain.length;
  }
}

/** matrix-sdk-crypto's log lines into pino; its info is chatty, so it goes to debug. */
function wasmLogger(log: Logger) {
  const text = (d: unknown) => (typeof d === "string" ? d : String(d));
  return {
    debug: (d: unknown) => log.debug(text(d)),
    info: (d: unknown) => log.debug(text(d)),
    warn: (d: unknown) => log.warn(text(d)),
    error: (d: unknown) => log.error(text(d)),
  };
}
