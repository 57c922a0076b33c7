// Personal data in the SQLite store (docs/personal-data.md), with records of several users:
// export returns exactly one user's records, erase removes them (a shared event keeps the other
// user's part) and leaves everyone else's untouched, and the retention purge, with a moved clock,
// removes what is older than the period and keeps the rest.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { eraseUser, exportUser } from "../../../appservice/src/privacy/personalData.ts";
import { DAY_MS, purgeExpired } from "../../../appservice/src/privacy/retention.ts";
import { UserIds } from "../../../appservice/src/privacy/userIds.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import { ERASED_USER, type AuditEvent } from "../../../appservice/src/store/store.ts";

const ALICE = "@alice:example.org";
const BOB = "@bob:example.org";
const CAROL = "@carol:other.example";
const GUEST = "@_parley_guest-abc:example.org";
const ROOM = "!meet:example.org";
const T0 = Date.UTC(2026, 0, 1);

let store: SqliteStore;
let now: number;
const clock = { now: () => now };
const ids = new UserIds("example.org", undefined);
const accounts = { deactivated: [] as string[], deactivate: async (u: string) => (accounts.deactivated.push(u), "deactivated" as const) };
const deps = () => ({ store, ids, clock, accounts });

const event = (at: number, action: string, actor: string | null, target: string | null = null): AuditEvent => ({
  at, action, roomId: ROOM, callId: "c1", actor, target, outcome: target ? "ok" : null, details: action === "mute" ? { kind: "audio" } : null,
});

async function seed(): Promise<void> {
  await store.appendAudit([
    event(T0, "call_join", ALICE),
    event(T0 + 1, "call_join", BOB),
    event(T0 + 2, "call_join", CAROL),
    event(T0 + 3, "admit", ALICE, CAROL),
    event(T0 + 4, "mute", ALICE, BOB),
    event(T0 + 5, "host_assigned", null, ALICE),
    event(T0 + 6, "guest_created", null, GUEST),
    event(T0 + 7, "call_leave", BOB),
    event(T0 + 8, "call_leave", ALICE),
  ]);
  await store.startCall({ callId: "c1", roomId: ROOM, origin: "alias", startedBy: ALICE, startedAt: T0, startEventId: null, widgetId: null });
  await store.endCall(ROOM, { by: BOB, at: T0 + 10, eventId: null });
  await store.startCall({ callId: "c2", roomId: "!other:example.org", origin: "command", startedBy: BOB, startedAt: T0 + 20, startEventId: "$e", widgetId: null });
  await store.claimGuest({ userId: GUEST, deviceId: "PGX", roomId: ROOM, displayName: "G (guest)", tokenHash: "h", createdAt: T0 + 6, deactivateAt: T0 + 1000 }, 10);
}

beforeEach(async () => {
  store = new SqliteStore(":memory:");
  now = T0 + 100;
  accounts.deactivated = [];
  await seed();
});
afterEach(async () => await store.close());

