// The guest rules: who may be made a guest of which meeting, the limits (live cap, name), and the
// deactivation schedule (left, never admitted, lifetime, sign-out, meeting end, retries).
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  cleanGuestName,
  GUEST_NAME_MAX,
  GuestService,
  guestUserPattern,
  type GuestAccounts,
  type GuestConfig,
  type MeetingFacts,
} from "../../../appservice/src/calls/guests.ts";
import { ParleyError } from "../../../appservice/src/errors.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";

const ROOM = "!meet:example.org";
const ALIAS = "#meet-team:example.org";
const API = "https://meet.example.org";
const S = 1000;

class FakeAccounts implements GuestAccounts {
  readonly directory = new Map<string, string>([[ALIAS, ROOM]]);
  readonly rooms = new Map<string, MeetingFacts>([[ROOM, { call: { version: 1, api: API }, joinRule: "knock" }]]);
  readonly created: { userId: string; deviceId: string; displayName: string }[] = [];
  readonly deactivated: string[] = [];
  createFails: Error | undefined;
  deactivateFails = 0;
  async resolveAlias(alias: string) {
    return this.directory.get(alias);
  }
  async meetingFacts(roomId: string) {
    return this.rooms.get(roomId);
  }
  async create(g: { userId: string; deviceId: string; displayName: string }) {
    if (this.createFails) throw this.createFails;
    this.created.push(g);
  }
  async deactivate(userId: string) {
    if (this.deactivateFails > 0) {
      this.deactivateFails--;
      throw new Error("homeserver down");
    }
    this.deactivated.push(userId);
    return this.created.some((c) => c.userId === userId) ? ("deactivated" as const) : ("absent" as const);
  }
}

const config = (over: Partial<GuestConfig> = {}): GuestConfig => ({
  mode: "lobby",
  deactivateAfterMs: 600 * S,
  lobbyWaitMs: 1800 * S,
  maxLifetimeMs: 86_400 * S,
  maxLive: 3,
  userPrefix: "_parley_",
  domain: "example.org",
  publicUrl: API,
  ...over,
});

let store: SqliteStore;
let accounts: FakeAccounts;
let now: number;
let n: number;
let t: number;
const make = (over: Partial<GuestConfig> = {}) =>
  new GuestService(config(over), {
    accounts,
    store,
    clock: { now: () => now },
    ids: { localpart: () => `x${++n}`, deviceId: () => `PGDEV${n}`, token: () => `token${++t}`, hash: (t) => `h(${t})` },
  });

beforeEach(() => {
  store = new SqliteStore(":memory:");
  accounts = new FakeAccounts();
  now = 1_000_000;
  n = 0;
  t = 0;
});
afterEach(async () => await store.close());

async function refused(p: Promise<unknown>): Promise<ParleyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ParleyError);
  return err as ParleyError;
}

