import { describe, expect, it } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { ACTIONS, type ActionName } from "../../../client/src/rtc/governanceProtocol.ts";
import type { Participant } from "../../../client/src/rtc/protocol.ts";
import { personActions, refusalText, requestText, type Target, type You } from "../../../client/src/state/moderation.ts";
import { participantRows } from "../../../client/src/state/participants.ts";

const ALL: ActionName[] = [...ACTIONS];
const COHOST_CAN: ActionName[] = ["mute", "allow", "mute_all", "stop_share", "lower_hand", "remove", "ban", "admit", "deny", "admit_all", "end"];
const host: You = { userId: "@h:x", role: "host", can: ALL };
const cohost: You = { userId: "@c:x", role: "cohost", can: COHOST_CAN };
const target = (over: Partial<Target> = {}): Target => ({ userId: "@b:y", role: "participant", hand: null, forced: { audio: false, video: false }, sharing: false, ...over });
const ids = (you: You, t: Target) => personActions(you, t).map((a) => a.id);
const names = (u: string) => ({ "@b:y": "Bob", "@c:z": "Carol" })[u] ?? u;

describe("the per-person menu", () => {
  it("offers a host everything that applies to a participant", () => {
    expect(ids(host, target())).toEqual(["mute-audio", "mute-video", "make-cohost", "remove", "ban"]);
    expect(ids(host, target({ hand: 5, sharing: true, forced: { audio: true, video: false } }))).toEqual([
      "allow-audio", "mute-video", "stop-share", "lower-hand", "make-cohost", "remove", "ban",
    ]);
    expect(personActions(host, target())[0]!.action).toEqual({ action: "mute", user_id: "@b:y", kind: "audio" });
    expect(personActions(host, target()).filter((a) => a.danger).map((a) => a.id)).toEqual(["remove", "ban"]);
  });

  it("lets a host demote a co-host but not act on roles of other hosts; never on oneself", () => {
    expect(ids(host, target({ role: "cohost" }))).toEqual(["mute-audio", "mute-video", "make-participant", "remove", "ban"]);
    expect(ids(host, target({ role: "host" }))).toEqual(["mute-audio", "mute-video"]);
    expect(ids(host, target({ userId: "@h:x" }))).toEqual([]);
  });

  it("gives a co-host no roles, and no removal of another co-host", () => {
    expect(ids(cohost, target())).toEqual(["mute-audio", "mute-video", "remove", "ban"]);
    expect(ids(cohost, target({ role: "cohost" }))).toEqual(["mute-audio", "mute-video"]);
  });

  it("offers nothing to someone the server allows nothing", () => {
    expect(ids({ userId: "@p:x", role: "participant", can: [] }, target({ hand: 1, sharing: true }))).toEqual([]);
  });
});

