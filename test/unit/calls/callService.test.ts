import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CallService, LET_IN_WAIT_MS, MAX_GRANT_DEVICES, type CallServiceConfig, type CallServiceDeps, type SessionCloser } from "../../../appservice/src/calls/callService.ts";
import { FederationPolicy } from "../../../appservice/src/calls/policy.ts";
import type { OpenIdVerifier, SfuRooms } from "../../../appservice/src/calls/ports.ts";
import { ParleyError } from "../../../appservice/src/errors.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import type { SfuRoomRecord } from "../../../appservice/src/store/store.ts";

const MEETING = "!meeting:a.example";
const CHAT = "!chat:a.example";
const ALICE = "@alice:a.example";
const BOB = "@bob:b.example";
const EVE = "@eve:evil.example";

class FakeVerifier implements OpenIdVerifier {
  readonly tokens = new Map<string, string>([["alice-token", ALICE], ["bob-token", BOB], ["eve-token", EVE]]);
  async verify(token: string, server: string) {
    const userId = this.tokens.get(token);
    if (!userId || !userId.endsWith(`:${server}`)) throw new ParleyError("M_UNKNOWN_TOKEN", "OpenID token is not valid");
    return { userId };
  }
}

class FakeSfu implements SfuRooms {
  readonly rooms = new Set<string>();
  created = 0;
  destroyed: string[] = [];
  async createRoom(callId: string): Promise<SfuRoomRecord> {
    this.created++;
    await new Promise((r) => setTimeout(r, 5));
    const room = { node: "n1", room: `room-${callId}-${this.created}`, secret: "s" };
    this.rooms.add(room.room);
    return room;
  }
  async destroyRoom(room: SfuRoomRecord) {
    this.rooms.delete(room.room);
    this.destroyed.push(room.room);
  }
  async roomExists(room: SfuRoomRecord) {
    return this.rooms.has(room.room);
  }
}

interface MembershipReads {
  count(): number;
  restore(): void;
}

/** From now on, counts the service's membership reads (`members.get`); `restore` puts the plain map back. */
function countMembershipReads(): MembershipReads {
  const orig = members;
  let reads = 0;
  members = new Proxy(orig, { get: (t, k) => (k === "get" ? (key: string) => (reads++, t.get(key)) : Reflect.get(t, k).bind(t)) });
  return { count: () => reads, restore: () => void (members = orig) };
}

let dir: string;
let store: SqliteStore;
let sfu: FakeSfu;
let now: number;
let members: Map<string, string>;
let service: CallService;
let ids = 0;
let presence: string[];

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "parley-calls-"));
  store = new SqliteStore(path.join(dir, "p.db"));
  await store.claimAlias("#meet-x:a.example");
  await store.completeAlias("#meet-x:a.example", MEETING);
  sfu = new FakeSfu();
  now = 1_000_000;
  presence = [];
  members = new Map([[`${MEETING}|${ALICE}`, "join"], [`${MEETING}|${BOB}`, "join"], [`${MEETING}|${EVE}`, "join"], [`${CHAT}|${ALICE}`, "join"]]);
  service = makeService(
    { sessionTtlMs: 60_000, iceServers: [{ urls: "stun:stun.a.example" }], sessionsPerUserPerCall: 3, sessionsPerCall: 5 },
    { onPresence: (roomId, userId, present) => presence.push(`${present ? "+" : "-"}${userId}@${roomId}`) },
  );
});

/** A service over this file's store, fake SFU, members and clock. */
function makeService(cfg: CallServiceConfig, more: Partial<CallServiceDeps> = {}): CallService {
  return new CallService(cfg, {
    homeserver: {
      resolveAlias: async (alias) => (alias === "#meet-x:a.example" ? MEETING : undefined),
      getMembership: async (roomId, userId) => members.get(`${roomId}|${userId}`),
    },
    store,
    policy: new FederationPolicy("a.example", ["b.example"]),
    verifier: new FakeVerifier(),
    sfu,
    clock: { now: () => now },
    ids: { callId: () => `call${++ids}`, sessionToken: () => `session-${++ids}` },
    ...more,
  });
}

