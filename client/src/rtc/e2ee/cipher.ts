// The frame cipher of one call, as the E2EE worker runs it: this device's sending key ring and
// IV sequence, a key ring per remote participant ("<user id>|<device id>"), and which receiver
// carries whose media. Encodes and decodes encoded frames (RTCEncodedAudioFrame/VideoFrame, or
// anything with `data`), reporting per participant whether its frames decrypt. No worker or DOM
// globals here: worker.ts wires it to messages and transforms, unit tests drive it directly.
//
// A frame that cannot be encrypted (no key yet) or decrypted is dropped: clear media never leaves
// this device and undecryptable bytes never reach a decoder.
import { clearBytesForCodec, clearPrefixLength, decryptFrame, encryptFrame, isVp8KeyFrame, type DecryptResult } from "./frameCrypto.ts";
import { IvSequence, KeyRing } from "./keyRing.ts";

export type KeyMode = "participant" | "provisioned";
export type DecryptState = "ok" | "no-key" | "bad-tag" | "too-short";
export type MediaKind = "audio" | "video";

export interface CipherStatus {
  participant: string;
  state: DecryptState;
  keyIndex?: number;
}

/** What the cipher needs of an encoded frame. */
export interface EncodedFrameLike {
  data: ArrayBuffer;
  type?: string;
  getMetadata?(): { mimeType?: string };
}

export interface FrameCipherOptions {
  /** This device: "<user id>|<device id>". */
  self: string;
  mode: KeyMode;
  onStatus?: (status: CipherStatus) => void;
  now?: () => number;
  /** A failure is reported once a participant's frames have failed this long without a good one. */
  failureHoldMs?: number;
}

export function participantId(userId: string, deviceId: string): string {
  return `${userId}|${deviceId}`;
}

function codecOf(frame: EncodedFrameLike, kind: MediaKind): string {
  const mime = frame.getMetadata?.().mimeType;
  return mime ? mime : kind === "video" ? "vp8" : "opus";
}

interface Health {
  state: DecryptState | undefined;
  lastOk: number;
  /** When the current run of failed frames began. */
  failingSince: number | undefined;
}

/**
 * Video frames a receiver keeps while their sender's key is on its way (from the last key frame
 * on, at most this many): decrypted and passed on once it is (`releaseFor`, as the key is set), so
 * the picture starts at the key's arrival instead of at the next key frame the sender is asked for
 * (a round trip to its encoder), or at the next frame (60-80 ms on a loaded machine).
 */
export const MAX_HELD_FRAMES = 45;

/** Frame counts (no key material): what was encrypted, decrypted and dropped, for diagnostics and tests. */
export interface CipherStats {
  encrypted: number;
  decrypted: number;
  /** Of the decrypted: frames held for a missing key and passed on once it came. */
  released: number;
  /** Keys derived by ratcheting a sender's key (a join) that its frames then decrypted with. */
  ratcheted: number;
  /** Dropped by the sender: no key to send with yet. */
  unsent: number;
  /** Dropped by a receiver, by reason. */
  failed: Record<DecryptState | "unbound", number>;
}

export class FrameCipher {
  readonly stats: CipherStats = { encrypted: 0, decrypted: 0, released: 0, ratcheted: 0, unsent: 0, failed: { ok: 0, "no-key": 0, "bad-tag": 0, "too-short": 0, unbound: 0 } };
  readonly self: string;
  readonly mode: KeyMode;
  readonly #own: KeyRing;
  readonly #iv = new IvSequence();
  readonly #rings = new Map<string, KeyRing>();
  /** Provisioned mode: the call keys by index, applied to every participant's ring. */
  readonly #callKeys = new Map<number, Uint8Array>();
  readonly #receivers = new Map<string, string>();
  readonly #health = new Map<string, Health>();
  /** By receiver: video frames waiting for their sender's key, a key frame first. */
  readonly #held = new Map<string, EncodedFrameLike[]>();
  /** By video receiver: its transform's way to pass frames on in turn with its own frames. */
  readonly #outlets = new Map<string, (work: () => Promise<EncodedFrameLike[]>) => Promise<void>>();
  readonly #onStatus: (status: CipherStatus) => void;
  readonly #now: () => number;
  readonly #hold: number;

  constructor(opts: FrameCipherOptions) {
    this.self = opts.self;
    this.mode = opts.mode;
    this.#own = new KeyRing(opts.mode === "provisioned" ? opts.self : undefined);
    this.#onStatus = opts.onStatus ?? (() => undefined);
    this.#now = opts.now ?? (() => Date.now());
    this.#hold = opts.failureHoldMs ?? 1000;
  }

  /** Participant mode: a remote participant's media key at `index`. */
  async setKey(participant: string, index: number, raw: Uint8Array): Promise<void> {
    await this.#ring(participant).set(index, raw);
  }