describe("naming a refused act", () => {
  it("says which act and why, per error code", () => {
    const forbidden = new ParleyClientError("M_FORBIDDEN", "signalling");
    expect(refusalText({ type: "moderate", action: { action: "remove", user_id: "@b:y" } }, forbidden, names)).toBe(
      "Couldn't remove Bob from the meeting: you don't have the permission to do that in this meeting.",
    );
    expect(refusalText({ type: "moderate", action: { action: "admit", user_id: "@c:z" } }, new ParleyClientError("M_NOT_FOUND", "signalling"), names)).toBe(
      "Couldn't let Carol in: they are no longer in the meeting or the lobby.",
    );
    expect(refusalText({ type: "moderate", action: { action: "stop_share", user_id: "@b:y" } }, new ParleyClientError("M_NOT_FOUND", "signalling"), names)).toBe(
      "Couldn't stop Bob's screen share: they are not sharing their screen any more.",
    );
    expect(refusalText({ type: "hand", raised: true }, new ParleyClientError("M_BAD_JSON", "signalling"), names)).toBe(
      "Couldn't raise your hand: the meeting server doesn't support this yet.",
    );
    expect(refusalText({ type: "moderate", action: { action: "end" } }, new ParleyClientError("CLOSED", "signalling"), names)).toBe(
      "Couldn't end the meeting for everyone: you're not connected to the meeting server right now.",
    );
    expect(refusalText({ type: "react", emoji: "👍" }, new ParleyClientError("M_UNKNOWN", "signalling"), names)).toMatch(/^Couldn't send your reaction: Something went wrong/);
  });

  it("names every kind of act", () => {
    const t = (action: Parameters<typeof requestText>[0]) => requestText(action, names);
    expect([
      t({ type: "moderate", action: { action: "mute", user_id: "@b:y", kind: "audio" } }),
      t({ type: "moderate", action: { action: "allow", user_id: "@b:y", kind: "video" } }),
      t({ type: "moderate", action: { action: "mute_all", kind: "audio" } }),
      t({ type: "moderate", action: { action: "stop_share", user_id: "@b:y" } }),
      t({ type: "moderate", action: { action: "lower_hand", user_id: "@b:y" } }),
      t({ type: "moderate", action: { action: "ban", user_id: "@b:y" } }),
      t({ type: "moderate", action: { action: "deny", user_id: "@c:z" } }),
      t({ type: "moderate", action: { action: "admit_all" } }),
      t({ type: "moderate", action: { action: "set_role", user_id: "@b:y", role: "cohost" } }),
      t({ type: "moderate", action: { action: "settings", locked: true } }),
      t({ type: "hand", raised: false }),
    ]).toEqual([
      "turn off Bob's microphone",
      "let Bob turn their camera back on",
      "mute everyone",
      "stop Bob's screen share",
      "lower Bob's hand",
      "ban Bob from the meeting",
      "turn Carol away",
      "let everyone in",
      "make Bob a co-host",
      "change the meeting's settings",
      "lower your hand",
    ]);
  });
});

describe("participant rows", () => {
  const entry = (over: Partial<Participant>): Participant => ({ user_id: "@b:y", device_id: "D", feed_id: 1, streams: [], muted: { audio: false, video: false }, ...over });
  const profile = (u: string) => ({ name: names(u) === u ? u.slice(1, 2).toUpperCase() + "ee" : names(u), avatarUrl: null });

  it("merges a person's devices: muted only when muted everywhere, forced or sharing anywhere, earliest hand", () => {
    const rows = participantRows(
      [
        entry({ device_id: "D1", muted: { audio: true, video: true }, hand: 30, forced: { audio: true, video: false } }),
        entry({ device_id: "D2", feed_id: 2, muted: { audio: true, video: false }, hand: 20, streams: [{ mid: "1", kind: "video", type: "screen" }] }),
      ],
      host,
      profile,
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ userId: "@b:y", name: "Bob", initials: "BO", hand: 20, muted: { audio: true, video: false }, forced: { audio: true, video: false }, sharing: true, role: "participant", roleText: "" });
    expect(rows[0]!.actions.map((a) => a.id)).toContain("stop-share");
  });

  it("puts raised hands first (longest raised first), then hosts, co-hosts and the rest by name; marks the user", () => {
    const rows = participantRows(
      [
        entry({ user_id: "@z:x", role: "participant" }),
        entry({ user_id: "@h:x", role: "host" }),
        entry({ user_id: "@m:x", role: "cohost" }),
        entry({ user_id: "@a:x", role: "participant" }),
        entry({ user_id: "@q:x", hand: 200 }),
        entry({ user_id: "@r:x", hand: 100 }),
      ],
      host,
      profile,
    );
    expect(rows.map((r) => r.userId)).toEqual(["@r:x", "@q:x", "@h:x", "@m:x", "@a:x", "@z:x"]);
    expect(rows[2]).toMatchObject({ self: true, name: "Hee (you)", roleText: "Host", actions: [] });
    expect(rows[3]!.roleText).toBe("Co-host");
  });

  it("treats a server that sends no governance fields as everyone a participant", () => {
    const rows = participantRows([entry({})], { userId: "@a:x", role: "participant", can: [] }, profile);
    expect(rows[0]).toMatchObject({ role: "participant", hand: null, forced: { audio: false, video: false }, actions: [] });
  });
});