afterEach(async () => {
  service.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const join = (token: string, server: string, room = MEETING) => service.join({ openIdToken: token, serverName: server, room });
const codeOf = async (p: Promise<unknown>) => p.then(() => "ok", (e: ParleyError) => e.errcode);

/**
 * A leave heard of in a transaction between `userId`'s grant ahead and its hello (after
 * `beforeLeave`) ends the session: its hello admits nothing, and its token opens nothing.
 */
async function leaveBeforeHelloEnds(svc: CallService, token: string, server: string, userId: string, beforeLeave: () => void = () => undefined): Promise<void> {
  const grant = await svc.join({ openIdToken: token, serverName: server, room: MEETING, ahead: true });
  beforeLeave();
  svc.evict(MEETING, userId, "leave");
  await svc.admitHolder(grant.session);
  expect(() => svc.attach(grant.session, () => undefined)).toThrow(expect.objectContaining({ errcode: "M_UNKNOWN_TOKEN" }));
}

describe("join", () => {
  it("grants a session with ICE servers to a joined member, by room id or alias", async () => {
    const grant = await join("alice-token", "a.example");
    expect(grant).toMatchObject({ roomId: MEETING, expiresAt: now + 60_000, iceServers: [{ urls: "stun:stun.a.example" }] });
    expect(service.session(grant.session)).toMatchObject({ userId: ALICE, roomId: MEETING, callId: grant.callId });
    const byAlias = await join("bob-token", "b.example", "#meet-x:a.example");
    expect(byAlias.callId).toBe(grant.callId);
  });

  it("makes one SFU room per call, however many join at once, and records it", async () => {
    const grants = await Promise.all([join("alice-token", "a.example"), join("bob-token", "b.example"), join("alice-token", "a.example")]);
    expect(new Set(grants.map((g) => g.callId)).size).toBe(1);
    expect(sfu.created).toBe(1);
    expect((await store.activeCall(MEETING))?.sfu).toEqual({ node: "n1", room: `room-${grants[0]!.callId}-1`, secret: "s" });
  });

  it("recreates the SFU room when its node lost it", async () => {
    const first = await join("alice-token", "a.example");
    sfu.rooms.clear();
    await join("bob-token", "b.example");
    expect(sfu.created).toBe(2);
    expect((await store.activeCall(MEETING))?.sfu?.room).toBe(`room-${first.callId}-2`);
  });

  it("refuses, each with its errcode", async () => {
    expect(await codeOf(join("", "a.example"))).toBe("M_MISSING_TOKEN");
    expect(await codeOf(join("forged", "a.example"))).toBe("M_UNKNOWN_TOKEN");
    expect(await codeOf(join("bob-token", "a.example"))).toBe("M_UNKNOWN_TOKEN"); // a.example cannot vouch for bob
    expect(await codeOf(join("eve-token", "evil.example"))).toBe("M_FORBIDDEN"); // server not allowed
    members.delete(`${MEETING}|${BOB}`);
    expect(await codeOf(join("bob-token", "b.example"))).toBe("M_FORBIDDEN"); // not in the room
    expect(await codeOf(join("alice-token", "a.example", CHAT))).toBe("M_NOT_FOUND"); // no call there
    expect(await codeOf(join("alice-token", "a.example", "#nope:a.example"))).toBe("M_NOT_FOUND");
    expect(await codeOf(join("alice-token", "a.example", "meeting"))).toBe("M_INVALID_PARAM");
    expect(await codeOf(join("alice-token", "a example"))).toBe("M_INVALID_PARAM");
    expect(sfu.created).toBe(0);
    expect(service.activeSessions()).toBe(0);
  });

  it("serves a chat room while its !meet call runs", async () => {
    await store.startCall({ callId: "meet1", roomId: CHAT, origin: "command", startedBy: ALICE, startedAt: 1, startEventId: "$e", widgetId: null });
    expect((await join("alice-token", "a.example", CHAT)).callId).toBe("meet1");
  });
});

describe("sessions end", () => {
  it("on a leave, kick or ban of that user in that room, closing the socket with the reason", async () => {
    const a = await join("alice-token", "a.example");
    const b = await join("bob-token", "b.example");
    const closed: Parameters<SessionCloser>[0][] = [];
    service.attach(b.session, (r) => closed.push(r));
    expect(service.evict(MEETING, BOB, "ban")).toBe(1);
    expect(closed).toEqual([{ errcode: "M_FORBIDDEN", message: "membership is now ban" }]);
    expect(service.session(b.session)).toBeUndefined();
    expect(service.session(a.session)?.userId).toBe(ALICE);
    expect(service.evict(CHAT, ALICE, "leave")).toBe(0);
  });

  it("the user's first held session in a room and the end of their last held one are told (guests' accounts hang on it)", async () => {
    const a1 = await join("alice-token", "a.example");
    const a2 = await join("alice-token", "a.example");
    const a3 = await join("alice-token", "a.example");
    expect(presence).toEqual([]); // granted is not present: the hello is
    const first: SessionCloser = () => undefined;
    const second: SessionCloser = () => undefined;
    service.attach(a1.session, first);
    service.attach(a1.session, second); // a takeover is the same presence
    service.attach(a2.session, first);
    expect(presence).toEqual([`+${ALICE}@${MEETING}`]);
    service.detach(a1.session, second);
    expect(presence).toEqual([`+${ALICE}@${MEETING}`]);
    service.detach(a2.session, first); // a3 is granted, not held: Alice is gone
    expect(presence).toEqual([`+${ALICE}@${MEETING}`, `-${ALICE}@${MEETING}`]);
    now += 60_000;
    expect(service.session(a3.session)).toBeUndefined(); // its expiry tells nothing
    expect(presence).toHaveLength(2);
  });

  it("at expiry", async () => {
    const a = await join("alice-token", "a.example");
    now += 60_000;
    expect(service.session(a.session)).toBeUndefined();
  });

  it("when the call ends, which also destroys the SFU room", async () => {
    const a = await join("alice-token", "a.example");
    const closed: string[] = [];
    service.attach(a.session, (r) => closed.push(r.errcode));
    const call = (await store.activeCall(MEETING))!;
    await service.endCall(call);
    expect(closed).toEqual(["M_NOT_FOUND"]);
    expect(sfu.destroyed).toEqual([call.sfu!.room]);
    expect((await store.activeCall(MEETING))?.sfu).toBeNull();
  });
});

describe("a session with an open socket", () => {
  it("is not ended by the grant's expiry, only by membership, the call's end or its socket", async () => {
    const a = await join("alice-token", "a.example");
    const closed: string[] = [];
    service.attach(a.session, (r) => closed.push(r.errcode));
    now += 10 * 60_000;
    expect(service.session(a.session)?.userId).toBe(ALICE);
    expect(closed).toEqual([]);
    expect(service.evict(MEETING, ALICE, "leave")).toBe(1);
    expect(closed).toEqual(["M_FORBIDDEN"]);
  });

  it("ends when its (current) socket closes: the token cannot open another", async () => {
    const a = await join("alice-token", "a.example");
    const first = () => undefined;
    const second = () => undefined;
    service.attach(a.session, first);
    service.attach(a.session, second); // a reconnect took the session over
    service.detach(a.session, first); // the old socket's late close changes nothing
    expect(service.session(a.session)?.userId).toBe(ALICE);
    service.detach(a.session, second);
    expect(service.session(a.session)).toBeUndefined();
  });
});

describe("one session, one holder", () => {
  it("a second holder takes the session over: the first is ended with the reason, and no longer holds it", async () => {
    const a = await join("alice-token", "a.example");
    const ended: Parameters<SessionCloser>[0][] = [];
    const first: SessionCloser = (r) => ended.push(r);
    const second: SessionCloser = () => undefined;
    service.attach(a.session, first);
    expect(service.holds(a.session, first)).toBe(true);
    service.attach(a.session, second);
    expect(ended).toEqual([{ errcode: "M_FORBIDDEN", message: "session taken over by another connection" }]);
    expect(service.holds(a.session, first)).toBe(false);
    expect(service.holds(a.session, second)).toBe(true);
    expect(service.evict(MEETING, ALICE, "kick")).toBe(1);
    expect(service.holds(a.session, second)).toBe(false);
  });

  it("refuses a holder for an unknown session", () => {
    expect(() => service.attach("made-up", () => undefined)).toThrow(expect.objectContaining({ errcode: "M_UNKNOWN_TOKEN" }));
  });
});

describe("limits", () => {
  it("sessions per user per call: one more is M_LIMIT_EXCEEDED, a closed one frees its place", async () => {
    const grants = [await join("alice-token", "a.example"), await join("alice-token", "a.example"), await join("alice-token", "a.example")];
    expect(await codeOf(join("alice-token", "a.example"))).toBe("M_LIMIT_EXCEEDED");
    expect(await codeOf(join("bob-token", "b.example"))).toBe("ok");
    const closer = () => undefined;
    service.attach(grants[0]!.session, closer);
    service.detach(grants[0]!.session, closer);
    expect(await codeOf(join("alice-token", "a.example"))).toBe("ok");
  });

  it("sessions per call: a full call refuses anyone's next join with M_LIMIT_EXCEEDED until one leaves", async () => {
    const grants = [...(await Promise.all([1, 2, 3].map(() => join("alice-token", "a.example")))), await join("bob-token", "b.example"), await join("bob-token", "b.example")];
    // Bob holds 2 of his 3: the call's limit refuses him, not his own.
    const refusal = await join("bob-token", "b.example").catch((err: unknown) => err);
    expect(refusal).toMatchObject({ errcode: "M_LIMIT_EXCEEDED", message: expect.stringContaining("the call is full") });
    const closer = () => undefined;
    service.attach(grants[0]!.session, closer);
    service.detach(grants[0]!.session, closer);
    expect(await codeOf(join("bob-token", "b.example"))).toBe("ok");
  });
});

describe("an idle call", () => {
  it("by alias ends and loses its SFU room; the next join starts a new call", async () => {
    const a = await join("alice-token", "a.example");
    expect(service.occupied(a.callId)).toBe(true);
    const closer = () => undefined;
    service.attach(a.session, closer);
    service.detach(a.session, closer);
    expect(service.occupied(a.callId)).toBe(false);
    const call = (await store.activeCall(MEETING))!;
    await service.endIdle(call);
    expect(await store.activeCall(MEETING)).toBeUndefined();
    expect(sfu.destroyed).toEqual([call.sfu!.room]);
    const next = await join("alice-token", "a.example");
    expect(next.callId).not.toBe(a.callId);
  });

  it("by !meet keeps its call; the next join makes a new SFU room", async () => {
    await store.startCall({ callId: "meet1", roomId: CHAT, origin: "command", startedBy: ALICE, startedAt: 1, startEventId: "$e", widgetId: null });
    const a = await join("alice-token", "a.example", CHAT);
    service.detach(a.session, () => undefined); // not its holder: nothing changes
    expect(service.occupied("meet1")).toBe(true);
    now += 60_000; // the grant expires unused
    expect(service.session(a.session)).toBeUndefined();
    const call = (await store.activeCall(CHAT))!;
    await service.endIdle(call);
    expect(await store.activeCall(CHAT)).toMatchObject({ callId: "meet1", sfu: null });
    await join("alice-token", "a.example", CHAT);
    expect((await store.activeCall(CHAT))?.sfu?.room).not.toBe(call.sfu!.room);
  });

  it("is not ended while someone holds a session in it", async () => {
    await join("alice-token", "a.example");
    const call = (await store.activeCall(MEETING))!;
    await service.endIdle(call);
    expect((await store.activeCall(MEETING))?.sfu).toEqual(call.sfu);
  });
});

describe("a grant asked ahead (from the pre-join)", () => {
  let admissions: string[];
  let refuse: string | undefined;
  const aheadService = (turnTtlSeconds?: number) =>
    makeService(
      {
        sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 3,
        ...(turnTtlSeconds ? { turn: { urls: ["turn:127.0.0.1:3478"], secret: "s", ttlSeconds: turnTtlSeconds, relayOnly: false } } : {}),
      },
      {
        onPresence: (_roomId, userId, present) => presence.push(`${present ? "+" : "-"}${userId}`),
        admission: async (_roomId, userId, inCall, ahead) => {
          admissions.push(`${userId} inCall=${inCall} ahead=${ahead}`);
          if (refuse) throw new ParleyError("M_FORBIDDEN", refuse);
        },
      },
    );
  let s: CallService;
  beforeEach(() => {
    admissions = [];
    refuse = undefined;
    s = aheadService();
  });
  afterEach(() => s.stop());

  it("is admitted again at its first hello only; a plain grant is not", async () => {
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    const plain = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    expect(admissions).toEqual([`${BOB} inCall=false ahead=true`, `${ALICE} inCall=false ahead=false`]);
    await s.admitHolder(plain.session);
    await s.admitHolder(early.session);
    expect(admissions.slice(2)).toEqual([`${BOB} inCall=false ahead=false`]);
    s.attach(early.session, () => undefined);
    await s.admitHolder(early.session); // a reconnect with the same session
    expect(admissions).toHaveLength(3);
    expect(presence).toEqual([`+${BOB}`]);
  });

  it("reads its admission beside the membership, not after it; a refused non-member still hears that it is not joined", async () => {
    // The membership read is held until the admission has begun: asked one after the other, as a
    // plain grant's are, this grant would never come.
    let admitted!: () => void;
    const admissionBegun = new Promise<void>((r) => (admitted = r));
    const svc = makeService({ sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 3 }, {
      homeserver: {
        resolveAlias: async () => undefined,
        getMembership: async (roomId, userId) => (await admissionBegun, members.get(`${roomId}|${userId}`)),
      },
      admission: async (_roomId, userId, _inCall, ahead) => {
        admissions.push(`${userId} ahead=${ahead}`);
        admitted();
        if (refuse) throw new ParleyError("M_FORBIDDEN", refuse);
      },
    });
    try {
      await expect(svc.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true })).resolves.toMatchObject({ session: expect.any(String) });
      // Refused by the admission (a locked meeting) and not joined either: the membership's answer counts first, as before.
      refuse = "this meeting is locked";
      members.delete(`${MEETING}|${BOB}`);
      await expect(svc.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true })).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: expect.stringMatching(/not joined|is not in/) });
      members.set(`${MEETING}|${BOB}`, "join");
      await expect(svc.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true })).rejects.toMatchObject({ message: "this meeting is locked" });
      expect(admissions).toEqual([`${BOB} ahead=true`, `${BOB} ahead=true`, `${BOB} ahead=true`]);
    } finally {
      svc.stop();
    }
  });

  it("lists the devices in the call (sessions held, with a declared device), a plain grant none; at most MAX_GRANT_DEVICES", async () => {
    const first = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    const noDevice = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    const notHeld = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    void notHeld;
    s.attach(first.session, () => undefined, "ADEV");
    s.attach(noDevice.session, () => undefined);
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    expect(early.devices).toEqual([{ userId: ALICE, deviceId: "ADEV" }]);
    expect((await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING })).devices).toBeUndefined();
    // A session that ended is no longer listed.
    s.evict(MEETING, ALICE, "leave");
    const later = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    expect(later.devices).toEqual([]);
  });

  it("announces its device once (arriving): from the pre-join, or once in the call its hello's device only; a plain grant before its hello or an unknown session, none", async () => {
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    const plain = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    expect(s.arriving(early.session, "BDEV")).toMatchObject({ first: true, session: { userId: BOB, roomId: MEETING } });
    expect(s.arriving(early.session, "BDEV").first).toBe(false);
    s.attach(early.session, () => undefined, "BDEV");
    expect(s.arriving(early.session, "BDEV").first).toBe(false); // announced already: once per session
    expect(() => s.arriving(plain.session, "ADEV")).toThrow(expect.objectContaining({ errcode: "M_FORBIDDEN" }));
    expect(() => s.arriving("unknown", "ADEV")).toThrow(expect.objectContaining({ errcode: "M_UNKNOWN_TOKEN" }));
    // In the call (its keys went up after its hello): the device its hello named, once.
    s.attach(plain.session, () => undefined, "ADEV");
    expect(() => s.arriving(plain.session, "OTHER")).toThrow(expect.objectContaining({ errcode: "M_FORBIDDEN" }));
    expect(s.arriving(plain.session, "ADEV")).toMatchObject({ first: true, session: { userId: ALICE } });
    expect(s.arriving(plain.session, "ADEV").first).toBe(false);
  });

  it("lists at most MAX_GRANT_DEVICES devices", async () => {
    const big = makeService({ sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: MAX_GRANT_DEVICES + 5 }, {});
    for (let i = 0; i < MAX_GRANT_DEVICES + 3; i++) {
      const g = await big.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
      big.attach(g.session, () => undefined, `D${i}`);
    }
    const early = await big.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    expect(early.devices).toHaveLength(MAX_GRANT_DEVICES);
    big.stop();
  });

  it("refused at its hello (locked or ended meanwhile), ends: its token opens nothing", async () => {
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    refuse = "this meeting is locked";
    await expect(s.admitHolder(early.session)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: "this meeting is locked" });
    expect(s.session(early.session)).toBeUndefined();
    expect(() => s.attach(early.session, () => undefined)).toThrow(expect.objectContaining({ errcode: "M_UNKNOWN_TOKEN" }));
    expect(presence).toEqual([]);
  });

  it("does not count as being in the call for the user's next join (a lock is not passed with it)", async () => {
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING });
    s.attach(early.session, () => undefined);
    await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING });
    expect(admissions).toEqual([`${BOB} inCall=false ahead=true`, `${BOB} inCall=false ahead=false`, `${BOB} inCall=true ahead=false`]);
  });

  it("restored from the store after a restart: one never held is admitted at its hello and is nobody's presence until then; a held one is neither", async () => {
    const closer = () => undefined;
    const base = { userId: BOB, roomId: MEETING, callId: "c1" };
    s.restore({ ...base, tokenHash: "granted", expiresAt: now + 30_000 }, closer, 30_000);
    s.restore({ ...base, tokenHash: "held", expiresAt: null }, closer, 30_000);
    await s.admitHolder("held");
    expect(admissions).toEqual([]);
    await s.admitHolder("granted");
    expect(admissions).toEqual([`${BOB} inCall=true ahead=false`]); // the held one is Bob in the call
    s.attach("granted", closer);
    s.attach("held", closer);
    expect(presence).toEqual([]); // told by the process that saw the first hello
    s.detach("held", closer);
    s.detach("granted", closer);
    expect(presence).toEqual([`-${BOB}`]);
  });

  it("restored from the store after a restart, a held session's hello reads the membership: gone is refused; invited (the previous process waited for the join) waits for the join again", async () => {
    const svc = makeService({ sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 3, invitedJoinWaitMs: 300 });
    try {
      const ended: Record<string, unknown[]> = { left: [], invited: [], joined: [] };
      const base = { roomId: MEETING, callId: "c1", expiresAt: null };
      members.set(`${MEETING}|${EVE}`, "leave");
      members.set(`${MEETING}|${BOB}`, "invite");
      svc.restore({ ...base, userId: EVE, tokenHash: "left" }, (r) => ended.left!.push(r), 30_000);
      svc.restore({ ...base, userId: BOB, tokenHash: "invited" }, (r) => ended.invited!.push(r), 30_000);
      svc.restore({ ...base, userId: ALICE, tokenHash: "joined" }, (r) => ended.joined!.push(r), 30_000);
      await expect(svc.admitHolder("left")).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: `${EVE} is not joined to ${MEETING}` });
      expect(svc.session("left")).toBeUndefined();
      await svc.admitHolder("invited");
      await svc.admitHolder("joined");
      await new Promise((r) => setTimeout(r, 600));
      expect(ended.invited).toEqual([{ errcode: "M_FORBIDDEN", message: `${BOB} did not join ${MEETING} within 300 ms of their hello` }]);
      expect(svc.session("joined")).toBeDefined();
      expect(ended.joined).toEqual([]);
    } finally {
      svc.stop();
    }
  });

  it("restored from the store after a restart, a held session goes on at its hello when the homeserver does not answer; a grant never held does not", async () => {
    const svc = makeService({ sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 3 }, {
      homeserver: { resolveAlias: async () => undefined, getMembership: async () => Promise.reject(new ParleyError("M_UNAVAILABLE", "homeserver down")) },
    });
    try {
      const base = { userId: BOB, roomId: MEETING, callId: "c1" };
      svc.restore({ ...base, tokenHash: "held", expiresAt: null }, () => undefined, 30_000);
      svc.restore({ ...base, tokenHash: "granted", expiresAt: now + 30_000 }, () => undefined, 30_000);
      await svc.admitHolder("held");
      expect(svc.session("held")).toBeDefined();
      await expect(svc.admitHolder("granted")).rejects.toMatchObject({ errcode: "M_UNAVAILABLE" });
      expect(svc.session("granted")).toBeUndefined();
    } finally {
      svc.stop();
    }
  });

  it("restored from the store after a restart, a session's hello brings its ICE servers (a grant never held may have been a lobby grant, which carried none)", async () => {
    const TURN = { urls: ["turn:127.0.0.1:3478"], secret: "s", ttlSeconds: 300, relayOnly: true };
    const svc = makeService({ sessionTtlMs: 60_000, iceServers: [{ urls: "stun:stun.a.example" }], turn: TURN, sessionsPerUserPerCall: 3 });
    try {
      const closer = () => undefined;
      const base = { userId: BOB, roomId: MEETING, callId: "c1" };
      svc.restore({ ...base, tokenHash: "granted", expiresAt: now + 30_000 }, closer, 30_000);
      svc.restore({ ...base, tokenHash: "held", expiresAt: null }, closer, 30_000);
      const ice = await svc.admitHolder("granted");
      expect(ice?.iceTransportPolicy).toBe("relay");
      expect(ice?.iceServers).toEqual(expect.arrayContaining([expect.objectContaining({ urls: TURN.urls, username: expect.any(String), credential: expect.any(String) })]));
      expect((await svc.admitHolder("held"))?.iceTransportPolicy).toBe("relay");
    } finally {
      svc.stop();
    }
  });

  it("may be had by a user let in from the lobby (invited) while they join the room; with no wait configured, its hello needs the join", async () => {
    members.set(`${MEETING}|${BOB}`, "invite");
    await expect(s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    const again = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    // The invite's own event (Parley hears it after the grant, over the appservice) takes nothing away.
    expect(s.evict(MEETING, BOB, "invite")).toBe(0);
    // A hello before the room's join is refused, and the session ends.
    await expect(s.admitHolder(early.session)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: `${BOB} is not joined to ${MEETING}` });
    expect(s.session(early.session)).toBeUndefined();
    members.set(`${MEETING}|${BOB}`, "join");
    await s.admitHolder(again.session);
    s.attach(again.session, () => undefined);
    expect(presence).toEqual([`+${BOB}`]);
    // Knocking (this Parley gives no lobby grants), or gone: no grant at all, ahead or not.
    for (const m of ["knock", "leave", "ban"]) {
      members.set(`${MEETING}|${BOB}`, m);
      const refused = { errcode: "M_FORBIDDEN", message: `${BOB} is not joined to ${MEETING}` };
      await expect(s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true })).rejects.toMatchObject(refused);
      await expect(s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING })).rejects.toMatchObject(refused);
    }
  });

  it("the hello of a session granted ahead to a joined user reads no membership (a leave since ends it by its transaction)", async () => {
    let reads: MembershipReads | undefined;
    const counting = aheadService();
    try {
      const early = await counting.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
      reads = countMembershipReads();
      await counting.admitHolder(early.session);
      expect(reads.count()).toBe(0);
      await leaveBeforeHelloEnds(counting, "bob-token", "b.example", BOB);
    } finally {
      reads?.restore();
      counting.stop();
    }
  });

  it("the hello of a user let in goes on at once; their join has invitedJoinWaitMs to arrive, or the session ends", async () => {
    const wait = makeService({ sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 3, invitedJoinWaitMs: 400 });
    try {
      // The join lands 100 ms after the hello: the session goes on.
      members.set(`${MEETING}|${BOB}`, "invite");
      const early = await wait.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
      const t0 = performance.now();
      await wait.admitHolder(early.session);
      expect(performance.now() - t0).toBeLessThan(100);
      const bobEnded: unknown[] = [];
      wait.attach(early.session, (r) => bobEnded.push(r));
      setTimeout(() => members.set(`${MEETING}|${BOB}`, "join"), 100);
      // Never joined: ended once the wait is over, with the reason.
      members.set(`${MEETING}|${ALICE}`, "invite");
      const alice = await wait.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING, ahead: true });
      await wait.admitHolder(alice.session);
      const aliceEnded: unknown[] = [];
      wait.attach(alice.session, (r) => aliceEnded.push(r));
      await new Promise((r) => setTimeout(r, 300));
      expect(aliceEnded).toEqual([]);
      await new Promise((r) => setTimeout(r, 300));
      expect(aliceEnded).toEqual([{ errcode: "M_FORBIDDEN", message: `${ALICE} did not join ${MEETING} within 400 ms of their hello` }]);
      expect(wait.session(alice.session)).toBeUndefined();
      expect(bobEnded).toEqual([]);
      expect(wait.session(early.session)?.userId).toBe(BOB);
      // Gone before its hello (the leave's transaction): the session ended with it.
      members.set(`${MEETING}|${ALICE}`, "invite");
      const again = await wait.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING, ahead: true });
      members.set(`${MEETING}|${ALICE}`, "leave");
      expect(wait.evict(MEETING, ALICE, "leave")).toBe(1);
      expect(wait.session(again.session)).toBeUndefined();
      // The invite the grant saw spares the hello its read.
      members.set(`${MEETING}|${ALICE}`, "invite");
      const unread = await wait.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING, ahead: true });
      const reads = countMembershipReads();
      try {
        await wait.admitHolder(unread.session);
        expect(reads.count()).toBe(0);
      } finally {
        reads.restore();
      }
      wait.attach(unread.session, () => undefined);
      // Invited, then gone while the join is awaited: ended then, as any leave ends a session.
      members.set(`${MEETING}|${ALICE}`, "invite");
      const gone = await wait.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING, ahead: true });
      await wait.admitHolder(gone.session);
      const goneEnded: unknown[] = [];
      wait.attach(gone.session, (r) => goneEnded.push(r));
      members.set(`${MEETING}|${ALICE}`, "leave");
      await new Promise((r) => setTimeout(r, 150));
      expect(goneEnded).toEqual([{ errcode: "M_FORBIDDEN", message: `${ALICE} is not joined to ${MEETING}` }]);
    } finally {
      wait.stop();
    }
  });

  it("the awaited join of a user let in is taken from its transaction, not the next read", async () => {
    const wait = makeService({ sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 3, invitedJoinWaitMs: 600 });
    let reads: MembershipReads | undefined;
    try {
      members.set(`${MEETING}|${BOB}`, "invite");
      const early = await wait.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
      reads = countMembershipReads();
      await wait.admitHolder(early.session);
      const ended: unknown[] = [];
      wait.attach(early.session, (r) => ended.push(r));
      // The pauses between reads (25, 50, 100 ms...) pass; the join of another user or room
      // wakes nothing.
      await new Promise((r) => setTimeout(r, 200));
      wait.memberJoined(MEETING, ALICE);
      wait.memberJoined("!other:a.example", BOB);
      const readsBefore = reads.count();
      // Bob's own homeserver still says "invite" to a read; the transaction is its word.
      wait.memberJoined(MEETING, BOB);
      await new Promise((r) => setTimeout(r, 700));
      expect(ended).toEqual([]);
      expect(reads.count()).toBe(readsBefore);
      expect([...(wait as unknown as { admitAtHello: Map<string, unknown> }).admitAtHello.keys()]).toEqual([]);
      // A join that came before the hello: the hello reads nothing, and nothing is awaited.
      members.set(`${MEETING}|${ALICE}`, "invite");
      const alice = await wait.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING, ahead: true });
      wait.memberJoined(MEETING, ALICE);
      const before = reads.count();
      await wait.admitHolder(alice.session);
      expect(reads.count()).toBe(before);
      // ...and a leave after that join still ends the session before its hello.
      members.set(`${MEETING}|${ALICE}`, "invite");
      await leaveBeforeHelloEnds(wait, "alice-token", "a.example", ALICE, () => wait.memberJoined(MEETING, ALICE));
    } finally {
      reads?.restore();
      wait.stop();
    }
  });

  it("an invite taken back ends the invitee's grant", async () => {
    members.set(`${MEETING}|${BOB}`, "invite");
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    expect(s.evict(MEETING, BOB, "leave")).toBe(1);
    expect(s.session(early.session)).toBeUndefined();
  });

  it("waits for its hello no longer than its TURN credential lives", async () => {
    s.stop();
    s = aheadService(30);
    const early = await s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING, ahead: true });
    const plain = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    expect(early.expiresAt).toBe(now + 30_000);
    expect(plain.expiresAt).toBe(now + 60_000);
    now += 30_000;
    expect(s.session(early.session)).toBeUndefined();
    expect(s.session(plain.session)?.userId).toBe(ALICE);
  });
});