describe("making a guest", () => {
  it("registers a namespaced user with a device and a marked name, and hands back an opaque token", async () => {
    const guests = make();
    const g = await guests.create({ name: "  Ada\u202e  Lovelace ", meeting: ALIAS });
    expect(g).toEqual({ userId: "@_parley_guest-x1:example.org", deviceId: "PGDEV1", roomId: ROOM, displayName: "Ada Lovelace (guest)", token: "token1" });
    expect(accounts.created).toEqual([{ userId: g.userId, deviceId: g.deviceId, roomId: ROOM, displayName: "Ada Lovelace (guest)" }]);
    expect(guests.isGuest(g.userId)).toBe(true);
    expect((await guests.authenticate("token1"))?.userId).toBe(g.userId);
    expect(await guests.authenticate("token2")).toBeUndefined();
    expect(await store.guest(g.userId)).toMatchObject({ state: "waiting", deactivateAt: now + 1800 * S });
  });

  it("once guests are switched off, no guest token works any more", async () => {
    const g = await make().create({ name: "Ada", meeting: ROOM });
    expect(await make().authenticate(g.token)).toBeDefined();
    expect(await make({ mode: "off" }).authenticate(g.token)).toBeUndefined();
  });

  it("takes a room id as well as an alias", async () => {
    expect((await make().create({ name: "Bo", meeting: ROOM })).roomId).toBe(ROOM);
  });

  it("is refused when guests are off", async () => {
    expect((await refused(make({ mode: "off" }).create({ name: "Ada", meeting: ALIAS }))).errcode).toBe("M_FORBIDDEN");
    expect(accounts.created).toEqual([]);
  });

  it("is refused for a meeting that says guests: false, has no lobby, or is not this Parley's", async () => {
    const guests = make();
    accounts.rooms.set(ROOM, { call: { api: API, guests: false }, joinRule: "knock" });
    expect((await refused(guests.create({ name: "Ada", meeting: ROOM }))).message).toMatch(/does not admit guests/);
    for (const joinRule of ["public", "invite", undefined]) {
      accounts.rooms.set(ROOM, { call: { api: API, guests: true }, joinRule });
      expect((await refused(guests.create({ name: "Ada", meeting: ROOM }))).message).toMatch(/no lobby/);
    }
    accounts.rooms.set(ROOM, { call: { api: "https://other.example" }, joinRule: "knock" });
    expect((await refused(guests.create({ name: "Ada", meeting: ROOM }))).errcode).toBe("M_NOT_FOUND");
    accounts.rooms.set(ROOM, { call: undefined, joinRule: "knock" });
    expect((await refused(guests.create({ name: "Ada", meeting: ROOM }))).errcode).toBe("M_NOT_FOUND");
    expect((await refused(guests.create({ name: "Ada", meeting: "!unknown:example.org" }))).errcode).toBe("M_NOT_FOUND");
    expect(accounts.created).toEqual([]);
    expect(await store.liveGuestCount()).toBe(0);
  });

  it("treats a meeting without a guests field as admitting them (knock_restricted too)", async () => {
    accounts.rooms.set(ROOM, { call: { api: `${API}/` }, joinRule: "knock_restricted" });
    await expect(make().create({ name: "Ada", meeting: ROOM })).resolves.toMatchObject({ roomId: ROOM });
  });

  it("refuses bad meeting targets and other servers' aliases without asking the homeserver", async () => {
    const guests = make();
    for (const meeting of [undefined, 42, "", "team", "#noserver", `!${"x".repeat(300)}:example.org`]) {
      expect((await refused(guests.create({ name: "Ada", meeting }))).errcode).toBe("M_INVALID_PARAM");
    }
    accounts.directory.set("#meet-x:evil.example", ROOM);
    expect((await refused(guests.create({ name: "Ada", meeting: "#meet-x:evil.example" }))).errcode).toBe("M_FORBIDDEN");
    expect((await refused(guests.create({ name: "Ada", meeting: "#meet-none:example.org" }))).errcode).toBe("M_NOT_FOUND");
  });

  it("stops at maxLive live guests; a deactivated one makes room", async () => {
    const guests = make({ maxLive: 2, deactivateAfterMs: 1 });
    const a = await guests.create({ name: "A", meeting: ROOM });
    await guests.create({ name: "B", meeting: ROOM });
    const err = await refused(guests.create({ name: "C", meeting: ROOM }));
    expect(err.errcode).toBe("M_LIMIT_EXCEEDED");
    expect(accounts.created).toHaveLength(2);
    await guests.onMembership(ROOM, a.userId, "leave");
    now += 1;
    await guests.sweep();
    await expect(guests.create({ name: "C", meeting: ROOM })).resolves.toBeDefined();
  });

  it("when the account cannot be made: refuses, revokes the token and leaves the row to the sweep", async () => {
    const guests = make();
    accounts.createFails = new Error("timeout");
    expect((await refused(guests.create({ name: "Ada", meeting: ROOM }))).errcode).toBe("M_UNAVAILABLE");
    expect(await guests.authenticate("token1")).toBeUndefined();
    expect(await guests.sweep()).toEqual({ deactivated: 1, failed: 0 });
    expect(await store.liveGuestCount()).toBe(0);
  });
});

