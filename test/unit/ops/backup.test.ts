// Backup and restore on real SQLite files and a real sealed file, without a running Parley.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { deriveKey, seal } from "../../../appservice/src/crypto/sealedFile.ts";
import { backup, restore, type BackupPaths } from "../../../appservice/src/ops/backup.ts";

let dir: string;
const key = "k".repeat(40);

function deployment(name: string): BackupPaths {
  return { store: path.join(dir, name, "parley.db"), crypto: { file: path.join(dir, name, "parley-crypto.bin"), storeKey: key } };
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-backup-"));
  const live = deployment("live");
  mkdirSync(path.dirname(live.store), { recursive: true });
  const db = new Database(live.store);
  db.pragma("journal_mode = WAL");
  db.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept')");
  db.pragma("user_version = 3");
  db.close();
  writeFileSync(live.crypto!.file, seal(Buffer.from("device"), deriveKey(key, "olm-snapshot")));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));


describe("backup and restore", () => {
  it("round-trips the store and the crypto file into a fresh directory", async () => {
    const to = path.join(dir, "backup");
    expect(await backup(deployment("live"), to)).toEqual({ files: ["parley.db", "parley-crypto.bin"], schemaVersion: 3 });
    await expect(backup(deployment("live"), to)).rejects.toThrow("not empty");

    const fresh = deployment("fresh");
    expect(restore(fresh, to)).toEqual({ files: ["parley.db", "parley-crypto.bin"], schemaVersion: 3, skipped: [] });
    expect(readdirSync(path.dirname(fresh.store)).sort()).toEqual(["parley-crypto.bin", "parley.db"]);
    const db = new Database(fresh.store, { readonly: true });
    expect(db.prepare("SELECT v FROM t").all()).toEqual([{ v: "kept" }]);
    db.close();
    expect(readFileSync(fresh.crypto!.file)).toEqual(readFileSync(deployment("live").crypto!.file));
    expect(() => restore(fresh, to)).toThrow("refusing to overwrite");
  });

  it("refuses a crypto file the config's key does not open, at backup and at restore", async () => {
    const to = path.join(dir, "backup");
    await expect(backup({ ...deployment("live"), crypto: { ...deployment("live").crypto!, storeKey: "x".repeat(40) } }, to)).rejects.toThrow("does not open with the configured key");
    await backup(deployment("live"), path.join(dir, "ok"));
    const other = { ...deployment("other"), crypto: { ...deployment("other").crypto!, storeKey: "y".repeat(40) } };
    expect(() => restore(other, path.join(dir, "ok"))).toThrow("does not open with the configured key");
    expect(existsSync(other.store)).toBe(false);
  });

  it("without a crypto section, restores the store and says what it left", async () => {
    await backup(deployment("live"), path.join(dir, "b"));
    const res = restore({ store: path.join(dir, "plain", "parley.db") }, path.join(dir, "b"));
    expect(res.skipped).toEqual(["parley-crypto.bin (the config has no crypto section)"]);
  });
});
