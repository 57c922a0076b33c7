// Whose Olm sessions a room event asks a device to prepare (roomFeed.ts olmPreparation): joiners,
// users let in from the lobby, call members, and knockers while in the call; never the room's
// history, whose people in the call now are prepared at once when the feed has started.
import { MatrixEvent } from "matrix-js-sdk";
import { describe, expect, it } from "vitest";
import { CALL_MEMBER_EVENT } from "../../../client/src/matrix/membership.ts";
import { olmPreparation } from "../../../client/src/matrix/roomFeed.ts";

const ROOM = "!r:a";
const member = (userId: string, membership: string, previous?: string) =>
  new MatrixEvent({ type: "m.room.member", room_id: ROOM, sender: userId, state_key: userId, event_id: `$${userId}${membership}`, content: { membership }, ...(previous ? { unsigned: { prev_content: { membership: previous } } } : {}) });
const callMember = (userId: string) => new MatrixEvent({ type: CALL_MEMBER_EVENT, room_id: ROOM, sender: userId, state_key: `_${userId}_DEV`, event_id: `$call${userId}`, content: { device_id: "DEV" } });

describe("olmPreparation", () => {
  it("asks for a joiner, a user let in from the lobby and a call member as they come", () => {
    const live = { live: true, inCall: false };
    expect(olmPreparation(member("@j:b", "join"), live)).toEqual({ userId: "@j:b", track: false });
    expect(olmPreparation(member("@k:b", "invite", "knock"), live)).toEqual({ userId: "@k:b", track: false });
    expect(olmPreparation(callMember("@c:b"), live)).toEqual({ userId: "@c:b", track: false });
    expect(olmPreparation(member("@i:b", "invite"), live)).toBeNull(); // invited, not from the lobby
    expect(olmPreparation(member("@l:b", "leave", "join"), live)).toBeNull();
    expect(olmPreparation(new MatrixEvent({ type: "m.room.message", room_id: ROOM, sender: "@m:b", event_id: "$m", content: { body: "hi" } }), live)).toBeNull();
  });

  it("asks for a knocker only while this device is in the call, to be tracked (no member); once per knock", () => {
    expect(olmPreparation(member("@k:b", "knock"), { live: true, inCall: true })).toEqual({ userId: "@k:b", track: true });
    expect(olmPreparation(member("@k:b", "knock"), { live: true, inCall: false })).toBeNull();
    expect(olmPreparation(member("@k:b", "knock", "knock"), { live: true, inCall: true })).toBeNull(); // a new reason, the same knock
  });

  it("asks nothing for the room's history (the first sync's timeline, the one a knocker's join brings)", () => {
    const history = { live: false, inCall: true };
    for (const ev of [member("@j:b", "join"), member("@k:b", "invite", "knock"), callMember("@c:b"), member("@n:b", "knock")]) expect(olmPreparation(ev, history)).toBeNull();
  });
});
