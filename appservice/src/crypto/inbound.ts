// What arrives for the bot's device in appservice transactions, on its way to the router:
//  - the E2EE parts (to-device messages for this device, device lists, key counts) go to Olm;
//  - m.room.encrypted events are decrypted and routed as the events they carry;
//  - an event whose room key has not arrived yet waits (bounded, in memory) and is routed when a
//    later transaction brings the key: the key travels as a to-device message, on a stream of
//    its own, and may come after the event.
// An event that cannot be decrypted is logged with its id, never thrown.
import { getLogger } from "../log.ts";
import type { TransactionParts } from "../matrix/appserviceHttp.ts";
import type { RawEvent } from "../matrix/events.ts";
import type { EncryptedRooms } from "./encryptedRooms.ts";
import type { ClearToDevice, OlmDevice, SyncChanges } from "./olmDevice.ts";

export const PENDING_LIMIT = 256;
export const PENDING_TTL_MS = 10 * 60_000;
const ROOM_KEY_TYPES = new Set(["m.room_key", "m.forwarded_room_key"]);

interface Pending {
  event: RawEvent;
  since: number;
}

/** The parts of a transaction that concern one device, in the shape the device takes. */
export function changesFor(parts: TransactionParts, userId: string, deviceId: string): SyncChanges | undefined {
  const toDevice = parts.toDevice
    .filter((m) => m.to_user_id === userId && m.to_device_id === deviceId)
    .map(({ to_user_id: _u, to_device_id: _d, ...message }) => message);
  const oneTimeKeyCounts = parts.oneTimeKeyCounts[userId]?.[deviceId];
  const unusedFallbackKeyTypes = parts.unusedFallbackKeyTypes[userId]?.[deviceId];
  const { changed, left } = parts.deviceLists;
  if (!toDevice.length && !changed.length && !left.length && !oneTimeKeyCounts && !unusedFallbackKeyTypes) return undefined;
  return { toDevice, changed, left, oneTimeKeyCounts, unusedFallbackKeyTypes };
}

export class CryptoInbound {
  private readonly device: Pick<OlmDevice, "userId" | "deviceId" | "receive" | "decryptRoomEvent">;
  private readonly rooms: Pick<EncryptedRooms, "noteEncryption">;
  private readonly route: (event: RawEvent) => Promise<void>;
  private readonly now: () => number;
  private readonly pending = new Map<string, Pending>();
  private readonly log = getLogger("crypto.inbound");
  /** Clear to-device events for whoever wants them (call keys, later). */
  onToDevice: (events: ClearToDevice[]) => void = () => undefined;

  constructor(opts: {
    device: Pick<OlmDevice, "userId" | "deviceId" | "receive" | "decryptRoomEvent">;
    rooms: Pick<EncryptedRooms, "noteEncryption">;
    route: (event: RawEvent) => Promise<void>;
    now?: () => number;
  }) {
    this.device = opts.device;
    this.rooms = opts.rooms;
    this.route = opts.route;
    this.now = opts.now ?? Date.now;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  async onTransactionParts(parts: TransactionParts): Promise<void> {
    const changes = changesFor(parts, this.device.userId, this.device.deviceId);
    if (!changes) return;
    const clear = await this.device.receive(changes);
    if (clear.length) this.onToDevice(clear);
    if (this.pending.size && clear.some((e) => ROOM_KEY_TYPES.has(e.type))) await this.retryPending();
  }

  async onEvent(event: RawEvent): Promise<void> {
    if (event.type === "m.room.encryption" && event.state_key === "" && typeof event.room_id === "string" && isRecord(event.content)) {
      this.rooms.noteEncryption(event.room_id, event.content);
    }
    if (event.type !== "m.room.encrypted") return this.route(event);
    // The bot's own notices come back in transactions; there is nothing to act on in them.
    if (event.sender === this.device.userId) return;
    const clear = await this.decrypt(event);
    if (clear) await this.route(clear);
  }

  /** The clear event, or undefined (kept for later when its key may still come). */
  private async decrypt(event: RawEvent): Promise<RawEvent | undefined> {
    const result = await this.device.decryptRoomEvent(event);
    if (result.ok) return { ...event, type: result.type, content: result.content };
    const eventId = typeof event.event_id === "string" ? event.event_id : undefined;
    const context = { eventId, roomId: event.room_id, sender: event.sender, reason: result.reason };
    if (result.retry && eventId) {
      this.log.debug(context, "room key not here yet; the event waits for it");
      this.remember(eventId, event);
    } else {
      this.log.warn(context, "cannot decrypt a room event");
    }
    return undefined;
  }

  private remember(eventId: string, event: RawEvent): void {
    const now = this.now();
    for (const [id, entry] of this.pending) {
      if (now - entry.since <= PENDING_TTL_MS) break; // in arrival order: the rest are younger
      this.pending.delete(id);
      this.log.warn({ eventId: id, roomId: entry.event.room_id }, "gave up on an undecryptable event (its key never came)");
    }
    if (this.pending.size >= PENDING_LIMIT) {
      const [oldest] = this.pending.keys();
      if (oldest !== undefined) {
        this.pending.delete(oldest);
        this.log.warn({ eventId: oldest }, "gave up on an undecryptable event (too many waiting)");
      }
    }
    this.pending.set(eventId, { event, since: now });
  }

  private async retryPending(): Promise<void> {
    for (const [eventId, entry] of [...this.pending]) {
      const result = await this.device.decryptRoomEvent(entry.event);
      if (result.ok) {
        this.pending.delete(eventId);
        try {
          await this.route({ ...entry.event, type: result.type, content: result.content });
        } catch (err) {
          // Its transaction was acknowledged long ago: nobody would retry it.
          this.log.error({ err, eventId }, "handling a late-decrypted event failed");
        }
      } else if (!result.retry || this.now() - entry.since > PENDING_TTL_MS) {
        this.pending.delete(eventId);
        this.log.warn({ eventId, roomId: entry.event.room_id, reason: result.reason }, "gave up on an undecryptable event");
      }
    }
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
