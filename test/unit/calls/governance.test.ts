import { beforeEach, describe, expect, it } from "vitest";
import { Governance, HELLO_FACTS_MAX_AGE_MS, INVITE_AVATAR_URL_MAX, INVITE_DISPLAY_NAME_MAX, inviteProfile, type GovernanceConfig, type GovernanceDeps } from "../../../appservice/src/calls/governance.ts";
import type { CallPush } from "../../../appservice/src/calls/callRoster.ts";
import type { InviteProfile, MembershipAct, RoomMemberFacts, StateEventFacts } from "../../../appservice/src/calls/ports.ts";
import type { CallRecord } from "../../../appservice/src/store/store.ts";

const BOT = "@parley:a.example";
const ROOM = "!m:a.example";

class FakeHomeserver {
  readonly botUserId = BOT;
  state = new Map<string, StateEventFacts>();
  members_: Record<string, RoomMemberFacts[]> = { join: [], knock: [], invite: [] };
  acts: [MembershipAct, string, string][] = [];
  /** The profile each act was given ("act user" -> profile). */
  profiles = new Map<string, InviteProfile | undefined>();
  puts: [string, Record<string, unknown>][] = [];
  /** Resolves each state read only when released (concurrency tests). */
  gate: Promise<void> | undefined;
  async stateEvent(_room: string, type: string): Promise<StateEventFacts | undefined> {
    await this.gate;
    return this.state.get(type);
  }
  async putState(_room: string, type: string, content: Record<string, unknown>): Promise<void> {
    this.puts.push([type, content]);
    this.state.set(type, { sender: BOT, content });
  }
  async members(_room: string, membership: "join" | "knock" | "invite"): Promise<RoomMemberFacts[]> {
    return this.members_[membership] ?? [];
  }
  async membershipAct(_room: string, act: MembershipAct, userId: string, reason: string, profile?: InviteProfile): Promise<void> {
    this.acts.push([act, userId, reason]);
    this.profiles.set(`${act} ${userId}`, profile);
  }
  async removeWidget(): Promise<void> {}
}

const CFG: GovernanceConfig = {
  domain: "a.example", cohostLevel: 50, hosts: "first_local_joiner", hostUsers: [], trustedServers: ["partner.example"],
  externalServers: ["ext.example"], guestPrefix: "_parley_", defaults: { access: "open", guests: false },
};
const fact = (userId: string, since = 0): RoomMemberFacts => ({ userId, displayName: undefined, avatarUrl: undefined, reason: undefined, since });

let hs: FakeHomeserver;
let ended: CallRecord[];
let pushes: [string, CallPush][];
let seated: string[];
let alias: boolean;
let forced: [string, string, boolean][];
let audited: Record<string, unknown>[];

function governance(cfg: GovernanceConfig = CFG, extra: Partial<GovernanceDeps> = {}): Governance {
  return new Governance(cfg, {
    homeserver: hs,
    store: {
      aliasOfRoom: async () => (alias ? { alias: "#meet-x:a.example", roomId: ROOM, state: "ready", createdAt: 0 } : undefined) as never,
      activeCall: async () => undefined,
      lastCall: async () => undefined,
      endCall: async (roomId, e) => ({ callId: "c1", roomId, origin: "alias", startedBy: "x", startedAt: 0, startEventId: null, widgetId: null, endedAt: e.at, endedBy: e.by, endEventId: null, sfu: null }),
    },
    clock: { now: () => 42 },
    moderation: {
      setForced: async (_c, u, k, m) => (forced.push([u, k, m]), 1),
      stopShare: async () => 0,
      raiseHand: () => undefined,
      usersInCall: () => ["@host:a.example", "@p1:a.example", "@co:a.example", "@p2:b.example"],
    },
    seats: { pushEach: (_room, push) => seated.forEach((u) => { const p = push(u); if (p) pushes.push([u, p]); }) },
    endCall: async (call) => void ended.push(call),
    audit: (e) => void audited.push(e),
    ...extra,
  });
}
const setPl = (users: Record<string, number>, extra: Record<string, unknown> = {}) =>
  hs.state.set("m.room.power_levels", { sender: BOT, content: { users, invite: 50, kick: 50, ban: 50, events: { "org.parley.moderate": 50, "org.parley.call": 100 }, ...extra } });
