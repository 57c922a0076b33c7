import { describe, expect, it } from "vitest";
import {
  CALL_MEMBER_EVENT_TYPE,
  DEFAULT_EXPIRE_DURATION_MS,
  MAX_STICKY_DURATION_MS,
  PARLEY_TRANSPORT_TYPE,
  isParleyTransport,
  membershipExpired,
  membershipKey,
  parleyTransport,
  parseRtcMembership,
  type MembershipEvent,
  type RtcMembership,
  type RtcMembershipParse,
} from "../../../appservice/src/calls/rtcMembership.ts";

const ALICE = "@alice:a.test";
const BOB = "@bob:b.test";
const ROOM = "!meeting:a.test";
const CALL_API = "https://parley.a.test/_parley/call/v1";
const T0 = 1_700_000_000_000;

const livekit = () => ({
  type: "livekit",
  livekit_service_url: "https://livekit-jwt.a.test",
  livekit_alias: ROOM,
});

/** What matrix-js-sdk 43's MembershipManager.makeMyMembership sends for the room-wide call. */
function sessionContent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    "application": "m.call",
    "call_id": "",
    "scope": "m.room",
    "device_id": "DEVA",
    "membershipID": `${ALICE}:DEVA`,
    "expires": 14_400_000,
    "m.call.intent": "video",
    "focus_active": { type: "livekit", focus_selection: "multi_sfu" },
    "foci_preferred": [parleyTransport(CALL_API, ROOM), livekit()],
    ...overrides,
  };
}

function sessionEvent(overrides: Partial<MembershipEvent> = {}): MembershipEvent {
  return {
    type: CALL_MEMBER_EVENT_TYPE,
    sender: ALICE,
    state_key: `_${ALICE}_DEVA_m.call`,
    origin_server_ts: T0,
    content: sessionContent(),
    ...overrides,
  };
}

/** The MSC4143 sticky shape as matrix-js-sdk 43 checks it (membershipData/rtc.ts). */
function rtcContent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    slot_id: "m.call#ROOM",
    member: { user_id: ALICE, device_id: "DEVA", id: "member-1" },
    application: { "type": "m.call", "m.call.intent": "audio" },
    transports: { published: [parleyTransport(CALL_API, ROOM)], can_subscribe: [PARLEY_TRANSPORT_TYPE, "livekit"] },
    versions: ["v0"],
    msc4354_sticky_key: "member-1",
    ...overrides,
  };
}

function rtcEvent(overrides: Partial<MembershipEvent> = {}): MembershipEvent {
  return {
    type: "org.matrix.msc4143.rtc.member",
    sender: ALICE,
    origin_server_ts: T0,
    msc4354_sticky: { duration_ms: 30 * 60 * 1000 },
    content: rtcContent(),
    ...overrides,
  };
}

function joined(result: RtcMembershipParse): RtcMembership {
  if (!result.ok) throw new Error(`expected a membership, got errors: ${result.errors.join("; ")}`);
  if (result.membership === null) throw new Error("expected a membership, got a leave");
  return result.membership;
}

function errorsOf(result: RtcMembershipParse): string[] {
  if (result.ok) throw new Error("expected errors, got a parse");
  return result.errors;
}

