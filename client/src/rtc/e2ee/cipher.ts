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

/** Frame counts (no key material): what was encrypted, decrypted and dropped, for diagnostics and tests. */
export interface CipherStats {
  encrypted: number;
  decrypted: number;
  /** Dropped by the sender: no key to send with yet. */
  unsent: number;
  /** Dropped by a receiver, by reason. */
  failed: Record<DecryptState | "unbound", number>;
}

export class FrameCipher {
  readonly stats: CipherStats = { encrypted: 0, decrypted: 0, unsent: 0, failed: { ok: 0, "no-key": 0, "bad-tag": 0, "too-short": 0, unbound: 0 } };
  readonly self: string;
  readonly mode: KeyMode;
  readonly #own: KeyRing;
  readonly #iv = new IvSequence();
  readonly #rings = new Map<string, KeyRing>();
  /** Provisioned mode: the call keys by index, applied to every participant's ring. */
  readonly #callKeys = new Map<number, Uint8Array>();
  readonly #receivers = new Map<string, string>();
  readonly #health = new Map<string, Health>();
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

  /** Participant mode: this device's key at `index`; `use` makes it the one frames are sent with. */
  async setOwnKey(index: number, raw: Uint8Array, use: boolean): Promise<void> {
    await this.#own.set(index, raw);
    if (use) this.#own.setCurrent(index);
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
    this.#rings.delete(participant);
    this.#health.delete(participant);
  }

  /** The receiver `receiverId` now carries `participant`'s media (Janus reuses m-lines). */
  bindReceiver(receiverId: string, participant: string): void {
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
    const participant = this.#receivers.get(receiverId);
    if (participant === undefined) {
      this.stats.failed.unbound++;
      return false;
    }
    const ring = this.#ring(participant);
    const result = await decryptFrame(new Uint8Array(frame.data), ring.lookup, clearBytesForCodec(kind, codecOf(frame, kind)));
    this.#report(participant, result);
    if (!result.ok) {
      this.stats.failed[result.reason]++;
      return false;
    }
    frame.data = result.data.buffer as ArrayBuffer;
    this.stats.decrypted++;
    return true;
  }

  encryptTransform(kind: MediaKind): TransformStream<EncodedFrameLike, EncodedFrameLike> {
    return new TransformStream({
      transform: async (frame, controller) => {
        if (await this.encrypt(frame, kind)) controller.enqueue(frame);
      },
    });
  }

  decryptTransform(receiverId: string, kind: MediaKind): TransformStream<EncodedFrameLike, EncodedFrameLike> {
    return new TransformStream({
      transform: async (frame, controller) => {
        if (await this.decrypt(receiverId, frame, kind)) controller.enqueue(frame);
      },
    });
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