describe("guest names", () => {
  it("strips control and format characters and folds white space", () => {
    expect(cleanGuestName("A\u0000d\u200ba\u0007\n\t Lovelace\u2029")).toBe("Ada Lovelace");
    expect(cleanGuestName("Ame\u0301lie")).toBe("Amélie"); // NFC
  });

  it(`allows ${GUEST_NAME_MAX} characters and refuses one more, empty names and non-strings`, () => {
    expect(cleanGuestName("é".repeat(GUEST_NAME_MAX))).toHaveLength(GUEST_NAME_MAX);
    expect(cleanGuestName("😀".repeat(GUEST_NAME_MAX))).toBe("😀".repeat(GUEST_NAME_MAX));
    for (const bad of ["x".repeat(GUEST_NAME_MAX + 1), " \u200b\u0000 ", "", 7, null, ["Ada"]]) {
      expect(() => cleanGuestName(bad)).toThrow(ParleyError);
    }
  });

  it("a guest user id is recognised only with the prefix, the infix and the domain", () => {
    const p = guestUserPattern("_parley_", "example.org");
    expect(p.test("@_parley_guest-abc123:example.org")).toBe(true);
    for (const id of ["@_parley_guest-abc:example.org.evil", "@alice:example.org", "@_parley_bot:example.org", "@_parley_guest-ABC:example.org", "@x_parley_guest-a:example.org"]) {
      expect(p.test(id)).toBe(false);
    }
  });
});