describe("parseRtcMembership: session form (org.matrix.msc3401.call.member)", () => {
  it("normalises what matrix-js-sdk sends", () => {
    const m = joined(parseRtcMembership(sessionEvent()));
    expect(m).toEqual({
      form: "session",
      eventType: CALL_MEMBER_EVENT_TYPE,
      key: membershipKey(CALL_MEMBER_EVENT_TYPE, ALICE, `_${ALICE}_DEVA_m.call`),
      userId: ALICE,
      deviceId: "DEVA",
      memberId: `${ALICE}:DEVA`,
      application: "m.call",
      callId: "",
      slotId: "m.call#ROOM",
      transports: [parleyTransport(CALL_API, ROOM), livekit()],
      focusActive: { type: "livekit", focus_selection: "multi_sfu" },
      callIntent: "video",
      createdTs: T0,
      expiresAt: T0 + 14_400_000,
    });
  });

  it.each([
    `_${ALICE}_DEVA`,
    `${ALICE}_DEVA`,
    `_${ALICE}_DEVA_m.call`,
    `${ALICE}_DEVA_m.call`,
  ])("accepts the state key %s", (stateKey) => {
    expect(joined(parseRtcMembership(sessionEvent({ state_key: stateKey }))).userId).toBe(ALICE);
  });

  it("accepts the js-sdk state key of a named call and keeps the call id as the slot", () => {
    const m = joined(
      parseRtcMembership(
        sessionEvent({ state_key: `_${ALICE}_DEVA_m.callbreakout`, content: sessionContent({ call_id: "breakout" }) }),
      ),
    );
    expect(m.callId).toBe("breakout");
    expect(m.slotId).toBe("m.call#breakout");
  });

  it("keeps an empty call_id of another application as it is", () => {
    const m = joined(
      parseRtcMembership(
        sessionEvent({ state_key: `_${ALICE}_DEVA`, content: sessionContent({ application: "io.example.game" }) }),
      ),
    );
    expect(m.slotId).toBe("io.example.game#");
  });

  it("needs only the fields js-sdk needs", () => {
    const m = joined(
      parseRtcMembership(
        sessionEvent({
          state_key: `_${ALICE}_DEVA`,
          content: { application: "m.call", call_id: "", device_id: "DEVA", focus_active: { type: "livekit" } },
        }),
      ),
    );
    expect(m.transports).toEqual([]);
    expect(m.memberId).toBe(`${ALICE}:DEVA`);
    expect(m.expiresAt).toBe(T0 + DEFAULT_EXPIRE_DURATION_MS);
  });

  it("counts expiry from created_ts, which carries the first join through updates", () => {
    const m = joined(parseRtcMembership(sessionEvent({ content: sessionContent({ created_ts: T0 - 5000 }) })));
    expect(m.createdTs).toBe(T0 - 5000);
    expect(m.expiresAt).toBe(T0 - 5000 + 14_400_000);
  });

  it("defaults the lifetime to 4 hours from origin_server_ts", () => {
    const { expires: _drop, ...content } = sessionContent();
    const m = joined(parseRtcMembership(sessionEvent({ content })));
    expect(DEFAULT_EXPIRE_DURATION_MS).toBe(4 * 60 * 60 * 1000);
    expect(m.expiresAt).toBe(T0 + DEFAULT_EXPIRE_DURATION_MS);
  });

  it("has no expiry when neither created_ts nor origin_server_ts is known", () => {
    const m = joined(parseRtcMembership(sessionEvent({ origin_server_ts: undefined })));
    expect(m.createdTs).toBeUndefined();
    expect(m.expiresAt).toBeUndefined();
  });

  it("collects three wrong fields as three messages", () => {
    const errors = errorsOf(
      parseRtcMembership(sessionEvent({ content: sessionContent({ device_id: 5, call_id: null, application: 7 }) })),
    );
    expect(errors).toEqual([
      "device_id must be a non-empty string",
      "call_id must be a string",
      "application must be a non-empty string",
    ]);
  });

  it("collects every error of a thoroughly wrong content at once", () => {
    const errors = errorsOf(
      parseRtcMembership(
        sessionEvent({
          content: {
            "device_id": "",
            "call_id": 1,
            "application": [],
            "scope": 3,
            "focus_active": "livekit",
            "foci_preferred": [{ type: "livekit" }, "x", { kind: "y" }],
            "created_ts": "yesterday",
            "expires": -1,
            "membershipID": 9,
            "m.call.intent": false,
          },
        }),
      ),
    );
    expect(errors).toEqual([
      "device_id must be a non-empty string",
      "call_id must be a string",
      "application must be a non-empty string",
      "scope must be a string",
      "focus_active must be an object",
      "foci_preferred[1] must be an object with a string type",
      "foci_preferred[2] must be an object with a string type",
      "created_ts must be a non-negative integer",
      "expires must be a positive integer (milliseconds)",
      "membershipID must be a non-empty string",
      "m.call.intent must be a string",
    ]);
  });

  it("refuses focus_active without a type and foci_preferred that is not an array", () => {
    const errors = errorsOf(
      parseRtcMembership(sessionEvent({ content: sessionContent({ focus_active: {}, foci_preferred: {} }) })),
    );
    expect(errors).toEqual(["focus_active.type must be a string", "foci_preferred must be an array of transports"]);
  });

  it("refuses a state key that belongs to another user, as the room's power levels let anyone write one", () => {
    const errors = errorsOf(parseRtcMembership(sessionEvent({ state_key: `_${BOB}_DEVA_m.call` })));
    expect(errors).toEqual([`state_key "_${BOB}_DEVA_m.call" does not belong to sender ${ALICE}`]);
  });

  it("refuses a state key naming a user whose id merely starts with the sender's", () => {
    const stateKey = `_${ALICE}.evil_DEVA`;
    expect(errorsOf(parseRtcMembership(sessionEvent({ state_key: stateKey })))).toEqual([
      `state_key "${stateKey}" does not belong to sender ${ALICE}`,
    ]);
    // ... and the other way round: the owner of "@alice:a.test.evil" cannot speak for "@alice:a.test".
    const evil = "@alice:a.test.evil";
    expect(errorsOf(parseRtcMembership(sessionEvent({ sender: evil })))).toEqual([
      `state_key "_${ALICE}_DEVA_m.call" does not belong to sender ${evil}`,
    ]);
  });

  it("refuses a state key naming another device than device_id", () => {
    const errors = errorsOf(parseRtcMembership(sessionEvent({ state_key: `_${ALICE}_DEVB_m.call` })));
    expect(errors).toEqual([`state_key "_${ALICE}_DEVB_m.call" does not name device_id "DEVA"`]);
  });

  it("refuses a state key whose suffix names another call", () => {
    const errors = errorsOf(parseRtcMembership(sessionEvent({ state_key: `_${ALICE}_DEVA_m.callother` })));
    expect(errors).toEqual([`state_key "_${ALICE}_DEVA_m.callother" does not name device_id "DEVA"`]);
  });

  it("refuses a call.member without a state key, with the content errors too", () => {
    const errors = errorsOf(
      parseRtcMembership(sessionEvent({ state_key: undefined, content: sessionContent({ call_id: 3 }) })),
    );
    expect(errors).toEqual(["state_key must be a string (call.member is a state event)", "call_id must be a string"]);
  });

  it("reads an empty content as the device leaving", () => {
    const result = parseRtcMembership(sessionEvent({ content: {} }));
    expect(result).toEqual({
      ok: true,
      membership: null,
      left: {
        form: "session",
        eventType: CALL_MEMBER_EVENT_TYPE,
        key: membershipKey(CALL_MEMBER_EVENT_TYPE, ALICE, `_${ALICE}_DEVA_m.call`),
        userId: ALICE,
      },
    });
    // The leave names the same key as the join it ends.
    const join = joined(parseRtcMembership(sessionEvent()));
    expect(result.ok && result.membership === null && result.left.key).toBe(join.key);
  });

  it("refuses an empty content written over another user's state key", () => {
    expect(errorsOf(parseRtcMembership(sessionEvent({ sender: BOB, content: {} })))).toEqual([
      `state_key "_${ALICE}_DEVA_m.call" does not belong to sender ${BOB}`,
    ]);
  });

  it("refuses the pre-MSC4143 memberships array", () => {
    expect(errorsOf(parseRtcMembership(sessionEvent({ content: { memberships: [] } })))).toEqual([
      "the pre-MSC4143 memberships array is not supported (one device per state key)",
    ]);
  });

  it("refuses a malformed transport of Parley's own type", () => {
    const errors = errorsOf(
      parseRtcMembership(
        sessionEvent({
          content: sessionContent({
            foci_preferred: [
              { type: PARLEY_TRANSPORT_TYPE, call_api: "ftp://x", room_id: ROOM },
              { type: PARLEY_TRANSPORT_TYPE, call_api: CALL_API },
            ],
          }),
        }),
      ),
    );
    expect(errors).toEqual([
      `foci_preferred[0] (${PARLEY_TRANSPORT_TYPE}) needs an http(s) call_api and a room_id`,
      `foci_preferred[1] (${PARLEY_TRANSPORT_TYPE}) needs an http(s) call_api and a room_id`,
    ]);
  });
});