describe("a grant asked from the lobby (still knocking)", () => {
  const TURN = { urls: ["turn:127.0.0.1:3478"], secret: "s", ttlSeconds: 300, relayOnly: false };
  /** letInWaitMs here (the default, LET_IN_WAIT_MS, is longer). */
  const LET_IN_WAIT = 300;
  let s: CallService;
  const lobbyService = (lobbyGrantsPerCall: number, sessionsPerCall = 5, letInWaitMs = LET_IN_WAIT) =>
    makeService({ sessionTtlMs: 60_000, iceServers: [{ urls: "stun:stun.a.example" }], turn: TURN, sessionsPerUserPerCall: 3, sessionsPerCall, invitedJoinWaitMs: 400, lobbyGrantsPerCall, letInWaitMs });
  const ahead = (svc: CallService, token = "bob-token", server = "b.example") => svc.join({ openIdToken: token, serverName: server, room: MEETING, ahead: true });
  /** Alice in the call: a held session. */
  const aliceIn = async (svc: CallService) => {
    const g = await svc.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    const closer = () => undefined;
    svc.attach(g.session, closer, "ALICEDEV");
    return { grant: g, leave: () => svc.detach(g.session, closer) };
  };
  beforeEach(() => {
    s = lobbyService(2);
    members.set(`${MEETING}|${BOB}`, "knock");
  });
  afterEach(() => s.stop());

  it("is given to a knocker only for a call someone is in, asked ahead, without TURN credentials or the call's devices; none when lobbyGrantsPerCall is 0", async () => {
    await expect(ahead(s)).rejects.toMatchObject({ errcode: "M_NOT_FOUND", message: expect.stringContaining("nobody is in this meeting's call yet") });
    await aliceIn(s);
    const g = await ahead(s);
    expect(g).toMatchObject({ iceServers: [], iceTransportPolicy: "all", devices: [] });
    // Not asked ahead (a Join), or from a Parley that gives none: no grant while knocking.
    await expect(s.join({ openIdToken: "bob-token", serverName: "b.example", room: MEETING })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    const off = lobbyService(0);
    try {
      await aliceIn(off);
      await expect(ahead(off)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: `${BOB} is not joined to ${MEETING}` });
    } finally {
      off.stop();
    }
  });

  it("a hello as its user is let in, before this homeserver has stored the invite, waits for it: its transaction, or a read that shows it", async () => {
    await aliceIn(s);
    // The invite's transaction comes 100 ms after the hello: it goes on, with no further read.
    const g = await ahead(s);
    const hello = s.admitHolder(g.session);
    await new Promise((r) => setTimeout(r, 100));
    members.set(`${MEETING}|${BOB}`, "invite");
    expect(s.evict(MEETING, BOB, "invite")).toBe(0);
    expect((await hello)?.iceServers).toHaveLength(2);
    expect(s.session(g.session)).toBeDefined();
    // No transaction (or a later one): a read shows the invite.
    members.set(`${MEETING}|${BOB}`, "knock");
    const read = await ahead(s);
    const second = s.admitHolder(read.session);
    await new Promise((r) => setTimeout(r, 100));
    members.set(`${MEETING}|${BOB}`, "join");
    expect((await second)?.iceServers).toHaveLength(2);
  });

  it(`a hello while still knocking is refused after letInWaitMs (${LET_IN_WAIT} ms here), and at once by a deny meanwhile`, async () => {
    expect(LET_IN_WAIT_MS).toBe(2000);
    await aliceIn(s);
    const g = await ahead(s);
    const started = Date.now();
    await expect(s.admitHolder(g.session)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: `${BOB} is not let in to ${MEETING} yet` });
    expect(Date.now() - started).toBeGreaterThanOrEqual(LET_IN_WAIT - 5);
    expect(s.session(g.session)).toBeUndefined();
    // Denied while its hello waits (its reads 250 ms apart by then): refused then, not at its next read.
    const long = lobbyService(2, 5, 5000);
    try {
      await aliceIn(long);
      const denied = await ahead(long);
      const hello = long.admitHolder(denied.session);
      await new Promise((r) => setTimeout(r, 420));
      const at = Date.now();
      expect(long.evict(MEETING, BOB, "leave")).toBe(1);
      await expect(hello).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
      expect(Date.now() - at).toBeLessThan(150);
    } finally {
      long.stop();
    }
  });

  it("opens nothing before the invite: its device is not announced, and its hello is refused and ends it", async () => {
    await aliceIn(s);
    const g = await ahead(s);
    expect(() => s.arriving(g.session, "BOBDEV")).toThrow(expect.objectContaining({ errcode: "M_FORBIDDEN", message: `${BOB} is not let in to ${MEETING} yet` }));
    // Knocking again (a note for the hosts) keeps it; its hello while knocking ends it.
    expect(s.evict(MEETING, BOB, "knock")).toBe(0);
    await expect(s.admitHolder(g.session)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: `${BOB} is not let in to ${MEETING} yet` });
    expect(s.session(g.session)).toBeUndefined();
    // A deny (the knock's leave) ends one that waits.
    const denied = await ahead(s);
    expect(s.evict(MEETING, BOB, "leave")).toBe(1);
    expect(s.session(denied.session)).toBeUndefined();
  });

  it("once the invite's transaction came: its device is announced, its hello goes on with the ICE servers (TURN credentials) it lacked, reading no membership, and its join is awaited", async () => {
    await aliceIn(s);
    const g = await ahead(s);
    members.set(`${MEETING}|${BOB}`, "invite");
    expect(s.evict(MEETING, BOB, "invite")).toBe(0);
    expect(s.arriving(g.session, "BOBDEV")).toMatchObject({ first: true });
    const reads = countMembershipReads();
    let ice;
    try {
      ice = await s.admitHolder(g.session);
      expect(reads.count()).toBe(0);
    } finally {
      reads.restore();
    }
    expect(ice?.iceServers).toEqual([{ urls: "stun:stun.a.example" }, { urls: TURN.urls, username: expect.any(String), credential: expect.any(String) }]);
    const ended: unknown[] = [];
    s.attach(g.session, (r) => ended.push(r), "BOBDEV");
    // Never joined: ended once invitedJoinWaitMs is over, as any invited user's session.
    await new Promise((r) => setTimeout(r, 700));
    expect(ended).toEqual([{ errcode: "M_FORBIDDEN", message: `${BOB} did not join ${MEETING} within 400 ms of their hello` }]);
    // A hello before the invite's transaction reads the membership: invited by then, it goes on.
    members.set(`${MEETING}|${BOB}`, "knock");
    const early = await ahead(s);
    members.set(`${MEETING}|${BOB}`, "join");
    expect((await s.admitHolder(early.session))?.iceServers).toHaveLength(2);
    // A plain grant's hello gets no ICE servers: its grant had them.
    const plain = await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING, ahead: true });
    expect(await s.admitHolder(plain.session)).toBeUndefined();
  });

  it("its pre-join subscription waits for the let-in as its hello does: the invite's transaction, a read, or its hello's let-in; refused once its standby is gone or at a deny", async () => {
    s.stop();
    s = lobbyService(5);
    await aliceIn(s);
    // The invite's transaction comes 100 ms after the ask: yes, with no wait for the next read.
    const g = await ahead(s);
    const asked = s.letInForMedia(g.session);
    await new Promise((r) => setTimeout(r, 100));
    members.set(`${MEETING}|${BOB}`, "invite");
    expect(s.evict(MEETING, BOB, "invite")).toBe(0);
    // With the ICE servers (TURN credentials) the lobby grant did not carry, as its hello would get them.
    expect((await asked)?.ice?.iceServers).toEqual([{ urls: "stun:stun.a.example" }, { urls: TURN.urls, username: expect.any(String), credential: expect.any(String) }]);
    expect(await s.letInForMedia(g.session)).toMatchObject({ ice: { iceServers: expect.any(Array) } }); // known now: at once
    // A read that shows the invite.
    members.set(`${MEETING}|${BOB}`, "knock");
    const read = await ahead(s);
    const byRead = s.letInForMedia(read.session);
    await new Promise((r) => setTimeout(r, 60));
    members.set(`${MEETING}|${BOB}`, "invite");
    expect(await byRead).toMatchObject({ ice: {} });
    s.evict(MEETING, BOB, "leave"); // (at most sessionsPerUserPerCall: these two go)
    // Still knocking after letInWaitMs: it waits on while its standby wants it; no once that is gone.
    members.set(`${MEETING}|${BOB}`, "knock");
    const knocking = await ahead(s);
    let standby = true;
    let started = Date.now();
    const stillKnocking = s.letInForMedia(knocking.session, () => standby);
    await new Promise((r) => setTimeout(r, LET_IN_WAIT + 200));
    standby = false;
    expect(await stillKnocking).toBeNull();
    expect(Date.now() - started).toBeGreaterThanOrEqual(LET_IN_WAIT + 195);
    // Denied while it waits: no, at once. A session gone or unknown: no.
    const denied = await ahead(s);
    const waiting = s.letInForMedia(denied.session);
    await new Promise((r) => setTimeout(r, 60));
    started = Date.now();
    expect(s.evict(MEETING, BOB, "leave")).toBeGreaterThanOrEqual(1);
    expect(await waiting).toBeNull();
    expect(Date.now() - started).toBeLessThan(150);
    expect(await s.letInForMedia("no-such-session")).toBeNull();
    // A grant not asked from the lobby: yes while it lives (its grant had the ICE servers).
    expect(await s.letInForMedia((await aliceIn(s)).grant.session)).toEqual({});
  });

  /** A lobby grant whose pre-join subscription, asked in the lobby, waits past its reads (letInWaitMs). */
  const waitingPastReads = async () => {
    s.stop();
    s = lobbyService(2);
    await aliceIn(s);
    const g = await ahead(s);
    const media = s.letInForMedia(g.session);
    await new Promise((r) => setTimeout(r, LET_IN_WAIT + 100));
    return { g, media };
  };

  it("asked from the lobby, its pre-join subscription waits past letInWaitMs, reading no more, for a host's admit through Parley: made at once; its hello still waits for the invite", async () => {
    const { g, media } = await waitingPastReads();
    const reads = countMembershipReads();
    try {
      await new Promise((r) => setTimeout(r, 600));
      expect(reads.count()).toBe(0); // past its reads: only the let-in's events wake it
    } finally {
      reads.restore();
    }
    // Another user's admit, or another room's, is not this one's.
    s.letInAhead(MEETING, "@carol:b.example");
    s.letInAhead("!other:a.example", BOB);
    const at = Date.now();
    s.letInAhead(MEETING, BOB);
    expect(await media).toMatchObject({ ice: { iceServers: expect.any(Array) } });
    expect(Date.now() - at).toBeLessThan(100);
    expect(await s.letInForMedia(g.session)).toMatchObject({ ice: {} }); // admitted ahead: at once
    // The hello is not let in by the admit alone: still knocking here, it is refused.
    await expect(s.admitHolder(g.session)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: `${BOB} is not let in to ${MEETING} yet` });
  });

  it("asked from the lobby and waiting past its reads, its pre-join subscription ends at once when the service stops", async () => {
    const { media } = await waitingPastReads();
    const at = Date.now();
    s.stop();
    expect(await media).toBeNull();
    expect(Date.now() - at).toBeLessThan(100);
  });

  it("an admit whose invite failed ends the lobby grants it let in ahead, not one whose invite came meanwhile", async () => {
    s.stop();
    s = lobbyService(3);
    await aliceIn(s);
    const g = await ahead(s);
    const key = s.session(g.session)!.key;
    const told: unknown[] = [];
    s.whenEnded(key, (r) => told.push(r));
    // Failed with no admit ahead: nothing ends.
    s.letInFailed(MEETING, BOB);
    expect(s.session(g.session)).toBeDefined();
    s.letInAhead(MEETING, BOB);
    s.letInFailed(MEETING, BOB);
    expect(s.session(g.session)).toBeUndefined();
    expect(told).toEqual([{ errcode: "M_FORBIDDEN", message: `${BOB} is not let in to ${MEETING} yet` }]);
    // Its invite's transaction came first: the grant stands.
    const invited = await ahead(s);
    s.letInAhead(MEETING, BOB);
    members.set(`${MEETING}|${BOB}`, "invite");
    s.evict(MEETING, BOB, "invite");
    s.letInFailed(MEETING, BOB);
    expect(s.session(invited.session)).toBeDefined();
  });

  it("its pre-join subscription and its hello waiting together are both woken by the invite's transaction", async () => {
    s.stop();
    s = lobbyService(2, 5, 5000);
    await aliceIn(s);
    const g = await ahead(s);
    const media = s.letInForMedia(g.session);
    const hello = s.admitHolder(g.session);
    // Both in their reads' longer pauses (250 ms apart by then): the transaction wakes both now.
    await new Promise((r) => setTimeout(r, 420));
    members.set(`${MEETING}|${BOB}`, "invite");
    const at = Date.now();
    expect(s.evict(MEETING, BOB, "invite")).toBe(0);
    expect(await media).toMatchObject({ ice: {} });
    expect((await hello)?.iceServers).toHaveLength(2);
    expect(Date.now() - at).toBeLessThan(100);
  });

  it("its pre-join subscription waiting when its hello is let in by a read is woken by that let-in", async () => {
    s.stop();
    s = lobbyService(2, 5, 5000);
    await aliceIn(s);
    const g = await ahead(s);
    const media = s.letInForMedia(g.session);
    await new Promise((r) => setTimeout(r, 420));
    // Its hello comes now and reads the invite at once; the subscription's next read is up to 250 ms away.
    members.set(`${MEETING}|${BOB}`, "invite");
    const at = Date.now();
    await s.admitHolder(g.session);
    expect(await media).toMatchObject({ ice: {} });
    expect(Date.now() - at).toBeLessThan(100);
  });

  it("whoever watches it without holding it (its standby socket) is told at the deny, once; not after letting go", async () => {
    await aliceIn(s);
    const g = await ahead(s);
    const key = s.session(g.session)!.key;
    const told: unknown[] = [];
    s.whenEnded(key, (r) => told.push(r));
    const release = s.whenEnded(key, (r) => told.push(["released", r]));
    release();
    expect(s.evict(MEETING, BOB, "knock")).toBe(0);
    expect(told).toEqual([]);
    expect(s.evict(MEETING, BOB, "leave", { by: ALICE, reason: "not today" })).toBe(1);
    expect(told).toEqual([{ errcode: "M_FORBIDDEN", message: "membership is now leave", by: ALICE, reason: "not today" }]);
    // A session gone already is told at once.
    const gone: unknown[] = [];
    s.whenEnded(key, (r) => gone.push(r));
    expect(gone).toEqual([{ errcode: "M_UNKNOWN_TOKEN", message: "unknown or expired session; join again" }]);
  });

  it("at most lobbyGrantsPerCall wait in a call's lobby; they neither fill the call nor keep it from going idle", async () => {
    s.stop();
    s = lobbyService(2, 3);
    await aliceIn(s);
    const waiting = await ahead(s);
    await ahead(s);
    await expect(ahead(s)).rejects.toMatchObject({ errcode: "M_LIMIT_EXCEEDED", message: "at most 2 sessions wait in this call's lobby; ask again once let in" });
    // Alice's two more devices fill the call (3): the lobby's two are not counted...
    for (let i = 0; i < 2; i++) await s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING });
    expect(await codeOf(s.join({ openIdToken: "alice-token", serverName: "a.example", room: MEETING }))).toBe("M_LIMIT_EXCEEDED");
    // ...until one of them is let in and says hello to the full call.
    members.set(`${MEETING}|${BOB}`, "invite");
    s.evict(MEETING, BOB, "invite");
    await expect(s.admitHolder(waiting.session)).rejects.toMatchObject({ errcode: "M_LIMIT_EXCEEDED", message: expect.stringContaining("the call is full") });
  });

  it("does not keep an empty call from going idle, and ends with its SFU room", async () => {
    const alice = await aliceIn(s);
    const g = await ahead(s);
    const call = (await store.activeCall(MEETING))!;
    expect(s.occupied(call.callId)).toBe(true);
    alice.leave();
    expect(s.occupied(call.callId)).toBe(false);
    await s.endIdle(call);
    expect(sfu.destroyed).toEqual([call.sfu!.room]);
    expect(s.session(g.session)).toBeUndefined();
  });
});
