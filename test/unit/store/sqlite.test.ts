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

afterEach(() => {
  vi.useRealTimers();
  for (const s of opened.splice(0)) s.close();
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
  it("are numbered from 001 without gaps", () => {
    const migrations = listMigrations();
    expect(migrations.length).toBeGreaterThanOrEqual(1);
    expect(migrations.map((m) => m.version)).toEqual(migrations.map((_, i) => i + 1));
    expect(migrations[0]!.name).toBe("001-initial.sql");
  });

  it("create the schema and set user_version to the number of migrations", () => {
    const store = open();
    expect(store.schemaVersion).toBe(listMigrations().length);
    const tables = (store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[])
      .map((r) => r.name);
    expect(tables).toEqual(["appservice_txn", "call", "guest", "meeting_alias", "openid_token_used", "processed_event"]);
    expect(store.db.pragma("journal_mode", { simple: true })).toBe("wal");
  });

  it("are a no-op when the same file is opened again", () => {
    open().close();
    const again = open();
    expect(again.schemaVersion).toBe(listMigrations().length);
  });

  it("refuse a database written by a newer Parley", () => {
    open().close();
    const raw = new Database(file);
    raw.pragma("user_version = 99");
    raw.close();
    expect(() => open()).toThrow(`store schema version 99 is newer than this Parley knows (${listMigrations().length}); refusing to run`);
  });

  it("create the folder of the database file", () => {
    const store = open();
    expect(store.db.name).toBe(file);
  });
});

describe("transactions and events", () => {
  it("remembers done txn ids and processed events", () => {
    const store = open();
    expect(store.isTxnDone("t1")).toBe(false);
    store.markTxnDone("t1");
    store.markTxnDone("t1");
    expect(store.isTxnDone("t1")).toBe(true);
    expect(store.isTxnDone("t2")).toBe(false);
    expect(store.isEventProcessed("$e1")).toBe(false);
    store.markEventProcessed("$e1");
    expect(store.isEventProcessed("$e1")).toBe(true);
    expect(store.isEventProcessed("$e2")).toBe(false);
  });

  it("prune removes only rows older than the cut-off", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const store = open();
    vi.setSystemTime(1_000);
    store.markTxnDone("old-txn");
    store.markEventProcessed("$old");
    vi.setSystemTime(5_000);
    store.markTxnDone("new-txn");
    store.markEventProcessed("$new");
    store.prune(5_000);
    expect(store.isTxnDone("old-txn")).toBe(false);
    expect(store.isEventProcessed("$old")).toBe(false);
    expect(store.isTxnDone("new-txn")).toBe(true);
    expect(store.isEventProcessed("$new")).toBe(true);
  });

  it("prune leaves aliases and calls alone", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(1_000);
    const store = open();
    store.claimAlias("#meet-a:example.org");
    store.startCall(call({ startedAt: 1 }));
    store.prune(1_000_000);
    expect(store.getAlias("#meet-a:example.org")?.state).toBe("creating");
    expect(store.activeCall("!r:example.org")?.callId).toBe("c1");
  });
});

describe("aliases", () => {
  const alias = "#meet-team:example.org";

  it("claimAlias is exclusive until released", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(1234);
    const store = open();
    expect(store.claimAlias(alias)).toBe(true);
    expect(store.claimAlias(alias)).toBe(false);
    expect(store.getAlias(alias)).toEqual({ alias, roomId: null, state: "creating", createdAt: 1234 });
    store.releaseAlias(alias);
    expect(store.getAlias(alias)).toBeUndefined();
    expect(store.claimAlias(alias)).toBe(true);
  });

  it("claimAlias is exclusive across two connections to one file", () => {
    const a = open();
    const b = open();
    expect(a.claimAlias(alias)).toBe(true);
    expect(b.claimAlias(alias)).toBe(false);
  });

  it("a completed alias stays claimed and is not released", () => {
    const store = open();
    store.claimAlias(alias);
    store.completeAlias(alias, "!room:example.org");
    expect(store.claimAlias(alias)).toBe(false);
    store.releaseAlias(alias);
    expect(store.getAlias(alias)).toMatchObject({ alias, roomId: "!room:example.org", state: "ready" });
  });

  it("claimAliasWithin counts claims and ready aliases against the cap, in one transaction", () => {
    const a = open();
    const b = open();
    expect(a.claimAliasWithin("#meet-a:example.org", 2)).toBe("claimed");
    expect(b.claimAliasWithin("#meet-a:example.org", 2)).toBe("exists");
    a.completeAlias("#meet-a:example.org", "!a:example.org");
    expect(b.claimAliasWithin("#meet-b:example.org", 2)).toBe("claimed");
    expect(a.claimAliasWithin("#meet-c:example.org", 2)).toBe("full");
    expect(a.aliasCount()).toBe(2);
    expect(a.getAlias("#meet-c:example.org")).toBeUndefined();
  });

  it("recordAlias adopts a room: inserts it, or completes a claim", () => {
    const store = open();
    store.recordAlias("#meet-a:example.org", "!a:example.org");
    store.claimAlias("#meet-b:example.org");
    store.recordAlias("#meet-b:example.org", "!b:example.org");
    expect(store.listAliases().map((r) => [r.alias, r.roomId, r.state])).toEqual([
      ["#meet-a:example.org", "!a:example.org", "ready"],
      ["#meet-b:example.org", "!b:example.org", "ready"],
    ]);
    expect(store.aliasOfRoom("!a:example.org")?.alias).toBe("#meet-a:example.org");
  });

  it("lists aliases by state", () => {
    const store = open();
    store.claimAlias("#meet-a:example.org");
    store.claimAlias("#meet-b:example.org");
    store.completeAlias("#meet-b:example.org", "!b:example.org");
    expect(store.listAliases("creating").map((a) => a.alias)).toEqual(["#meet-a:example.org"]);
    expect(store.listAliases("ready").map((a) => [a.alias, a.roomId])).toEqual([["#meet-b:example.org", "!b:example.org"]]);
    expect(store.listAliases().map((a) => a.alias).sort()).toEqual(["#meet-a:example.org", "#meet-b:example.org"]);
  });
});

