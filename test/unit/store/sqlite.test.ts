// The SQLite backend's own behaviour: its file, modes and PRAGMA user_version. What every store
// does is tested against both backends in test/integration/store.test.ts.
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { forPostgres } from "../../../appservice/src/store/postgres.ts";
import { listMigrations, SqliteStore } from "../../../appservice/src/store/sqlite.ts";

let dir: string;
let file: string;
const opened: SqliteStore[] = [];

function open(): SqliteStore {
  const store = new SqliteStore(file);
  opened.push(store);
  return store;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-store-"));
  file = path.join(dir, "nested", "parley.db");
});

afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("migrations", () => {
  it("are numbered from 001 without gaps", async () => {
    const migrations = listMigrations();
    expect(migrations.length).toBeGreaterThanOrEqual(1);
    expect(migrations.map((m) => m.version)).toEqual(migrations.map((_, i) => i + 1));
    expect(migrations[0]!.name).toBe("001-initial.sql");
  });

  it("PostgreSQL takes the same list, with 64-bit integers and without SQLite's WITHOUT ROWID", async () => {
    const pg = listMigrations().map(forPostgres);
    expect(pg.map((m) => m.name)).toEqual(listMigrations().map((m) => m.name));
    const all = pg.map((m) => m.sql).join("\n");
    expect(all).not.toMatch(/\bINTEGER\b|WITHOUT ROWID/);
    expect(all).toMatch(/expires_at BIGINT NOT NULL\n\);/);
  });

  it("create the schema and set user_version to the number of migrations", async () => {
    const store = open();
    expect(store.schemaVersion).toBe(listMigrations().length);
    const tables = (store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[])
      .map((r) => r.name);
    expect(tables).toEqual(["appservice_txn", "audit_event", "call", "call_moderation", "call_seat", "erasure", "guest", "meeting_alias", "openid_token_used", "processed_event"]);
    expect(store.db.pragma("journal_mode", { simple: true })).toBe("wal");
  });

  it("are a no-op when the same file is opened again", async () => {
    await open().close();
    const again = open();
    expect(again.schemaVersion).toBe(listMigrations().length);
  });

  it("refuse a database written by a newer Parley", async () => {
    await open().close();
    const raw = new Database(file);
    raw.pragma("user_version = 99");
    raw.close();
    expect(() => open()).toThrow(`store schema version 99 is newer than this Parley knows (${listMigrations().length}); refusing to run`);
  });

  it("create the folder of the database file", async () => {
    const store = open();
    expect(store.db.name).toBe(file);
  });
});

describe("file modes", () => {
  it("the database and its -wal and -shm files are 0600 even under a permissive umask", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "parley-mode-"));
    const old = process.umask(0o000);
    try {
      const file = path.join(dir, "modes.db");
      const store = new SqliteStore(file);
      store.db.prepare("SELECT 1").get();
      for (const f of [file, `${file}-wal`, `${file}-shm`]) expect((statSync(f).mode & 0o777).toString(8), f).toBe("600");
      await store.close();
    } finally {
      process.umask(old);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
