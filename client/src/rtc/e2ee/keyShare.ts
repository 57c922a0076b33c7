// Who gets which media key, and when. Two modes (the room's `org.parley.call` state says which;
// see keyMode.ts):
//
// Participant keys (default): this device makes its own 32-byte media key and sends it, Olm-
// encrypted, to every other device with a live MatrixRTC membership in the room (the to-device
// shape of MatrixRTC's `io.element.call.encryption_keys`). When a device leaves, a new key is made
// and sent to those who remain, and used only after `useDelayMs` so they have it first. A joiner
// gets the current key if it is younger than `graceMs`, else everyone gets a new one (a joiner
// cannot decrypt what was sent before it joined, beyond the grace period). A device that is not a
// member gets a key only when it says, Olm-encrypted, that it is about to join (below).
//
// About to join: a device in the pre-join sends the call's member devices an Olm-encrypted
// `org.parley.call.prejoin`. A device of a user joined to the room (asked of the homeserver) is
// sent the current key then, by the same rules as a joiner (a key older than the grace period is
// ratcheted first; a leave's new key waiting for its switch is the one sent), so its first
// frames decrypt as soon as its media arrives instead of after a key exchange that starts at its
// join. It does not count as a member: it gets no later key, and
// leaving the pre-join rotates nothing. Its join then needs no ratchet if it still holds the key
// in use from an announcement less than `PrejoinLimits.validMs` old: such a device can decrypt
// media from `graceMs` before its announcement on, not from before its join (media it can only
// have through the SFU, which needs a join). Announcements are bounded per device, in devices
// remembered, and per minute. The call's Parley announces a device in the pre-join too (the
// `arriving` push: its session granted ahead, its keys up), answered by the same rules and bounds
// with no Olm message of the device's to wait for (a device still starting sends its own late).
//
// Let in from the lobby: a user the room invites after their knock (a host's admission, from
// Parley's client or Element) has every device of theirs sent the current key at that moment, by
// the same rules and bounds as an announcement, so the key exchange runs beside their room join
// instead of after it (a knocker's device cannot announce itself: it sees none of the room's state
// until it has joined; its Parley client has Parley announce it once its keys are up, the
// `arriving` push, answered the same way). Matrix shares room keys with invited users the same way.
// The admission is heard from the invite's membership event in this device's sync, or earlier from
// the call's Parley (the `let_in` push, from its homeserver's transaction), which is not taken on
// its word: this device's own homeserver must say the user is invited before a key goes. A host's
// own admit from this device is its own act: the key goes as it is asked of Parley, beside the
// invite, with no such read; a refusal of it takes the key back out of use (a rotation). Any way
// once per admission. Until their join reaches this device, such a user's devices in the
// call's media (a hello let through as the invite came, often before this device heard of it)
// and their key sent to this device are answered as a joined user's are. A user sent a key
// early who then leaves the room without joining the call (an admission taken back, a removal)
// makes this device rotate, as a member's leave does.
//
// In the call's media: a device the SFU's participant list shows (Parley admitted its session at
// its hello, its user checked by OpenID; the device is the client's claim) whose user is joined to
// the room (or let in from the lobby, above) is sent the current key then, by the same rules and bounds as an announcement, about
// the time its membership is sent rather than once it has reached this device's sync (150-300 ms
// later on a quick Join). The list only chooses when: the key still goes, Olm-encrypted, only to
// a device its own user's homeserver lists, of a user joined to the room, as the membership path
// would send it. One that leaves the SFU's list without having become a member makes this device
// rotate, as a member's leave does.
//
// A received key counts only from the device Olm authenticated as its sender, and only if the
// content claims that same device (no fallback to the claim). It is used once its sender is in the
// call: a MatrixRTC member, or publishing in the SFU's participant list. Until then it is held
// (heldKeys.ts, bounded), and every change of either list uses the held keys of whoever is now in
// the call, in whatever order the key, the membership and the roster arrived.
//
// Provisioned keys: the bot's device sends one call key to every joined, policy-checked device
// and rotates it on every membership change; only keys from the bot the room names are accepted,
// and each is used for sending after `useDelayMs`.
import { getLogger } from "../../log.ts";
import { markStep } from "../../timeline.ts";
import { MinuteBudget, realTimers, type Timers } from "../../timers.ts";
import { MEDIA_KEY_LENGTH, ratchetMediaKey } from "./frameCrypto.ts";
import { participantId } from "./cipher.ts";
import { HeldKeys, MAX_KEYS_PER_SENDER, type HeldKeyLimits } from "./heldKeys.ts";
import { generateMediaKey } from "./keyRing.ts";
import type { LetInBy } from "../transforms.ts";

export const CALL_KEYS_EVENT = "io.element.call.encryption_keys";
/** Olm-encrypted to-device type of a device in the pre-join, to the call's member devices. */
export const CALL_PREJOIN_EVENT = "org.parley.call.prejoin";

/** The bounds of the answers to devices about to join (every field a limit a test crosses). */
export interface PrejoinLimits {
  /** An announcement spares its device the join's ratchet for this long (still holding the key in use). */
  validMs: number;
  /** A device's announcements closer together than this are ignored. */
  repeatMs: number;
  /** Devices remembered at once; the oldest announcement is forgotten first. */
  devices: number;
  /** Announcements answered per minute, over all devices (more are ignored). */
  perMinute: number;
}

export const PREJOIN_LIMITS: PrejoinLimits = { validMs: 60_000, repeatMs: 5_000, devices: 32, perMinute: 60 };

export interface DeviceRef {
  userId: string;
  deviceId: string;
}

/** What each of the call's to-device messages carries besides its own fields (MatrixRTC's shape): the sender's claim, the room. */
export interface CallEnvelope {
  member: { id: string; claimed_device_id: string };
  room_id: string;
  session: { application: "m.call"; call_id: ""; scope: "m.room" };
  sent_ts: number;
}

/** MatrixRTC's to-device key content. */
export interface CallKeyContent extends CallEnvelope {
  keys: { index: number; key: string };
}

/**
 * Who sent a key message, as the transport's Olm layer authenticates it: the user, and the device
 * whose Olm session decrypted it (null when the transport cannot say, e.g. the widget API).
 */
export interface KeySender {
  userId: string;
  deviceId: string | null;
}

export interface KeyTransport {
  /** Olm-encrypts `content` for each device and sends it; resolves with the devices it could not reach (if it knows). */
  send(devices: DeviceRef[], content: CallKeyContent): Promise<DeviceRef[] | void>;
  /** Olm-decrypted key messages, with the sender as Olm authenticates it (never a claim of the content). */
  onKeys(fn: (from: KeySender, content: unknown) => void): () => void;
  /** Olm-decrypted announcements of devices about to join (`CALL_PREJOIN_EVENT`), authenticated
   *  the same way. Absent: the transport has none (the widget API), and nobody is answered early. */
  onPrejoin?(fn: (from: KeySender, content: unknown) => void): () => void;
  /** The crypto learned these users' devices anew (a key query answered): a device it could not reach before may be reachable now. */
  onDevicesUpdated?(fn: (userIds: string[]) => void): () => void;
}