describe("parseRtcMembership: the envelope", () => {
  it("collects a bad type, sender, timestamp and content together", () => {
    const errors = errorsOf(
      parseRtcMembership({ type: "m.room.message", sender: "alice", content: [], origin_server_ts: -3 }),
    );
    expect(errors).toEqual([
      "sender must be a user id",
      "content must be an object",
      "origin_server_ts must be a non-negative integer",
      'event type "m.room.message" is not a call membership',
    ]);
  });

  it("refuses a null content", () => {
    expect(errorsOf(parseRtcMembership(sessionEvent({ content: null })))).toEqual(["content must be an object"]);
  });
});

describe("parseRtcMembership: MSC4143 form (m.rtc.member)", () => {
  it("normalises the shape matrix-js-sdk 43 checks", () => {
    const m = joined(parseRtcMembership(rtcEvent(), { receivedAt: T0 + 1000 }));
    expect(m).toEqual({
      form: "rtc",
      eventType: "org.matrix.msc4143.rtc.member",
      key: membershipKey("org.matrix.msc4143.rtc.member", ALICE, "member-1"),
      userId: ALICE,
      deviceId: "DEVA",
      memberId: "member-1",
      application: "m.call",
      callId: "ROOM",
      slotId: "m.call#ROOM",
      transports: [parleyTransport(CALL_API, ROOM)],
      canSubscribe: [PARLEY_TRANSPORT_TYPE, "livekit"],
      callIntent: "audio",
      createdTs: T0,
      expiresAt: T0 + 30 * 60 * 1000,
    });
  });

  it("accepts the stable type name and the stable sticky_key", () => {
    const { msc4354_sticky_key: _drop, ...content } = rtcContent();
    const m = joined(parseRtcMembership(rtcEvent({ type: "m.rtc.member", content: { ...content, sticky_key: "k" } })));
    expect(m.eventType).toBe("m.rtc.member");
    expect(m.key).toBe(membershipKey("m.rtc.member", ALICE, "k"));
  });

  it("accepts the revision with claimed_user_id, claimed_device_id and rtc_transports", () => {
    const { transports: _t, versions: _v, ...rest } = rtcContent();
    const content = {
      ...rest,
      member: { claimed_user_id: ALICE, claimed_device_id: "DEVA", id: "member-1" },
      rtc_transports: [livekit()],
    };
    const m = joined(parseRtcMembership(rtcEvent({ content })));
    expect(m.userId).toBe(ALICE);
    expect(m.deviceId).toBe("DEVA");
    expect(m.transports).toEqual([livekit()]);
    expect(m.canSubscribe).toBeUndefined();
  });

  it("accepts m.relates_to as an m.reference", () => {
    const content = rtcContent({ "m.relates_to": { event_id: "$join", rel_type: "m.reference" } });
    expect(joined(parseRtcMembership(rtcEvent({ content }))).memberId).toBe("member-1");
  });

  it("refuses a member.user_id that is not the sender", () => {
    const content = rtcContent({ member: { user_id: BOB, device_id: "DEVA", id: "member-1" } });
    expect(errorsOf(parseRtcMembership(rtcEvent({ content })))).toEqual([
      `member.user_id ${BOB} must be the sender ${ALICE}`,
    ]);
  });

  it("collects three wrong fields as three messages", () => {
    const content = rtcContent({ slot_id: 4, versions: "v0", msc4354_sticky_key: 12 });
    expect(errorsOf(parseRtcMembership(rtcEvent({ content })))).toEqual([
      "msc4354_sticky_key must be a non-empty string",
      "slot_id must be a string",
      "versions must be an array of strings",
    ]);
  });

  it("collects every error of a thoroughly wrong content at once", () => {
    const content = {
      "slot_id": "m.call#a#b",
      "member": { user_id: "alice", device_id: 1, membership: "maybe" },
      "application": { "type": "m.call#x", "m.call.intent": 1 },
      "transports": { published: [{}], can_subscribe: [1] },
      "versions": [1],
      "sticky_key": "a",
      "msc4354_sticky_key": "b",
      "m.relates_to": { event_id: 1, rel_type: "m.replace" },
    };
    expect(errorsOf(parseRtcMembership(rtcEvent({ content, msc4354_sticky: { duration_ms: "long" } })))).toEqual([
      "sticky_key and msc4354_sticky_key must be equal when both are present",
      "member.user_id must be a user id",
      "member.device_id must be a non-empty string",
      "member.id must be a non-empty string",
      'member.membership must be "join" or "leave"',
      'application.type must not contain "#"',
      'slot_id must be "{application}#{id}" with exactly one "#"',
      "transports.published[0] must be an object with a string type",
      "transports.can_subscribe must be an array of strings",
      "versions must be an array of strings",
      "m.relates_to.event_id must be a string",
      "m.relates_to.rel_type must be m.reference",
      "application.m.call.intent must be a string",
      "sticky.duration_ms must be a non-negative integer",
    ]);
  });

  it("refuses a missing member, application, transports and sticky key together", () => {
    expect(errorsOf(parseRtcMembership(rtcEvent({ content: { slot_id: "m.call#ROOM", versions: [] } })))).toEqual([
      "member must be an object",
      "application must be an object",
      "transports.published must be an array of transports",
      "sticky_key (or msc4354_sticky_key) must be a string",
    ]);
  });

  it("refuses a slot of another application", () => {
    const content = rtcContent({ slot_id: "io.example.game#ROOM" });
    expect(errorsOf(parseRtcMembership(rtcEvent({ content })))).toEqual(["slot_id must start with m.call#"]);
  });

  it("reads a content of only slot and sticky key as a leave", () => {
    const content = { slot_id: "m.call#ROOM", msc4354_sticky_key: "member-1" };
    expect(parseRtcMembership(rtcEvent({ content }))).toEqual({
      ok: true,
      membership: null,
      left: {
        form: "rtc",
        eventType: "org.matrix.msc4143.rtc.member",
        key: membershipKey("org.matrix.msc4143.rtc.member", ALICE, "member-1"),
        userId: ALICE,
      },
    });
  });

  it('reads member.membership = "leave" as a leave (latest MSC4143 text)', () => {
    const content = {
      slot_id: "m.call#ROOM",
      member: { id: "member-1", membership: "leave" },
      leave_reason: { code: "leave" },
      sticky_key: "member-1",
    };
    const result = parseRtcMembership(rtcEvent({ type: "m.rtc.member", content }));
    expect(result.ok && result.membership === null && result.left.key).toBe(
      membershipKey("m.rtc.member", ALICE, "member-1"),
    );
  });

  it("reads an empty content as a leave that names no key", () => {
    const result = parseRtcMembership(rtcEvent({ content: {} }));
    expect(result.ok && result.membership === null && result.left).toEqual({
      form: "rtc",
      eventType: "org.matrix.msc4143.rtc.member",
      key: undefined,
      userId: ALICE,
    });
  });

  it("refuses a leave with a malformed sticky key", () => {
    expect(errorsOf(parseRtcMembership(rtcEvent({ content: { msc4354_sticky_key: 5 } })))).toEqual([
      "msc4354_sticky_key must be a non-empty string",
    ]);
  });

  describe("stickiness", () => {
    it("bounds the duration to one hour", () => {
      const m = joined(parseRtcMembership(rtcEvent({ msc4354_sticky: { duration_ms: 10 * MAX_STICKY_DURATION_MS } })));
      expect(m.expiresAt).toBe(T0 + MAX_STICKY_DURATION_MS);
    });

    it("counts from receipt when origin_server_ts lies in the future", () => {
      const m = joined(parseRtcMembership(rtcEvent({ origin_server_ts: T0 + 10 * 60_000 }), { receivedAt: T0 }));
      expect(m.expiresAt).toBe(T0 + 30 * 60_000);
    });

    it("counts a server-provided remaining ttl from receipt", () => {
      const m = joined(
        parseRtcMembership(rtcEvent({ unsigned: { msc4354_sticky_duration_ttl_ms: 5000 } }), {
          receivedAt: T0 + 60_000,
        }),
      );
      expect(m.expiresAt).toBe(T0 + 65_000);
    });

    it("reads the stable sticky field too", () => {
      const m = joined(parseRtcMembership(rtcEvent({ msc4354_sticky: undefined, sticky: { duration_ms: 1000 } })));
      expect(m.expiresAt).toBe(T0 + 1000);
    });

    it("does not expire without sticky information, as js-sdk's CallMembership", () => {
      const m = joined(parseRtcMembership(rtcEvent({ msc4354_sticky: undefined })));
      expect(m.expiresAt).toBeUndefined();
      expect(membershipExpired(m, Number.MAX_SAFE_INTEGER)).toBe(false);
    });
  });
});

