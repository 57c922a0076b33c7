import { describe, expect, it } from "vitest";
import {
  CALL_MEMBER_EVENT_TYPE,
  parleyTransport,
  type MembershipEvent,
} from "../../../appservice/src/calls/rtcMembership.ts";
import { RtcParticipants, type RtcChange } from "../../../appservice/src/calls/rtcParticipants.ts";

const ALICE = "@alice:a.test";
const BOB = "@bob:b.test";
const CAROL = "@carol:c.test";
const ROOM = "!meeting:a.test";
const T0 = 1_700_000_000_000;
const MIN = 60_000;
const HOUR = 60 * MIN;

function join(
  user: string,
  device: string,
  ts: number,
  extra: Record<string, unknown> = {},
  stateKey = `_${user}_${device}_m.call`,
): MembershipEvent {
  return {
    type: CALL_MEMBER_EVENT_TYPE,
    sender: user,
    state_key: stateKey,
    origin_server_ts: ts,
    content: {
      application: "m.call",
      call_id: "",
      scope: "m.room",
      device_id: device,
      expires: 4 * HOUR,
      focus_active: { type: "livekit", focus_selection: "multi_sfu" },
      foci_preferred: [parleyTransport("https://parley.a.test/call", ROOM)],
      ...extra,
    },
  };
}

function leave(user: string, device: string, ts: number, sender = user): MembershipEvent {
  const stateKey = `_${user}_${device}_m.call`;
  return { type: CALL_MEMBER_EVENT_TYPE, sender, state_key: stateKey, origin_server_ts: ts, content: {} };
}

function rtcJoin(user: string, device: string, memberId: string, ts: number, slot = "m.call#ROOM"): MembershipEvent {
  return {
    type: "m.rtc.member",
    sender: user,
    origin_server_ts: ts,
    msc4354_sticky: { duration_ms: HOUR },
    content: {
      slot_id: slot,
      member: { user_id: user, device_id: device, id: memberId },
      application: { type: slot.split("#")[0] },
      transports: { published: [parleyTransport("https://parley.a.test/call", ROOM)], can_subscribe: [] },
      versions: [],
      msc4354_sticky_key: memberId,
    },
  };
}

function rtcLeave(user: string, memberId: string, ts: number): MembershipEvent {
  return {
    type: "m.rtc.member",
    sender: user,
    origin_server_ts: ts,
    msc4354_sticky: { duration_ms: HOUR },
    content: { slot_id: "m.call#ROOM", msc4354_sticky_key: memberId },
  };
}

function who(p: RtcParticipants, now: number): string[] {
  return p.list(now).map((x) => `${x.userId}/${x.deviceId}`);
}

