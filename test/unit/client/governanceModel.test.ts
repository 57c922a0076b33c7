import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { RoomMember } from "../../../client/src/matrix/timeline.ts";
import type { CallSnapshot } from "../../../client/src/rtc/call.ts";
import type { GovernanceRequest, LobbyEntry, MeetingInfo, Participant, Push } from "../../../client/src/rtc/protocol.ts";
import { GovernanceModel } from "../../../client/src/state/governanceModel.ts";
import { Emitter, Store } from "../../../client/src/state/store.ts";
import { tick } from "./fakes.ts";

const HOST_MEETING: MeetingInfo = {
  access: "institution",
  locked: false,
  guests: false,
  ended: null,
  you: { role: "host", can: ["mute", "allow", "mute_all", "stop_share", "lower_hand", "remove", "ban", "end", "admit", "deny", "admit_all", "set_role", "settings"] },
};
const entry = (user_id: string, over: Partial<Participant> = {}): Participant => ({ user_id, device_id: "D", feed_id: user_id, streams: [], muted: { audio: false, video: false }, ...over });
const knocker = (user_id: string, over: Partial<LobbyEntry> = {}): LobbyEntry => ({ user_id, display_name: null, avatar_url: null, server: "b.example", reason: null, since: 1, ...over });

function setup(opts: { shareLink?: string } = {}) {
  const state = new Store<CallSnapshot>({ phase: "connected", error: null, roomId: "!r:x", ownFeed: 1, remotes: [] });
  const pushes = new Emitter<{ push: Push }>();
  const sent: GovernanceRequest[] = [];
  let refuse: ParleyClientError | null = null;
  const members = new Map<string, RoomMember>([
    ["@a:x", { userId: "@a:x", displayName: "Alice", avatarMxc: null }],
    ["@b:y", { userId: "@b:y", displayName: "Bob", avatarMxc: "mxc://y/bob" }],
  ]);
  let onMembers: (() => void) | null = null;
  const g = new GovernanceModel({
    call: {
      state,
      onPush: (fn) => pushes.on("push", fn),
      send: async (r) => {
        sent.push(r);
        if (refuse) throw refuse;
      },
    },
    members: { members: () => members, onMembers: (fn) => ((onMembers = () => fn(members)), () => undefined) },
    avatars: async (mxc) => (mxc === "mxc://y/bob" ? "blob:bob" : mxc === "mxc://b.example/carol" ? "blob:carol" : null),
    self: { userId: "@a:x" },
    ...(opts.shareLink ? { shareLink: opts.shareLink } : {}),
  });
  return {
    g,
    state,
    sent,
    members,
    push: (p: Push) => pushes.emit("push", p),
    refuse: (e: ParleyClientError | null) => (refuse = e),
    fireMembers: () => onMembers?.(),
  };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("GovernanceModel: role and rights", () => {
  it("starts as a participant who may do nothing, until the meeting push says otherwise", () => {
    const { g, push } = setup();
    expect(g.state.get()).toMatchObject({ meeting: null, you: { role: "participant", can: [] } });
    expect(g.may("end")).toBe(false);
    push({ type: "meeting", ...HOST_MEETING });
    expect(g.state.get()).toMatchObject({ meeting: { access: "institution", locked: false }, you: { userId: "@a:x", role: "host" } });
    expect(g.may("end")).toBe(true);
  });

  it("lists the user even before the server does, with their role, then the server's list", async () => {
    const { g, push } = setup();
    push({ type: "meeting", ...HOST_MEETING });
    expect(g.state.get().people.map((r) => [r.userId, r.name, r.roleText])).toEqual([["@a:x", "Alice (you)", "Host"]]);
    push({ type: "participants", participants: [entry("@a:x", { role: "host" }), entry("@b:y", { hand: 9 })] });
    await tick();
    const people = g.state.get().people;
    expect(people.map((r) => r.userId)).toEqual(["@b:y", "@a:x"]);
    expect(people[0]).toMatchObject({ name: "Bob", avatarUrl: "blob:bob", hand: 9 });
    expect(people[0]!.actions.map((a) => a.id)).toContain("lower-hand");
  });

  it("says the user is alone once the server's list has nobody else, and offers the link", () => {
    const { g, push, state } = setup({ shareLink: "https://p.example/#/call/%23meet-x%3Ax" });
    expect(g.state.get()).toMatchObject({ alone: false, shareLink: "https://p.example/#/call/%23meet-x%3Ax" });
    push({ type: "participants", participants: [entry("@a:x")] });
    expect(g.state.get().alone).toBe(true);
    push({ type: "participants", participants: [entry("@a:x"), entry("@b:y")] });
    expect(g.state.get().alone).toBe(false);
    push({ type: "participants", participants: [entry("@a:x")] });
    state.update({ phase: "reconnecting" });
    expect(g.state.get().alone).toBe(false);
  });
});

describe("GovernanceModel: acts and refusals", () => {
  it("sends a host's act and names it when refused", async () => {
    const { g, push, sent, refuse } = setup();
    push({ type: "meeting", ...HOST_MEETING });
    push({ type: "participants", participants: [entry("@a:x"), entry("@b:y")] });
    const mute = g.state.get().people.find((r) => r.userId === "@b:y")!.actions.find((a) => a.id === "mute-audio")!;
    expect(await g.moderate(mute.action)).toBe(true);
    expect(sent.at(-1)).toEqual({ type: "moderate", action: { action: "mute", user_id: "@b:y", kind: "audio" } });
    refuse(new ParleyClientError("M_FORBIDDEN", "signalling", { detail: "moderate: M_FORBIDDEN not allowed" }));
    expect(await g.moderate({ action: "ban", user_id: "@b:y" })).toBe(false);
    expect(g.state.get().error).toBe("Couldn't ban Bob from the meeting: you don't have the permission to do that in this meeting.");
    g.dismissError();
    expect(g.state.get().error).toBeNull();
  });

  it("mutes all and changes settings through moderate", async () => {
    const { g, sent } = setup();
    await g.muteAll("audio");
    await g.changeSettings({ locked: true });
    expect(sent).toEqual([
      { type: "moderate", action: { action: "mute_all", kind: "audio" } },
      { type: "moderate", action: { action: "settings", locked: true } },
    ]);
  });

  it("asks before ending for everyone, and only when the user may", async () => {
    const { g, push, sent } = setup();
    g.askEnd();
    expect(g.state.get().confirmingEnd).toBe(false);
    push({ type: "meeting", ...HOST_MEETING });
    g.askEnd();
    expect(g.state.get().confirmingEnd).toBe(true);
    g.cancelEnd();
    expect(await g.confirmEnd()).toBe(false);
    expect(sent).toEqual([]);
    g.askEnd();
    expect(await g.confirmEnd()).toBe(true);
    expect(sent).toEqual([{ type: "moderate", action: { action: "end" } }]);
    expect(g.state.get().confirmingEnd).toBe(false);
  });

  it("raises the hand at once, takes it back when refused, and follows the server's list", async () => {
    const { g, push, refuse, sent } = setup();
    await g.setHand(true);
    expect(sent).toEqual([{ type: "hand", raised: true }]);
    expect(g.state.get().handRaised).toBe(true);
    push({ type: "participants", participants: [entry("@a:x", { hand: null })] }); // a host lowered it
    expect(g.state.get().handRaised).toBe(false);
    refuse(new ParleyClientError("M_BAD_JSON", "signalling"));
    await g.setHand(true);
    expect(g.state.get()).toMatchObject({ handRaised: false, error: "Couldn't raise your hand: the meeting server doesn't support this yet." });
  });
});

describe("GovernanceModel: the lobby", () => {
  it("lists knockers with the name, server, avatar and reason they knocked with", async () => {
    const { g, push } = setup();
    push({ type: "lobby", waiting: [knocker("@carol:b.example", { display_name: "Carol", avatar_url: "mxc://b.example/carol", reason: "speaker" })] });
    await tick();
    expect(g.lobby.state.get().waiting).toEqual([
      { userId: "@carol:b.example", name: "Carol", server: "b.example", avatarUrl: "blob:carol", reason: "speaker", since: 1 },
    ]);
  });

  it("counts new knocks for the badge until the lobby is opened, and cues a sound for each new one", () => {
    const { g, push } = setup();
    const cues: string[][] = [];
    g.lobby.events.on("knock", (rows) => cues.push(rows.map((r) => r.userId)));
    push({ type: "lobby", waiting: [knocker("@c:z")] });
    push({ type: "lobby", waiting: [knocker("@c:z"), knocker("@d:z")] });
    expect(g.lobby.state.get().unseen).toBe(2);
    expect(cues).toEqual([["@c:z"], ["@d:z"]]);
    // The same list again (a reconnect's hello) is nothing new.
    push({ type: "lobby", waiting: [knocker("@c:z"), knocker("@d:z")] });
    expect(cues).toHaveLength(2);
    push({ type: "lobby", waiting: [knocker("@d:z")] }); // @c:z was let in elsewhere
    expect(g.lobby.state.get().unseen).toBe(1);
    g.lobby.setOpen(true);
    expect(g.lobby.state.get().unseen).toBe(0);
    push({ type: "lobby", waiting: [knocker("@d:z"), knocker("@e:z")] });
    expect(g.lobby.state.get().unseen).toBe(0); // seen as it arrives
    expect(cues).toHaveLength(3);
  });

  it("admits, turns away and admits all; a refusal names the knocker", async () => {
    const { g, push, sent, refuse } = setup();
    push({ type: "lobby", waiting: [knocker("@c:z", { display_name: "Carol" })] });
    await g.lobby.admit("@c:z");
    await g.lobby.deny("@c:z");
    await g.lobby.admitAll();
    expect(sent.map((r) => (r.type === "moderate" ? r.action : r))).toEqual([
      { action: "admit", user_id: "@c:z" },
      { action: "deny", user_id: "@c:z" },
      { action: "admit_all" },
    ]);
    refuse(new ParleyClientError("M_FORBIDDEN", "signalling"));
    expect(await g.lobby.admit("@c:z")).toBe(false);
    expect(g.state.get().error).toBe("Couldn't let Carol in: you don't have the permission to do that in this meeting.");
  });
});

describe("GovernanceModel: reactions", () => {
  it("shows each reaction with its sender for four seconds", async () => {
    const { g, push, sent } = setup();
    push({ type: "reaction", user_id: "@b:y", emoji: "👏" });
    await vi.advanceTimersByTimeAsync(2000);
    push({ type: "reaction", user_id: "@a:x", emoji: "🎉" });
    expect(g.reactions.state.get().map((r) => [r.name, r.emoji])).toEqual([["Bob", "👏"], ["Alice", "🎉"]]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(g.reactions.state.get().map((r) => r.emoji)).toEqual(["🎉"]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(g.reactions.state.get()).toEqual([]);
    await g.react("👍");
    expect(sent).toEqual([{ type: "react", emoji: "👍" }]);
  });

  it("caps a burst and clears everything when the call ends", () => {
    const { g, push, state } = setup();
    for (let i = 0; i < 30; i++) push({ type: "reaction", user_id: "@b:y", emoji: "👍" });
    expect(g.reactions.state.get()).toHaveLength(12);
    state.update({ phase: "failed" });
    expect(g.reactions.state.get()).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("GovernanceModel: names", () => {
  it("renames people when the room's members change", () => {
    const { g, push, members, fireMembers } = setup();
    push({ type: "participants", participants: [entry("@a:x"), entry("@b:y")] });
    members.set("@b:y", { userId: "@b:y", displayName: "Robert", avatarMxc: null });
    fireMembers();
    expect(g.state.get().people.map((r) => r.name)).toContain("Robert");
  });
});
