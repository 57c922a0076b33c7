// Per-participant frame keys by one-byte index, and the per-sender IV sequence. See the wire
// format at the top of frameCrypto.ts.
import { IV_LENGTH, KEY_INDEX_COUNT, MEDIA_KEY_LENGTH, deriveFrameKey, ratchetMediaKey } from "./frameCrypto.ts";

/** How many ratchet steps a receiver derives to reach a frame's key index (joins in a row). */
export const RATCHET_WINDOW = 8;

/** A fresh random 32-byte media key. */
export function generateMediaKey(): Uint8Array<ArrayBuffer> {
  return globalThis.crypto.getRandomValues(new Uint8Array(MEDIA_KEY_LENGTH));
}

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= KEY_INDEX_COUNT) {
    throw new RangeError(`key index must be an integer 0..255, got ${index}`);
  }
}

/**
 * The frame keys of one participant (one sender), by key index 0..255. Every key that is still
 * held decrypts, so frames under an older index that arrive after a rotation (or before the
 * receiver switched) still play; setting a key at an index replaces whatever was there (after 256
 * rotations the index is reused for a different key, and frames under the old key then fail).
 *
 * `current` is the index the owner sends with. `rotate` stores a new key at the next index without
 * making it current, so the sender can distribute it first and switch with `setCurrent` when it
 * decides the receivers have it.
 */
export class KeyRing {
  readonly #keys = new Map<number, CryptoKey>();
  /** Per index, a counter of `set` calls, so a slow derivation never overwrites a later one. */
  readonly #generation = new Map<number, number>();
  #current: number | undefined;
  /** The most recently assigned index (by `set` or `rotate`), from which `rotate` counts. */
  #last: number | undefined;
  /** Appended to the HKDF info (provisioned mode: the sender's identity); see frameCrypto.ts. */
  readonly #context: string | undefined;

  /** The media keys as received (participant mode), to ratchet from. */
  readonly #raw = new Map<number, Uint8Array>();
  /** Indexes whose key came from the sender (or is on its way): never replaced by a derived one. */
  readonly #given = new Set<number>();
  /** Indexes holding a key this ring derived by ratcheting (a guess until a frame decrypts with it). */
  readonly #derived = new Set<number>();
  /** Indexes where a ratcheted key turned out wrong (the sender made a fresh key): not tried again. */
  readonly #refused = new Set<number>();

  constructor(context?: string) {
    this.#context = context;
  }

