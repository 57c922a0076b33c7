// The store suite, run against both backends: SQLite (a file) and PostgreSQL (a real server, a
// throwaway cluster started for this file, a fresh database per test). `open()` gives another
// connection to the test's database, as a second Parley instance would have.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { forPostgres, PostgresStore } from "../../appservice/src/store/postgres.ts";
import { listMigrations } from "../../appservice/src/store/rows.ts";
import { SqliteStore } from "../../appservice/src/store/sqlite.ts";
import { ERASED_USER, type NewGuest, type Store } from "../../appservice/src/store/store.ts";
import { startPostgres, type PostgresHandle } from "../../scripts/stack/postgres.ts";

let server: PostgresHandle;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

interface Backend {
  name: string;
  /** Makes an empty database for one test; returns how to open connections to it. */
  fresh(): Promise<() => Promise<Store>>;
  /** Makes the test's database refuse writes from `store` the way this backend does (read-only file, read-only server). */
  refuseWrites(store: Store): Promise<void>;
  /** Rows of appservice_txn, read beside the store. */
  txnRows(store: Store): Promise<number>;
}

async function onServer<T>(db: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client(server.connection(db));
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

let database = "";

const backends: Backend[] = [
  {
    name: "sqlite",
    async fresh() {
      const dir = mkdtempSync(path.join(tmpdir(), "parley-store-"));
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      const file = path.join(dir, "parley.db");
      return async () => new SqliteStore(file);
    },
    async refuseWrites(store) {
      (store as SqliteStore).db.pragma("query_only = ON");
    },
    async txnRows(store) {
      return ((store as SqliteStore).db.prepare("SELECT count(*) AS n FROM appservice_txn").get() as { n: number }).n;
    },
  },
  {
    name: "postgres",
    async fresh() {
      database = await server.createDatabase();
      const db = database;
      return () => PostgresStore.open({ ...server.connection(db), poolSize: 4 });
    },
    async refuseWrites() {
      // As a server switched to read-only (or a standby): new sessions refuse writes; the open ones are cut.
      await onServer("postgres", async (c) => {
        await c.query(`ALTER DATABASE ${pg.escapeIdentifier(database)} SET default_transaction_read_only = on`);
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [database]);
      });
    },
    async txnRows() {
      return onServer(database, async (c) => (await c.query<{ n: number }>("SELECT count(*)::int AS n FROM appservice_txn")).rows[0]!.n);
    },
  },
];

let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
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

const guest = (n: number, over: Partial<NewGuest> = {}): NewGuest => ({
  userId: `@_parley_guest-${n}:example.org`,
  deviceId: `PG${n}`,
  roomId: "!meet:example.org",
  displayName: `G${n} (guest)`,
  tokenHash: `hash${n}`,
  createdAt: 1000,
  deactivateAt: 5000 + n,
  ...over,
});


const H1 = "a".repeat(64);
const H2 = "b".repeat(64);

