// The guest rows of the SQLite store: the live cap is checked in the claim's own transaction,
// revoked tokens and deactivated guests no longer authenticate, the sweep's queue is ordered.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import type { NewGuest } from "../../../appservice/src/store/store.ts";

let store: SqliteStore;
beforeEach(() => {
  store = new SqliteStore(":memory:");
});
afterEach(() => store.close());

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
  it("claims within the live cap; deactivated guests do not count", () => {
    expect(store.claimGuest(guest(1), 2)).toBe(true);
    expect(store.claimGuest(guest(2), 2)).toBe(true);
    expect(store.claimGuest(guest(3), 2)).toBe(false);
    expect(store.guest(guest(3).userId)).toBeUndefined();
    store.markGuestDeactivated(guest(1).userId, 6000);
    expect(store.liveGuestCount()).toBe(1);
    expect(store.claimGuest(guest(3), 2)).toBe(true);
  });

  it("finds a live guest by token hash until the token is revoked or the guest deactivated", () => {
    store.claimGuest(guest(1), 10);
    store.claimGuest(guest(2), 10);
    expect(store.guestByTokenHash("hash1")?.userId).toBe(guest(1).userId);
    store.revokeGuestToken(guest(1).userId);
    expect(store.guestByTokenHash("hash1")).toBeUndefined();
    store.markGuestDeactivated(guest(2).userId, 7000);
    expect(store.guestByTokenHash("hash2")).toBeUndefined();
    expect(store.guest(guest(2).userId)).toMatchObject({ state: "deactivated", deactivateAt: null, deactivatedAt: 7000 });
  });

  it("lists due guests earliest first and knows the next due time", () => {
    store.claimGuest(guest(1, { deactivateAt: 300 }), 10);
    store.claimGuest(guest(2, { deactivateAt: 100 }), 10);
    store.claimGuest(guest(3, { deactivateAt: 900 }), 10);
    expect(store.nextGuestDue()).toBe(100);
    expect(store.dueGuests(300, 10).map((g) => g.deviceId)).toEqual(["PG2", "PG1"]);
    expect(store.dueGuests(1000, 1).map((g) => g.deviceId)).toEqual(["PG2"]);
    store.deferGuest(guest(2).userId, 2000);
    expect(store.guest(guest(2).userId)).toMatchObject({ deactivateAt: 2000, attempts: 1 });
    store.scheduleGuest(guest(2).userId, "joined", 3000);
    expect(store.guest(guest(2).userId)).toMatchObject({ state: "joined", deactivateAt: 3000, attempts: 0 });
    store.markGuestDeactivated(guest(2).userId, 400);
    store.scheduleGuest(guest(2).userId, "left", 5000); // a late event changes nothing once deactivated
    expect(store.guest(guest(2).userId)?.state).toBe("deactivated");
    expect(store.nextGuestDue()).toBe(300);
  });

  it("lists a room's live guests and prunes long-deactivated ones", () => {
    store.claimGuest(guest(1), 10);
    store.claimGuest(guest(2, { roomId: "!other:example.org" }), 10);
    store.claimGuest(guest(3), 10);
    store.markGuestDeactivated(guest(3).userId, 100);
    expect(store.guestsOfRoom("!meet:example.org").map((g) => g.deviceId)).toEqual(["PG1"]);
    store.prune(50);
    expect(store.guest(guest(3).userId)).toBeDefined();
    store.prune(200);
    expect(store.guest(guest(3).userId)).toBeUndefined();
    store.forgetGuest(guest(1).userId);
    expect(store.liveGuestCount()).toBe(1);
  });
});