  /**
   * Makes sure a key is held at `index`: if not, ratchets forward from the nearest key received
   * at most RATCHET_WINDOW indexes before it. False when there is nothing to ratchet from (or it
   * was tried and was wrong). The derived keys are guesses: `refuteDerived` drops a wrong one.
   */
  async ratchetTo(index: number): Promise<boolean> {
    checkIndex(index);
    if (this.#keys.has(index)) return true;
    if (this.#given.has(index) || this.#refused.has(index)) return false;
    for (let back = 1; back <= RATCHET_WINDOW; back++) {
      const from = (index - back + KEY_INDEX_COUNT) % KEY_INDEX_COUNT;
      const base = this.#raw.get(from);
      if (!base) continue;
      let raw = base;
      for (let step = 1; step <= back; step++) {
        const at = (from + step) % KEY_INDEX_COUNT;
        raw = await ratchetMediaKey(raw);
        if (this.#given.has(at) || this.#refused.has(at)) return this.#keys.has(index);
        if (this.#keys.has(at)) continue;
        const key = await deriveFrameKey(raw, this.#context);
        // A key from the sender may have come meanwhile: it wins.
        if (this.#given.has(at) || this.#keys.has(at)) continue;
        this.#keys.set(at, key);
        this.#raw.set(at, raw);
        this.#derived.add(at);
      }
      return this.#keys.has(index);
    }
    return false;
  }

  /** Whether the key at `index` was derived by ratcheting (not received). */
  isDerived(index: number): boolean {
    return this.#derived.has(index);
  }

  /** A frame decrypted with the ratcheted key at `index`: it is the sender's. */
  confirmDerived(index: number): void {
    this.#derived.delete(index);
  }

  /** A frame under `index` failed with the ratcheted key: drop it, and do not ratchet there again. */
  refuteDerived(index: number): void {
    if (!this.#derived.delete(index)) return;
    this.#keys.delete(index);
    this.#raw.delete(index);
    this.#refused.add(index);
  }

  /** Derives and stores the frame key for `raw` (32 bytes) at `index`, replacing any held one. */
  async set(index: number, raw: Uint8Array): Promise<void> {
    checkIndex(index);
    if (raw.length !== MEDIA_KEY_LENGTH) {
      throw new RangeError(`media key must be ${MEDIA_KEY_LENGTH} bytes, got ${raw.length}`);
    }
    const generation = (this.#generation.get(index) ?? 0) + 1;
    this.#generation.set(index, generation);
    this.#last = index;
    this.#given.add(index);
    this.#derived.delete(index);
    this.#refused.delete(index);
    this.#raw.set(index, new Uint8Array(raw));
    // Keys ratcheted after this index came from whatever was here before: derive them again.
    for (let k = 1; k <= RATCHET_WINDOW; k++) {
      const after = (index + k) % KEY_INDEX_COUNT;
      this.#refused.delete(after);
      if (this.#derived.delete(after)) {
        this.#keys.delete(after);
        this.#raw.delete(after);
      }
    }
    let key: CryptoKey;
    try {
      key = await deriveFrameKey(raw, this.#context);
    } catch (e) {
      // The caller meant to replace the key here: never leave the old one in its place.
      if (this.#generation.get(index) === generation) {
        this.#keys.delete(index);
        this.#raw.delete(index);
      }
      throw e;
    }
    if (this.#generation.get(index) === generation) this.#keys.set(index, key);
  }

  /** The key at `index`, if held (and derived). */
  get(index: number): CryptoKey | undefined {
    return this.#keys.get(index);
  }

  /** `get` as a free function, for `decryptFrame`. */
  readonly lookup = (index: number): CryptoKey | undefined => this.#keys.get(index);

  has(index: number): boolean {
    return this.#keys.has(index);
  }

  /** Forgets the key at `index` (e.g. keys older than the grace period). */
  delete(index: number): void {
    checkIndex(index);
    this.#generation.set(index, (this.#generation.get(index) ?? 0) + 1);
    this.#keys.delete(index);
    this.#raw.delete(index);
    this.#given.delete(index);
    this.#derived.delete(index);
    if (this.#current === index) this.#current = undefined;
  }

  /** Forgets every key (e.g. the participant left). */
  clear(): void {
    for (const index of this.#keys.keys()) this.#generation.set(index, (this.#generation.get(index) ?? 0) + 1);
    this.#keys.clear();
    this.#raw.clear();
    this.#given.clear();
    this.#derived.clear();
    this.#refused.clear();
    this.#current = undefined;
    this.#last = undefined;
  }

  get size(): number {
    return this.#keys.size;
  }

  /** The index to send with, once one was chosen. */
  get current(): number | undefined {
    return this.#current;
  }

  /** The key and index to send with, if there is a current key. */
  get currentKey(): { key: CryptoKey; index: number } | undefined {
    if (this.#current === undefined) return undefined;
    const key = this.#keys.get(this.#current);
    return key === undefined ? undefined : { key, index: this.#current };
  }

  /** Makes the key at `index` the one to send with; it must be held. */
  setCurrent(index: number): void {
    checkIndex(index);
    if (!this.#keys.has(index)) throw new Error(`no key at index ${index}`);
    this.#current = index;
  }

  /**
   * The index `rotate` will use next: one after the last assigned index (or 0), mod 256.
   */
  get nextIndex(): number {
    return this.#last === undefined ? 0 : (this.#last + 1) % KEY_INDEX_COUNT;
  }

  /**
   * Stores `raw` at the next index (mod 256, replacing what was there) and returns that index. It
   * does not become current: call `setCurrent` when the receivers have it.
   */
  async rotate(raw: Uint8Array): Promise<number> {
    const index = this.nextIndex;
    await this.set(index, raw);
    return index;
  }
}

/** Largest value of the 8-byte counter. */
const MAX_COUNTER = (1n << 64n) - 1n;

/**
 * Per-sender IVs: 4-byte random salt || 8-byte big-endian counter, incremented per frame. Use one
 * sequence for everything a sender encrypts under one key (all of its tracks) and never recreate
 * it for a key still in use except with a new random salt. `next` throws once the counter is
 * exhausted instead of wrapping (never reached in practice: 2^64 frames).
 */
export class IvSequence {
  readonly salt: Uint8Array<ArrayBuffer>;
  #counter: bigint;

  /**
   * @param salt 4 bytes; random by default (a chosen salt is for tests).
   * @param start the first counter value (for tests of exhaustion), 0 by default.
   */
  constructor(salt?: Uint8Array, start: bigint = 0n) {
    if (salt !== undefined && salt.length !== 4) throw new RangeError(`IV salt must be 4 bytes, got ${salt.length}`);
    if (start < 0n || start > MAX_COUNTER) throw new RangeError("IV counter start out of range");
    this.salt = salt === undefined ? globalThis.crypto.getRandomValues(new Uint8Array(4)) : new Uint8Array(salt);
    this.#counter = start;
  }

  /** Frames still available before `next` throws. */
  get remaining(): bigint {
    return MAX_COUNTER + 1n - this.#counter;
  }

  /** The next IV (a new 12-byte array). */
  next(): Uint8Array<ArrayBuffer> {
    if (this.#counter > MAX_COUNTER) throw new RangeError("IV counter exhausted: rotate the key and start a new IvSequence");
    const iv = new Uint8Array(IV_LENGTH);
    iv.set(this.salt, 0);
    new DataView(iv.buffer).setBigUint64(4, this.#counter, false);
    this.#counter += 1n;
    return iv;
  }
}