const level = (u: string) => ((hs.state.get("m.room.power_levels")!.content.users as Record<string, number>) ?? {})[u];
const actor = (userId: string) => ({ userId, roomId: ROOM, callId: "c1" });

beforeEach(() => {
  hs = new FakeHomeserver();
  hs.state.set("m.room.create", { sender: BOT, content: { room_version: "12" } });
  setPl({});
  hs.state.set("org.parley.call", { sender: BOT, content: { version: 1, api: "https://a", access: "open", locked: false, guests: false } });
  ended = [];
  pushes = [];
  seated = [];
  alias = true;
  forced = [];
  audited = [];
});

describe("who becomes host", () => {
  it("the first local joiner of an alias meeting, not a remote, guest or external user, nor a later joiner", async () => {
    const g = governance();
    for (const u of ["@bob:b.example", "@_parley_guest1:a.example", "@x:ext.example"]) await g.onMembership(ROOM, fact(u), "join");
    expect(hs.puts).toEqual([]);
    hs.members_.join = [fact("@alice:a.example")];
    await g.onMembership(ROOM, fact("@alice:a.example"), "join");
    expect(level("@alice:a.example")).toBe(100);
    hs.members_.join.push(fact("@carol:a.example"));
    await g.onMembership(ROOM, fact("@carol:a.example"), "join");
    expect(level("@carol:a.example")).toBeUndefined();
  });

  it("two local users joining at once: exactly one becomes host", async () => {
    const g = governance();
    hs.members_.join = [fact("@alice:a.example"), fact("@carol:a.example")];
    await Promise.all([g.onMembership(ROOM, fact("@alice:a.example"), "join"), g.onMembership(ROOM, fact("@carol:a.example"), "join")]);
    const hosts = ["@alice:a.example", "@carol:a.example"].filter((u) => level(u) === 100);
    expect(hosts).toHaveLength(1);
  });

  it("with hosts: listed, only listed users become hosts (each of them); a !meet room's power levels are left alone", async () => {
    const g = governance({ ...CFG, hosts: "listed", hostUsers: ["@boss:a.example", "@deputy:a.example"] });
    await g.onMembership(ROOM, fact("@alice:a.example"), "join");
    await g.onMembership(ROOM, fact("@boss:a.example"), "join");
    await g.onMembership(ROOM, fact("@deputy:a.example"), "join");
    expect([level("@alice:a.example"), level("@boss:a.example"), level("@deputy:a.example")]).toEqual([undefined, 100, 100]);
    alias = false;
    setPl({});
    await g.onMembership(ROOM, fact("@boss:a.example"), "join");
    expect(level("@boss:a.example")).toBeUndefined();
  });

  it("when the last host leaves, the co-host present longest is promoted; none while a host remains", async () => {
    const g = governance();
    setPl({ "@h1:a.example": 100, "@h2:a.example": 100, "@co-late:a.example": 50, "@co-early:a.example": 50, "@x:ext.example": 50 });
    hs.members_.join = [fact("@h2:a.example"), fact("@co-late:a.example", 300), fact("@co-early:a.example", 200), fact("@x:ext.example", 100)];
    await g.onMembership(ROOM, fact("@h1:a.example"), "leave");
    expect(level("@co-early:a.example")).toBe(50);
    hs.members_.join = hs.members_.join.filter((m) => m.userId !== "@h2:a.example");
    await g.onMembership(ROOM, fact("@h2:a.example"), "leave");
    expect(level("@co-early:a.example")).toBe(100);
    expect(level("@x:ext.example")).toBe(50);
  });
});