describe("calls", () => {
  it("startCall records an active call and refuses a second one in the same room", () => {
    const store = open();
    expect(store.startCall(call({ widgetId: "parley-c1" }))).toEqual({
      ...call({ widgetId: "parley-c1" }),
      endedAt: null,
      endedBy: null,
      endEventId: null,
      sfu: null,
    });
    expect(store.startCall(call({ callId: "c2" }))).toBeUndefined();
    expect(store.activeCall("!r:example.org")?.callId).toBe("c1");
    expect(store.startCall(call({ callId: "c3", roomId: "!other:example.org", startedAt: 500 }))?.callId).toBe("c3");
    expect(store.activeCalls().map((c) => c.callId)).toEqual(["c3", "c1"]); // by start time
  });

  it("endCall ends the active call, after which a new one may start", () => {
    const store = open();
    store.startCall(call({ widgetId: "w1" }));
    expect(store.endCall("!r:example.org", { by: "@bob:example.org", at: 2000, eventId: "$end" })).toEqual({
      ...call({ widgetId: "w1" }),
      endedAt: 2000,
      endedBy: "@bob:example.org",
      endEventId: "$end",
      sfu: null,
    });
    expect(store.activeCall("!r:example.org")).toBeUndefined();
    expect(store.lastCall("!r:example.org")).toMatchObject({ callId: "c1", endEventId: "$end" });
    expect(store.endCall("!r:example.org", { by: "@bob:example.org", at: 3000, eventId: "$end2" })).toBeUndefined();
    expect(store.startCall(call({ callId: "c2", startedAt: 4000 }))?.callId).toBe("c2");
    expect(store.activeCall("!r:example.org")?.callId).toBe("c2");
    expect(store.lastCall("!r:example.org")?.callId).toBe("c2");
  });

  it("refuses a duplicate call id", () => {
    const store = open();
    store.startCall(call());
    store.endCall("!r:example.org", { by: "@a:example.org", at: 5, eventId: null });
    expect(store.startCall(call())).toBeUndefined();
  });
});

describe("persistence", () => {
  it("keeps everything across close and reopen", () => {
    const first = open();
    first.markTxnDone("t1");
    first.markEventProcessed("$e1");
    first.claimAlias("#meet-a:example.org");
    first.completeAlias("#meet-a:example.org", "!a:example.org");
    first.claimAlias("#meet-b:example.org");
    first.startCall(call({ widgetId: "w" }));
    first.close();
    first.close(); // closing twice is harmless

    const second = open();
    expect(second.isTxnDone("t1")).toBe(true);
    expect(second.isEventProcessed("$e1")).toBe(true);
    expect(second.getAlias("#meet-a:example.org")).toMatchObject({ roomId: "!a:example.org", state: "ready" });
    expect(second.getAlias("#meet-b:example.org")).toMatchObject({ roomId: null, state: "creating" });
    expect(second.activeCall("!r:example.org")).toEqual({
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
  it("a hash is claimed once until it expires", () => {
    const store = open();
    expect(store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    expect(store.claimOpenIdToken(H1, 3000, 1500)).toBe(false);
    expect(store.claimOpenIdToken(H2, 3000, 1500)).toBe(true);
    // At its expiry the row is pruned, and the hash may be claimed again.
    expect(store.claimOpenIdToken(H1, 5000, 2000)).toBe(true);
    expect(store.openIdTokenCount()).toBe(2);
  });

  it("a released claim may be claimed again", () => {
    const store = open();
    expect(store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    store.releaseOpenIdToken(H1);
    expect(store.openIdTokenCount()).toBe(0);
    expect(store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
  });

  it("each claim prunes every expired row, so the table holds only live tokens", () => {
    const store = open();
    for (let i = 0; i < 100; i++) expect(store.claimOpenIdToken(`h${i}`, 1000 + i, 0)).toBe(true);
    expect(store.openIdTokenCount()).toBe(100);
    expect(store.claimOpenIdToken("late", 10_000, 1050)).toBe(true);
    expect(store.openIdTokenCount()).toBe(50); // h51..h99 and "late"
  });

  it("a claim is exclusive across two connections to one file", () => {
    const a = open();
    const b = open();
    expect(a.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    expect(b.claimOpenIdToken(H1, 2000, 1000)).toBe(false);
  });

  it("survives a restart", () => {
    open().claimOpenIdToken(H1, 2000, 1000);
    opened.splice(0).forEach((s) => s.close());
    expect(open().claimOpenIdToken(H1, 2000, 1500)).toBe(false);
  });
});

describe("file modes", () => {
  it("the database and its -wal and -shm files are 0600 even under a permissive umask", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "parley-mode-"));
    const old = process.umask(0o000);
    try {
      const file = path.join(dir, "modes.db");
      const store = new SqliteStore(file);
      store.db.prepare("SELECT 1").get();
      for (const f of [file, `${file}-wal`, `${file}-shm`]) expect((statSync(f).mode & 0o777).toString(8), f).toBe("600");
      store.close();
    } finally {
      process.umask(old);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