describe("membershipExpired", () => {
  it("follows js-sdk: expired once the expiry is reached", () => {
    const m = joined(parseRtcMembership(sessionEvent({ content: sessionContent({ expires: 60_000 }) })));
    expect(membershipExpired(m, T0)).toBe(false);
    expect(membershipExpired(m, T0 + 59_999)).toBe(false);
    expect(membershipExpired(m, T0 + 60_000)).toBe(true);
    expect(membershipExpired(m, T0 + 60_001)).toBe(true);
  });

  it("expires a membership without an expires field after 4 hours", () => {
    const { expires: _drop, ...content } = sessionContent();
    const m = joined(parseRtcMembership(sessionEvent({ content })));
    expect(membershipExpired(m, T0 + DEFAULT_EXPIRE_DURATION_MS - 1)).toBe(false);
    expect(membershipExpired(m, T0 + DEFAULT_EXPIRE_DURATION_MS)).toBe(true);
  });
});

describe("transports", () => {
  it("builds Parley's transport", () => {
    const t = parleyTransport(CALL_API, ROOM);
    expect(t).toEqual({ type: "org.parley.janus", call_api: CALL_API, room_id: ROOM });
    expect(PARLEY_TRANSPORT_TYPE).toBe("org.parley.janus");
    expect(isParleyTransport(t)).toBe(true);
  });

  it("round-trips Parley's transport through both forms and JSON", () => {
    const t = parleyTransport(CALL_API, ROOM);
    const wire = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
    const sessionWire = wire(sessionContent({ foci_preferred: [t] }));
    const viaSession = joined(parseRtcMembership(sessionEvent({ content: sessionWire })));
    const viaRtc = joined(parseRtcMembership(rtcEvent({ content: wire(rtcContent()) })));
    for (const m of [viaSession, viaRtc]) {
      const found = m.transports.find(isParleyTransport);
      expect(found).toEqual(t);
      expect(found?.call_api).toBe(CALL_API);
      expect(found?.room_id).toBe(ROOM);
    }
  });

  it("passes a LiveKit transport through untouched", () => {
    const lk = { ...livekit(), extra: { nested: [1, 2] } };
    const snapshot = structuredClone(lk);
    const m = joined(parseRtcMembership(sessionEvent({ content: sessionContent({ foci_preferred: [lk] }) })));
    expect(m.transports[0]).toBe(lk);
    expect(m.transports[0]).toEqual(snapshot);
    expect(isParleyTransport(lk)).toBe(false);
  });

  it.each([
    ["another type", { type: "livekit", call_api: CALL_API, room_id: ROOM }],
    ["no call_api", { type: PARLEY_TRANSPORT_TYPE, room_id: ROOM }],
    ["a call_api that is no URL", { type: PARLEY_TRANSPORT_TYPE, call_api: "parley", room_id: ROOM }],
    ["a call_api that is not http(s)", { type: PARLEY_TRANSPORT_TYPE, call_api: "javascript:alert(1)", room_id: ROOM }],
    ["a room_id that is no room id", { type: PARLEY_TRANSPORT_TYPE, call_api: CALL_API, room_id: "#alias:a" }],
    ["null", null],
    ["a string", PARLEY_TRANSPORT_TYPE],
  ])("isParleyTransport refuses %s", (_what, value) => {
    expect(isParleyTransport(value)).toBe(false);
  });
});