describe("the lobby", () => {
  it("an institution meeting admits a knock from this or a trusted server at once, never an external user's or a guest's", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "institution" } });
    const g = governance();
    for (const u of ["@dave:a.example", "@pat:partner.example", "@bob:b.example", "@x:ext.example", "@_parley_g:a.example"]) {
      await g.onMembership(ROOM, fact(u), "knock");
    }
    expect(hs.acts.map(([act, u]) => `${act} ${u}`)).toEqual(["invite @dave:a.example", "invite @pat:partner.example"]);
  });

  it("an open meeting that knocks (external users exist) admits everyone at once but external users and guests", async () => {
    const g = governance();
    for (const u of ["@bob:b.example", "@x:ext.example", "@_parley_g:a.example"]) await g.onMembership(ROOM, fact(u), "knock");
    expect(hs.acts.map(([act, u]) => `${act} ${u}`)).toEqual(["invite @bob:b.example"]);
    // bob leaves the queue when his invite arrives (a membership event, not simulated here).
    expect(g.waiting(ROOM).map((w) => w.user_id)).toEqual(["@bob:b.example", "@x:ext.example", "@_parley_g:a.example"]);
  });

  it("invited and locked meetings admit nobody by themselves; the queue shows name, server and reason, and guests are marked", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "institution", locked: true } });
    const g = governance();
    await g.onMembership(ROOM, { ...fact("@dave:a.example", 5), reason: "late", displayName: "Dave" }, "knock");
    await g.onMembership(ROOM, { ...fact("@_parley_g1:a.example", 7), displayName: "Ada", avatarUrl: "https://evil/x.png" }, "knock");
    expect(hs.acts).toEqual([]);
    expect(g.waiting(ROOM)).toEqual([
      { user_id: "@dave:a.example", display_name: "Dave", avatar_url: null, server: "a.example", reason: "late", since: 5 },
      { user_id: "@_parley_g1:a.example", display_name: "Ada (guest)", avatar_url: null, server: "a.example", reason: null, since: 7 },
    ]);
    await g.onMembership(ROOM, fact("@dave:a.example"), "leave");
    expect(g.waiting(ROOM).map((w) => w.user_id)).toEqual(["@_parley_g1:a.example"]);
  });

  it("a knock's invite (let in, by anyone) is told to every device in the call at once; no other invite, and nothing for a knock that left", async () => {
    const g = governance();
    seated = ["@host:a.example", "@p1:a.example"];
    await g.onMembership(ROOM, fact("@bob:b.example"), "knock");
    await g.onMembership(ROOM, fact("@eve:b.example"), "knock");
    await g.onMembership(ROOM, fact("@eve:b.example"), "leave");
    await g.onMembership(ROOM, fact("@bob:b.example"), "invite");
    await g.onMembership(ROOM, fact("@carol:b.example"), "invite"); // never knocked
    await g.onMembership(ROOM, fact("@eve:b.example"), "invite"); // knocked, but left the lobby first
    expect(pushes.filter(([, p]) => p.type === "let_in")).toEqual([
      ["@host:a.example", { type: "let_in", user_id: "@bob:b.example" }],
      ["@p1:a.example", { type: "let_in", user_id: "@bob:b.example" }],
    ]);
  });

  it("a knock answered in a transaction leaves the lobby as the transaction arrives; an older knock still queued does not put it back", async () => {
    const g = governance();
    seated = ["@host:a.example"];
    await g.onMembership(ROOM, fact("@bob:b.example"), "knock");
    await g.onMembership(ROOM, fact("@eve:b.example"), "knock");
    // Invited (Bob) and denied (Eve), seen on arrival while a transaction with an older knock of each (a note) is still queued.
    g.answeredOnArrival(ROOM, "@bob:b.example", "invite");
    g.answeredOnArrival(ROOM, "@eve:b.example", "leave");
    g.answeredOnArrival(ROOM, "@carol:b.example", "invite"); // never knocked: nothing
    expect(g.waiting(ROOM)).toEqual([]);
    expect(pushes.filter(([, p]) => p.type === "let_in")).toEqual([["@host:a.example", { type: "let_in", user_id: "@bob:b.example" }]]);
    await g.onMembership(ROOM, { ...fact("@bob:b.example"), reason: "a note" }, "knock");
    await g.onMembership(ROOM, fact("@eve:b.example"), "knock");
    expect(g.waiting(ROOM)).toEqual([]);
    // The queue reaches the answers themselves: nothing told again.
    const told = pushes.length;
    await g.onMembership(ROOM, fact("@bob:b.example"), "invite");
    await g.onMembership(ROOM, fact("@eve:b.example"), "leave");
    expect(pushes).toHaveLength(told);
    // A knock after them is a new one.
    await g.onMembership(ROOM, fact("@eve:b.example"), "knock");
    expect(g.waiting(ROOM).map((w) => w.user_id)).toEqual(["@eve:b.example"]);
  });

  it("a knock answered through Parley leaves the lobby and is told to the call at the answer; its transaction then tells nothing again", async () => {
    setPl({ "@host:a.example": 100, "@co:a.example": 50 });
    const g = governance();
    seated = ["@host:a.example", "@p1:a.example"];
    await g.onMembership(ROOM, fact("@bob:b.example"), "knock");
    await g.onMembership(ROOM, fact("@eve:b.example"), "knock");
    await g.act(actor("@co:a.example"), { action: "admit", user_id: "@bob:b.example" });
    await g.act(actor("@co:a.example"), { action: "deny", user_id: "@eve:b.example" });
    expect(g.waiting(ROOM)).toEqual([]);
    const letIn = () => pushes.filter(([, p]) => p.type === "let_in");
    expect(letIn()).toEqual([
      ["@host:a.example", { type: "let_in", user_id: "@bob:b.example" }],
      ["@p1:a.example", { type: "let_in", user_id: "@bob:b.example" }],
    ]);
    const lobbyPushes = pushes.length;
    await g.onMembership(ROOM, fact("@bob:b.example"), "invite");
    await g.onMembership(ROOM, fact("@eve:b.example"), "leave");
    expect(pushes).toHaveLength(lobbyPushes);
  });

  it("only those who may admit are shown the lobby", async () => {
    setPl({ "@host:a.example": 100 });
    const g = governance();
    seated = ["@host:a.example", "@p1:a.example"];
    await g.facts(ROOM);
    await g.onMembership(ROOM, fact("@bob:b.example"), "knock");
    expect(pushes.filter(([, p]) => p.type === "lobby").map(([u]) => u)).toEqual(["@host:a.example"]);
  });
});

