// Frame encryption for Parley's end-to-end encrypted media (insertable streams). Pure functions over
// bytes and WebCrypto (`globalThis.crypto.subtle`): usable in the page, in an RTCRtpScriptTransform
// worker and in Node 24.
//
// ── Wire format (version 1) ─────────────────────────────────────────────────────────────────────
//
// Key derivation. Every participant (or, in provisioned mode, the call) has a 32-byte random media
// key, distributed over Olm. The AES key that protects frames is
//     frameKey = HKDF-SHA-256(ikm = mediaKey, salt = FRAME_KEY_SALT, info = FRAME_KEY_INFO, L = 16)
// used as AES-GCM-128, where
//     FRAME_KEY_SALT = the 16 ASCII bytes "ParleyFrameKey01"  (50 61 72 6c 65 79 46 72 61 6d 65 4b 65 79 30 31)
//     FRAME_KEY_INFO = the 19 ASCII bytes "parley frame key v1"
// The derived key is non-extractable.
//
// Provisioned mode (one call key from the bot, shared by every sender): each sender's frame key is
// derived with its own identity appended to the info,
//     info = FRAME_KEY_INFO || 0x00 || UTF-8("<user id>|<device id>")
// so two senders never share an AES key and a collision of their random IV salts cannot reuse an IV.
//
// Encrypted frame:
//     clear prefix  ||  AES-GCM(frameKey, IV, AAD = clear prefix)(rest of the frame) incl. 16-byte tag
//                   ||  IV (12 bytes)  ||  key index (1 byte, 0..255)
// The last 13 bytes are the trailer. The clear prefix is left readable so the SFU and the receiving
// depacketizer/decoder still see the codec header; it is authenticated as additional data, so
// changing any byte of it makes decryption fail. Its length depends only on the codec and on bytes
// inside the prefix itself, so a receiver can recompute it (see `clearPrefixLength`):
//     VP8 key frame   10 bytes  (3-byte frame tag + 7-byte key frame start code and dimensions)
//     VP8 delta frame  3 bytes  (frame tag)
//     Opus             1 byte   (TOC byte)
//     anything else    0 bytes  (the whole payload is encrypted)
// A VP8 frame is a key frame when bit 0 of its first byte is 0 (RFC 6386 §9.1); that bit is in the
// clear (and authenticated) prefix, so a receiver reads it from the encrypted frame as well.
//
// IV. 12 bytes = 4-byte per-sender random salt || 8-byte big-endian frame counter, the counter
// incremented for every frame (`IvSequence` in keyRing.ts). An IV must never repeat under one key:
// keep one IvSequence for everything a sender encrypts under a key (all of its tracks), never
// reset its counter while that key can still be in use, and never let the counter wrap (the
// sequence throws first). A fresh sequence (e.g. a restarted worker) starts from a new random salt.
//
// Ratchet (participant mode). When someone joins a call whose current key is older than the
// grace period, a sender does not make a fresh key (which it could use only once everyone has it)
// but ratchets: the next media key is
//     mediaKey[i+1] = HKDF-SHA-256(ikm = mediaKey[i], salt = RATCHET_SALT, info = RATCHET_INFO, L = 32)
//     RATCHET_SALT = the 15 ASCII bytes "ParleyRatchet01", RATCHET_INFO = "parley media key ratchet v1"
// sent at index i+1 to the joiners only, and used at once: the members who hold key i derive it
// themselves when the first frame under i+1 arrives (keyRing.ts). The joiner cannot go back to key
// i, so it reads nothing sent before it joined. A leave still makes a fresh random key: a member
// who left could ratchet forward.
//
// Minimum length of a valid encrypted frame: clear prefix + 16 (tag) + 13 (trailer); an empty
// encrypted remainder is allowed, and an empty frame has no prefix (29 bytes: tag and trailer).

export const FRAME_KEY_SALT: Uint8Array<ArrayBuffer> = new TextEncoder().encode("ParleyFrameKey01");
export const FRAME_KEY_INFO: Uint8Array<ArrayBuffer> = new TextEncoder().encode("parley frame key v1");
/** Length of a participant's raw media key. */
export const RATCHET_SALT: Uint8Array<ArrayBuffer> = new TextEncoder().encode("ParleyRatchet01");
export const RATCHET_INFO: Uint8Array<ArrayBuffer> = new TextEncoder().encode("parley media key ratchet v1");
export const MEDIA_KEY_LENGTH = 32;
export const IV_LENGTH = 12;
export const TAG_LENGTH = 16;
/** IV plus the key index byte. */
export const TRAILER_LENGTH = IV_LENGTH + 1;
/** Key indexes are one byte. */
export const KEY_INDEX_COUNT = 256;