describe.each(backends)("store on $name", (backend) => {
  let open: () => Promise<Store>;
  beforeEach(async () => {
    const connect = await backend.fresh();
    open = async () => {
      const store = await connect();
      cleanups.push(() => store.close());
      return store;
    };
  });

  describe("two instances racing on one database", () => {
    it("the alias cap holds: of many claims made at once from two instances, exactly `max` win", async () => {
      const [a, b] = [await open(), await open()];
      const aliases = Array.from({ length: 24 }, (_, i) => `#meet-${i}:example.org`);
      const answers = await Promise.all(aliases.map((x, i) => (i % 2 ? a : b).claimAliasWithin(x, 10)));
      expect(answers.filter((r) => r === "claimed")).toHaveLength(10);
      expect(answers.filter((r) => r === "full")).toHaveLength(14);
      expect(await a.aliasCount()).toBe(10);
    });

    it("one alias claimed from both instances at once is claimed once", async () => {
      const [a, b] = [await open(), await open()];
      const answers = await Promise.all([a, b, a, b].map((s) => s.claimAliasWithin("#meet-x:example.org", 10)));
      expect(answers.sort()).toEqual(["claimed", "exists", "exists", "exists"]);
      const plain = await Promise.all([a, b].map((s) => s.claimAlias("#meet-y:example.org")));
      expect(plain.sort()).toEqual([false, true]);
    });

    it("one room gets one active call, whichever instance starts it", async () => {
      const [a, b] = [await open(), await open()];
      const started = await Promise.all(
        Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).startCall(call({ callId: `c${i}`, startedAt: i }))),
      );
      expect(started.filter(Boolean)).toHaveLength(1);
      const ended = await Promise.all([a, b].map((s) => s.endCall("!r:example.org", { by: "@x:example.org", at: 9, eventId: null })));
      expect(ended.filter(Boolean)).toHaveLength(1);
    });

    it("the live-guest cap holds across instances", async () => {
      const [a, b] = [await open(), await open()];
      const claimed = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).claimGuest(guest(i), 5)));
      expect(claimed.filter(Boolean)).toHaveLength(5);
      expect(await b.liveGuestCount()).toBe(5);
    });

    it("an OpenID token hash is claimed by one instance only", async () => {
      const [a, b] = [await open(), await open()];
      const claimed = await Promise.all([a, b, a, b].map((s) => s.claimOpenIdToken(H1, 2000, 1000)));
      expect(claimed.filter(Boolean)).toHaveLength(1);
    });
  });

  describe("transactions and events", () => {
    it("probeWrite commits a write and leaves no row; a store refusing writes fails it with a code", async () => {
      const store = await open();
      await store.probeWrite();
      await store.probeWrite();
      expect(await backend.txnRows(store)).toBe(0);
      await backend.refuseWrites(store);
      // PostgreSQL: a connection cut by the server fails once, the next one is read-only.
      const code = () => store.probeWrite().then(() => "wrote", (err: { code?: string }) => err.code);
      await expect.poll(code).toBe(backend.name === "sqlite" ? "SQLITE_READONLY" : "25006");
    });

    it("remembers done txn ids and processed events", async () => {
      const store = await open();
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
      const store = await open();
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
      const store = await open();
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
      const store = await open();
      expect(await store.claimAlias(alias)).toBe(true);
      expect(await store.claimAlias(alias)).toBe(false);
      expect(await store.getAlias(alias)).toEqual({ alias, roomId: null, state: "creating", createdAt: 1234 });
      await store.releaseAlias(alias);
      expect(await store.getAlias(alias)).toBeUndefined();
      expect(await store.claimAlias(alias)).toBe(true);
    });

    it("claimAlias is exclusive across two connections to one database", async () => {
      const a = await open();
      const b = await open();
      expect(await a.claimAlias(alias)).toBe(true);
      expect(await b.claimAlias(alias)).toBe(false);
    });

    it("a completed alias stays claimed and is not released", async () => {
      const store = await open();
      await store.claimAlias(alias);
      await store.completeAlias(alias, "!room:example.org");
      expect(await store.claimAlias(alias)).toBe(false);
      await store.releaseAlias(alias);
      expect(await store.getAlias(alias)).toMatchObject({ alias, roomId: "!room:example.org", state: "ready" });
    });

    it("claimAliasWithin counts claims and ready aliases against the cap, in one transaction", async () => {
      const a = await open();
      const b = await open();
      expect(await a.claimAliasWithin("#meet-a:example.org", 2)).toBe("claimed");
      expect(await b.claimAliasWithin("#meet-a:example.org", 2)).toBe("exists");
      await a.completeAlias("#meet-a:example.org", "!a:example.org");
      expect(await b.claimAliasWithin("#meet-b:example.org", 2)).toBe("claimed");
      expect(await a.claimAliasWithin("#meet-c:example.org", 2)).toBe("full");
      expect(await a.aliasCount()).toBe(2);
      expect(await a.getAlias("#meet-c:example.org")).toBeUndefined();
    });

    it("recordAlias adopts a room: inserts it, or completes a claim", async () => {
      const store = await open();
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
      const store = await open();
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
      const store = await open();
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
      const store = await open();
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

    it("of two calls started in the same millisecond, the later one is the room's last call", async () => {
      const store = await open();
      await store.startCall(call({ callId: "c1", startedAt: 1000 }));
      await store.endCall("!r:example.org", { by: "@a:example.org", at: 1000, eventId: null });
      await store.startCall(call({ callId: "c2", startedAt: 1000 }));
      await store.setCallSfu("c1", null); // c1's row written again after c2's: where a row sits must not decide
      expect((await store.lastCall("!r:example.org"))?.callId).toBe("c2");
      await store.endCall("!r:example.org", { by: "@a:example.org", at: 1001, eventId: null });
      expect((await store.lastCall("!r:example.org"))?.callId).toBe("c2");
    });

    it("refuses a duplicate call id", async () => {
      const store = await open();
      await store.startCall(call());
      await store.endCall("!r:example.org", { by: "@a:example.org", at: 5, eventId: null });
      expect(await store.startCall(call())).toBeUndefined();
    });
  });

  describe("persistence", () => {
    it("keeps everything across close and reopen", async () => {
      const first = await open();
      await first.markTxnDone("t1");
      await first.markEventProcessed("$e1");
      await first.claimAlias("#meet-a:example.org");
      await first.completeAlias("#meet-a:example.org", "!a:example.org");
      await first.claimAlias("#meet-b:example.org");
      await first.startCall(call({ widgetId: "w" }));
      await first.close();
      await first.close(); // closing twice is harmless

      const second = await open();
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

  describe("call sessions kept for a restart (docs/resilience.md)", () => {
    const seat = { tokenHash: "h-1", userId: "@a:x", roomId: "!r:x", callId: "c1", deviceId: "", expiresAt: 5000, updatedAt: 1000 };
    it("a session is recorded, its holder and media updated, seen by another instance, and forgotten", async () => {
      const [one, two] = [await open(), await open()];
      await one.saveSeat(seat);
      await one.setSeatMedia("h-1", '{"sfu":{"session":1}}', 1100);
      // hello: the device and "held" (no expiry) replace the grant's part; the media stays.
      await one.saveSeat({ ...seat, deviceId: "DEV", expiresAt: null, updatedAt: 1200 });
      expect(await two.seats()).toEqual([{ ...seat, deviceId: "DEV", expiresAt: null, media: '{"sfu":{"session":1}}', updatedAt: 1200 }]);
      await two.setSeatMedia("h-1", null, 1300);
      expect((await one.seats())[0]?.media).toBeNull();
      await one.forgetSeat("h-1");
      await one.setSeatMedia("h-1", "{}", 1400); // a late write for a forgotten session adds nothing
      expect(await two.seats()).toEqual([]);
    });

    it("erasing a user removes their sessions", async () => {
      const store = await open();
      await store.saveSeat(seat);
      await store.saveSeat({ ...seat, tokenHash: "h-2", userId: "@b:x" });
      await store.eraseUser("@a:x", [], { at: 2000, guestDeactivated: false });
      expect((await store.seats()).map((s) => s.userId)).toEqual(["@b:x"]);
    });
  });

  describe("call moderation kept for a restart (docs/resilience.md)", () => {
    const none = { forcedAudioBy: null, forcedVideoBy: null, shareStopped: false, handAt: null };
    const muted = { callId: "c1", userId: "@b:x", ...none, forcedAudioBy: "@a:x", updatedAt: 1000 };
    it("a user's moderation is recorded, changed, seen by another instance, and goes when nothing is left in it", async () => {
      const [one, two] = [await open(), await open()];
      await one.saveModeration(muted);
      await one.saveModeration({ ...muted, userId: "@c:x", handAt: 900, updatedAt: 1100 });
      await one.saveModeration({ ...muted, forcedVideoBy: "@d:x", shareStopped: true, updatedAt: 1200 });
      expect(await two.moderation()).toEqual([
        { ...muted, userId: "@c:x", handAt: 900, updatedAt: 1100 },
        { ...muted, forcedVideoBy: "@d:x", shareStopped: true, updatedAt: 1200 },
      ]);
      await two.saveModeration({ ...muted, ...none, updatedAt: 1300 });
      expect((await one.moderation()).map((r) => r.userId)).toEqual(["@c:x"]);
    });

    it("a call's rows go with the call, the others stay", async () => {
      const store = await open();
      await store.saveModeration(muted);
      await store.saveModeration({ ...muted, callId: "c2" });
      await store.forgetCallModeration("c1");
      expect((await store.moderation()).map((r) => r.callId)).toEqual(["c2"]);
    });

    it("erasing a user removes their rows, and a mute they forced on someone else names nobody", async () => {
      const store = await open();
      await store.saveModeration(muted); // @a:x muted @b:x
      await store.saveModeration({ ...muted, userId: "@a:x", handAt: 1000 });
      await store.eraseUser("@a:x", [], { at: 2000, guestDeactivated: false });
      expect(await store.moderation()).toEqual([{ ...muted, forcedAudioBy: ERASED_USER }]);
    });
  });

  describe("used OpenID tokens", () => {
    it("a hash is claimed once until it expires", async () => {
      const store = await open();
      expect(await store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
      expect(await store.claimOpenIdToken(H1, 3000, 1500)).toBe(false);
      expect(await store.claimOpenIdToken(H2, 3000, 1500)).toBe(true);
      // At its expiry the row is pruned, and the hash may be claimed again.
      expect(await store.claimOpenIdToken(H1, 5000, 2000)).toBe(true);
      expect(await store.openIdTokenCount()).toBe(2);
    });

    it("a released claim may be claimed again", async () => {
      const store = await open();
      expect(await store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
      await store.releaseOpenIdToken(H1);
      expect(await store.openIdTokenCount()).toBe(0);
      expect(await store.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
    });

    it("each claim prunes every expired row, so the table holds only live tokens", async () => {
      const store = await open();
      for (let i = 0; i < 100; i++) expect(await store.claimOpenIdToken(`h${i}`, 1000 + i, 0)).toBe(true);
      expect(await store.openIdTokenCount()).toBe(100);
      expect(await store.claimOpenIdToken("late", 10_000, 1050)).toBe(true);
      expect(await store.openIdTokenCount()).toBe(50); // h51..h99 and "late"
    });

    it("a claim is exclusive across two connections to one database", async () => {
      const a = await open();
      const b = await open();
      expect(await a.claimOpenIdToken(H1, 2000, 1000)).toBe(true);
      expect(await b.claimOpenIdToken(H1, 2000, 1000)).toBe(false);
    });

    it("survives a restart", async () => {
      const first = await open();
      await first.claimOpenIdToken(H1, 2000, 1000);
      await first.close();
      expect(await (await open()).claimOpenIdToken(H1, 2000, 1500)).toBe(false);
    });
  });

  describe("guests", () => {
    it("claims within the live cap; deactivated guests do not count", async () => {
      const store = await open();
      expect(await store.claimGuest(guest(1), 2)).toBe(true);
      expect(await store.claimGuest(guest(2), 2)).toBe(true);
      expect(await store.claimGuest(guest(3), 2)).toBe(false);
      expect(await store.guest(guest(3).userId)).toBeUndefined();
      await store.markGuestDeactivated(guest(1).userId, 6000);
      expect(await store.liveGuestCount()).toBe(1);
      expect(await store.claimGuest(guest(3), 2)).toBe(true);
    });

    it("finds a live guest by token hash until the token is revoked or the guest deactivated", async () => {
      const store = await open();
      await store.claimGuest(guest(1), 10);
      await store.claimGuest(guest(2), 10);
      expect((await store.guestByTokenHash("hash1"))?.userId).toBe(guest(1).userId);
      await store.revokeGuestToken(guest(1).userId);
      expect(await store.guestByTokenHash("hash1")).toBeUndefined();
      await store.markGuestDeactivated(guest(2).userId, 7000);
      expect(await store.guestByTokenHash("hash2")).toBeUndefined();
      expect(await store.guest(guest(2).userId)).toMatchObject({ state: "deactivated", deactivateAt: null, deactivatedAt: 7000 });
    });

    it("lists due guests earliest first and knows the next due time", async () => {
      const store = await open();
      await store.claimGuest(guest(1, { deactivateAt: 300 }), 10);
      await store.claimGuest(guest(2, { deactivateAt: 100 }), 10);
      await store.claimGuest(guest(3, { deactivateAt: 900 }), 10);
      expect(await store.nextGuestDue()).toBe(100);
      expect((await store.dueGuests(300, 10)).map((g) => g.deviceId)).toEqual(["PG2", "PG1"]);
      expect((await store.dueGuests(1000, 1)).map((g) => g.deviceId)).toEqual(["PG2"]);
      await store.deferGuest(guest(2).userId, 2000);
      expect(await store.guest(guest(2).userId)).toMatchObject({ deactivateAt: 2000, attempts: 1 });
      await store.scheduleGuest(guest(2).userId, "joined", 3000);
      expect(await store.guest(guest(2).userId)).toMatchObject({ state: "joined", deactivateAt: 3000, attempts: 0 });
      await store.markGuestDeactivated(guest(2).userId, 400);
      await store.scheduleGuest(guest(2).userId, "left", 5000); // a late event changes nothing once deactivated
      expect((await store.guest(guest(2).userId))?.state).toBe("deactivated");
      expect(await store.nextGuestDue()).toBe(300);
    });

    it("lists a room's live guests and prunes long-deactivated ones", async () => {
      const store = await open();
      await store.claimGuest(guest(1), 10);
      await store.claimGuest(guest(2, { roomId: "!other:example.org" }), 10);
      await store.claimGuest(guest(3), 10);
      await store.markGuestDeactivated(guest(3).userId, 100);
      expect((await store.guestsOfRoom("!meet:example.org")).map((g) => g.deviceId)).toEqual(["PG1"]);
      await store.prune(50);
      expect(await store.guest(guest(3).userId)).toBeDefined();
      await store.prune(200);
      expect(await store.guest(guest(3).userId)).toBeUndefined();
      await store.forgetGuest(guest(1).userId);
      expect(await store.liveGuestCount()).toBe(1);
    });
  });

  describe("personal data (attendance and audit, erasure, retention)", () => {
    const event = (at: number, action: string, actor: string | null, target: string | null) => ({
      at, action, roomId: "!r:example.org", callId: "c1", actor, target, outcome: "ok", details: action === "mute" ? { kind: "audio" } : null,
    });
    const ALICE = "@alice:example.org";
    const BOB = "@bob:other.org";

    it("appends events and finds a user's as actor or target, oldest first, details kept", async () => {
      const store = await open();
      await store.appendAudit([event(3, "mute", ALICE, BOB), event(1, "call_join", null, BOB), event(2, "call_join", null, "@carol:example.org")]);
      await store.appendAudit([]);
      expect((await store.auditOf([BOB])).map((e) => [e.at, e.action, e.details])).toEqual([[1, "call_join", null], [3, "mute", { kind: "audio" }]]);
      expect(await store.auditOf([])).toEqual([]);
    });

    it("erases a user: their own rows go, rows with someone else keep the other's part, calls keep no id; the erasure names nobody", async () => {
      const store = await open();
      await store.appendAudit([event(1, "call_join", null, BOB), event(2, "remove", ALICE, BOB), event(3, "call_join", null, ALICE)]);
      await store.startCall({ ...call(), startedBy: BOB });
      await store.endCall("!r:example.org", { by: BOB, at: 5, eventId: null });
      expect((await store.callsOf(BOB)).map((c) => c.callId)).toEqual(["c1"]);
      const rows = await store.eraseUser(BOB, [BOB], { at: 10, guestDeactivated: false });
      expect(rows).toBe(4); // the target rewritten in Alice's removal, their join deleted, the call's two ids
      expect(await store.auditOf([BOB])).toEqual([]);
      expect((await store.auditOf([ALICE])).map((e) => [e.action, e.actor, e.target])).toEqual([["remove", ALICE, "(erased)"], ["call_join", null, ALICE]]);
      expect(await store.callsOf(BOB)).toEqual([]);
      expect(await store.erasures()).toEqual([{ erasedAt: 10, rowsRemoved: 4, guestDeactivated: false }]);
    });

    it("purges what is older than the cut-off: events, ended calls, deactivated guests; keeps the rest and running calls", async () => {
      const store = await open();
      await store.appendAudit([event(100, "call_join", null, ALICE), event(300, "call_leave", null, ALICE)]);
      await store.startCall(call({ callId: "old", roomId: "!old:example.org", startedAt: 50 }));
      await store.endCall("!old:example.org", { by: "idle", at: 150, eventId: null });
      await store.startCall(call({ callId: "running", roomId: "!run:example.org", startedAt: 10 }));
      await store.claimGuest(guest(1), 10);
      await store.markGuestDeactivated(guest(1).userId, 120);
      expect(await store.purgePersonalData(200)).toEqual({ audit: 1, calls: 1, guests: 1 });
      expect((await store.auditOf([ALICE])).map((e) => e.at)).toEqual([300]);
      expect((await store.activeCalls()).map((c) => c.callId)).toEqual(["running"]);
      expect(await store.lastCall("!old:example.org")).toBeUndefined();
    });
  });
});

describe("PostgreSQL migrations", () => {
  const connect = async () => {
    const database = await server.createDatabase();
    return { database, opts: { ...server.connection(database), poolSize: 2 } };
  };

  it("create the schema and record the version, once, even when instances start together", async () => {
    const { database, opts } = await connect();
    const stores = await Promise.all([PostgresStore.open(opts), PostgresStore.open(opts), PostgresStore.open(opts)]);
    for (const s of stores) cleanups.push(() => s.close());
    expect(await stores[0]!.schemaVersion()).toBe(listMigrations().length);
    const c = new pg.Client(server.connection(database));
    await c.connect();
    try {
      const tables = await c.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
      expect(tables.rows.map((r) => r.tablename)).toEqual(["appservice_txn", "audit_event", "call", "call_moderation", "call_seat", "erasure", "guest", "meeting_alias", "openid_token_used", "parley_schema", "processed_event"]);
      expect((await c.query("SELECT * FROM parley_schema")).rowCount).toBe(1);
    } finally {
      await c.end();
    }
  });

  it("refuse a database written by a newer Parley", async () => {
    const { database, opts } = await connect();
    await (await PostgresStore.open(opts)).close();
    const c = new pg.Client(server.connection(database));
    await c.connect();
    await c.query("UPDATE parley_schema SET version = 99");
    await c.end();
    await expect(PostgresStore.open(opts)).rejects.toThrow(
      `store schema version 99 is newer than this Parley knows (${listMigrations().length}); refusing to run`,
    );
  });

  it("a failed migration leaves the version where it was", async () => {
    const { opts } = await connect();
    const good = listMigrations().map(forPostgres);
    const broken = [...good, { version: good.length + 1, name: "bad.sql", sql: "CREATE TABLE x (a INT); SELECT no_such_function();" }];
    await expect(PostgresStore.open(opts, broken)).rejects.toThrow(/no_such_function/);
    const store = await PostgresStore.open(opts);
    cleanups.push(() => store.close());
    expect(await store.schemaVersion()).toBe(good.length);
  });
});