describe("host actions", () => {
  beforeEach(() => setPl({ "@host:a.example": 100, "@co:a.example": 50 }));

  it("are refused M_FORBIDDEN below the room's level, and do nothing", async () => {
    const g = governance();
    await expect(g.act(actor("@p1:a.example"), { action: "remove", user_id: "@p2:b.example" })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await expect(g.act(actor("@co:a.example"), { action: "settings", locked: true })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await expect(g.act(actor("@co:a.example"), { action: "remove", user_id: "@host:a.example" })).rejects.toMatchObject({
      errcode: "M_FORBIDDEN", message: expect.stringContaining("not below yours"),
    });
    expect(hs.acts).toEqual([]);
    expect(hs.puts).toEqual([]);
  });

  it("remove and ban are the bot's kick and ban with a reason naming the actor", async () => {
    const g = governance();
    await g.act(actor("@co:a.example"), { action: "remove", user_id: "@p2:b.example", reason: "noise" });
    await g.act(actor("@host:a.example"), { action: "ban", user_id: "@p1:a.example" });
    expect(hs.acts).toEqual([
      ["kick", "@p2:b.example", "noise (removed by @co:a.example)"],
      ["ban", "@p1:a.example", "banned by @host:a.example"],
    ]);
  });

  it("admit needs the user in the lobby and the meeting unlocked; admit all invites each", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "invited" } });
    const g = governance();
    await expect(g.act(actor("@co:a.example"), { action: "admit", user_id: "@bob:b.example" })).rejects.toMatchObject({ errcode: "M_NOT_FOUND" });
    await g.onMembership(ROOM, fact("@bob:b.example"), "knock");
    await g.onMembership(ROOM, fact("@eve:b.example"), "knock");
    await g.act(actor("@co:a.example"), { action: "deny", user_id: "@eve:b.example" });
    // Denied, Eve left the lobby then (not at her kick's transaction): admitting all does not invite her.
    expect(g.waiting(ROOM).map((w) => w.user_id)).toEqual(["@bob:b.example"]);
    expect(await g.act(actor("@co:a.example"), { action: "admit_all" })).toEqual({ admitted: 1 });
    expect(hs.acts.map(([a, u]) => `${a} ${u}`)).toEqual(["kick @eve:b.example", "invite @bob:b.example"]);
    hs.state.set("org.parley.call", { sender: BOT, content: { locked: true } });
    await g.onMembership(ROOM, fact("@zed:b.example"), "knock");
    await expect(g.act(actor("@co:a.example"), { action: "admit", user_id: "@zed:b.example" })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
  });

  it("the call's sessions hear of an admission as its invite goes out, before it is answered, and of its failure; a deny or a refused admit tells them nothing", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "invited" } });
    const told: string[] = [];
    const g = governance(CFG, { letIn: { ahead: (room, u) => void told.push(`ahead ${u}`), failed: (room, u) => void told.push(`failed ${u}`) } });
    const act = hs.membershipAct.bind(hs);
    let refuse = false;
    hs.membershipAct = async (room, a, userId, reason, profile) => {
      told.push(`${a} ${userId}`);
      if (refuse) throw new Error("federation unreachable");
      return act(room, a, userId, reason, profile);
    };
    for (const u of ["@bob:b.example", "@eve:b.example", "@zed:b.example", "@max:b.example"]) await g.onMembership(ROOM, fact(u), "knock");
    await g.act(actor("@co:a.example"), { action: "admit", user_id: "@bob:b.example" });
    await g.act(actor("@co:a.example"), { action: "deny", user_id: "@eve:b.example" });
    refuse = true;
    await expect(g.act(actor("@co:a.example"), { action: "admit", user_id: "@zed:b.example" })).rejects.toThrow("federation unreachable");
    refuse = false;
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "invited", locked: true } });
    await expect(g.act(actor("@co:a.example"), { action: "admit", user_id: "@max:b.example" })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    expect(told).toEqual(["ahead @bob:b.example", "invite @bob:b.example", "kick @eve:b.example", "ahead @zed:b.example", "invite @zed:b.example", "failed @zed:b.example"]);
  });

  it("an invite carries the profile the user's own knock stated (the homeserver asks their server nothing), within bounds", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "invited" } });
    const g = governance();
    const knock = (userId: string, displayName: string | undefined, avatarUrl?: string): RoomMemberFacts => ({ ...fact(userId), displayName, avatarUrl });
    await g.onMembership(ROOM, knock("@bob:b.example", "Bob", "mxc://b.example/face"), "knock");
    await g.onMembership(ROOM, knock("@eve:b.example", "Eve", "https://elsewhere.example/face.png"), "knock");
    await g.onMembership(ROOM, knock("@zed:b.example", undefined), "knock");
    await g.onMembership(ROOM, knock("@max:b.example", "x".repeat(INVITE_DISPLAY_NAME_MAX + 1)), "knock");
    await g.act(actor("@co:a.example"), { action: "admit", user_id: "@bob:b.example" });
    await g.act(actor("@co:a.example"), { action: "admit_all" });
    expect(Object.fromEntries(hs.profiles)).toEqual({
      "invite @bob:b.example": { displayName: "Bob", avatarUrl: "mxc://b.example/face" },
      "invite @eve:b.example": { displayName: "Eve" }, // not an mxc:// avatar: left for the homeserver to look up
      "invite @zed:b.example": undefined, // no name stated: the homeserver looks the profile up
      "invite @max:b.example": undefined, // a name over the limit: not taken
    });
    // A deny (a kick) carries none; an auto-admitted knock carries its own.
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "institution" } });
    await g.onMembership(ROOM, knock("@dave:a.example", "Dave"), "knock");
    expect(hs.profiles.get("invite @dave:a.example")).toEqual({ displayName: "Dave" });
    await g.onMembership(ROOM, knock("@ann:b.example", "Ann"), "knock");
    await g.act(actor("@co:a.example"), { action: "deny", user_id: "@ann:b.example" });
    expect(hs.profiles.get("kick @ann:b.example")).toBeUndefined();
  });

  it("inviteProfile takes a knock's name and mxc:// avatar only within their limits", () => {
    expect(inviteProfile({ displayName: "Bob", avatarUrl: "mxc://b/x" })).toEqual({ displayName: "Bob", avatarUrl: "mxc://b/x" });
    expect(inviteProfile({ displayName: "  ", avatarUrl: "mxc://b/x" })).toBeUndefined();
    expect(inviteProfile({ displayName: "x".repeat(INVITE_DISPLAY_NAME_MAX), avatarUrl: undefined })).toEqual({ displayName: "x".repeat(INVITE_DISPLAY_NAME_MAX) });
    expect(inviteProfile({ displayName: "Bob", avatarUrl: `mxc://b/${"x".repeat(INVITE_AVATAR_URL_MAX)}` })).toEqual({ displayName: "Bob" });
  });

  it("tells the metrics of each knock decided, by a host or by the policy, with its wait; counts the knocks waiting", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { access: "institution" } });
    const decided: string[] = [];
    const g = governance(CFG, { observeLobby: (decision, by, ms) => decided.push(`${decision} ${by} ${ms}`) });
    await g.onMembership(ROOM, fact("@dave:a.example", 40), "knock");
    await g.onMembership(ROOM, fact("@bob:b.example", 30), "knock");
    await g.onMembership(ROOM, fact("@eve:b.example", 12), "knock");
    await g.onMembership("!other:a.example", fact("@zed:b.example", 1), "knock");
    expect(g.waitingKnocks()).toBe(4); // dave's invite has not come back as an event yet
    // The invite's own event may take the knock out before the decision returns: the wait is still known.
    hs.membershipAct = async (room, act, userId) => void g.onMembership(room, fact(userId), act === "invite" ? "invite" : "leave");
    await g.act(actor("@co:a.example"), { action: "deny", user_id: "@eve:b.example" });
    await g.act(actor("@co:a.example"), { action: "admit_all" });
    expect(decided).toEqual(["admitted auto 2", "denied host 30", "admitted host 12", "admitted host 2"]);
    await g.onMembership(ROOM, fact("@dave:a.example"), "invite");
    expect(g.waitingKnocks()).toBe(1);
  });

  it("every host action, refusal, auto-admit and host assignment reaches the audit log; details quote nobody", async () => {
    const g = governance({ ...CFG, defaults: { access: "institution", guests: false } });
    hs.members_.join = [fact("@alice:a.example")];
    await g.onMembership(ROOM, fact("@alice:a.example"), "join");
    await g.onMembership(ROOM, fact("@carol:a.example"), "knock");
    await g.act(actor("@co:a.example"), { action: "mute", user_id: "@p1:a.example", kind: "video" });
    await expect(g.act(actor("@p1:a.example"), { action: "remove", user_id: "@p2:b.example" })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await g.act(actor("@co:a.example"), { action: "remove", user_id: "@p2:b.example", reason: "noise by @x:a.example" });
    expect(audited).toEqual([
      { action: "host_assigned", roomId: ROOM, target: "@alice:a.example", details: { policy: "first_local_joiner" } },
      { action: "auto_admit", roomId: ROOM, target: "@carol:a.example", details: {} },
      { action: "mute", roomId: ROOM, callId: "c1", actor: "@co:a.example", target: "@p1:a.example", outcome: "ok", details: { kind: "video", seats: 1 } },
      { action: "remove", roomId: ROOM, callId: "c1", actor: "@p1:a.example", target: "@p2:b.example", outcome: "refused", details: {} },
      { action: "remove", roomId: ROOM, callId: "c1", actor: "@co:a.example", target: "@p2:b.example", outcome: "ok", details: {} },
    ]);
  });

  it("mute all mutes the participants, not the actor nor hosts and co-hosts", async () => {
    const g = governance();
    expect(await g.act(actor("@co:a.example"), { action: "mute_all", kind: "audio" })).toEqual({ muted: 2 });
    expect(forced).toEqual([["@p1:a.example", "audio", true], ["@p2:b.example", "audio", true]]);
  });

  it("settings map access and lock onto the join rule and keep the rest of the call state", async () => {
    const g = governance({ ...CFG, externalServers: [] });
    await g.act(actor("@host:a.example"), { action: "settings", access: "invited" });
    await g.act(actor("@host:a.example"), { action: "settings", locked: true });
    await g.act(actor("@host:a.example"), { action: "settings", locked: false, access: "open" });
    expect(hs.puts.filter(([t]) => t === "m.room.join_rules").map(([, c]) => c.join_rule)).toEqual(["knock", "invite", "public"]);
    // With external users, an open meeting knocks (Parley admits all but them).
    hs.puts = [];
    const withExternal = governance(CFG);
    await withExternal.act(actor("@host:a.example"), { action: "settings", access: "institution" });
    await withExternal.act(actor("@host:a.example"), { action: "settings", access: "open" });
    expect(hs.puts.filter(([t]) => t === "m.room.join_rules")).toEqual([]);
    expect(hs.state.get("org.parley.call")!.content).toMatchObject({ version: 1, api: "https://a", access: "open", locked: false });
  });

  it("roles: a host makes co-hosts and participants; external users and guests cannot hold power", async () => {
    const g = governance();
    await g.act(actor("@host:a.example"), { action: "set_role", user_id: "@p1:a.example", role: "cohost" });
    expect(level("@p1:a.example")).toBe(50);
    await g.act(actor("@host:a.example"), { action: "set_role", user_id: "@p1:a.example", role: "participant" });
    expect(level("@p1:a.example")).toBeUndefined();
    await expect(g.act(actor("@host:a.example"), { action: "set_role", user_id: "@x:ext.example", role: "cohost" })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await expect(g.act(actor("@host:a.example"), { action: "set_role", user_id: "@_parley_g:a.example", role: "cohost" })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
  });

  it("end for all marks the call state ended and closes the call; only a host's join starts it again", async () => {
    const g = governance();
    await g.act(actor("@co:a.example"), { action: "end" });
    expect(hs.state.get("org.parley.call")!.content.ended).toEqual({ by: "@co:a.example", at: 42 });
    expect(ended.map((c) => c.endedBy)).toEqual(["@co:a.example"]);
    await expect(g.admit(ROOM, "@p1:a.example", false)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: expect.stringContaining("ended by @co:a.example") });
    await expect(g.admit(ROOM, "@co:a.example", false)).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    // A host in the pre-join (a grant asked ahead) starts nothing: their Join does.
    await expect(g.admit(ROOM, "@host:a.example", false, true)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: expect.stringContaining("joining starts it again") });
    expect(hs.state.get("org.parley.call")!.content.ended).toEqual({ by: "@co:a.example", at: 42 });
    await g.admit(ROOM, "@host:a.example", false);
    expect(hs.state.get("org.parley.call")!.content.ended).toBeUndefined();
    await g.admit(ROOM, "@p1:a.example", false);
  });

  it("a hello's admission uses the facts read lately (up to HELLO_FACTS_MAX_AGE_MS, dropped by a change heard of); its key mode too", async () => {
    let now = 1000;
    const g = governance(CFG, { clock: { now: () => now } });
    let reads = 0;
    const read = hs.stateEvent.bind(hs);
    hs.stateEvent = async (room, type) => (reads++, read(room, type));
    await g.admit(ROOM, "@p1:a.example", false, true); // the grant asked ahead: read now
    const atGrant = reads;
    hs.state.set("org.parley.call", { sender: BOT, content: { locked: true, e2ee: { keys: "provisioned", bot: BOT } } });
    now += HELLO_FACTS_MAX_AGE_MS - 1;
    await g.admit(ROOM, "@p1:a.example", false, false, true); // its hello: the facts of the grant, no read
    expect(await g.keyMode(ROOM)).toEqual({ keys: "participant", bot: undefined });
    expect(reads).toBe(atGrant);
    g.onRoomState(ROOM, "org.parley.call"); // the lock heard of in a transaction
    await expect(g.admit(ROOM, "@p1:a.example", false, false, true)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: expect.stringContaining("locked") });
    expect(await g.keyMode(ROOM)).toEqual({ keys: "provisioned", bot: BOT });
    // Too old: read again (a join not at a hello always reads).
    hs.state.set("org.parley.call", { sender: BOT, content: {} });
    now += HELLO_FACTS_MAX_AGE_MS;
    await g.admit(ROOM, "@p1:a.example", false, false, true);
    hs.stateEvent = async () => Promise.reject(new Error("homeserver down"));
    now += HELLO_FACTS_MAX_AGE_MS;
    await expect(g.keyMode(ROOM)).rejects.toMatchObject({ errcode: "M_UNAVAILABLE" });
  });

  it("a locked meeting admits hosts, co-hosts and those already in the call, nobody else", async () => {
    hs.state.set("org.parley.call", { sender: BOT, content: { locked: true } });
    const g = governance();
    await g.admit(ROOM, "@co:a.example", false);
    await g.admit(ROOM, "@p1:a.example", true);
    await expect(g.admit(ROOM, "@p1:a.example", false)).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: expect.stringContaining("locked") });
  });
});