describe("deactivation", () => {
  it("a guest who left goes deactivateAfter later; joining again meanwhile keeps it", async () => {
    const guests = make();
    const g = await guests.create({ name: "Ada", meeting: ROOM });
    await guests.onMembership(ROOM, g.userId, "knock");
    await guests.onMembership(ROOM, g.userId, "invite");
    await guests.onMembership(ROOM, g.userId, "join");
    expect(await store.guest(g.userId)).toMatchObject({ state: "joined", deactivateAt: now + 86_400 * S });
    await guests.onMembership(ROOM, g.userId, "leave");
    now += 599 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 0, failed: 0 });
    await guests.onMembership(ROOM, g.userId, "join");
    now += 10 * S;
    await guests.onMembership(ROOM, g.userId, "ban");
    now += 600 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 1, failed: 0 });
    expect(accounts.deactivated).toEqual([g.userId]);
    expect(await guests.authenticate(g.token)).toBeUndefined();
    // Deactivation makes the homeserver part the guest: that leave changes nothing.
    await guests.onMembership(ROOM, g.userId, "leave");
    expect((await store.guest(g.userId))?.state).toBe("deactivated");
  });

  it("a joined guest whose last call session ended goes deactivateAfter later, unless a new session comes first", async () => {
    const guests = make();
    const g = await guests.create({ name: "Ada", meeting: ROOM });
    await guests.onMembership(ROOM, g.userId, "join");
    await guests.onCallPresence(ROOM, g.userId, true);
    await guests.onCallPresence(ROOM, g.userId, false);
    now += 300 * S;
    await guests.onCallPresence(ROOM, g.userId, true);
    now += 600 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 0, failed: 0 });
    await guests.onCallPresence(ROOM, g.userId, false);
    now += 599 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 0, failed: 0 });
    now += 1 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 1, failed: 0 });
    // Non-guests and other rooms change nothing.
    await guests.onCallPresence(ROOM, "@alice:a.example", false);
  });

  it("a guest's membership and call presence apply in the order they come, even when not awaited one by one", async () => {
    const guests = make();
    const g = await guests.create({ name: "Ada", meeting: ROOM });
    // The join's read and write of the guest's row finish before the presence reads it.
    const joined = guests.onMembership(ROOM, g.userId, "join");
    await guests.onCallPresence(ROOM, g.userId, false);
    await joined;
    expect(await store.guest(g.userId)).toMatchObject({ state: "joined", deactivateAt: now + 600 * S });
  });

  it("a guest never admitted goes lobbyWait after it was made; an invite gives it time to join", async () => {
    const guests = make({ lobbyWaitMs: 100 * S, deactivateAfterMs: 60 * S });
    const a = await guests.create({ name: "A", meeting: ROOM });
    const b = await guests.create({ name: "B", meeting: ROOM });
    await guests.onMembership(ROOM, a.userId, "knock");
    now += 90 * S;
    await guests.onMembership(ROOM, b.userId, "invite"); // admitted late: 60 s from now to join
    now += 10 * S;
    await guests.sweep();
    expect(accounts.deactivated).toEqual([a.userId]);
    now += 49 * S;
    await guests.sweep();
    expect(accounts.deactivated).toEqual([a.userId]);
    now += 1 * S;
    await guests.sweep();
    expect(accounts.deactivated).toEqual([a.userId, b.userId]);
  });

  it("a joined guest goes at maxLifetime at the latest; a leave near the end does not extend it", async () => {
    const guests = make({ maxLifetimeMs: 1000 * S });
    const g = await guests.create({ name: "A", meeting: ROOM });
    await guests.onMembership(ROOM, g.userId, "join");
    now += 999 * S;
    await guests.onMembership(ROOM, g.userId, "leave");
    expect((await store.guest(g.userId))?.deactivateAt).toBe(now + 1 * S);
  });

  it("memberships in other rooms and of non-guests change nothing", async () => {
    const guests = make();
    const g = await guests.create({ name: "A", meeting: ROOM });
    const before = await store.guest(g.userId);
    await guests.onMembership("!other:example.org", g.userId, "leave");
    await guests.onMembership(ROOM, "@alice:example.org", "leave");
    expect(await store.guest(g.userId)).toEqual(before);
  });

  it("sign-out revokes the token at once and deactivates at the next sweep", async () => {
    const guests = make();
    const g = await guests.create({ name: "A", meeting: ROOM });
    await guests.signOut(g.userId);
    expect(await guests.authenticate(g.token)).toBeUndefined();
    expect(await guests.sweep()).toEqual({ deactivated: 1, failed: 0 });
  });

  it("a meeting's end brings its guests' deactivation forward", async () => {
    const guests = make({ deactivateAfterMs: 60 * S });
    const g = await guests.create({ name: "A", meeting: ROOM });
    await guests.onMembership(ROOM, g.userId, "join");
    await guests.onMeetingEnded(ROOM);
    expect((await store.guest(g.userId))?.deactivateAt).toBe(now + 60 * S);
  });

  it("a failed deactivation is retried with backoff, and survives a restart (the schedule is stored)", async () => {
    let guests = make({ deactivateAfterMs: 1 });
    const g = await guests.create({ name: "A", meeting: ROOM });
    await guests.onMembership(ROOM, g.userId, "leave");
    now += 1;
    accounts.deactivateFails = 2;
    expect(await guests.sweep()).toEqual({ deactivated: 0, failed: 1 });
    expect((await store.guest(g.userId))?.deactivateAt).toBe(now + 30 * S);
    now += 30 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 0, failed: 1 });
    expect((await store.guest(g.userId))?.deactivateAt).toBe(now + 60 * S);
    guests = make({ deactivateAfterMs: 1 }); // a new process, the same store
    now += 60 * S;
    expect(await guests.sweep()).toEqual({ deactivated: 1, failed: 0 });
  });

  it("sweeps often enough for the shortest delay (1 s .. 30 s)", () => {
    expect(make({ deactivateAfterMs: 1 * S }).periodMs()).toBe(1000);
    expect(make({ deactivateAfterMs: 20 * S }).periodMs()).toBe(10_000);
    expect(make().periodMs()).toBe(30_000);
  });
});
