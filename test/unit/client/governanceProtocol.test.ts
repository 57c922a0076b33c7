import { describe, expect, it } from "vitest";
import { parsePush, type Push } from "../../../client/src/rtc/protocol.ts";

const ok = (m: Record<string, unknown>): Push => {
  const r = parsePush(m);
  if ("errors" in r) throw new Error(`unexpected errors: ${r.errors.join("; ")}`);
  return r.push;
};
const errors = (m: Record<string, unknown>): string[] => {
  const r = parsePush(m);
  if (!("errors" in r)) throw new Error(`accepted ${JSON.stringify(r.push)}`);
  return r.errors;
};

const MEETING = {
  type: "meeting",
  access: "institution",
  locked: false,
  guests: true,
  ended: null,
  you: { role: "cohost", can: ["mute", "admit", "deny", "admit_all"] },
};
const KNOCKER = { user_id: "@carol:b.example", display_name: "Carol", avatar_url: "mxc://b.example/c", server: "b.example", reason: "I'm the speaker", since: 1700000000000 };
const PARTICIPANT = { user_id: "@a:x", device_id: "D", feed_id: 1, streams: [], muted: { audio: false, video: false } };

describe("governance pushes", () => {
  it("parses the meeting push: settings, ended, the user's role and what they may do", () => {
    expect(ok(MEETING)).toEqual(MEETING);
    expect(ok({ ...MEETING, ended: { by: "@h:x", at: 5 } })).toMatchObject({ ended: { by: "@h:x", at: 5 } });
  });

  it("leaves out action names it does not know (a newer server) without refusing the push", () => {
    expect(ok({ ...MEETING, you: { role: "host", can: ["end", "summon_dragons", "settings"] } })).toMatchObject({ you: { role: "host", can: ["end", "settings"] } });
  });

  it("reports every wrong field of a meeting push", () => {
    expect(errors({ type: "meeting", access: "everyone", locked: "no", ended: { by: 3 }, you: { role: "king", can: "all" } })).toEqual([
      "access must be open|institution|invited",
      "locked must be a boolean",
      "guests must be a boolean",
      "ended must be null or {by, at}",
      "you.role must be host|cohost|participant",
      "you.can must be an array of action names",
    ]);
    expect(errors({ ...MEETING, you: null })).toEqual(["you must be {role, can}"]);
  });

  it("parses the lobby; missing nullable fields are null, the server comes from the user id", () => {
    expect(ok({ type: "lobby", waiting: [KNOCKER] })).toEqual({ type: "lobby", waiting: [KNOCKER] });
    expect(ok({ type: "lobby", waiting: [{ user_id: "@d:c.example" }] })).toEqual({
      type: "lobby",
      waiting: [{ user_id: "@d:c.example", display_name: null, avatar_url: null, server: "c.example", reason: null, since: 0 }],
    });
    expect(ok({ type: "lobby", waiting: [] })).toEqual({ type: "lobby", waiting: [] });
  });

  it("reports a garbage lobby instead of showing it", () => {
    expect(errors({ type: "lobby", waiting: "everyone" })).toEqual(["waiting must be an array"]);
    expect(errors({ type: "lobby", waiting: [KNOCKER, { user_id: "carol" }, { ...KNOCKER, reason: 7, since: "now" }] })).toEqual([
      "waiting[1] needs a user_id",
      "waiting[2].reason must be a string or null",
      "waiting[2].since must be a time in ms",
    ]);
  });

  it("parses moderated, stop_share and reaction pushes", () => {
    expect(ok({ type: "moderated", kind: "audio", muted: true, by: "@h:x" })).toEqual({ type: "moderated", kind: "audio", muted: true, by: "@h:x" });
    expect(ok({ type: "stop_share", by: "@h:x" })).toEqual({ type: "stop_share", by: "@h:x" });
    expect(ok({ type: "reaction", user_id: "@b:y", emoji: "👏" })).toEqual({ type: "reaction", user_id: "@b:y", emoji: "👏" });
  });

  it("refuses moderated, stop_share and reaction pushes that say nothing sure", () => {
    expect(errors({ type: "moderated", kind: "screen", muted: "yes" })).toEqual(["kind must be audio|video", "muted must be a boolean", "by must be a Matrix user id"]);
    expect(errors({ type: "stop_share" })).toEqual(["by must be a Matrix user id"]);
    expect(errors({ type: "reaction", user_id: "@b:y", emoji: "<img src=x>" })).toEqual(["emoji must be one of REACTIONS"]);
  });

  it("reads role, hand and forced mute of participants, and leaves them out when not sent", () => {
    const p = ok({ type: "participants", participants: [{ ...PARTICIPANT, role: "host", hand: 12, forced: { audio: true, video: false } }, PARTICIPANT] });
    expect(p).toMatchObject({ participants: [{ role: "host", hand: 12, forced: { audio: true, video: false } }, {}] });
    if (p.type !== "participants") throw new Error("type");
    expect(Object.keys(p.participants[1]!)).not.toContain("role");
    expect(ok({ type: "participants", participants: [{ ...PARTICIPANT, hand: null }] })).toMatchObject({ participants: [{ hand: null }] });
  });

  it("reports wrong governance fields of a participant", () => {
    expect(errors({ type: "participants", participants: [{ ...PARTICIPANT, role: "admin", hand: "up", forced: { audio: 1 } }] })).toEqual([
      "participants[0].role must be host|cohost|participant",
      "participants[0].hand must be null or a time in ms",
      "participants[0].forced must be {audio, video} booleans",
    ]);
  });

  it("keeps who ended a session (a host's end, a removal) when the eviction says", () => {
    expect(ok({ type: "evicted", errcode: "M_NOT_FOUND", error: "the call has ended", by: "@h:x" })).toEqual({ type: "evicted", errcode: "M_NOT_FOUND", error: "the call has ended", by: "@h:x" });
    expect(ok({ type: "evicted", errcode: "M_FORBIDDEN", error: "removed", by: "@h:x", reason: "spam" })).toMatchObject({ by: "@h:x", reason: "spam" });
    // A malformed `by` does not stop the eviction: it is dropped.
    expect(ok({ type: "evicted", errcode: "M_FORBIDDEN", error: "removed", by: 42 })).toEqual({ type: "evicted", errcode: "M_FORBIDDEN", error: "removed" });
  });

  it("still refuses unknown push types, including names of the Object prototype", () => {
    expect(errors({ type: "hand" })).toEqual(["unknown push type hand"]);
    expect(errors({ type: "toString" })).toEqual(["unknown push type toString"]);
  });
});
