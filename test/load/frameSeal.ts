// Parley's E2EE frame format (client/src/rtc/e2ee/frameCrypto.ts), made with node:crypto's
// synchronous AES-GCM: the same bytes as the browser's encryptFrame (a unit test decrypts ours
// with frameCrypto's decryptFrame), without an await per frame, so a synthetic participant can
// seal every frame it sends. Clear prefix (VP8 10 bytes on key frames / 3 on delta, Opus 1) as
// associated data, then ciphertext, tag, IV (4-byte random salt + 8-byte counter), key index.
import { createCipheriv, hkdfSync, randomBytes } from "node:crypto";
import { clearPrefixLength, FRAME_KEY_INFO, FRAME_KEY_SALT, MEDIA_KEY_LENGTH } from "../../client/src/rtc/e2ee/frameCrypto.ts";

export class FrameSealer {
  private readonly key: Buffer;
  private readonly salt = randomBytes(4);
  private counter = 0n;
  readonly keyIndex: number;

  /** `mediaKey`: the 32-byte media key the test knows (participant mode: this sender's own). */
  constructor(mediaKey: Uint8Array, keyIndex = 0) {
    if (mediaKey.length !== MEDIA_KEY_LENGTH) throw new RangeError(`media key must be ${MEDIA_KEY_LENGTH} bytes`);
    this.key = Buffer.from(hkdfSync("sha256", mediaKey, FRAME_KEY_SALT, FRAME_KEY_INFO, 16));
    this.keyIndex = keyIndex;
  }

  /** One frame in the wire format; `key` only matters for VP8 (the clear prefix length). */
  seal(frame: Buffer, kind: "audio" | "video", key = false): Buffer {
    const clear = clearPrefixLength(kind, kind === "video" ? "vp8" : "opus", key);
    const iv = Buffer.allocUnsafe(12);
    this.salt.copy(iv, 0);
    iv.writeBigUInt64BE(this.counter++, 4);
    const cipher = createCipheriv("aes-128-gcm", this.key, iv);
    cipher.setAAD(frame.subarray(0, clear));
    const body = cipher.update(frame.subarray(clear));
    cipher.final();
    return Buffer.concat([frame.subarray(0, clear), body, cipher.getAuthTag(), iv, Buffer.from([this.keyIndex])]);
  }
}