describe("personal data store", () => {
  it("export returns exactly the user's records: attendance, audit as actor or target, calls started or ended", async () => {
    const alice = await exportUser(deps(), ALICE);
    expect(alice.attendance.map((e) => [e.action, e.actor])).toEqual([["call_join", ALICE], ["call_leave", ALICE]]);
    expect(alice.audit.map((e) => [e.action, e.actor, e.target])).toEqual([["admit", ALICE, CAROL], ["mute", ALICE, BOB], ["host_assigned", null, ALICE]]);
    expect(alice.audit[1]!.details).toEqual({ kind: "audio" });
    expect(alice.calls.map((c) => c.callId)).toEqual(["c1"]);
    expect(alice.calls[0]).not.toHaveProperty("sfu");
    expect(alice.guest).toBeNull();

    const bob = await exportUser(deps(), BOB);
    expect([...bob.attendance, ...bob.audit].map((e) => e.action)).toEqual(["call_join", "call_leave", "mute"]);
    expect(bob.calls.map((c) => c.callId)).toEqual(["c1", "c2"]);

    const guest = await exportUser(deps(), GUEST);
    expect(guest.audit.map((e) => e.action)).toEqual(["guest_created"]);
    expect(guest.guest).toMatchObject({ userId: GUEST, roomId: ROOM, displayName: "G (guest)" });
    expect(guest.guest).not.toHaveProperty("tokenHash");
  });

  it("erase removes the user's records, keeps the other users' part of shared ones, and records the erasure without the id", async () => {
    const before = { bob: await exportUser(deps(), BOB), carol: await exportUser(deps(), CAROL), guest: await exportUser(deps(), GUEST) };
    const erased = await eraseUser(deps(), ALICE);
    expect(erased.guestDeactivated).toBe(false);
    expect(accounts.deactivated).toEqual([]);

    const alice = await exportUser(deps(), ALICE);
    expect([...alice.attendance, ...alice.audit, ...alice.calls]).toEqual([]);
    // Bob and Carol keep every record they had; where Alice acted on them she is now ERASED_USER.
    const bob = await exportUser(deps(), BOB);
    const carol = await exportUser(deps(), CAROL);
    const strip = (x: typeof bob) => ({ ...x, exportedAt: "" });
    const withoutAlice = (x: typeof bob) => JSON.parse(JSON.stringify(strip(x)).replaceAll(ALICE, ERASED_USER)) as unknown;
    expect(strip(bob)).toEqual(withoutAlice(before.bob));
    expect(strip(carol)).toEqual(withoutAlice(before.carol));
    expect(strip(await exportUser(deps(), GUEST))).toEqual(strip(before.guest));
    expect((await store.lastCall(ROOM))?.startedBy).toBe(ERASED_USER);
    // 3 rows only about Alice deleted, 2 shared rewritten, 1 call rewritten.
    expect(erased.rows).toBe(6);
    const erasures = await store.erasures();
    expect(erasures).toEqual([{ erasedAt: now, rowsRemoved: 6, guestDeactivated: false }]);
    expect(JSON.stringify(erasures)).not.toContain("alice");
  });

  it("erasing the target of another's action keeps the action in the actor's records", async () => {
    await eraseUser(deps(), BOB);
    const alice = await exportUser(deps(), ALICE);
    expect(alice.audit.map((e) => [e.action, e.actor, e.target])).toEqual([["admit", ALICE, CAROL], ["mute", ALICE, ERASED_USER], ["host_assigned", null, ALICE]]);
    expect(alice.calls.map((c) => [c.startedBy, c.endedBy])).toEqual([[ALICE, ERASED_USER]]);
    expect((await exportUser(deps(), BOB)).audit).toEqual([]);
  });

  it("erasing a live guest deactivates its account through the homeserver and removes its row", async () => {
    const erased = await eraseUser(deps(), GUEST);
    expect(erased).toEqual({ rows: 2, guestDeactivated: true });
    expect(accounts.deactivated).toEqual([GUEST]);
    expect(await store.guest(GUEST)).toBeUndefined();
    expect((await exportUser(deps(), ALICE)).audit).toHaveLength(3);
  });

  it("a guest whose deactivation fails is not erased (the command can run again)", async () => {
    const failing = { deactivate: async () => Promise.reject(new Error("homeserver down")) };
    await expect(eraseUser({ ...deps(), accounts: failing }, GUEST)).rejects.toThrow("homeserver down");
    expect(await store.guest(GUEST)).toBeDefined();
    expect(await store.erasures()).toEqual([]);
  });

  it("export and erase find a remote user recorded under a pseudonym", async () => {
    const pseudo = new UserIds("example.org", "k".repeat(32));
    await store.appendAudit([event(T0 + 50, "call_join", pseudo.recorded(CAROL))]);
    expect(pseudo.recorded(CAROL)).not.toContain("carol");
    expect(pseudo.recorded(ALICE)).toBe(ALICE);
    const carol = await exportUser({ store, ids: pseudo, clock }, CAROL);
    expect(carol.attendance.map((e) => e.actor)).toEqual([CAROL, pseudo.recorded(CAROL)]);
    await eraseUser({ store, ids: pseudo, clock, accounts }, CAROL);
    expect((await exportUser({ store, ids: pseudo, clock }, CAROL)).attendance).toEqual([]);
  });

  it("the retention purge, with the clock moved past the period, removes older records and keeps the rest", async () => {
    // Later records: a join 200 days on, a call ended 200 days on, a guest deactivated 200 days on.
    const later = T0 + 200 * DAY_MS;
    await store.appendAudit([event(later, "call_join", BOB)]);
    await store.startCall({ callId: "c3", roomId: "!late:example.org", origin: "alias", startedBy: BOB, startedAt: later, startEventId: null, widgetId: null });
    await store.endCall("!late:example.org", { by: BOB, at: later, eventId: null });
    await store.markGuestDeactivated(GUEST, T0 + 7);
    await store.claimGuest({ userId: "@_parley_guest-late:example.org", deviceId: "PGL", roomId: ROOM, displayName: "L (guest)", tokenHash: "hl", createdAt: later, deactivateAt: later }, 10);
    await store.markGuestDeactivated("@_parley_guest-late:example.org", later);

    // Within the period nothing goes.
    now = T0 + 183 * DAY_MS - 1000;
    expect(await purgeExpired({ store, clock }, 183)).toMatchObject({ audit: 0, calls: 0, guests: 0 });

    now = later + 10 * DAY_MS;
    const purged = await purgeExpired({ store, clock }, 183);
    expect(purged).toEqual({ audit: 9, calls: 1, guests: 1, cutoff: now - 183 * DAY_MS });
    const bob = await exportUser(deps(), BOB);
    expect(bob.attendance.map((e) => e.at)).toEqual([later]);
    // The ended old call went; the active one (c2, not ended) and the recent one stay.
    expect(bob.calls.map((c) => c.callId)).toEqual(["c2", "c3"]);
    expect(await store.guest(GUEST)).toBeUndefined();
    expect(await store.guest("@_parley_guest-late:example.org")).toBeDefined();
  });
});
