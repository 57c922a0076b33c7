// One file holding a sealed (AES-256-GCM) byte string, replaced atomically: a reader sees the
// old content or the new one, never a mix, even across a crash or power loss (tmp file in the
// same folder, fsync, rename, fsync of the folder). The key comes from a config secret through
// HKDF; neither the secret nor a derived key is ever logged.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";

const MAGIC = Buffer.from("PARLEYv1", "ascii");
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = MAGIC.length + IV_BYTES + TAG_BYTES;

/** The file exists but does not open with this key (wrong key, truncated or tampered). */
export class SealedFileError extends Error {
  constructor(file: string, why: string) {
    super(`${file}: ${why}`);
    this.name = "SealedFileError";
  }
}

/** A 32-byte key for one purpose, derived from the config secret (different `purpose`, unrelated keys). */
export function deriveKey(secret: string, purpose: string): Buffer {
  return Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), Buffer.from("parley"), Buffer.from(purpose, "utf8"), 32));
}

export function seal(plain: Uint8Array, key: Buffer): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(MAGIC);
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([MAGIC, iv, cipher.getAuthTag(), body]);
}

/** Opens what `seal` made; throws SealedFileError (naming `label`) if it does not authenticate. */
export function unseal(sealed: Buffer, key: Buffer, label = "sealed data"): Buffer {
  if (sealed.length < HEADER_BYTES || !sealed.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new SealedFileError(label, "not a Parley sealed file (bad header)");
  }
  const iv = sealed.subarray(MAGIC.length, MAGIC.length + IV_BYTES);
  const tag = sealed.subarray(MAGIC.length + IV_BYTES, HEADER_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAAD(MAGIC);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(sealed.subarray(HEADER_BYTES)), decipher.final()]);
  } catch {
    throw new SealedFileError(label, "does not open with the configured key (wrong key, or the file was damaged)");
  }
}

/** Writes `data` to `file` atomically and durably, mode 0600 whatever the umask. */
export async function writeFileAtomic(file: string, data: Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const handle = await fs.open(tmp, "wx", 0o600);
  try {
    await handle.chmod(0o600); // the umask may have taken bits away; the owner must read and write
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  // The rename itself is durable only once the folder is.
  const dirHandle = await fs.open(dir, "r");
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

export class SealedFile {
  readonly file: string;
  private readonly key: Buffer;

  constructor(file: string, key: Buffer) {
    this.file = file;
    this.key = key;
  }

  /** The plain content, or undefined when the file does not exist. */
  async read(): Promise<Buffer | undefined> {
    let sealed: Buffer;
    try {
      sealed = await fs.readFile(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return unseal(sealed, this.key, this.file);
  }

  async write(plain: Uint8Array): Promise<void> {
    await writeFileAtomic(this.file, seal(plain, this.key));
  }
}
