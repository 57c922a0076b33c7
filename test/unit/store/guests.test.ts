// The guest rows of the SQLite store: the live cap is checked in the claim's own transaction,
// revoked tokens and deactivated guests no longer authenticate, the sweep's queue is ordered.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import type { NewGuest } from "../../../appservice/src/store/store.ts";

let store: SqliteStore;
beforeEach(() => {
  store = new SqliteStore(":memory:");
});
afterEach(async () => await store.close());

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

describe("guest store", () => {
  it("claims within the live cap; deactivated guests do not count", async () => {
    expect(await store.claimGuest(guest(1), 2)).toBe(true);
    expect(await store.claimGuest(guest(2), 2)).toBe(true);
    expect(await store.claimGuest(guest(3), 2)).toBe(false);
    expect(await store.guest(guest(3).userId)).toBeUndefined();
    await store.markGuestDeactivated(guest(1).userId, 6000);
    expect(await store.liveGuestCount()).toBe(1);
    expect(await store.claimGuest(guest(3), 2)).toBe(true);
  });

  it("finds a live guest by token hash until the token is revoked or the guest deactivated", async () => {
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