describe("RtcParticipants", () => {
  it("starts empty", () => {
    const p = new RtcParticipants();
    expect(p.list(T0)).toEqual([]);
    expect(p.size).toBe(0);
    expect(p.describe(T0)).toBe("nobody");
  });

  it("folds joins of both forms and lists them by joined time", () => {
    const p = new RtcParticipants();
    expect(p.apply(join(BOB, "B1", T0 + 2000), T0 + 2000).kind).toBe("joined");
    expect(p.apply(rtcJoin(ALICE, "A2", "m-a2", T0 + 3000), T0 + 3000).kind).toBe("joined");
    expect(p.apply(join(ALICE, "A1", T0 + 1000), T0 + 3000).kind).toBe("joined");
    expect(who(p, T0 + 4000)).toEqual([`${ALICE}/A1`, `${BOB}/B1`, `${ALICE}/A2`]);
    expect(p.users(T0 + 4000)).toEqual([
      { userId: ALICE, devices: 2 },
      { userId: BOB, devices: 1 },
    ]);
    expect(p.describe(T0 + 4000)).toBe(`${ALICE} (2 devices), ${BOB}`);
  });

  it("breaks ties in joined time by arrival", () => {
    const p = new RtcParticipants();
    p.apply(join(CAROL, "C", T0), T0);
    p.apply(join(ALICE, "A", T0), T0);
    p.apply(join(BOB, "B", T0), T0);
    expect(p.describe(T0)).toBe(`${CAROL}, ${ALICE}, ${BOB}`);
  });

  it("reports what a join returns", () => {
    const p = new RtcParticipants();
    const change = p.apply(join(ALICE, "A1", T0), T0);
    expect(change).toMatchObject({
      kind: "joined",
      participant: { userId: ALICE, deviceId: "A1", joinedAt: T0, membership: { slotId: "m.call#ROOM" } },
    });
  });

  it("keeps the first join time through session-form updates (created_ts)", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    p.apply(join(BOB, "B1", T0 + MIN), T0 + MIN);
    const change = p.apply(join(ALICE, "A1", T0 + 2 * MIN, { created_ts: T0, expires: 8 * HOUR }), T0 + 2 * MIN);
    expect(change.kind).toBe("updated");
    expect(p.get(ALICE, "A1")?.joinedAt).toBe(T0);
    expect(p.get(ALICE, "A1")?.membership.expiresAt).toBe(T0 + 8 * HOUR);
    expect(who(p, T0 + 2 * MIN)).toEqual([`${ALICE}/A1`, `${BOB}/B1`]);
  });

  it("keeps the first join time through MSC4143 updates with the same member id", () => {
    const p = new RtcParticipants();
    p.apply(rtcJoin(ALICE, "A1", "m-1", T0), T0);
    expect(p.apply(rtcJoin(ALICE, "A1", "m-1", T0 + 30 * MIN), T0 + 30 * MIN).kind).toBe("updated");
    expect(p.get(ALICE, "A1")?.joinedAt).toBe(T0);
    // Stickiness was renewed by the update.
    expect(who(p, T0 + 80 * MIN)).toEqual([`${ALICE}/A1`]);
  });

  it("removes a device on an empty content", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    p.apply(join(ALICE, "A2", T0), T0);
    const change = p.apply(leave(ALICE, "A1", T0 + MIN), T0 + MIN);
    expect(change).toMatchObject({ kind: "left", reason: "leave", participant: { userId: ALICE, deviceId: "A1" } });
    expect(who(p, T0 + MIN)).toEqual([`${ALICE}/A2`]);
    expect(p.describe(T0 + MIN)).toBe(ALICE);
  });

  it("removes an MSC4143 member on a leave with its sticky key", () => {
    const p = new RtcParticipants();
    p.apply(rtcJoin(ALICE, "A1", "m-1", T0), T0);
    expect(p.apply(rtcLeave(ALICE, "m-1", T0 + MIN), T0 + MIN).kind).toBe("left");
    expect(p.size).toBe(0);
  });

  it("does not let one user's sticky leave remove another user's member with the same key", () => {
    const p = new RtcParticipants();
    p.apply(rtcJoin(ALICE, "A1", "same", T0), T0);
    expect(p.apply(rtcLeave(BOB, "same", T0 + MIN), T0 + MIN).kind).toBe("ignored");
    expect(who(p, T0 + MIN)).toEqual([`${ALICE}/A1`]);
  });

  it("ignores a leave of a device that is not in the call, and one without a key", () => {
    const p = new RtcParticipants();
    expect(p.apply(leave(ALICE, "A1", T0), T0)).toEqual({
      kind: "ignored",
      reason: `${ALICE} left, but was not in the call`,
    });
    const noKey: MembershipEvent = { type: "m.rtc.member", sender: ALICE, content: {} };
    expect(p.apply(noKey, T0)).toEqual({ kind: "ignored", reason: "a leave without a sticky key names no device" });
  });

  it("reports a parse failure and changes nothing", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    const change = p.apply(join(ALICE, "A1", T0 + MIN, { device_id: 7, call_id: null }), T0 + MIN);
    expect(change).toEqual({
      kind: "invalid",
      errors: ["device_id must be a non-empty string", "call_id must be a string"],
    });
    expect(who(p, T0 + MIN)).toEqual([`${ALICE}/A1`]);
  });

  it("refuses a leave forged over another user's state key", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    const change = p.apply(leave(ALICE, "A1", T0 + MIN, BOB), T0 + MIN);
    expect(change.kind).toBe("invalid");
    expect(who(p, T0 + MIN)).toEqual([`${ALICE}/A1`]);
  });

  it("refuses a join under another user's state key", () => {
    const p = new RtcParticipants();
    const forged = join(ALICE, "A1", T0);
    forged.sender = BOB;
    expect(p.apply(forged, T0).kind).toBe("invalid");
    expect(p.size).toBe(0);
  });

  it("ignores a membership that has already expired", () => {
    const p = new RtcParticipants();
    const change = p.apply(join(ALICE, "A1", T0, { expires: MIN }), T0 + MIN);
    expect(change).toEqual({ kind: "ignored", reason: `membership of ${ALICE} (A1) has expired` });
    expect(p.size).toBe(0);
  });

  it("removes a device whose update arrives already expired", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    const change = p.apply(join(ALICE, "A1", T0 - 5 * HOUR, { created_ts: T0 - 5 * HOUR }), T0 + MIN);
    expect(change).toMatchObject({ kind: "left", reason: "expired" });
    expect(p.size).toBe(0);
  });

  it("drops expired devices from the list, and prune forgets them", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0, { expires: HOUR }), T0);
    p.apply(join(BOB, "B1", T0), T0);
    p.apply(rtcJoin(CAROL, "C1", "m-c", T0), T0);
    expect(who(p, T0 + HOUR - 1)).toEqual([`${ALICE}/A1`, `${BOB}/B1`, `${CAROL}/C1`]);
    expect(who(p, T0 + HOUR)).toEqual([`${BOB}/B1`]);
    expect(p.describe(T0 + HOUR)).toBe(BOB);
    expect(p.size).toBe(3);
    const gone = p.prune(T0 + HOUR);
    expect(gone.map((x) => x.userId).sort()).toEqual([ALICE, CAROL]);
    expect(p.size).toBe(1);
    // A pruned device's late leave finds nothing to remove.
    expect(p.apply(leave(ALICE, "A1", T0 + HOUR), T0 + HOUR).kind).toBe("ignored");
  });

  it("counts only m.call by default and reports other applications", () => {
    const p = new RtcParticipants();
    const game = join(ALICE, "A1", T0, { application: "io.example.game" }, `_${ALICE}_A1`);
    expect(p.apply(game, T0)).toEqual({ kind: "ignored", reason: "application io.example.game is not m.call" });
    expect(p.size).toBe(0);
  });

  it("can be narrowed to one slot; a device that moves to another slot leaves", () => {
    const p = new RtcParticipants({ slotId: "m.call#ROOM" });
    p.apply(rtcJoin(ALICE, "A1", "m-1", T0), T0);
    expect(p.apply(rtcJoin(BOB, "B1", "m-b", T0, "m.call#breakout"), T0)).toEqual({
      kind: "ignored",
      reason: "slot m.call#breakout is not m.call#ROOM",
    });
    const moved = p.apply(rtcJoin(ALICE, "A1", "m-1", T0 + MIN, "m.call#breakout"), T0 + MIN);
    expect(moved).toMatchObject({ kind: "left", reason: "other call", participant: { userId: ALICE } });
    expect(p.size).toBe(0);
  });

  it("lets a sticky key that moves to another device take the old entry with it", () => {
    const p = new RtcParticipants();
    p.apply(rtcJoin(ALICE, "A1", "m-1", T0), T0);
    expect(p.apply(rtcJoin(ALICE, "A2", "m-1", T0 + MIN), T0 + MIN).kind).toBe("joined");
    expect(who(p, T0 + MIN)).toEqual([`${ALICE}/A2`]);
    expect(p.apply(rtcLeave(ALICE, "m-1", T0 + 2 * MIN), T0 + 2 * MIN).kind).toBe("left");
    expect(p.size).toBe(0);
  });

  it("lets the newest event speak for a device seen through both forms", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    expect(p.apply(rtcJoin(ALICE, "A1", "m-1", T0 + MIN), T0 + MIN).kind).toBe("updated");
    expect(p.get(ALICE, "A1")?.membership.form).toBe("rtc");
    // The superseded state event's leave no longer names the device's membership.
    expect(p.apply(leave(ALICE, "A1", T0 + 2 * MIN), T0 + 2 * MIN).kind).toBe("ignored");
    expect(p.apply(rtcLeave(ALICE, "m-1", T0 + 3 * MIN), T0 + 3 * MIN).kind).toBe("left");
    expect(p.size).toBe(0);
  });

  it("drops every device of a user who leaves the room", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    p.apply(rtcJoin(ALICE, "A2", "m-2", T0), T0);
    p.apply(join(BOB, "B1", T0), T0);
    expect(p.removeUser(ALICE).map((x) => x.deviceId).sort()).toEqual(["A1", "A2"]);
    expect(p.describe(T0)).toBe(BOB);
    // Nothing of Alice is left behind: her old events' leaves find nothing.
    expect(p.apply(rtcLeave(ALICE, "m-2", T0 + MIN), T0 + MIN).kind).toBe("ignored");
    expect(p.removeUser(CAROL)).toEqual([]);
  });

  it("clears", () => {
    const p = new RtcParticipants();
    p.apply(join(ALICE, "A1", T0), T0);
    p.clear();
    expect(p.size).toBe(0);
    expect(p.apply(join(ALICE, "A1", T0 + MIN), T0 + MIN).kind).toBe("joined");
  });

  it("folds a whole sequence into the expected call", () => {
    const p = new RtcParticipants();
    const events: [MembershipEvent, number][] = [
      [join(ALICE, "A1", T0), T0],
      [join(BOB, "B1", T0 + 1), T0 + 1],
      [rtcJoin(CAROL, "C1", "m-c", T0 + 2), T0 + 2],
      [join(ALICE, "A2", T0 + 3), T0 + 3],
      [leave(BOB, "B1", T0 + 4), T0 + 4],
      [{ type: CALL_MEMBER_EVENT_TYPE, sender: BOB, content: "junk" }, T0 + 5],
      [join(BOB, "B2", T0 + 6), T0 + 6],
    ];
    const kinds: RtcChange["kind"][] = events.map(([e, now]) => p.apply(e, now).kind);
    expect(kinds).toEqual(["joined", "joined", "joined", "joined", "left", "invalid", "joined"]);
    expect(p.describe(T0 + 10)).toBe(`${ALICE} (2 devices), ${CAROL}, ${BOB}`);
  });
});