  /**
   * Participant mode: this device's key at `index`; `use` makes it the one frames are sent with.
   * True when it replaced another key in use (a switch at once: a ratchet for joiners).
   */
  async setOwnKey(index: number, raw: Uint8Array, use: boolean): Promise<boolean> {
    await this.#own.set(index, raw);
    if (!use) return false;
    const switched = this.#own.current !== undefined && this.#own.current !== index;
    this.#own.setCurrent(index);
    return switched;
  }

  /** Starts sending with the own key at `index` (set before). */
  useOwnKey(index: number): void {
    this.#own.setCurrent(index);
  }

  get ownKeyIndex(): number | undefined {
    return this.#own.current;
  }

  /** Provisioned mode: the call key at `index`, for every sender (each with its own derived key). */
  async setCallKey(index: number, raw: Uint8Array, use: boolean): Promise<void> {
    this.#callKeys.set(index, new Uint8Array(raw));
    await Promise.all([this.#own.set(index, raw), ...[...this.#rings.values()].map((r) => r.set(index, raw))]);
    if (use) this.#own.setCurrent(index);
  }

  /** Drops a participant's keys (it left): its frames no longer decrypt. */
  forget(participant: string): void {
    for (const [receiverId, p] of this.#receivers) if (p === participant) this.#held.delete(receiverId);
    this.#rings.delete(participant);
    this.#health.delete(participant);
  }

  /** The receiver `receiverId` now carries `participant`'s media (Janus reuses m-lines). */
  bindReceiver(receiverId: string, participant: string): void {
    if (this.#receivers.get(receiverId) !== participant) this.#held.delete(receiverId);
    this.#receivers.set(receiverId, participant);
    this.#ring(participant);
  }

  /** Whose media the receiver `receiverId` carries. */
  participantOf(receiverId: string): string | undefined {
    return this.#receivers.get(receiverId);
  }

  /** Encrypts a frame in place; false (drop it) when there is no key to send with yet. */
  async encrypt(frame: EncodedFrameLike, kind: MediaKind): Promise<boolean> {
    const current = this.#own.currentKey;
    if (!current) {
      this.stats.unsent++;
      return false;
    }
    const data = new Uint8Array(frame.data);
    const isKey = kind === "video" ? (frame.type ? frame.type === "key" : isVp8KeyFrame(data)) : false;
    const clearBytes = Math.min(clearPrefixLength(kind, codecOf(frame, kind), isKey), data.length);
    const out = await encryptFrame(data, { key: current.key, keyIndex: current.index, clearBytes, iv: this.#iv.next() });
    frame.data = out.buffer as ArrayBuffer;
    this.stats.encrypted++;
    return true;
  }

  /** Decrypts a frame in place; false (drop it) when it does not decrypt. */
  async decrypt(receiverId: string, frame: EncodedFrameLike, kind: MediaKind): Promise<boolean> {
    return (await this.#decrypt(receiverId, frame, kind)) === "ok";
  }

  /** Decrypts in place, counting and reporting; what happened. */
  async #decrypt(receiverId: string, frame: EncodedFrameLike, kind: MediaKind): Promise<DecryptState | "unbound"> {
    const participant = this.#receivers.get(receiverId);
    if (participant === undefined) {
      this.stats.failed.unbound++;
      return "unbound";
    }
    const result = await this.#open(participant, frame, kind);
    this.#report(participant, result);
    if (!result.ok) {
      this.stats.failed[result.reason]++;
      return result.reason;
    }
    frame.data = result.data.buffer as ArrayBuffer;
    this.stats.decrypted++;
    return "ok";
  }

  encryptTransform(kind: MediaKind): TransformStream<EncodedFrameLike, EncodedFrameLike> {
    return new TransformStream({
      transform: async (frame, controller) => {
        if (await this.encrypt(frame, kind)) controller.enqueue(frame);
      },
    });
  }

  /**
   * A receiver's next frame: what to pass on, in order. A video frame that arrives before its
   * sender's key is held (see MAX_HELD_FRAMES); the first frame after the key came brings the
   * held ones out before itself.
   */
  async receive(receiverId: string, frame: EncodedFrameLike, kind: MediaKind): Promise<EncodedFrameLike[]> {
    const out = kind === "video" ? await this.#release(receiverId) : [];
    const state = await this.#decrypt(receiverId, frame, kind);
    if (state === "ok") {
      out.push(frame);
    } else if (kind === "video" && state === "no-key") {
      const held = this.#held.get(receiverId);
      if (frame.type ? frame.type === "key" : isVp8KeyFrame(new Uint8Array(frame.data))) this.#held.set(receiverId, [frame]);
      else if (held && held.length < MAX_HELD_FRAMES) held.push(frame);
      else this.#held.delete(receiverId); // too long a wait: the next key frame starts again
    } else {
      this.#held.delete(receiverId);
    }
    return out;
  }

  /** The held frames of a receiver, decrypted, once their key is here (none while it is not). */
  async #release(receiverId: string): Promise<EncodedFrameLike[]> {
    const held = this.#held.get(receiverId);
    const participant = this.#receivers.get(receiverId);
    if (!held || participant === undefined) return [];
    const out: EncodedFrameLike[] = [];
    for (const [i, frame] of held.entries()) {
      const result = await this.#open(participant, frame, "video");
      if (!result.ok) {
        if (i === 0 && result.reason === "no-key") return []; // still waiting
        continue;
      }
      frame.data = result.data.buffer as ArrayBuffer;
      this.stats.decrypted++;
      this.stats.released++;
      this.#report(participant, result);
      out.push(frame);
    }
    this.#held.delete(receiverId);
    return out;
  }

  decryptTransform(receiverId: string, kind: MediaKind): TransformStream<EncodedFrameLike, EncodedFrameLike> {
    let out: TransformStreamDefaultController<EncodedFrameLike> | undefined;
    // One frame, or one release of held frames, at a time, in order.
    let turn: Promise<void> = Promise.resolve();
    const inTurn = (work: () => Promise<EncodedFrameLike[]>): Promise<void> =>
      (turn = turn.then(async () => {
        for (const f of await work()) out?.enqueue(f);
      }));
    const outlet = (work: () => Promise<EncodedFrameLike[]>) => inTurn(work).catch(() => undefined);
    if (kind === "video") this.#outlets.set(receiverId, outlet);
    return new TransformStream({
      start: (controller) => {
        out = controller;
      },
      transform: (frame) => inTurn(() => this.receive(receiverId, frame, kind)),
      flush: () => {
        if (this.#outlets.get(receiverId) === outlet) this.#outlets.delete(receiverId);
      },
    });
  }

  /**
   * The key of `participant` (null: anyone's, a call key) was just set: the frames its video
   * receivers hold are passed on now, not with their next frame. How many were.
   */
  async releaseFor(participant: string | null): Promise<number> {
    let released = 0;
    for (const [receiverId, p] of this.#receivers) {
      const outlet = this.#outlets.get(receiverId);
      if ((participant !== null && p !== participant) || !outlet || !this.#held.has(receiverId)) continue;
      await outlet(async () => {
        const frames = await this.#release(receiverId);
        released += frames.length;
        return frames;
      });
    }
    return released;
  }

  /**
   * Decrypts a frame's bytes (not in place). Participant mode: a frame under an index whose key is
   * not here yet may be under the sender's next ratchet step (a join): its key is derived from the
   * one before and tried; a wrong guess (the sender made a fresh key) counts as no key.
   */
  async #open(participant: string, frame: EncodedFrameLike, kind: MediaKind): Promise<DecryptResult> {
    const ring = this.#ring(participant);
    const data = new Uint8Array(frame.data);
    const clear = clearBytesForCodec(kind, codecOf(frame, kind));
    let result = await decryptFrame(data, ring.lookup, clear);
    if (this.mode !== "participant" || result.keyIndex === undefined) return result;
    const index = result.keyIndex;
    if (!result.ok && result.reason === "no-key" && (await ring.ratchetTo(index))) result = await decryptFrame(data, ring.lookup, clear);
    if (!ring.isDerived(index)) return result;
    // A derived key: right once a frame decrypts with it; wrong (the sender made a fresh key that
    // is still on its way) if the first frame does not.
    if (result.ok) {
      ring.confirmDerived(index);
      this.stats.ratcheted++;
    } else if (result.reason === "bad-tag") {
      ring.refuteDerived(index);
      return { ok: false, reason: "no-key", keyIndex: index };
    }
    return result;
  }

  #ring(participant: string): KeyRing {
    let ring = this.#rings.get(participant);
    if (!ring) {
      ring = new KeyRing(this.mode === "provisioned" ? participant : undefined);
      this.#rings.set(participant, ring);
      const r = ring;
      for (const [index, raw] of this.#callKeys) void r.set(index, raw).catch(() => undefined);
    }
    return ring;
  }

  #report(participant: string, result: DecryptResult): void {
    const now = this.#now();
    const h = this.#health.get(participant) ?? { state: undefined, lastOk: -Infinity, failingSince: undefined };
    this.#health.set(participant, h);
    if (result.ok) {
      h.lastOk = now;
      h.failingSince = undefined;
      if (h.state !== "ok") {
        h.state = "ok";
        this.#onStatus({ participant, state: "ok", keyIndex: result.keyIndex });
      }
      return;
    }
    // Frames fail for a moment around a key change (the key is on its way): a participant counts
    // as failing only once its frames have failed for `failureHoldMs` without a good one.
    h.failingSince ??= now;
    if (now - h.failingSince < this.#hold || now - h.lastOk < this.#hold || h.state === result.reason) return;
    h.state = result.reason;
    this.#onStatus({ participant, state: result.reason, ...(result.keyIndex === undefined ? {} : { keyIndex: result.keyIndex }) });
  }
}