/** A device in the pre-join, as its announcement says it (`CALL_PREJOIN_EVENT`): the envelope alone. */
export type PrejoinContent = CallEnvelope;

export interface CallMembersPort {
  /** Devices with a live MatrixRTC call membership in the room (this one included, or not). */
  devices(): DeviceRef[];
  onChange(fn: () => void): () => void;
  /** Whether the user is joined to the room as this user's homeserver sees it (a definite answer,
   *  asked of the homeserver when the member is not loaded). Absent: keys go to members only. */
  joinedToRoom?(userId: string): Promise<boolean>;
  /** Room membership changes from the room's timeline, with the membership before (`unsigned.prev_content`).
   *  Absent: nobody let in from the lobby is sent a key before their join. */
  onRoomMembership?(fn: (userId: string, membership: string, previous: string | undefined) => void): () => void;
  /** The user's devices as their homeserver lists them (asked for if not known here). */
  devicesOf?(userId: string): Promise<DeviceRef[]>;
  /** The user's devices this device's crypto knows now (none asked for: empty for a user it does
   *  not track). A knocker's, looked up when the knock came (SyncedRoomFeed). */
  knownDevicesOf?(userId: string): Promise<DeviceRef[]>;
  /** Whether the user is invited to the room as this user's homeserver sees it now (asked of it).
   *  Absent: a let-in the server tells waits for the invite's own membership event. */
  invitedToRoom?(userId: string): Promise<boolean>;
}

/** Devices of one user let in from the lobby that are sent the key early (more are left to their join). */
export const MAX_ADMITTED_DEVICES = 8;
/**
 * A user let in from the lobby whose listing named no device is listed again this long after it
 * (ms), while they are still invited and none of their devices is in the call: a device that
 * knocked as soon as it signed in may have its keys still on their way up at the admission.
 */
export const ADMITTED_RELIST_MS = [250, 750] as const;

/** KeyShareOptions.confirmEarlyMs by default. */
export const CONFIRM_EARLY_MS = 2000;

/** The devices publishing media in the call, from the SFU's participant list (same shape). */
export interface CallRosterPort extends Pick<CallMembersPort, "devices" | "onChange"> {
  /** Every device in the call's media, publishing or not yet. Absent: nobody is sent a key at arrival. */
  arrived?(): DeviceRef[];
  /** Devices in the pre-join, as the server announces them (their session granted ahead, their keys up). */
  onArriving?(fn: (device: DeviceRef) => void): () => void;
  /**
   * Users let in from the lobby: `server`, as the call's Parley tells it from its homeserver's
   * transaction (`let_in`); `self`, by this device's own admit, as it is asked of Parley.
   */
  onLetIn?(fn: (userId: string, by: LetInBy) => void): () => void;
  /** This device's own admit of a user, refused by Parley. */
  onLetInRefused?(fn: (userId: string) => void): () => void;
}

export interface KeySink {
  setOwnKey(index: number, key: Uint8Array, use: boolean): void;
  useOwnKey(index: number): void;
  setKey(participant: string, index: number, key: Uint8Array): void;
  setCallKey(index: number, key: Uint8Array, use: boolean): void;
  forget(participant: string): void;
}

export interface KeyShareOptions {
  roomId: string;
  self: DeviceRef;
  transport: KeyTransport;
  members: CallMembersPort;
  /** Devices publishing in the SFU: their keys are used even before (or without) their membership. */
  roster?: CallRosterPort;
  sink: KeySink;
  timers?: Timers;
  now?: () => number;
  /** A joiner gets the current key if it is younger than this; else a rotation. */
  graceMs?: number;
  /** A new key is sent first and used for sending this much later. */
  useDelayMs?: number;
  /** A key that could not reach a member device is sent again after this (doubling, up to 10 s). */
  retryMs?: number;
  /**
   * A joiner that holds the current key from before its join (announced, arrived, let in) is sent
   * it once more this much later, not at its join: that second message would otherwise come in
   * the same sync as the first, and the joiner's crypto decrypts a sync's to-device messages
   * before it hands any of them over (one Olm decryption more before its first picture).
   */
  confirmEarlyMs?: number;
  random?: () => Uint8Array;
  /** Bounds of the keys held for senders not in the call (defaults in heldKeys.ts). */
  heldLimits?: Partial<HeldKeyLimits>;
  /** Bounds of the answers to devices about to join (defaults: PREJOIN_LIMITS). */
  prejoinLimits?: Partial<PrejoinLimits>;
}

interface OwnKey {
  index: number;
  key: Uint8Array;
  createdAt: number;
}

export interface RotationEvent {
  index: number;
  /** Devices the new key was sent to (one to-device message each). */
  sentTo: number;
  reason: "start" | "leave" | "join";
}