/** WebCrypto wants an ArrayBuffer-backed view; copy only when the view sits on something else. */
function bufferSource(view: Uint8Array): Uint8Array<ArrayBuffer> {
  return view.buffer instanceof ArrayBuffer
    ? (view as Uint8Array<ArrayBuffer>)
    : new Uint8Array(view);
}

/** The HKDF info for a media key: FRAME_KEY_INFO, plus `0x00 || context` when given (see the header). */
export function frameKeyInfo(context?: string): Uint8Array<ArrayBuffer> {
  if (context === undefined) return FRAME_KEY_INFO;
  const extra = new TextEncoder().encode(context);
  const info = new Uint8Array(FRAME_KEY_INFO.length + 1 + extra.length);
  info.set(FRAME_KEY_INFO, 0);
  info.set(extra, FRAME_KEY_INFO.length + 1);
  return info;
}

/**
 * HKDF-SHA-256 of a 32-byte media key to a non-extractable AES-GCM-128 key (see the header);
 * `context` (the sender's "<user id>|<device id>") only for a key shared by several senders.
 */
export async function deriveFrameKey(raw: Uint8Array, context?: string): Promise<CryptoKey> {
  if (raw.length !== MEDIA_KEY_LENGTH) {
    throw new RangeError(`media key must be ${MEDIA_KEY_LENGTH} bytes, got ${raw.length}`);
  }
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey("raw", bufferSource(raw), "HKDF", false, ["deriveKey"]);
  return subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: FRAME_KEY_SALT, info: frameKeyInfo(context) },
    ikm,
    { name: "AES-GCM", length: 128 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** The media key after `raw` in its sender's ratchet (see the header): one-way, 32 bytes. */
export async function ratchetMediaKey(raw: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  if (raw.length !== MEDIA_KEY_LENGTH) {
    throw new RangeError(`media key must be ${MEDIA_KEY_LENGTH} bytes, got ${raw.length}`);
  }
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey("raw", bufferSource(raw), "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: RATCHET_SALT, info: RATCHET_INFO }, ikm, MEDIA_KEY_LENGTH * 8);
  return new Uint8Array(bits);
}

/** VP8 payload header (RFC 6386 §9.1): bit 0 of the first byte is 0 on key frames. */
export function isVp8KeyFrame(data: Uint8Array): boolean {
  const first = data[0];
  return first !== undefined && (first & 0x01) === 0;
}

/** Bytes left in the clear (and authenticated) at the start of a frame; see the header. */
export function clearPrefixLength(
  kind: "audio" | "video",
  codec: "vp8" | "opus" | (string & {}),
  isKeyFrame: boolean,
): number {
  const c = codec.toLowerCase().replace(/^(audio|video)\//, "");
  if (kind === "video" && c === "vp8") return isKeyFrame ? 10 : 3;
  if (kind === "audio" && c === "opus") return 1;
  return 0;
}

/**
 * The receiver's `clearBytesFor` for one codec: computes the prefix length from the frame's own
 * (clear) bytes, for VP8 from the key-frame bit of the first byte. An empty frame has no prefix:
 * the sender keeps the shorter of the codec's prefix and the frame clear (cipher.ts), so an empty
 * Opus frame, which Chromium's encoder hands the transform now and then under DTX, goes out as its
 * tag and trailer alone (29 bytes).
 */
export function clearBytesForCodec(
  kind: "audio" | "video",
  codec: "vp8" | "opus" | (string & {}),
): (body: Uint8Array) => number {
  return (body) => (body.length === TAG_LENGTH ? 0 : clearPrefixLength(kind, codec, isVp8KeyFrame(body)));
}

export interface EncryptOptions {
  key: CryptoKey;
  /** 0..255, written to the trailer. */
  keyIndex: number;
  /** Clear prefix length, 0..frame.length (usually `clearPrefixLength(...)`). */
  clearBytes: number;
  /** 12 bytes, unique per frame under `key` (`IvSequence.next()`). */
  iv: Uint8Array;
}

/**
 * Encrypts one encoded frame into the wire format above. Throws a RangeError on invalid options
 * (a programming error, not bad input: the caller controls all of them) and propagates WebCrypto
 * failures (e.g. a key without "encrypt" usage).
 */
export async function encryptFrame(frame: Uint8Array, opts: EncryptOptions): Promise<Uint8Array> {
  const { key, keyIndex, clearBytes, iv } = opts;
  if (!Number.isInteger(keyIndex) || keyIndex < 0 || keyIndex >= KEY_INDEX_COUNT) {
    throw new RangeError(`key index must be an integer 0..255, got ${keyIndex}`);
  }
  if (!Number.isInteger(clearBytes) || clearBytes < 0 || clearBytes > frame.length) {
    throw new RangeError(`clear prefix ${clearBytes} does not fit a ${frame.length}-byte frame`);
  }
  if (iv.length !== IV_LENGTH) throw new RangeError(`IV must be ${IV_LENGTH} bytes, got ${iv.length}`);

  const ivCopy = new Uint8Array(iv); // the caller may reuse its buffer
  const prefix = frame.subarray(0, clearBytes);
  const ciphertext = await globalThis.crypto.subtle.encrypt(
    { name: "AES-GCM", iv: ivCopy, additionalData: bufferSource(prefix), tagLength: TAG_LENGTH * 8 },
    key,
    bufferSource(frame.subarray(clearBytes)),
  );
  const out = new Uint8Array(clearBytes + ciphertext.byteLength + TRAILER_LENGTH);
  out.set(prefix, 0);
  out.set(new Uint8Array(ciphertext), clearBytes);
  out.set(ivCopy, clearBytes + ciphertext.byteLength);
  out[out.length - 1] = keyIndex;
  return out;
}

export type DecryptResult =
  | { ok: true; data: Uint8Array; keyIndex: number }
  | { ok: false; reason: "no-key" | "bad-tag" | "too-short"; keyIndex?: number };

/** Looks a frame key up by the index in a frame's trailer (`KeyRing.lookup`). */
export type KeyLookup = (keyIndex: number) => CryptoKey | undefined;
/**
 * Computes the clear prefix length of an encrypted frame from its own bytes. Gets the frame
 * without its trailer (the clear prefix is at its start, possibly shorter than expected on a
 * damaged frame) and must not keep the view. See `clearBytesForCodec`.
 */
export type ClearBytesFor = (body: Uint8Array) => number;

/**
 * Decrypts one frame of the wire format above. Never throws: a frame too short for its trailer,
 * prefix and tag (or whose prefix length `clearBytesFor` cannot determine: it threw or returned
 * something that is not a non-negative integer) is "too-short"; an unknown key index is "no-key";
 * a wrong key, altered prefix, IV or ciphertext is "bad-tag". `keyIndex` is reported whenever the
 * trailer could be read.
 */
export async function decryptFrame(
  frame: Uint8Array,
  lookup: KeyLookup,
  clearBytesFor: ClearBytesFor,
): Promise<DecryptResult> {
  if (frame.length < TRAILER_LENGTH + TAG_LENGTH) return { ok: false, reason: "too-short" };
  const keyIndex = frame[frame.length - 1] ?? 0;
  const body = frame.subarray(0, frame.length - TRAILER_LENGTH);

  let clearBytes: number;
  try {
    clearBytes = clearBytesFor(body);
  } catch {
    return { ok: false, reason: "too-short", keyIndex };
  }
  if (!Number.isInteger(clearBytes) || clearBytes < 0 || body.length < clearBytes + TAG_LENGTH) {
    return { ok: false, reason: "too-short", keyIndex };
  }

  let key: CryptoKey | undefined;
  try {
    key = lookup(keyIndex);
  } catch {
    key = undefined;
  }
  if (key === undefined) return { ok: false, reason: "no-key", keyIndex };

  const prefix = body.subarray(0, clearBytes);
  const iv = frame.slice(frame.length - TRAILER_LENGTH, frame.length - 1);
  let plaintext: ArrayBuffer;
  try {
    plaintext = await globalThis.crypto.subtle.decrypt(
      { name: "AES-GCM", iv, additionalData: bufferSource(prefix), tagLength: TAG_LENGTH * 8 },
      key,
      bufferSource(body.subarray(clearBytes)),
    );
  } catch {
    return { ok: false, reason: "bad-tag", keyIndex };
  }
  const data = new Uint8Array(clearBytes + plaintext.byteLength);
  data.set(prefix, 0);
  data.set(new Uint8Array(plaintext), clearBytes);
  return { ok: true, data, keyIndex };
}
