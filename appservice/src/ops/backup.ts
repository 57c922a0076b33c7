// `parley backup --to DIR` and `parley restore --from DIR`: the store (SQLite's online backup, so
// Parley may keep running) and the bot's sealed crypto file (its Olm device: device id and
// identity keys), with a manifest of checksums. The config is not copied: it holds the secrets,
// crypto.storeKey among them, without which the crypto file does not open; back it up apart.
// Only file paths come in, so the store's own code stays out of this.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { deriveKey, unseal } from "../crypto/sealedFile.ts";

export const STORE_FILE = "parley.db";
export const CRYPTO_FILE = "parley-crypto.bin";
const MANIFEST = "manifest.json";
/** The purpose the bot's Olm device derives its file key with (crypto/olmDevice.ts). */
const OLM_SNAPSHOT_PURPOSE = "olm-snapshot";

export interface BackupPaths {
  store: string;
  /** The bot's crypto file and its key (config.crypto), when the bot has a device. */
  crypto?: { file: string; storeKey: string } | undefined;
}

interface Manifest {
  format: 1;
  createdAt: string;
  schemaVersion: number;
  files: Record<string, { sha256: string; bytes: number }>;
}

export class BackupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BackupError";
  }
}

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

/** Fails unless the crypto file opens with the key: a backup or restore nobody can open is worse than none. */
export function checkSealed(data: Buffer, storeKey: string, label: string): void {
  try {
    unseal(data, deriveKey(storeKey, OLM_SNAPSHOT_PURPOSE), label);
  } catch (err) {
    throw new BackupError(`${(err as Error).message} (crypto.storeKey of this config)`);
  }
}

export async function backup(paths: BackupPaths, toDir: string): Promise<{ files: string[]; schemaVersion: number }> {
  if (!existsSync(paths.store)) throw new BackupError(`${paths.store}: no store to back up`);
  if (existsSync(toDir) && readdirSync(toDir).length) throw new BackupError(`${toDir} is not empty; back up into a new folder`);
  mkdirSync(toDir, { recursive: true, mode: 0o700 });
  const files: Manifest["files"] = {};
  const storeCopy = path.join(toDir, STORE_FILE);
  const db = new Database(paths.store, { fileMustExist: true });
  let schemaVersion: number;
  try {
    db.pragma("busy_timeout = 5000");
    schemaVersion = db.pragma("user_version", { simple: true }) as number;
    // The online backup API: a consistent copy while Parley writes.
    await db.backup(storeCopy);
  } finally {
    db.close();
  }
  const storeBytes = readFileSync(storeCopy);
  files[STORE_FILE] = { sha256: sha256(storeBytes), bytes: storeBytes.length };
  if (paths.crypto && existsSync(paths.crypto.file)) {
    // Written by rename (sealedFile.ts), so one read sees a whole file.
    const data = readFileSync(paths.crypto.file);
    checkSealed(data, paths.crypto.storeKey, paths.crypto.file);
    writeFileSync(path.join(toDir, CRYPTO_FILE), data, { mode: 0o600 });
    files[CRYPTO_FILE] = { sha256: sha256(data), bytes: data.length };
  }
  const manifest: Manifest = { format: 1, createdAt: new Date().toISOString(), schemaVersion, files };
  writeFileSync(path.join(toDir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
  return { files: Object.keys(files), schemaVersion };
}

function readManifest(fromDir: string): Manifest {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(path.join(fromDir, MANIFEST), "utf8")) as Manifest;
  } catch (err) {
    throw new BackupError(`${path.join(fromDir, MANIFEST)}: ${(err as Error).message}; not a Parley backup`);
  }
  if (manifest.format !== 1 || typeof manifest.files !== "object" || !manifest.files[STORE_FILE]) {
    throw new BackupError(`${fromDir}: not a Parley backup (unknown manifest format)`);
  }
  return manifest;
}

/** Copies `data` next to `target` and renames it into place: no half-restored file. */
function place(target: string, data: Uint8Array): void {
  mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
  const tmp = `${target}.restore-${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, target);
}

/**
 * Restores into the config's paths, which must not exist (Parley stopped, old files moved away):
 * restoring over a live store would lose writes without a word.
 */
export function restore(paths: BackupPaths, fromDir: string): { files: string[]; schemaVersion: number; skipped: string[] } {
  const manifest = readManifest(fromDir);
  const targets = [paths.store, `${paths.store}-wal`, `${paths.store}-shm`, ...(paths.crypto ? [paths.crypto.file] : [])];
  const present = targets.filter((f) => existsSync(f));
  if (present.length) throw new BackupError(`refusing to overwrite ${present.join(", ")}: stop Parley and move them away first`);
  const contents = new Map<string, Buffer>();
  for (const [name, { sha256: sum }] of Object.entries(manifest.files)) {
    const data = readFileSync(path.join(fromDir, name));
    if (sha256(data) !== sum) throw new BackupError(`${path.join(fromDir, name)}: checksum differs from the manifest; the backup is damaged`);
    contents.set(name, data);
  }
  const crypto = contents.get(CRYPTO_FILE);
  if (crypto && paths.crypto) checkSealed(crypto, paths.crypto.storeKey, path.join(fromDir, CRYPTO_FILE));

  const tmp = `${paths.store}.restore-${process.pid}.check`;
  mkdirSync(path.dirname(paths.store), { recursive: true, mode: 0o700 });
  writeFileSync(tmp, contents.get(STORE_FILE)!, { mode: 0o600 });
  try {
    // Read-write, so that closing removes the -wal and -shm files the check makes.
    const db = new Database(tmp, { fileMustExist: true });
    try {
      const result = db.pragma("integrity_check", { simple: true });
      if (result !== "ok") throw new BackupError(`${path.join(fromDir, STORE_FILE)}: integrity check failed: ${String(result)}`);
    } finally {
      db.close();
    }
    renameSync(tmp, paths.store);
  } finally {
    for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) rmSync(f, { force: true });
  }
  const files = [STORE_FILE];
  const skipped: string[] = [];
  if (crypto && paths.crypto) {
    place(paths.crypto.file, crypto);
    files.push(CRYPTO_FILE);
  } else if (crypto) {
    skipped.push(`${CRYPTO_FILE} (the config has no crypto section)`);
  }
  return { files, schemaVersion: manifest.schemaVersion, skipped };
}