const deviceKey = (d: DeviceRef) => participantId(d.userId, d.deviceId);
/** Whether the participant id `id` (cipher.ts) is a device of `userId`. */
const ofUser = (userId: string) => (id: string) => id.startsWith(participantId(userId, ""));

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array | null {
  try {
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/**
 * Why a key message from `from` claiming `claimedDevice` is not acceptable, or null: the sender
 * must be a device Olm authenticated, and the content must claim that same device.
 */
export function senderProblem(from: KeySender, claimedDevice: string): string | null {
  if (!from.deviceId) return "no Olm-authenticated sending device";
  if (claimedDevice !== from.deviceId) return `claims device ${JSON.stringify(claimedDevice)} but Olm says ${from.deviceId}`;
  return null;
}

/** A valid key message's index and key for `roomId`, or why it is not one. */
export function parseKeyContent(content: unknown, roomId: string): { index: number; key: Uint8Array; claimedDevice: string } | string {
  const env = parseEnvelope(content, roomId);
  if (typeof env === "string") return env;
  const keys = env.c.keys as Record<string, unknown> | undefined;
  if (!keys || typeof keys !== "object") return "no keys";
  const index = keys.index;
  if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index > 255) return "bad key index";
  const key = typeof keys.key === "string" ? fromBase64(keys.key) : null;
  if (!key || key.length !== MEDIA_KEY_LENGTH) return `key must be ${MEDIA_KEY_LENGTH} bytes of base64`;
  return { index, key, claimedDevice: env.claimedDevice };
}

/** A valid announcement's claimed device for `roomId`, or why it is not one. */
export function parsePrejoinContent(content: unknown, roomId: string): { claimedDevice: string } | string {
  const env = parseEnvelope(content, roomId);
  if (typeof env === "string") return env;
  return env.claimedDevice ? { claimedDevice: env.claimedDevice } : "no claimed device";
}

/** A call message's envelope for `roomId`: the content as a record and the device it claims ("" if none), or why not. */
function parseEnvelope(content: unknown, roomId: string): { c: Record<string, unknown>; claimedDevice: string } | string {
  if (typeof content !== "object" || content === null) return "not an object";
  const c = content as Record<string, unknown>;
  if (c.room_id !== roomId) return "for another room";
  const member = c.member as Record<string, unknown> | undefined;
  return { c, claimedDevice: member && typeof member.claimed_device_id === "string" ? member.claimed_device_id : "" };
}

export function prejoinContent(roomId: string, self: DeviceRef, now: number): PrejoinContent {
  return {
    member: { id: `${self.userId}:${self.deviceId}`, claimed_device_id: self.deviceId },
    room_id: roomId,
    session: { application: "m.call", call_id: "", scope: "m.room" },
    sent_ts: now,
  };
}

export function keyContent(roomId: string, self: DeviceRef, index: number, key: Uint8Array, now: number): CallKeyContent {
  return { keys: { index, key: toBase64(key) }, ...prejoinContent(roomId, self, now) };
}

/** Drops the oldest (first inserted) of `keys` until at most `limit` are left. */
function keepNewest(keys: { keys(): Iterable<string>; delete(key: string): boolean; readonly size: number }, limit: number): void {
  for (const old of keys.keys()) {
    if (keys.size <= limit) break;
    keys.delete(old);
  }
}

/** Participant-keys mode: this device's key, shared with the call's member devices. */
export class ParticipantKeyShare {
  private readonly o: Required<Omit<KeyShareOptions, "random" | "roster" | "heldLimits" | "prejoinLimits">> & { random: () => Uint8Array; roster: CallRosterPort | null };
  private readonly prejoinLimits: PrejoinLimits;
  /** Devices that said they are about to join, sent the key at `index` (insertion order: oldest first). */
  private readonly prejoined = new Map<string, { at: number; index: number }>();
  /**
   * Users let in from the lobby and still only invited (their devices listed again after
   * ADMITTED_RELIST_MS while none was named; a device Parley names is answered as the admission),
   * at most `prejoinLimits.devices`, the oldest forgotten first.
   */
  private readonly admitted = new Set<string>();
  /** Users the server said were let in, whose invite this device's homeserver is being asked about. */
  private readonly confirming = new Set<string>();
  /** Devices answered at their arrival in the SFU's list, not members yet; `sent`: a key went to it. */
  private readonly arrivals = new Map<string, { sent: boolean }>();
  /** Members that left while still in the SFU's list: not answered at arrival until they leave it. */
  private readonly departing = new Set<string>();
  /**
   * Devices answered early some other way (an admission, an announcement) seen in the SFU's list,
   * not members yet (a subset of `prejoined`): their leaving that list ends what they were answered,
   * as a gone arrival's does.
   */
  private readonly earlyInMedia = new Set<string>();
  /** The early answers (announcements, admissions) of the last minute. */
  private readonly prejoinAnswers: MinuteBudget;
  private prejoinFloodLogged = false;
  private readonly log = getLogger("e2ee");
  /** The newest key: sent, and used for sending now or once its switch comes (`useTimer`). */
  private current: OwnKey | null = null;
  /** The key frames are encrypted with now, and the devices that were sent it (or can derive it). */
  private inUse: (OwnKey & { holders: Set<string> }) | null = null;
  /** The devices that hold the current key. */
  private sharedWith = new Map<string, DeviceRef>();
  /** Keys from devices not (yet, or no longer) in the call, by device: used when they are. */
  private readonly held: HeldKeys;
  /** The last keys used per device in the call, kept aside if it leaves (a quick rejoin, or a
   * membership update that arrives after its new key, must not lose its key). */
  private readonly applied = new Map<string, { index: number; key: Uint8Array }[]>();
  private readonly unsubscribe: (() => void)[] = [];
  /**
   * Devices in the call whose call membership has not reached us (a membership sent while our
   * server was joining the room over federation can reach it late, or never): each sent us an
   * Olm-authenticated key for this room, publishes in the SFU and belongs to a user our
   * homeserver sees joined to the room. They get our key like members; one that stops
   * publishing is gone from the call (a rotation, as for a member's leave).
   */
  private readonly keySenders = new Map<string, DeviceRef>();
  private useTimer: unknown;
  /** Member devices the current key could not reach yet (their keys were not downloadable yet). */
  private readonly undelivered = new Map<string, DeviceRef>();
  private retryTimer: unknown;
  /** Pending confirmLater sends. */
  private readonly confirmTimers = new Set<unknown>();
  private retryDelay = 0;
  private stopped = false;
  /** Serialises membership reactions so rotations never interleave. */
  private queue: Promise<void> = Promise.resolve();
  onRotated: ((e: RotationEvent) => void) | null = null;

  constructor(opts: KeyShareOptions) {
    this.o = { timers: realTimers, now: () => Date.now(), graceMs: 10_000, useDelayMs: 1000, retryMs: 1000, confirmEarlyMs: CONFIRM_EARLY_MS, random: generateMediaKey, ...opts, roster: opts.roster ?? null };
    this.held = new HeldKeys(() => this.o.now(), opts.heldLimits);
    this.prejoinLimits = { ...PREJOIN_LIMITS, ...opts.prejoinLimits };
    this.prejoinAnswers = new MinuteBudget(this.prejoinLimits.perMinute, () => this.o.now());
  }

  start(): void {
    // A stopped share takes nothing more, whether or not a port's unsubscribe took effect.
    const live =
      <A extends unknown[]>(fn: (...args: A) => void) =>
      (...args: A) => {
        if (this.stopped) return void this.log.debug("a stopped key share ignored a change");
        fn(...args);
      };
    this.unsubscribe.push(this.o.transport.onKeys(live((from, content) => this.onKeys(from, content))));
    this.unsubscribe.push(
      this.o.members.onChange(
        live(() => {
          // Held keys are used at once, not after our own key's delivery (which can take seconds).
          this.useHeldKeys();
          this.enqueue(() => this.onMembers());
        }),
      ),
    );
    if (this.o.roster) this.unsubscribe.push(this.o.roster.onChange(live(() => this.onRoster())));
    if (this.o.roster?.onArriving) this.unsubscribe.push(this.o.roster.onArriving(live((d) => this.onServerPrejoin(d))));
    if (this.o.roster?.onLetIn) this.unsubscribe.push(this.o.roster.onLetIn(live((u, by) => (by === "self" ? this.onOwnLetIn(u) : this.onServerLetIn(u)))));
    if (this.o.roster?.onLetInRefused) this.unsubscribe.push(this.o.roster.onLetInRefused(live((u) => this.onOwnLetInRefused(u))));
    if (this.o.transport.onPrejoin) this.unsubscribe.push(this.o.transport.onPrejoin(live((from, content) => this.onPrejoin(from, content))));
    if (this.o.members.onRoomMembership) this.unsubscribe.push(this.o.members.onRoomMembership(live((user, membership, previous) => this.onRoomMembership(user, membership, previous))));
    if (this.o.transport.onDevicesUpdated) this.unsubscribe.push(this.o.transport.onDevicesUpdated(live((users) => this.onDevicesUpdated(users))));
    this.enqueue(() => this.rotate("start", true));
  }

  stop(): void {
    this.stopped = true;
    this.o.timers.clearTimeout(this.useTimer);
    this.o.timers.clearTimeout(this.retryTimer);
    for (const t of this.confirmTimers) this.o.timers.clearTimeout(t);
    this.confirmTimers.clear();
    for (const u of this.unsubscribe.splice(0)) u();
  }

  /** Resolves when the queued membership reactions have run (tests, benchmarks). */
  settled(): Promise<void> {
    return this.queue;
  }

  /** How many keys are held for senders not in the call (tests, diagnostics). */
  get heldCount(): number {
    return this.held.size;
  }

  private enqueue(op: () => Promise<void>): void {
    this.queue = this.queue.then(() => (this.stopped ? undefined : op())).catch((err) => this.log.warn("key share failed", { err: String(err) }));
  }

  private others(): Map<string, DeviceRef> {
    const self = deviceKey(this.o.self);
    return new Map(this.o.members.devices().filter((d) => deviceKey(d) !== self).map((d) => [deviceKey(d), d]));
  }

  /** Who gets this device's key: the call's member devices and the key senders still publishing. */
  private targets(): Map<string, DeviceRef> {
    const targets = this.others();
    const publishing = this.publishing();
    for (const [id, d] of this.keySenders) {
      if (!publishing.has(id)) this.keySenders.delete(id);
      else targets.set(id, d);
    }
    return targets;
  }

  /** Devices publishing in the SFU (other than this one). */
  private publishing(): Set<string> {
    const self = deviceKey(this.o.self);
    return new Set((this.o.roster?.devices() ?? []).map(deviceKey).filter((k) => k !== self));
  }

  /** Whether a key from device `id` may be used now: it is a member, or it publishes in the SFU. */
  private inCall(id: string): boolean {
    return this.others().has(id) || this.publishing().has(id);
  }

  private async onMembers(): Promise<void> {
    const now = this.targets();
    const publishing = this.publishing();
    const left = [...this.sharedWith.keys()].filter((k) => !now.has(k));
    const joined = [...now].filter(([k]) => !this.sharedWith.has(k)).map(([, d]) => d);
    const arrived = new Set((this.o.roster?.arrived?.() ?? []).map(deviceKey));
    for (const k of left) {
      if (arrived.has(k)) this.departing.add(k); // its SFU leave may come after: no arrival key meanwhile
      // Whatever it was answered before it joined went out of use with this leave: back within
      // repeatMs ("Join again"), its arrival or announcement is answered again, not ignored.
      this.prejoined.delete(k);
      if (publishing.has(k)) continue; // still sending media: its key still decrypts it
      this.o.sink.forget(k);
      this.held.add(k, this.applied.get(k) ?? []);
      this.applied.delete(k);
    }
    // Keys held for anyone in the call now, not only for the devices that joined since the last
    // look: a rotation may have counted a device in before its held key was looked at.
    this.useHeldKeys();
    if (left.length) return this.rotate("leave", false);
    if (!joined.length || !this.current) return;
    const c = this.current;
    // Joiners that announced themselves hold this key already: no ratchet (and no wait) for them.
    const early = new Set(joined.map(deviceKey).filter((k) => this.holdsFromPrejoin(k, c.index) && !this.undelivered.has(k)));
    const holding = joined.every((d) => early.has(deviceKey(d)));
    for (const d of joined) {
      this.prejoined.delete(deviceKey(d));
      this.arrivals.delete(deviceKey(d)); // a member now: a member's rules from here
    }
    if (this.o.now() - c.createdAt < this.o.graceMs || holding) {
      for (const d of joined) this.sharedWith.set(deviceKey(d), d);
      this.log.info("media key shared with joiners", { index: c.index, devices: joined.length });
      this.heldBy(c.index, joined);
      await this.shareInUse(joined, c);
      const late = joined.filter((d) => !early.has(deviceKey(d)));
      if (late.length) await this.deliver(late, c.index, c.key);
      // Again to a device sent this key before its join, later: a homeserver accepting a
      // to-device message is no proof its device could read it (a browser suite run lost one sent
      // at the joiner's arrival over federation, and the joiner never decrypted that sender).
      this.confirmLater(joined.filter((d) => early.has(deviceKey(d))));
      this.onRotated?.({ index: c.index, sentTo: joined.length, reason: "join" });
      return;
    }
    return this.ratchet(joined);
  }

  /**
   * Sends the current key again, after `confirmEarlyMs`, to those of `devices` still sharing it:
   * joiners that held the key from before their join (see onMembers). Whatever the key is by
   * then: one ratcheted since derives from a key they may never have read.
   */
  private confirmLater(devices: DeviceRef[]): void {
    if (!devices.length) return;
    const timer = this.o.timers.setTimeout(() => {
      this.confirmTimers.delete(timer);
      this.enqueue(async () => {
        const c = this.current;
        const still = devices.filter((d) => this.sharedWith.has(deviceKey(d)));
        if (this.stopped || !c || !still.length) return;
        this.log.info("media key sent again to joiners that held it before their join", { index: c.index, devices: still.length });
        await this.deliver(still, c.index, c.key);
      });
    }, this.o.confirmEarlyMs);
    this.confirmTimers.add(timer);
  }

  /**
   * A join while a new key waits for its switch (after a leave: `useDelayMs`, 100 ms per device
   * in a large call): the frames are still encrypted with the key in use, which the joiner would
   * not get, so it would see nothing until the switch. It gets that key too where the rules that
   * give a joiner the current key allow it: the device held it before (it left since the switch
   * and is back: "Join again"), or the key is younger than the grace period.
   */
  private async shareInUse(joined: DeviceRef[], current: OwnKey): Promise<void> {
    const used = this.inUse;
    if (!used || used.index === current.index) return;
    const young = this.o.now() - used.createdAt < this.o.graceMs;
    const again = joined.filter((d) => young || used.holders.has(deviceKey(d)));
    if (!again.length) return;
    this.heldBy(used.index, again);
    this.log.info("media key in use shared with joiners until the switch", { index: used.index, devices: again.length });
    await this.deliver(again, used.index, used.key);
  }

  /** The current key is now the one frames are encrypted with; whoever was sent it holds it. */
  private currentInUse(): void {
    if (this.current) this.inUse = { ...this.current, holders: new Set(this.sharedWith.keys()) };
  }

  /** Counts `devices` among the holders of the key in use, if `index` is that key. */
  private heldBy(index: number, devices: DeviceRef[]): void {
    if (this.inUse?.index === index) for (const d of devices) this.inUse.holders.add(deviceKey(d));
  }

  /**
   * A join into a key older than the grace period: the next key is the current one ratcheted
   * (frameCrypto.ts), used at once and sent to the joiners only; the others derive it from the
   * key they hold when its first frame comes, so nobody waits for a key's delivery and the joiners
   * cannot read what was sent before they came.
   */
  private async ratchet(joined: DeviceRef[]): Promise<void> {
    const next = await this.ratchetCurrent();
    if (!next) return;
    for (const d of joined) this.sharedWith.set(deviceKey(d), d);
    // Whoever was sent the previous key derives this one; the joiners are sent it.
    this.currentInUse();
    this.log.info("media key ratcheted for joiners", { index: next.index, devices: joined.length });
    await this.deliver(joined, next.index, next.key);
    this.onRotated?.({ index: next.index, sentTo: joined.length, reason: "join" });
  }

  /** The current key ratcheted and used at once (null: another change came meanwhile). */
  private async ratchetCurrent(): Promise<OwnKey | null> {
    const previous = this.current!;
    const index = (previous.index + 1) % 256;
    const key = await ratchetMediaKey(previous.key);
    if (this.stopped || this.current !== previous) return null;
    this.current = { index, key, createdAt: this.o.now() };
    this.o.timers.clearTimeout(this.useTimer); // a fresh key waiting for its switch is superseded
    this.o.sink.setOwnKey(index, key, true);
    return this.current;
  }

  /** Whether device `id` was sent the key at `index` when it said it was about to join, recently enough. */
  private holdsFromPrejoin(id: string, index: number): boolean {
    const p = this.prejoined.get(id);
    return !!p && p.index === index && this.o.now() - p.at < this.prejoinLimits.validMs;
  }

  /** A device says it is about to join: checked and bounded here, answered in the queue. */
  private onPrejoin(from: KeySender, content: unknown): void {
    const parsed = parsePrejoinContent(content, this.o.roomId);
    if (typeof parsed === "string") return void this.log.debug("ignored a pre-join announcement", { from: from.userId, why: parsed });
    const problem = senderProblem(from, parsed.claimedDevice);
    if (problem) return void this.log.warn("ignored a pre-join announcement", { from: from.userId, why: problem });
    const id = participantId(from.userId, from.deviceId!);
    if (id === deviceKey(this.o.self)) return;
    if (this.answeredRecently(id)) return void this.log.debug("ignored a pre-join announcement", { from: id, why: "too soon after the last" });
    if (!this.takeEarlyAnswer()) return;
    // Remembered at once, so a repeat within repeatMs is ignored even before the answer.
    this.rememberPrejoin(id, { at: this.o.now(), index: -1 });
    this.enqueue(() => this.answerPrejoin(id, { userId: from.userId, deviceId: from.deviceId! }));
  }

  /**
   * The server says a device is in the pre-join (its session granted ahead, its keys up): it is
   * answered as an announcement is (its user joined to the room, the same bounds), without
   * waiting for its own Olm-encrypted announcement, which a device still starting makes late.
   */
  private onServerPrejoin(device: DeviceRef): void {
    const id = deviceKey(device);
    if (id === deviceKey(this.o.self) || !device.deviceId) return;
    // A device the key did not reach (unknown to the crypto then: its keys went up after its
    // hello, on a quick Join) says its keys are up now: sent again at once, as when the crypto
    // learns its devices by itself (after this device's next sync and a key query).
    if (this.undelivered.has(id)) return this.onDevicesUpdated([device.userId]);
    if (this.reachedRecently(id)) return;
    if (!this.takeEarlyAnswer()) return;
    this.rememberPrejoin(id, { at: this.o.now(), index: -1 });
    const d = { userId: device.userId, deviceId: device.deviceId };
    // A user let in from the lobby and still only invited: answered as the admission is (the
    // admission's own listing of their devices may have come before this device's keys went up).
    this.enqueue(() => (this.admitted.has(d.userId) ? this.answerLetIn(d) : this.answerPrejoin(id, d)));
  }

  /** A device of a user let in from the lobby, named by the call's Parley: sent the key now (joined since: as a pre-join). */
  private async answerLetIn(device: DeviceRef): Promise<void> {
    if (!this.admitted.has(device.userId)) return this.answerPrejoin(deviceKey(device), device);
    await this.answerEarly([device], "media key sent to a user let in from the lobby", true);
  }

  /**
   * Device `id`, remembered as it was taken up (an announcement, an arrival) and then not sent
   * the key (its user not joined), is not "answered recently": a let-in heard after this (a
   * knocker's device announced, or in the SFU's list, as its invite comes) still sends it the key.
   */
  private forgetUnanswered(id: string): void {
    if (this.prejoined.get(id)?.index === -1) this.prejoined.delete(id);
  }

  /** Whether device `id` was answered early less than `repeatMs` ago. */
  private answeredRecently(id: string): boolean {
    const last = this.prejoined.get(id);
    return !!last && this.o.now() - last.at < this.prejoinLimits.repeatMs;
  }

  /** Answered early lately, and that key reached it (not a device unknown to the crypto then). */
  private reachedRecently(id: string): boolean {
    return this.answeredRecently(id) && !this.undelivered.has(id);
  }

  /** One early answer (an announcement, an admission) out of `perMinute`: false when they are spent. */
  private takeEarlyAnswer(): boolean {
    if (!this.prejoinAnswers.take()) {
      if (!this.prejoinFloodLogged) this.log.warn("ignoring devices about to join: too many this minute", { limit: this.prejoinLimits.perMinute });
      else this.log.debug("ignored a device about to join: too many this minute");
      this.prejoinFloodLogged = true;
      return false;
    }
    this.prejoinFloodLogged = false;
    return true;
  }

  /**
   * The room's membership changed. A user invited after their knock was let in from the lobby:
   * their devices are sent the key now. A user who left the room (left, kicked, banned) and was
   * sent a key early, not in the call: the key goes out of use (a rotation, as for a leave).
   */
  private onRoomMembership(userId: string, membership: string, previous: string | undefined): void {
    if (userId === this.o.self.userId) return;
    if (membership === "invite" && previous === "knock") return this.letIn(userId);
    // Only a join or a departure ends an admission. An invite again (a second admission racing
    // the first: Parley's and a host's, or two hosts') leaves it as it is: dropping them on it
    // left the first admission's key unsent.
    if (membership !== "join" && membership !== "leave" && membership !== "ban") return;
    this.admitted.delete(userId); // joined (their join's own path from here), or gone
    if (membership !== "leave" && membership !== "ban") return;
    this.enqueue(() => this.takeBackEarlyKey(userId, "a user sent the media key before joining left the room: rotating"));
  }

  /**
   * A user sent the key early (let in, announced, arrived) who is not joining now (gone from the
   * room, or this device's admission of them refused), none of their devices in the call: the key
   * goes out of use (a rotation, as for a leave). Run in the queue, after any answer to them
   * already under way.
   */
  private async takeBackEarlyKey(userId: string, why: string): Promise<void> {
    const theirs = ofUser(userId);
    const early = [...this.prejoined].filter(([id, p]) => theirs(id) && p.index >= 0 && !this.inCall(id));
    if (!early.length) return;
    for (const [id] of early) {
      this.prejoined.delete(id);
      this.arrivals.delete(id);
    }
    // (Whichever key they were sent: a key ratcheted since derives from it.)
    this.log.info(why, { user: userId, devices: early.length });
    await this.rotate("leave", false);
  }

  /**
   * A user let in from the lobby, from the invite's own membership event or from the server (once
   * confirmed): their devices are sent the key, once for this admission (the other of the two
   * ways to hear of it finds them admitted already).
   */
  private letIn(userId: string): void {
    if (this.admitted.has(userId) || !this.o.members.devicesOf || !this.takeEarlyAnswer()) return;
    this.admitted.add(userId);
    keepNewest(this.admitted, this.prejoinLimits.devices);
    this.enqueue(() => this.answerAdmitted(userId, 0));
  }

  /**
   * This device's own admit of a user, as it asks Parley for it: their devices are sent the key
   * now, beside Parley's invite (a federation round trip) rather than after it, and without asking
   * the homeserver first. The host chose to let this user in; waiting for the invite and reading it
   * back (300-500 ms under load, on the knocker's critical path) would only confirm an act this
   * device asked for. The devices are still its homeserver's listing and the key still
   * Olm-encrypted. Should Parley refuse the admit (the meeting locked meanwhile, the knock
   * withdrawn), onOwnLetInRefused takes the key back out of use; a removal before their join
   * rotates it as ever.
   */
  private onOwnLetIn(userId: string): void {
    if (userId === this.o.self.userId) return;
    this.letIn(userId);
  }

  /** Parley refused this device's own admit of a user: no key more for them, and the key they may have been sent goes out of use. */
  private onOwnLetInRefused(userId: string): void {
    if (userId === this.o.self.userId || !this.admitted.delete(userId)) return;
    this.enqueue(() => this.takeBackEarlyKey(userId, "an admission this device asked for was refused: rotating the key its user was sent"));
  }

  /**
   * The call's Parley says a user was let in (its homeserver's transaction, usually well before
   * this page's sync shows the invite). Parley is not trusted with that: this device's own
   * homeserver must say the user is invited (a state read) before any key goes; if it does not
   * yet, the invite's membership event does it when it comes.
   */
  private onServerLetIn(userId: string): void {
    const invited = this.o.members.invitedToRoom;
    if (userId === this.o.self.userId || this.admitted.has(userId) || !invited || this.confirming.has(userId)) return;
    // At most prejoinLimits.devices reads in flight: the server cannot make this device ask its homeserver more.
    if (this.confirming.size >= this.prejoinLimits.devices) return;
    this.confirming.add(userId);
    void invited(userId)
      .then((yes) => {
        if (yes && !this.stopped) this.letIn(userId);
      })
      .catch((err: unknown) => this.log.debug("could not confirm a user let in", { user: userId, err: String(err) }))
      .finally(() => this.confirming.delete(userId));
  }

  /**
   * Sends the current key to the devices of a user let in from the lobby (at most
   * MAX_ADMITTED_DEVICES), then lists them again after ADMITTED_RELIST_MS[`round`] for devices
   * that were not listed yet, while the user is still only invited and not in the call.
   */
  private async answerAdmitted(userId: string, round: number): Promise<void> {
    // A member device: their join's own path from here. A device already publishing (its hello
    // let through as its invite came, before this device heard of the admission) is answered here
    // too: its arrival, taken up before the admission was heard, found its user only invited.
    if (!this.admitted.has(userId) || this.userIsMember(userId)) return void this.admitted.delete(userId);
    const fresh = this.o.members.devicesOf!(userId).catch((err: unknown) => {
      this.log.debug("could not list the devices of a user let in", { user: userId, err: String(err) });
      return [] as DeviceRef[];
    });
    // The devices known here since the knock (their Olm sessions made then) are sent the key
    // without waiting for the listing, a federation round trip for a remote user; the listing
    // still names any device whose keys went up since.
    let answered = 0;
    const answer = async (listed: DeviceRef[]) => {
      const own = listed.filter((d) => d.userId === userId);
      const devices = own
        .slice(0, MAX_ADMITTED_DEVICES)
        .filter((d) => !this.answeredRecently(deviceKey(d)))
        .slice(0, MAX_ADMITTED_DEVICES - answered);
      answered += devices.length;
      for (const d of devices) this.rememberPrejoin(deviceKey(d), { at: this.o.now(), index: -1 });
      await this.answerEarly(devices, "media key sent to a user let in from the lobby", true);
      return own;
    };
    if (round === 0 && this.o.members.knownDevicesOf) {
      await answer(await this.o.members.knownDevicesOf(userId).catch(() => [] as DeviceRef[]));
    }
    const own = await answer(await fresh);
    // Listed again only when this listing named no device: each listing is a key query (one
    // federation request for a remote user) from every device in the call.
    const delay = own.length ? undefined : ADMITTED_RELIST_MS[round];
    if (delay === undefined || this.stopped) return;
    this.o.timers.setTimeout(() => {
      if (!this.stopped && this.admitted.has(userId)) this.enqueue(() => this.answerAdmitted(userId, round + 1));
    }, delay);
  }

  /** Whether any device of `userId` is a member of the call. */
  private userIsMember(userId: string): boolean {
    return [...this.others().keys()].some(ofUser(userId));
  }

  private rememberPrejoin(id: string, entry: { at: number; index: number }): void {
    this.prejoined.delete(id);
    this.prejoined.set(id, entry);
    keepNewest(this.prejoined, this.prejoinLimits.devices);
  }

  /**
   * Sends the current key to a device about to join, if its user is joined to the room: as to a
   * joiner, a key older than the grace period is ratcheted first. Not a member: no later key.
   */
  private async answerPrejoin(id: string, device: DeviceRef): Promise<void> {
    if (this.inCall(id) || this.sharedWith.has(id)) return; // its join is under way: the ordinary path
    const joined = this.o.members.joinedToRoom;
    if (!joined) return;
    if (!(await joined(device.userId))) {
      this.forgetUnanswered(id);
      return void this.log.warn("a pre-join announcement came from a user not joined to the room", { from: id });
    }
    await this.answerEarly([device], "media key sent to a device about to join");
  }

  /**
   * Sends the current key to devices before their join (announced, or let in from the lobby) that
   * are still remembered and not in the call yet: as to a joiner, a key older than the grace
   * period is ratcheted first. Not members: no later key.
   */
  private async answerEarly(devices: DeviceRef[], what: string, publishingToo = false): Promise<DeviceRef[]> {
    // A device publishing already is answered by the key it sends (shareWithKeySender), except
    // one answered for its arrival (it may start publishing while its user's room join is checked)
    // or let in from the lobby (it may start publishing before this device hears of the admission).
    const inCall = (id: string) => (publishingToo ? this.others().has(id) : this.inCall(id));
    const waiting = () => devices.filter((d) => !inCall(deviceKey(d)) && !this.sharedWith.has(deviceKey(d)) && this.prejoined.has(deviceKey(d)));
    if (this.stopped || !this.current || !waiting().length) return [];
    if (this.o.now() - this.current.createdAt >= this.o.graceMs) {
      if (!(await this.ratchetCurrent())) return [];
      this.currentInUse();
    }
    const c = this.current;
    const to = waiting();
    if (!to.length) return [];
    for (const d of to) this.rememberPrejoin(deviceKey(d), { at: this.prejoined.get(deviceKey(d))!.at, index: c.index });
    this.heldBy(c.index, to);
    // One publishing already (let in): its leave from the SFU's list before it becomes a member
    // rotates the key, as for a device answered at its arrival (answerArrivals).
    const publishing = this.publishing();
    for (const d of to.filter((d) => publishing.has(deviceKey(d)))) {
      const entry = this.arrivals.get(deviceKey(d));
      if (entry) entry.sent = true;
      else this.arrivals.set(deviceKey(d), { sent: true });
    }
    this.log.info(what, { to: to.map(deviceKey), index: c.index });
    // A leave's new key waiting for its switch: the key in use too, where a joiner would get it.
    await this.shareInUse(to, c);
    await this.deliver(to, c.index, c.key);
    return to;
  }

  /**
   * Devices that arrived in the SFU's list (their session's hello) and are not members yet are
   * sent the key early, bounded as announcements are; one answered so that left the list without
   * becoming a member makes this device rotate.
   */
  private answerArrivals(): void {
    const arrived = this.o.roster?.arrived?.();
    if (!arrived) return;
    const members = this.others();
    const here = new Set(arrived.map(deviceKey));
    for (const id of this.departing) if (!here.has(id)) this.departing.delete(id);
    const gone = [...this.arrivals].filter(([id]) => !here.has(id) && !members.has(id));
    for (const [id] of gone) {
      this.arrivals.delete(id);
      this.prejoined.delete(id);
    }
    // Answered before it reached the list (let in, announced): that session's leave is a leave
    // too. The device's next call starts with no key (seen: a knocker's "Join again", its first
    // call's membership never here, waited 2 s for the key its old session had been sent).
    // (Not a member by now, nor sharing this device's key as a publisher: those leaves are onMembers'.)
    const earlyOnly = (id: string) => this.prejoined.has(id) && !members.has(id) && !this.sharedWith.has(id);
    const goneEarly: string[] = [];
    for (const id of this.earlyInMedia) {
      if (here.has(id)) continue;
      this.earlyInMedia.delete(id);
      if (!earlyOnly(id)) continue;
      if (this.prejoined.get(id)!.index >= 0) goneEarly.push(id);
      this.prejoined.delete(id);
    }
    for (const id of here) if (earlyOnly(id) && !this.arrivals.has(id)) this.earlyInMedia.add(id);
    if (gone.some(([, a]) => a.sent) || goneEarly.length) {
      this.log.info("a device sent the media key before its membership came left the call: rotating", { devices: gone.length + goneEarly.length });
      this.enqueue(() => this.rotate("leave", false));
    }
    if (!this.o.members.joinedToRoom) return;
    const self = deviceKey(this.o.self);
    for (const d of arrived) {
      const id = deviceKey(d);
      if (id === self || members.has(id) || this.sharedWith.has(id) || this.arrivals.has(id) || this.departing.has(id) || this.reachedRecently(id)) continue;
      if (!this.takeEarlyAnswer()) return;
      const entry = { sent: false };
      this.arrivals.set(id, entry);
      this.rememberPrejoin(id, { at: this.o.now(), index: -1 });
      this.enqueue(() => this.answerArrival(id, d, entry));
    }
  }

  /** Sends the current key to a device that arrived in the SFU's list, if its user is joined to the room or let in from the lobby. */
  private async answerArrival(id: string, device: DeviceRef, entry: { sent: boolean }): Promise<void> {
    if (this.arrivals.get(id) !== entry || this.others().has(id) || this.sharedWith.has(id)) return;
    // (A user let in from the lobby, confirmed by this device's homeserver, is only invited yet.)
    if (!this.admitted.has(device.userId) && !(await this.o.members.joinedToRoom!(device.userId))) {
      this.arrivals.delete(id);
      this.forgetUnanswered(id);
      return void this.log.warn("a device in the call's media belongs to a user not joined to the room", { device: id });
    }
    if (this.arrivals.get(id) !== entry) return;
    const sent = await this.answerEarly([device], "media key sent to a device at its arrival in the call", true);
    if (sent.length) entry.sent = true;
  }

  private async rotate(reason: RotationEvent["reason"], useNow: boolean): Promise<void> {
    const index = this.current ? (this.current.index + 1) % 256 : 0;
    const key = this.o.random();
    this.current = { index, key, createdAt: this.o.now() };
    this.o.sink.setOwnKey(index, key, useNow);
    const targets = this.targets();
    this.sharedWith = targets;
    this.useHeldKeys();
    if (useNow) this.currentInUse();
    else {
      // Switch even if sending failed: after a leave the old key must go out of use.
      this.o.timers.clearTimeout(this.useTimer);
      // Bigger calls take longer to receive a key (one Olm message per device, per sender):
      // wait at least 100 ms per device (the key benchmark's hold time grows about that fast).
      this.useTimer = this.o.timers.setTimeout(() => {
        if (this.stopped || this.current?.index !== index) return;
        this.o.sink.useOwnKey(index);
        this.currentInUse();
      }, Math.max(this.o.useDelayMs, 100 * targets.size));
    }
    this.log.info("new media key", { index, reason, devices: targets.size });
    this.undelivered.clear();
    if (targets.size) await this.deliver([...targets.values()], index, key);
    this.onRotated?.({ index, sentTo: targets.size, reason });
  }

  /** Sends the key at `index`; devices it could not reach get it again later while they are members. */
  private async deliver(devices: DeviceRef[], index: number, key: Uint8Array): Promise<void> {
    // A send that fails outright reached nobody: every device gets the key again later (a thrown
    // send used to end here, with the devices counted as holding the key for good).
    const missed =
      (await this.o.transport.send(devices, keyContent(this.o.roomId, this.o.self, index, key, this.o.now())).catch((err: unknown) => {
        this.log.warn("sending a media key failed; trying again later", { err: String(err), devices: devices.length });
        return devices;
      })) ?? [];
    for (const d of devices) this.undelivered.delete(deviceKey(d));
    for (const d of missed) this.undelivered.set(deviceKey(d), d);
    if (devices.length > missed.length) markStep("key-out");
    if (!missed.length) {
      this.retryDelay = 0;
      return;
    }
    this.retryDelay = Math.min(this.retryDelay ? this.retryDelay * 2 : this.o.retryMs, 10_000);
    this.o.timers.clearTimeout(this.retryTimer);
    this.retryTimer = this.o.timers.setTimeout(() => this.enqueue(() => this.retry()), this.retryDelay);
  }

  /**
   * The crypto learned these users' devices anew: a device of theirs the key did not reach (then
   * unknown to the crypto: a knocker's device whose keys went up after its user was first looked
   * up) is sent it again now rather than at the next retry or at its membership. Members get the
   * key in use; a device answered early, the key it was answered with if that is still the one in
   * use (else its membership brings the current one).
   */
  private onDevicesUpdated(userIds: string[]): void {
    const users = new Set(userIds);
    if (![...this.undelivered.values()].some((d) => users.has(d.userId))) return;
    this.enqueue(async () => {
      const c = this.current;
      if (this.stopped || !c) return;
      const members = this.targets();
      const to = [...this.undelivered]
        .filter(([k, d]) => users.has(d.userId) && (members.has(k) || this.prejoined.get(k)?.index === c.index))
        .map(([, d]) => d);
      if (!to.length) return;
      this.log.info("media key sent again to devices now known", { devices: to.length, index: c.index });
      await this.deliver(to, c.index, c.key);
    });
  }

  /**
   * Devices the key did not reach get it again: members, and devices answered early with this
   * very key (let in from the lobby, announced, arrived) within the pre-join's `validMs`. A
   * device let in whose Olm session could not be made at once (its one-time keys not up yet when
   * claimed) otherwise waited for its join, or for its keys to change, for any key at all.
   */
  private async retry(): Promise<void> {
    const members = this.targets();
    const c = this.current;
    const early = (k: string) => {
      const p = this.prejoined.get(k);
      return !!c && p?.index === c.index && this.o.now() - p.at < this.prejoinLimits.validMs;
    };
    const targets = [...this.undelivered].filter(([k]) => members.has(k) || early(k)).map(([, d]) => d);
    this.undelivered.clear();
    if (targets.length && c) await this.deliver(targets, c.index, c.key);
  }

  private onKeys(from: KeySender, content: unknown): void {
    const parsed = parseKeyContent(content, this.o.roomId);
    if (typeof parsed === "string") return void this.log.debug("ignored a key message", { from: from.userId, why: parsed });
    const problem = senderProblem(from, parsed.claimedDevice);
    if (problem) return void this.log.warn("ignored a media key", { from: from.userId, why: problem });
    const id = participantId(from.userId, from.deviceId!);
    const member = this.others().has(id);
    const inCall = member || this.publishing().has(id);
    this.log.info("media key received", { from: id, index: parsed.index, member, inCall });
    markStep("key-in");
    if (!member && inCall) this.enqueue(() => this.shareWithKeySender(id, { userId: from.userId, deviceId: from.deviceId! }));
    if (inCall) return this.use(id, [parsed]);
    // Not in the call (yet): hold the key until its membership or its media reaches us.
    this.held.add(id, [parsed]);
    // A key is a sign its sender is in the call: look at the members again (a change we were
    // not told about, e.g. a lazily loaded member, releases the key and shares ours).
    this.enqueue(() => this.onMembers());
  }

  /** A publisher whose membership we have not seen sent us its key: it gets ours if its user is
   *  joined to the room or let in from the lobby (else it could be anyone the hosting server lists). */
  private async shareWithKeySender(id: string, device: DeviceRef): Promise<void> {
    const joined = this.o.members.joinedToRoom;
    if (!joined || this.sharedWith.has(id) || this.others().has(id) || !this.publishing().has(id)) return;
    // (A user let in from the lobby, confirmed by this device's homeserver, is only invited yet.)
    if (!this.admitted.has(device.userId) && !(await joined(device.userId))) {
      return void this.log.warn("a publisher's key came from a user not joined to the room", { from: id });
    }
    if (this.stopped || this.sharedWith.has(id) || !this.publishing().has(id)) return;
    this.keySenders.set(id, device);
    if (!this.current) return;
    const c = this.current;
    this.sharedWith.set(id, device);
    this.heldBy(c.index, [device]);
    this.log.info("media key shared with a publisher whose call membership has not reached us", { to: id, index: c.index });
    await this.deliver([device], c.index, c.key);
  }

  private use(id: string, keys: { index: number; key: Uint8Array }[]): void {
    for (const k of keys) this.o.sink.setKey(id, k.index, k.key);
    this.applied.set(id, [...(this.applied.get(id) ?? []), ...keys.map((k) => ({ index: k.index, key: k.key }))].slice(-MAX_KEYS_PER_SENDER));
  }

  /** The SFU's list changed: use the keys of new publishers; forget those of publishers that
   * went and were never members (a member's leave is `onMembers`' to handle, with a rotation). */
  private onRoster(): void {
    const members = this.others();
    const publishing = this.publishing();
    // A key sender that stopped publishing has left the call: rotate as for a member's leave.
    if ([...this.keySenders.keys()].some((id) => !publishing.has(id))) this.enqueue(() => this.onMembers());
    for (const [id, keys] of this.applied) {
      if (members.has(id) || publishing.has(id) || this.sharedWith.has(id)) continue;
      this.o.sink.forget(id);
      this.held.add(id, keys);
      this.applied.delete(id);
    }
    this.useHeldKeys();
    this.answerArrivals();
  }

  /** Uses the held keys of every device that is in the call now. */
  private useHeldKeys(): void {
    for (const id of this.held.senders()) {
      if (this.inCall(id)) this.use(id, this.held.take(id));
    }
  }
}

/**
 * Provisioned mode: keys come from the bot the room names only; each is used for sending after
 * `useDelayMs`. The key is the call's (not one device's), so what matters is the Olm-authenticated
 * user; where the transport also knows the device (not the widget API), the claim must match it.
 */
export class ProvisionedKeys {
  private readonly log = getLogger("e2ee");
  private readonly timers: Timers;
  private readonly useDelayMs: number;
  private latest: number | null = null;
  private off: (() => void) | null = null;
  private useTimer: unknown;
  private stopped = false;

  private readonly opts: { roomId: string; bot: string; transport: KeyTransport; sink: KeySink };

  constructor(opts: { roomId: string; bot: string; transport: KeyTransport; sink: KeySink; timers?: Timers; useDelayMs?: number }) {
    this.opts = opts;
    this.timers = opts.timers ?? realTimers;
    this.useDelayMs = opts.useDelayMs ?? 1000;
  }

  start(): void {
    this.off = this.opts.transport.onKeys((from, content) => {
      if (this.stopped) return; // whether or not the transport's unsubscribe took effect
      if (from.userId !== this.opts.bot) return void this.log.warn("ignored a key not from the bot in a provisioned call", { from: from.userId });
      const parsed = parseKeyContent(content, this.opts.roomId);
      if (typeof parsed === "string") return void this.log.debug("ignored a key message", { why: parsed });
      const problem = from.deviceId === null ? null : senderProblem(from, parsed.claimedDevice);
      if (problem) return void this.log.warn("ignored a media key", { from: from.userId, why: problem });
      const first = this.latest === null;
      this.latest = parsed.index;
      this.opts.sink.setCallKey(parsed.index, parsed.key, first);
      if (first) return;
      this.timers.clearTimeout(this.useTimer);
      this.useTimer = this.timers.setTimeout(() => {
        if (this.latest === parsed.index) this.opts.sink.useOwnKey(parsed.index);
      }, this.useDelayMs);
    });
  }

  stop(): void {
    this.stopped = true;
    this.timers.clearTimeout(this.useTimer);
    this.off?.();
  }
}
