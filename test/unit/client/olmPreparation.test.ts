// Whose Olm sessions a room event asks a device to prepare (roomFeed.ts olmPreparation): joiners,
// users let in from the lobby, call members, and knockers while in the call; never the room's
// history, whose people in the call now are prepared at once when the feed has started. And the
// knockers of Parley's lobby push, prepared before their knock's event is in the sync, each once.
import { MatrixEvent } from "matrix-js-sdk";
import { describe, expect, it } from "vitest";
import { CALL_MEMBER_EVENT } from "../../../client/src/matrix/membership.ts";
import { KNOCK_PREPARED_FOR_MS, KNOCK_PREPARES_PER_MINUTE, KnockerPreparations, olmPreparation } from "../../../client/src/matrix/roomFeed.ts";
import type { Push } from "../../../client/src/rtc/protocol.ts";
import { knockersFromLobby } from "../../../client/src/services.ts";

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

describe("KnockerPreparations", () => {
  it("prepares a knocker once however often its knock is seen (the lobby's push, then the sync), and again after KNOCK_PREPARED_FOR_MS", () => {
    let now = 0;
    const knockers = new KnockerPreparations(KNOCK_PREPARES_PER_MINUTE, () => now);
    expect(knockers.take("@k:b")).toBe(true); // the lobby's push
    expect(knockers.take("@k:b")).toBe(false); // the same knock in the sync
    now += 1000;
    expect(knockers.take("@k:b")).toBe(false); // the next lobby push still lists them
    now = KNOCK_PREPARED_FOR_MS - 1;
    expect(knockers.take("@k:b")).toBe(false);
    now = KNOCK_PREPARED_FOR_MS;
    expect(knockers.take("@k:b")).toBe(true); // knocking again a minute later
  });

  it("prepares at most perMinute knockers a minute, and remembers no more than that", () => {
    let now = 0;
    const perMinute = 3;
    const knockers = new KnockerPreparations(perMinute, () => now);
    const taken = Array.from({ length: 10 }, (_, i) => knockers.take(`@k${i}:b`));
    expect(taken).toEqual([true, true, true, false, false, false, false, false, false, false]);
    expect(knockers.size).toBe(perMinute);
    // A refused knocker is not remembered: prepared once the minute is over.
    now = 60_000;
    expect(knockers.take("@k5:b")).toBe(true);
    expect(knockers.size).toBeLessThanOrEqual(perMinute);
  });
});

describe("knockersFromLobby", () => {
  it("hands the knockers of each lobby push to the feed's preparation, nothing of other pushes, and stops when unsubscribed", () => {
    const listeners = new Set<(p: Push) => void>();
    const call = { onPush: (fn: (p: Push) => void) => (listeners.add(fn), () => void listeners.delete(fn)) };
    const seen: string[][] = [];
    const off = knockersFromLobby(call, (ids) => seen.push(ids));
    const push = (p: Push) => listeners.forEach((fn) => fn(p));
    const entry = (user_id: string) => ({ user_id, display_name: null, avatar_url: null, server: "b", reason: null, since: 0 });
    push({ type: "lobby", waiting: [entry("@k1:b"), entry("@k2:b")] });
    push({ type: "lobby", waiting: [] });
    push({ type: "renegotiate", reason: "" });
    off();
    push({ type: "lobby", waiting: [entry("@k3:b")] });
    expect(seen).toEqual([["@k1:b", "@k2:b"]]);
  });
});
