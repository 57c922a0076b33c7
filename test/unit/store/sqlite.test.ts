import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
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
  vi.useRealTimers();
  for (const s of opened.splice(0)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (over: Partial<{ callId: string; roomId: string; startedAt: number; widgetId: string | null }> = {}) => ({
  callId: "c1",
  roomId: "!r:example.org",
  origin: "command" as const,
  startedBy: "@alice:example.org",
  startedAt: 1000,
  startEventId: "$start" as string | null,
  widgetId: null,
  ...over,
});

describe("migrations", () => {
  it("are numbered from 001 without gaps", async () => {
    const migrations = listMigrations();
    expect(migrations.length).toBeGreaterThanOrEqual(1);
    expect(migrations.map((m) => m.version)).toEqual(migrations.map((_, i) => i + 1));
    expect(migrations[0]!.name).toBe("001-initial.sql");
  });

  it("create the schema and set user_version to the number of migrations", async () => {
    const store = open();
    expect(store.schemaVersion).toBe(listMigrations().length);
    const tables = (store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[])
      .map((r) => r.name);
    expect(tables).toEqual(["appservice_txn", "audit_event", "call", "erasure", "guest", "meeting_alias", "openid_token_used", "processed_event"]);
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

describe("transactions and events", () => {
  it("remembers done txn ids and processed events", async () => {
    const store = open();
    expect(await store.isTxnDone("t1")).toBe(false);
    await store.markTxnDone("t1");
    await store.markTxnDone("t1");
    expect(await store.isTxnDone("t1")).toBe(true);
    expect(await store.isTxnDone("t2")).toBe(false);
    expect(await store.isEventProcessed("$e1")).toBe(false);
    await store.markEventProcessed("$e1");
    expect(await store.isEventProcessed("$e1")).toBe(true);
    expect(await store.isEventProcessed("$e2")).toBe(false);
  });

  it("prune removes only rows older than the cut-off", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const store = open();
    vi.setSystemTime(1_000);
    await store.markTxnDone("old-txn");
    await store.markEventProcessed("$old");
    vi.setSystemTime(5_000);
    await store.markTxnDone("new-txn");
    await store.markEventProcessed("$new");
    await store.prune(5_000);
    expect(await store.isTxnDone("old-txn")).toBe(false);
    expect(await store.isEventProcessed("$old")).toBe(false);
    expect(await store.isTxnDone("new-txn")).toBe(true);
    expect(await store.isEventProcessed("$new")).toBe(true);
  });

  it("prune leaves aliases and calls alone", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(1_000);
    const store = open();
    await store.claimAlias("#meet-a:example.org");
    await store.startCall(call({ startedAt: 1 }));
    await store.prune(1_000_000);
    expect((await store.getAlias("#meet-a:example.org"))?.state).toBe("creating");
    expect((await store.activeCall("!r:example.org"))?.callId).toBe("c1");
  });
});

describe("aliases", () => {
  const alias = "#meet-team:example.org";

  it("claimAlias is exclusive until released", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(1234);
    const store = open();
    expect(await store.claimAlias(alias)).toBe(true);
    expect(await store.claimAlias(alias)).toBe(false);
    expect(await store.getAlias(alias)).toEqual({ alias, roomId: null, state: "creating", createdAt: 1234 });
    await store.releaseAlias(alias);
    expect(await store.getAlias(alias)).toBeUndefined();
    expect(await store.claimAlias(alias)).toBe(true);
  });

  it("claimAlias is exclusive across two connections to one file", async () => {
    const a = open();
    const b = open();
    expect(await a.claimAlias(alias)).toBe(true);
    expect(await b.claimAlias(alias)).toBe(false);
  });

  it("a completed alias stays claimed and is not released", async () => {
    const store = open();
    await store.claimAlias(alias);
    await store.completeAlias(alias, "!room:example.org");
    expect(await store.claimAlias(alias)).toBe(false);
    await store.releaseAlias(alias);
    expect(await store.getAlias(alias)).toMatchObject({ alias, roomId: "!room:example.org", state: "ready" });
  });

  it("claimAliasWithin counts claims and ready aliases against the cap, in one transaction", async () => {
    const a = open();
    const b = open();
    expect(await a.claimAliasWithin("#meet-a:example.org", 2)).toBe("claimed");
    expect(await b.claimAliasWithin("#meet-a:example.org", 2)).toBe("exists");
    await a.completeAlias("#meet-a:example.org", "!a:example.org");
    expect(await b.claimAliasWithin("#meet-b:example.org", 2)).toBe("claimed");
    expect(await a.claimAliasWithin("#meet-c:example.org", 2)).toBe("full");
    expect(await a.aliasCount()).toBe(2);
    expect(await a.getAlias("#meet-c:example.org")).toBeUndefined();
  });

  it("recordAlias adopts a room: inserts it, or completes a claim", async () => {
    const store = open();
    await store.recordAlias("#meet-a:example.org", "!a:example.org");
    await store.claimAlias("#meet-b:example.org");
    await store.recordAlias("#meet-b:example.org", "!b:example.org");
    expect((await store.listAliases()).map((r) => [r.alias, r.roomId, r.state])).toEqual([
      ["#meet-a:example.org", "!a:example.org", "ready"],
      ["#meet-b:example.org", "!b:example.org", "ready"],
    ]);
    expect((await store.aliasOfRoom("!a:example.org"))?.alias).toBe("#meet-a:example.org");
  });

  it("lists aliases by state", async () => {
    const store = open();
    await store.claimAlias("#meet-a:example.org");
    await store.claimAlias("#meet-b:example.org");
    await store.completeAlias("#meet-b:example.org", "!b:example.org");
    expect((await store.listAliases("creating")).map((a) => a.alias)).toEqual(["#meet-a:example.org"]);
    expect((await store.listAliases("ready")).map((a) => [a.alias, a.roomId])).toEqual([["#meet-b:example.org", "!b:example.org"]]);
    expect((await store.listAliases()).map((a) => a.alias).sort()).toEqual(["#meet-a:example.org", "#meet-b:example.org"]);
  });
});

describe("calls", () => {
  it("startCall records an active call and refuses a second one in the same room", async () => {
    const store = open();
    expect(await store.startCall(call({ widgetId: "parley-c1" }))).toEqual({
      ...call({ widgetId: "parley-c1" }),
      endedAt: null,
      endedBy: null,
      endEventId: null,
      sfu: null,
    });
    expect(await store.startCall(call({ callId: "c2" }))).toBeUndefined();
    expect((await store.activeCall("!r:example.org"))?.callId).toBe("c1");
    expect((await store.startCall(call({ callId: "c3", roomId: "!other:example.org", startedAt: 500 })))?.callId).toBe("c3");
    expect((await store.activeCalls()).map((c) => c.callId)).toEqual(["c3", "c1"]); // by start time
  });

  it("endCall ends the active call, after which a new one may start", async () => {
    const store = open();
    await store.startCall(call({ widgetId: "w1" }));
    expect(await store.endCall("!r:example.org", { by: "@bob:example.org", at: 2000, eventId: "$end" })).toEqual({
      ...call({ widgetId: "w1" }),
      endedAt: 2000,
      endedBy: "@bob:example.org",
      endEventId: "$end",
      sfu: null,
    });
    expect(await store.activeCall("!r:example.org")).toBeUndefined();
    expect(await store.lastCall("!r:example.org")).toMatchObject({ callId: "c1", endEventId: "$end" });
    expect(await store.endCall("!r:example.org", { by: "@bob:example.org", at: 3000, eventId: "$end2" })).toBeUndefined();
    expect((await store.startCall(call({ callId: "c2", startedAt: 4000 })))?.callId).toBe("c2");
    expect((await store.activeCall("!r:example.org"))?.callId).toBe("c2");
    expect((await store.lastCall("!r:example.org"))?.callId).toBe("c2");
  });

  it("refuses a duplicate call id", async () => {
    const store = open();
    await store.startCall(call());
    await store.endCall("!r:example.org", { by: "@a:example.org", at: 5, eventId: null });
    expect(await store.startCall(call())).toBeUndefined();
  });
});

describe("persistence", () => {
  it("keeps everything across close and reopen", async () => {
    const first = open();
    await first.markTxnDone("t1");
    await first.markEventProcessed("$e1");
    await first.claimAlias("#meet-a:example.org");
    await first.completeAlias("#meet-a:example.org", "!a:example.org");
    await first.claimAlias("#meet-b:example.org");
    await first.startCall(call({ widgetId: "w" }));
    await first.close();
    await first.close(); // closing twice is harmless

    const second = open();
    expect(await second.isTxnDone("t1")).toBe(true);
    expect(await second.isEventProcessed("$e1")).toBe(true);
    expect(await second.getAlias("#meet-a:example.org")).toMatchObject({ roomId: "!a:example.org", state: "ready" });
    expect(await second.getAlias("#meet-b:example.org")).toMatchObject({ roomId: null, state: "creating" });
    expect(await second.activeCall("!r:example.org")).toEqual({
      ...call({ widgetId: "w" }),
      endedAt: null,
      endedBy: null,
      endEventId: null,
      sfu: null,
    });
  });
});

const H1 = "a".repeat(64);
const H2 = "b".repeat(64);

describe("used OpenID tokens", () => {
  it("a hash is claimed once until it expires", async () => {
    const store = open();
    expect(await store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    expect(await store.claimOpenIdToken(H1, 3000, 1500)).toBe(false);
    expect(await store.claimOpenIdToken(H2, 3000, 1500)).toBe(true);
    // At its expiry the row is pruned, and the hash may be claimed again.
    expect(await store.claimOpenIdToken(H1, 5000, 2000)).toBe(true);
    expect(await store.openIdTokenCount()).toBe(2);
  });

  it("a released claim may be claimed again", async () => {
    const store = open();
    expect(await store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    await store.releaseOpenIdToken(H1);
    expect(await store.openIdTokenCount()).toBe(0);
    expect(await store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
  });

  it("each claim prunes every expired row, so the table holds only live tokens", async () => {
    const store = open();
    for (let i = 0; i < 100; i++) expect(await store.claimOpenIdToken(`h${i}`, 1000 + i, 0)).toBe(true);
    expect(await store.openIdTokenCount()).toBe(100);
    expect(await store.claimOpenIdToken("late", 10_000, 1050)).toBe(true);
    expect(await store.openIdTokenCount()).toBe(50); // h51..h99 and "late"
  });

  it("a claim is exclusive across two connections to one file", async () => {
    const a = open();
    const b = open();
    expect(await a.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    expect(await b.claimOpenIdToken(H1, 2000, 1000)).toBe(false);
  });

  it("survives a restart", async () => {
    await open().claimOpenIdToken(H1, 2000, 1000);
    for (const s of opened.splice(0)) await s.close();
    expect(await open().claimOpenIdToken(H1, 2000, 1500)).toBe(false);
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
