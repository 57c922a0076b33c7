import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HELP_TEXT } from "../../../appservice/src/calls/commands.ts";
import { MeetingService, WIDGET_EVENT, type MeetingsConfig } from "../../../appservice/src/calls/meetings.ts";
import { FederationPolicy } from "../../../appservice/src/calls/policy.ts";
import {
  OutcomeUnknownError,
  RoomAliasInUseError,
  type Homeserver,
  type MeetingRoomSpec,
  type RoomMemberFacts,
  type Notice,
  type StateEventFacts,
  type WidgetSpec,
} from "../../../appservice/src/calls/ports.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";

const BOT = "@parley:example.org";
const ROOM = "!chat:example.org";
const ALICE = "@alice:example.org";
const MALLORY = "@mallory:evil.example";

/** A room the bot made for `alias`, as the homeserver has it: creator, call state, directory entry. */
function parleyRoom(roomId: string, alias: string, opts: { callState?: boolean; creator?: string } = {}): void {
  hs.directory.set(alias, roomId);
  hs.stateEvents.set(`${roomId}|m.room.create`, { sender: opts.creator ?? BOT, content: { room_version: "12" } });
  if (opts.callState ?? true) hs.stateEvents.set(`${roomId}|org.parley.call`, { sender: BOT, content: { version: 1, alias } });
}

/** An in-memory homeserver: a room directory, and a record of everything the bot did. */
class FakeHomeserver implements Homeserver {
  readonly botUserId = BOT;
  readonly directory = new Map<string, string>();
  readonly created: MeetingRoomSpec[] = [];
  readonly setAliases: [string, string][] = [];
  readonly joined: string[] = [];
  readonly left: [string, string][] = [];
  readonly notices: { roomId: string; notice: Notice; txnId: string }[] = [];
  readonly widgetsPut: [string, WidgetSpec][] = [];
  readonly widgetsRemoved: [string, string][] = [];
  readonly canSendStateAsked: [string, string, string | undefined][] = [];
  /** room|type -> state event; createMeetingRoom fills in what the real homeserver would. */
  readonly stateEvents = new Map<string, StateEventFacts>();
  readonly statePut: [string, string, Record<string, unknown>][] = [];
  readonly deletedAliases: string[] = [];
  canSend = true;
  /** Users other than the bot whose power lets them send state; the bot's is `canSend`. */
  readonly powerful = new Set<string>([ALICE]);
  createDelayMs = 15;
  readonly memberships = new Map<string, string>();
  createFails: Error | undefined;
  /** Failures for the next widget calls, as a flaky homeserver would give. */
  widgetFailures: Error[] = [];
  private rooms = 0;

  async createMeetingRoom(spec: MeetingRoomSpec): Promise<string> {
    this.created.push(spec);
    await new Promise((r) => setTimeout(r, this.createDelayMs));
    if (this.createFails) throw this.createFails;
    // The homeserver's alias uniqueness, checked when the room is made.
    if (this.directory.has(spec.alias)) throw new RoomAliasInUseError(spec.alias);
    const roomId = `!meeting${++this.rooms}:example.org`;
    this.directory.set(spec.alias, roomId);
    this.stateEvents.set(`${roomId}|m.room.create`, { sender: BOT, content: { room_version: "12" } });
    this.stateEvents.set(`${roomId}|org.parley.call`, { sender: BOT, content: spec.callInfo });
    return roomId;
  }
  async resolveAlias(alias: string): Promise<string | undefined> {
    await Promise.resolve();
    return this.directory.get(alias);
  }
  async setAlias(alias: string, roomId: string): Promise<void> {
    this.setAliases.push([alias, roomId]);
    if (this.directory.has(alias)) throw new RoomAliasInUseError(alias);
    this.directory.set(alias, roomId);
  }
  async joinRoom(roomId: string): Promise<void> {
    this.joined.push(roomId);
  }
  async leaveRoom(roomId: string, reason: string): Promise<void> {
    this.left.push([roomId, reason]);
  }
  async sendNotice(roomId: string, notice: Notice, txnId: string): Promise<void> {
    this.notices.push({ roomId, notice, txnId });
  }
  async canSendState(roomId: string, eventType: string, userId?: string): Promise<boolean> {
    this.canSendStateAsked.push([roomId, eventType, userId]);
    return userId === undefined || userId === BOT ? this.canSend : this.powerful.has(userId);
  }
  async stateEvent(roomId: string, eventType: string): Promise<StateEventFacts | undefined> {
    await Promise.resolve();
    return this.stateEvents.get(`${roomId}|${eventType}`);
  }
  async putState(roomId: string, eventType: string, content: Record<string, unknown>): Promise<void> {
    this.statePut.push([roomId, eventType, content]);
    this.stateEvents.set(`${roomId}|${eventType}`, { sender: BOT, content });
  }
  readonly merged: [string, string][] = [];
  async mergeForks(roomId: string, txnId: string): Promise<void> {
    await Promise.resolve();
    this.merged.push([roomId, txnId]);
  }
  async deleteAlias(alias: string): Promise<void> {
    this.deletedAliases.push(alias);
    this.directory.delete(alias);
  }
  async getMembership(roomId: string, userId: string): Promise<string | undefined> {
    return this.memberships.get(`${roomId}|${userId}`);
  }

  async putWidget(roomId: string, widget: WidgetSpec): Promise<void> {
    const failure = this.widgetFailures.shift();
    if (failure) throw failure;
    this.widgetsPut.push([roomId, widget]);
  }
  async removeWidget(roomId: string, widgetId: string): Promise<void> {
    const failure = this.widgetFailures.shift();
    if (failure) throw failure;
    this.widgetsRemoved.push([roomId, widgetId]);
  }
  async members(): Promise<RoomMemberFacts[]> {
    return [];
  }
  async membershipAct(): Promise<void> {}
}

const CFG: MeetingsConfig = {
  domain: "example.org",
  aliasPrefix: "meet-",
  publicUrl: "https://meet.example.org/",
  encrypted: true,
  governance: { access: "invited", guests: false, cohostLevel: 50, hasExternalServers: false },
  aliasRooms: { perMinute: 60, burst: 1000, max: 1000 },
  e2ee: { keys: "participant", provisionedRooms: [] },
};

let dir: string;
let store: SqliteStore;
let hs: FakeHomeserver;
let observed: [string, string][];
let now: number;
let callIds: number;

function service(cfg: MeetingsConfig = CFG, allow: string[] = ["partner.example"]): MeetingService {
  return new MeetingService(cfg, {
    homeserver: hs,
    store,
    policy: new FederationPolicy("example.org", allow),
    clock: { now: () => now },
    ids: { callId: () => `call${++callIds}`, sessionToken: () => `token${callIds}` },
    observe: (what, label) => observed.push([what, label]),
  });
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-meetings-"));
  store = new SqliteStore(path.join(dir, "parley.db"));
  hs = new FakeHomeserver();
  observed = [];
  now = 1_700_000_000_000;
  callIds = 0;
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("provisionAlias", () => {
  it.each([
    "#other-team:example.org",
    "#meet-team:other.example",
    "#meet-team:example.org.evil",
    "#meet-:example.org",
    "#meet-Team:example.org",
    "#meet--team:example.org",
    "#meet-a b:example.org",
    "#meet-a:b:example.org",
    `#meet-${"a".repeat(65)}:example.org`,
    "meet-team:example.org",
    "!meet-team:example.org",
  ])("returns undefined for %j and creates nothing", async (alias) => {
    expect(await service().provisionAlias(alias)).toBeUndefined();
    expect(hs.created).toEqual([]);
    expect(await store.listAliases()).toEqual([]);
  });

  it("accepts the longest allowed slug", async () => {
    const alias = `#meet-${"a".repeat(64)}:example.org`;
    expect(await service().provisionAlias(alias)).toBe("!meeting1:example.org");
  });

  it("creates the room with the configured spec and remembers it", async () => {
    const roomId = await service().provisionAlias("#meet-team.a_1=x:example.org");
    expect(roomId).toBe("!meeting1:example.org");
    expect(hs.created).toEqual([
      {
        alias: "#meet-team.a_1=x:example.org",
        aliasLocalpart: "meet-team.a_1=x",
        name: "Meeting team.a_1=x",
        joinRule: "knock",
        encrypted: true,
        moderatorLevel: 50,
        accessRule: "restricted",
        serverAcl: { allow: ["example.org", "example.org:*", "partner.example", "partner.example:*"], deny: [], allow_ip_literals: false },
        callInfo: {
          version: 1, api: "https://meet.example.org/", alias: "#meet-team.a_1=x:example.org", e2ee: { keys: "participant" },
          access: "invited", locked: false, guests: false,
        },
      },
    ]);
    expect(await store.getAlias("#meet-team.a_1=x:example.org")).toMatchObject({ roomId, state: "ready" });
    expect(observed).toEqual([["room_created", "alias"], ["alias", "created"]]);
  });

  it("follows the config's access level (as a join rule), external servers, encryption and allow-list", async () => {
    const cfg: MeetingsConfig = {
      ...CFG, encrypted: false, publicUrl: "https://calls.example",
      governance: { access: "open", guests: true, cohostLevel: 40, hasExternalServers: true },
    };
    await service(cfg, ["10.1.2.3"]).provisionAlias("#meet-x:example.org");
    expect(hs.created[0]).toMatchObject({
      // With external users, an open meeting knocks: Parley admits every knock but theirs.
      joinRule: "knock",
      encrypted: false,
      moderatorLevel: 40,
      accessRule: "unrestricted",
      serverAcl: { allow: ["example.org", "example.org:*", "10.1.2.3", "10.1.2.3:*"], deny: [], allow_ip_literals: true },
      callInfo: { version: 1, api: "https://calls.example", alias: "#meet-x:example.org", e2ee: { keys: "participant" }, access: "open", guests: true, locked: false },
    });
    await service({ ...cfg, governance: { ...cfg.governance, access: "institution" } }).provisionAlias("#meet-y:example.org");
    expect(hs.created[1]).toMatchObject({ joinRule: "knock", callInfo: { access: "institution" } });
    await service({ ...cfg, governance: { ...cfg.governance, hasExternalServers: false } }).provisionAlias("#meet-z:example.org");
    expect(hs.created[2]).toMatchObject({ joinRule: "public", accessRule: "restricted" });
  });

  it("creates exactly one room for 20 concurrent queries of one alias", async () => {
    const meetings = service();
    const results = await Promise.all(Array.from({ length: 20 }, () => meetings.provisionAlias("#meet-busy:example.org")));
    expect(new Set(results)).toEqual(new Set(["!meeting1:example.org"]));
    expect(hs.created).toHaveLength(1);
    expect(observed.filter(([w]) => w === "room_created")).toHaveLength(1);
    expect(await store.listAliases()).toMatchObject([{ alias: "#meet-busy:example.org", roomId: "!meeting1:example.org", state: "ready" }]);
  });

  it("creates one room per alias when different aliases are queried at once", async () => {
    const meetings = service();
    const [a, b] = await Promise.all([
      meetings.provisionAlias("#meet-a:example.org"),
      meetings.provisionAlias("#meet-b:example.org"),
    ]);
    expect(a).not.toBe(b);
    expect(hs.created.map((s) => s.alias).sort()).toEqual(["#meet-a:example.org", "#meet-b:example.org"]);
  });

  it("returns the remembered room and puts its alias back without creating another", async () => {
    const meetings = service();
    const first = await meetings.provisionAlias("#meet-team:example.org");
    hs.directory.delete("#meet-team:example.org"); // someone removed it from the directory
    expect(await meetings.provisionAlias("#meet-team:example.org")).toBe(first);
    expect(hs.created).toHaveLength(1);
    expect(hs.setAliases).toEqual([["#meet-team:example.org", first]]);
    expect(hs.directory.get("#meet-team:example.org")).toBe(first);
  });

  it("adopts the bot's room when the homeserver says the alias is already in use", async () => {
    parleyRoom("!made-elsewhere:example.org", "#meet-team:example.org");
    expect(await service().provisionAlias("#meet-team:example.org")).toBe("!made-elsewhere:example.org");
    expect(hs.created).toHaveLength(1);
    expect(await store.getAlias("#meet-team:example.org")).toMatchObject({ roomId: "!made-elsewhere:example.org", state: "ready" });
    expect(observed).toEqual([["alias", "adopted"]]);
  });

  it("releases its claim and rejects when the room cannot be created", async () => {
    hs.createFails = new Error("homeserver down");
    await expect(service().provisionAlias("#meet-team:example.org")).rejects.toThrow("homeserver down");
    expect(await store.getAlias("#meet-team:example.org")).toBeUndefined();
    hs.createFails = undefined;
    expect(await service().provisionAlias("#meet-team:example.org")).toBe("!meeting1:example.org");
  });

  it("finishes a claim left by a crash when the directory has the alias", async () => {
    await store.claimAlias("#meet-team:example.org");
    parleyRoom("!before-crash:example.org", "#meet-team:example.org");
    expect(await service().provisionAlias("#meet-team:example.org")).toBe("!before-crash:example.org");
    expect(hs.created).toEqual([]);
    expect(await store.getAlias("#meet-team:example.org")).toMatchObject({ roomId: "!before-crash:example.org", state: "ready" });
  });
});

describe("reconcilePendingAliases", () => {
  it("marks resolvable claims ready and releases the others", async () => {
    await store.claimAlias("#meet-done:example.org");
    await store.claimAlias("#meet-lost:example.org");
    await store.claimAlias("#meet-ok:example.org");
    await store.completeAlias("#meet-ok:example.org", "!ok:example.org");
    parleyRoom("!done:example.org", "#meet-done:example.org");

    expect(await service().reconcilePendingAliases()).toBe(2);
    expect(await store.getAlias("#meet-done:example.org")).toMatchObject({ roomId: "!done:example.org", state: "ready" });
    expect(await store.getAlias("#meet-lost:example.org")).toBeUndefined();
    expect(await store.getAlias("#meet-ok:example.org")).toMatchObject({ roomId: "!ok:example.org", state: "ready" });
    expect(await store.listAliases("creating")).toEqual([]);
    expect(await service().reconcilePendingAliases()).toBe(0);
    expect(hs.created).toEqual([]);
  });
});

describe("reconcilePendingAliases and rooms still in the making", () => {
  it("keeps a young claim whose room lacks its call state; sets an old one's room aside", async () => {
    await store.claimAlias("#meet-young:example.org");
    parleyRoom("!young:example.org", "#meet-young:example.org", { callState: false });
    now = Date.now(); // the claim was just made
    expect(await service().reconcilePendingAliases()).toBe(1);
    expect((await store.getAlias("#meet-young:example.org"))?.state).toBe("creating");
    expect(hs.deletedAliases).toEqual([]);

    now = Date.now() + 10 * 60_000; // long after: the homeserver is done with it
    await service().reconcilePendingAliases();
    expect(await store.getAlias("#meet-young:example.org")).toBeUndefined();
    expect(hs.deletedAliases).toEqual(["#meet-young:example.org"]);
    expect(hs.left.map(([r]) => r)).toEqual(["!young:example.org"]);
  });
});

describe("onBotInvited", () => {
  it("joins when the inviter's server is allowed", async () => {
    expect(await service().onBotInvited(ROOM, "@bob:partner.example:8448")).toBe("joined");
    expect(hs.joined).toEqual([ROOM]);
    expect(hs.left).toEqual([]);
  });

  it("leaves with a reason naming the allowed servers otherwise", async () => {
    expect(await service().onBotInvited(ROOM, MALLORY)).toBe("refused");
    expect(hs.joined).toEqual([]);
    expect(hs.left).toEqual([[ROOM, "Parley on example.org accepts invites only from users of: example.org, partner.example"]]);
    expect(observed).toEqual([["refusal", "invite"]]);
  });

  it("refuses an inviter that is not a user id", async () => {
    expect(await service().onBotInvited(ROOM, "example.org")).toBe("refused");
    expect(hs.joined).toEqual([]);
  });
});

describe("onMessage", () => {
  const link = "https://meet.example.org/#/call/!chat%3Aexample.org";
  const texts = () => hs.notices.map((n) => n.notice.text);

  it("'!meet' posts the join link, records the call and puts a widget", async () => {
    await service().onMessage(ROOM, ALICE, "!meet", "$ev1");
    expect(hs.notices).toEqual([
      {
        roomId: ROOM,
        txnId: "parley-$ev1",
        notice: {
          text: `Call started by ${ALICE}. Join: ${link}`,
          html: `Call started by ${ALICE}. <a href="${link}">Join the call</a>`,
        },
      },
    ]);
    expect(await store.activeCall(ROOM)).toEqual({
      callId: "call1",
      roomId: ROOM,
      origin: "command",
      startedBy: ALICE,
      startedAt: now,
      startEventId: "$ev1",
      widgetId: "parley-call1",
      endedAt: null,
      endedBy: null,
      endEventId: null,
      sfu: null,
    });
    expect(hs.canSendStateAsked).toEqual([[ROOM, WIDGET_EVENT, undefined], [ROOM, "org.parley.call", undefined]]);
    expect(hs.statePut).toEqual([[ROOM, "org.parley.call", { version: 1, api: "https://meet.example.org/", e2ee: { keys: "participant" } }]]);
    expect(hs.widgetsPut).toEqual([
      [
        ROOM,
        {
          widgetId: "parley-call1",
          url: "https://meet.example.org/widget.html?roomId=$matrix_room_id&userId=$matrix_user_id&deviceId=$org.matrix.msc3819.matrix_device_id&callId=call1",
          name: "Parley call",
          data: { callId: "call1", api: "https://meet.example.org" },
        },
      ],
    ]);
    expect(observed).toEqual([["command", "start"]]);
  });

  it("escapes the sender in the HTML of the notice", async () => {
    const odd = "@<b>&'\":example.org";
    await service().onMessage(ROOM, odd, "!meet", "$ev1");
    expect(hs.notices[0]!.notice.html).toBe(`Call started by @&#60;b&#62;&#38;&#39;&#34;:example.org. <a href="${link}">Join the call</a>`);
  });

  it("a second '!meet' says a call is already running and starts nothing", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    await meetings.onMessage(ROOM, "@bob:partner.example", "!meet start", "$ev2");
    expect(hs.notices[1]).toEqual({
      roomId: ROOM,
      txnId: "parley-$ev2",
      notice: {
        text: `A call is already running here: ${link}`,
        html: `A call is already running here: <a href="${link}">join it</a>`,
      },
    });
    expect((await store.activeCall(ROOM))?.callId).toBe("call1");
    expect(hs.widgetsPut).toHaveLength(1);
    expect(callIds).toBe(1);
  });

  it("'!meet end' ends the call and removes the widget it put", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    now += 60_000;
    hs.powerful.add("@bob:partner.example");
    await meetings.onMessage(ROOM, "@bob:partner.example", "!meet end", "$ev2");
    expect(hs.notices[1]).toEqual({ roomId: ROOM, txnId: "parley-$ev2", notice: { text: "Call ended by @bob:partner.example." } });
    expect(hs.widgetsRemoved).toEqual([[ROOM, "parley-call1"]]);
    expect(await store.activeCall(ROOM)).toBeUndefined();
    // A new call may start afterwards.
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev3");
    expect((await store.activeCall(ROOM))?.callId).toBe("call2");
  });

  it("puts and removes no widget when the bot may not send widget state", async () => {
    hs.canSend = false;
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    expect((await store.activeCall(ROOM))?.widgetId).toBeNull();
    await meetings.onMessage(ROOM, ALICE, "!meet end", "$ev2");
    expect(texts()).toEqual([
      `Call started by ${ALICE}. Join: ${link} (Parley may not set org.parley.call in this room: clients ask you to confirm meet.example.org, and keys are the participants'.)`,
      `Call ended by ${ALICE}.`,
    ]);
    expect(hs.statePut).toEqual([]);
    expect(hs.widgetsPut).toEqual([]);
    expect(hs.widgetsRemoved).toEqual([]);
  });

  it("'!meet end' without a call says so", async () => {
    await service().onMessage(ROOM, ALICE, "!meet end", "$ev1");
    expect(texts()).toEqual(["No call is running in this room."]);
    expect(hs.widgetsRemoved).toEqual([]);
  });

  it("'!meet help' posts the help text", async () => {
    await service().onMessage(ROOM, ALICE, "!meet help", "$ev1");
    expect(hs.notices).toEqual([{ roomId: ROOM, txnId: "parley-$ev1", notice: { text: HELP_TEXT } }]);
    expect(await store.activeCall(ROOM)).toBeUndefined();
  });

  it("an unknown word gets the help text with the word named", async () => {
    await service().onMessage(ROOM, ALICE, "!meet Dance", "$ev1");
    expect(texts()).toEqual([`Unknown command '!meet Dance'.\n${HELP_TEXT}`]);
    expect(observed).toEqual([["command", "unknown"]]);
  });

  it("refuses a sender from a server that is not allowed and starts no call", async () => {
    await service().onMessage(ROOM, MALLORY, "!meet", "$ev1");
    expect(hs.notices).toEqual([
      {
        roomId: ROOM,
        txnId: "parley-$ev1",
        notice: { text: `Sorry ${MALLORY}, Parley on example.org serves only users of: example.org, partner.example.` },
      },
    ]);
    expect(await store.activeCall(ROOM)).toBeUndefined();
    expect(hs.canSendStateAsked).toEqual([]);
    expect(hs.widgetsPut).toEqual([]);
    expect(observed).toEqual([["refusal", "command"]]);
  });

  it("ignores the bot's own messages", async () => {
    await service().onMessage(ROOM, BOT, "!meet", "$ev1");
    expect(hs.notices).toEqual([]);
    expect(await store.activeCall(ROOM)).toBeUndefined();
  });

  it("ignores messages that are not commands", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "hello !meet", "$ev1");
    await meetings.onMessage(ROOM, ALICE, { body: "!meet" }, "$ev2");
    expect(hs.notices).toEqual([]);
    expect(observed).toEqual([]);
  });

  // The appservice layer redelivers an event whose handling failed transiently; the retry
  // must finish what the first attempt started.
  it("a '!meet' retried after the widget could not be put puts it and announces the call", async () => {
    const meetings = service();
    hs.widgetFailures.push(new Error("homeserver unreachable"));
    await expect(meetings.onMessage(ROOM, ALICE, "!meet", "$ev1")).rejects.toThrow("homeserver unreachable");
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    expect(hs.widgetsPut.map(([room, w]) => [room, w.widgetId])).toEqual([[ROOM, "parley-call1"]]);
    expect(texts()).toEqual([`Call started by ${ALICE}. Join: ${link}`]);
  });

  it("a '!meet end' retried after the widget could not be removed removes it", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    hs.widgetFailures.push(new Error("homeserver unreachable"));
    await expect(meetings.onMessage(ROOM, ALICE, "!meet end", "$ev2")).rejects.toThrow("homeserver unreachable");
    await meetings.onMessage(ROOM, ALICE, "!meet end", "$ev2");
    expect(hs.widgetsRemoved).toEqual([[ROOM, "parley-call1"]]);
    expect(texts()).toEqual([`Call started by ${ALICE}. Join: ${link}`, `Call ended by ${ALICE}.`]);
  });

  it("derives the notice txnId from the event id", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet help", "$same");
    await meetings.onMessage(ROOM, ALICE, "!meet help", "$same");
    await meetings.onMessage(ROOM, ALICE, "!meet help", "$other");
    expect(hs.notices.map((n) => n.txnId)).toEqual(["parley-$same", "parley-$same", "parley-$other"]);
  });

  it("a redelivered '!meet' replies with the same txnId, so the homeserver posts one notice", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    expect(new Set(hs.notices.map((n) => n.txnId))).toEqual(new Set(["parley-$ev1"]));
    expect(await store.activeCalls()).toHaveLength(1);
  });
});

describe("slugOf and joinLink", () => {
  it("extracts the slug of an alias in the namespace", () => {
    const meetings = service();
    expect(meetings.slugOf("#meet-weekly.sync:example.org")).toBe("weekly.sync");
    expect(meetings.slugOf("#meet-weekly:elsewhere.example")).toBeUndefined();
  });

  it("builds a join link without a double slash and with the room id encoded", () => {
    expect(service().joinLink("#meet-a:example.org")).toBe("https://meet.example.org/#/call/%23meet-a%3Aexample.org");
  });
});

describe("!meet status", () => {
  const member = (sender: string, device: string, content: Record<string, unknown>) => ({
    type: "org.matrix.msc3401.call.member",
    sender,
    state_key: `_${sender}_${device}`,
    origin_server_ts: now,
    content,
  });
  const joined = (device: string) => ({
    application: "m.call",
    call_id: "",
    scope: "m.room",
    device_id: device,
    focus_active: { type: "org.parley.janus" },
    foci_preferred: [{ type: "org.parley.janus", call_api: "https://meet.example.org", room_id: ROOM }],
    created_ts: now,
  });

  it("lists who is in the call from MatrixRTC membership, and forgets leavers", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$start");
    expect(meetings.onRtcMembership(ROOM, member(ALICE, "PHONE", joined("PHONE"))).kind).toBe("joined");
    expect(meetings.onRtcMembership(ROOM, member(ALICE, "LAPTOP", joined("LAPTOP"))).kind).toBe("joined");
    expect(meetings.onRtcMembership(ROOM, member("@bob:partner.example", "B1", joined("B1"))).kind).toBe("joined");
    await meetings.onMessage(ROOM, ALICE, "!meet status", "$s1");
    const first = hs.notices.at(-1)!.notice.text;
    expect(first).toContain("A call is running (started by @alice:example.org)");
    expect(first).toContain("@alice:example.org (2 devices)");
    expect(first).toContain("@bob:partner.example");

    expect(meetings.onRtcMembership(ROOM, member("@bob:partner.example", "B1", {})).kind).toBe("left");
    meetings.onRoomLeft(ROOM, ALICE);
    await meetings.onMessage(ROOM, ALICE, "!meet status", "$s2");
    expect(hs.notices.at(-1)!.notice.text).toContain("In the call: nobody.");
  });

  it("refuses a membership written under someone else's state key", () => {
    const meetings = service();
    const forged = { ...member("@bob:partner.example", "B1", joined("B1")), state_key: `_${ALICE}_B1` };
    expect(meetings.onRtcMembership(ROOM, forged).kind).toBe("invalid");
  });
});

describe("alias room limits", () => {
  const limited = (aliasRooms: MeetingsConfig["aliasRooms"]) => service({ ...CFG, aliasRooms });
  const alias = (i: number) => `#meet-n${i}:example.org`;

  it("refuses beyond the burst with M_LIMIT_EXCEEDED and a retry time, writing nothing", async () => {
    const meetings = limited({ perMinute: 6, burst: 3, max: 100 });
    for (let i = 0; i < 3; i++) expect(await meetings.provisionAlias(alias(i))).toBeDefined();
    const refused = meetings.provisionAlias(alias(3));
    await expect(refused).rejects.toMatchObject({ errcode: "M_LIMIT_EXCEEDED", reason: "rate", retryAfterMs: 10_000 });
    expect(await store.getAlias(alias(3))).toBeUndefined();
    expect(hs.created).toHaveLength(3);
    expect(observed.filter(([w]) => w === "alias")).toEqual([
      ["alias", "created"], ["alias", "created"], ["alias", "created"], ["alias", "refused_rate"],
    ]);
    now += 10_000; // one token back at 6 a minute
    expect(await meetings.provisionAlias(alias(3))).toBeDefined();
    await expect(meetings.provisionAlias(alias(4))).rejects.toMatchObject({ reason: "rate" });
  });

  it("refuses beyond the cap, and still serves the aliases it has", async () => {
    const meetings = limited({ perMinute: 600, burst: 100, max: 2 });
    const first = await meetings.provisionAlias(alias(0));
    await meetings.provisionAlias(alias(1));
    await expect(meetings.provisionAlias(alias(2))).rejects.toMatchObject({ errcode: "M_LIMIT_EXCEEDED", reason: "cap" });
    expect(await store.getAlias(alias(2))).toBeUndefined();
    expect(await meetings.provisionAlias(alias(0))).toBe(first);
    expect(hs.created).toHaveLength(2);
  });

  it("1000 concurrent lookups of distinct aliases make at most the cap, each recorded", async () => {
    const meetings = limited({ perMinute: 60, burst: 1000, max: 25 });
    const results = await Promise.allSettled(Array.from({ length: 1000 }, (_, i) => meetings.provisionAlias(alias(i))));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(25);
    expect(hs.created).toHaveLength(25);
    expect(await store.listAliases("ready")).toHaveLength(25);
    expect(await store.listAliases("creating")).toEqual([]);
  });

  it("a lookup of an alias that exists is not refused by the limits", async () => {
    const meetings = limited({ perMinute: 0, burst: 1, max: 1 });
    const roomId = await meetings.provisionAlias(alias(0));
    expect(await meetings.provisionAlias(alias(0))).toBe(roomId);
  });
});

describe("alias rooms converge", () => {
  it("a creation that failed although the homeserver made the room adopts that room", async () => {
    hs.createFails = new Error("500 from the homeserver");
    const meetings = service();
    // The homeserver made the room before failing (Synapse writes the alias first).
    const create = hs.createMeetingRoom.bind(hs);
    hs.createMeetingRoom = async (spec) => {
      parleyRoom("!made-anyway:example.org", spec.alias);
      return create(spec);
    };
    expect(await meetings.provisionAlias("#meet-x:example.org")).toBe("!made-anyway:example.org");
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ roomId: "!made-anyway:example.org", state: "ready" });
    expect(observed).toContainEqual(["alias", "adopted"]);
  });

  it("keeps the claim when the homeserver's outcome is unknown; the room's first member settles it", async () => {
    hs.createFails = new OutcomeUnknownError("creating #meet-x:example.org");
    const meetings = service();
    await expect(meetings.provisionAlias("#meet-x:example.org")).rejects.toMatchObject({ errcode: "M_UNAVAILABLE" });
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ state: "creating" });
    // The homeserver finished the room after Parley stopped waiting.
    parleyRoom("!late:example.org", "#meet-x:example.org");
    await meetings.onMemberJoined("!late:example.org");
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ roomId: "!late:example.org", state: "ready" });
  });

  it("a room still being made when Parley gave up waiting is neither set aside nor released", async () => {
    hs.createFails = new OutcomeUnknownError("creating #meet-x:example.org");
    const meetings = service();
    // The alias exists, but the room's state is not readable yet (the bot's join is not written).
    hs.directory.set("#meet-x:example.org", "!in-progress:example.org");
    const stateEvent = hs.stateEvent.bind(hs);
    hs.stateEvent = async (r, t) => {
      if (r === "!in-progress:example.org") throw new Error("M_FORBIDDEN: not in room");
      return stateEvent(r, t);
    };
    await expect(meetings.provisionAlias("#meet-x:example.org")).rejects.toMatchObject({ errcode: "M_UNAVAILABLE" });
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ state: "creating" });
    expect(hs.deletedAliases).toEqual([]);
    expect(hs.left).toEqual([]);
    // Once readable, the room's first member settles it.
    hs.stateEvent = stateEvent;
    parleyRoom("!in-progress:example.org", "#meet-x:example.org");
    await meetings.onMemberJoined("!in-progress:example.org");
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ roomId: "!in-progress:example.org", state: "ready" });
  });

  it("answers the homeserver's query made while Parley looks the alias up itself with 'not found' (no deadlock)", async () => {
    await store.claimAlias("#meet-x:example.org"); // left by a crash
    const meetings = service();
    // A homeserver that, not having the alias, asks the appservice before answering (as Synapse does).
    hs.resolveAlias = async (alias) => {
      const asked = await meetings.provisionAlias(alias);
      return asked ?? hs.directory.get(alias);
    };
    expect(await meetings.provisionAlias("#meet-x:example.org")).toBe("!meeting1:example.org");
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ state: "ready" });
  });

  it("a kept claim whose room never came is made on the alias's next query", async () => {
    hs.createFails = new OutcomeUnknownError("creating #meet-x:example.org");
    const meetings = service();
    await expect(meetings.provisionAlias("#meet-x:example.org")).rejects.toMatchObject({ errcode: "M_UNAVAILABLE" });
    hs.createFails = undefined;
    expect(await meetings.provisionAlias("#meet-x:example.org")).toBe("!meeting1:example.org");
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ roomId: "!meeting1:example.org", state: "ready" });
  });

  it("does not adopt a room the bot did not make, and releases the claim", async () => {
    parleyRoom("!squatted:example.org", "#meet-x:example.org", { creator: "@admin:example.org" });
    await expect(service().provisionAlias("#meet-x:example.org")).rejects.toMatchObject({ errcode: "M_NOT_FOUND" });
    expect(await store.getAlias("#meet-x:example.org")).toBeUndefined();
  });

  it("sets aside a half-made room of the bot (no call state) so the alias can be made again", async () => {
    parleyRoom("!half:example.org", "#meet-x:example.org", { callState: false });
    const meetings = service();
    await expect(meetings.provisionAlias("#meet-x:example.org")).rejects.toBeInstanceOf(RoomAliasInUseError);
    expect(hs.deletedAliases).toEqual(["#meet-x:example.org"]);
    expect(hs.left.map(([r]) => r)).toEqual(["!half:example.org"]);
    expect(await store.getAlias("#meet-x:example.org")).toBeUndefined();
    expect(await meetings.provisionAlias("#meet-x:example.org")).toBe("!meeting1:example.org");
  });

  it("a member joining a room with Parley's alias but no record gets the room adopted", async () => {
    parleyRoom("!orphan:example.org", "#meet-x:example.org");
    const meetings = service();
    await meetings.onMemberJoined("!orphan:example.org");
    expect(await store.getAlias("#meet-x:example.org")).toMatchObject({ roomId: "!orphan:example.org", state: "ready" });
  });

  it("a member joining an ordinary room adopts nothing, and the room is asked about once", async () => {
    hs.stateEvents.set(`${ROOM}|org.parley.call`, { sender: "@mallory:example.org", content: { version: 1, alias: "#meet-x:example.org" } });
    hs.directory.set("#meet-x:example.org", ROOM);
    const meetings = service();
    let asked = 0;
    const stateEvent = hs.stateEvent.bind(hs);
    hs.stateEvent = async (r, t) => {
      asked++;
      return stateEvent(r, t);
    };
    await meetings.onMemberJoined(ROOM);
    await meetings.onMemberJoined(ROOM);
    expect(await store.listAliases()).toEqual([]);
    expect(asked).toBe(1);
  });
});

describe("a user of another server joins a call room", () => {
  it("merges the room's forks once per join event, only for remote users of call rooms", async () => {
    const meetings = service();
    await meetings.onMemberJoined(ROOM, "@bob:partner.example", "$join0"); // no call yet: nothing
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    await meetings.onMemberJoined(ROOM, "@carol:example.org", "$join1"); // a local user: nothing
    await meetings.onMemberJoined(ROOM, "not a user id", "$join2");
    await meetings.onMemberJoined(ROOM, "@bob:partner.example", "$join3");
    expect(hs.merged).toEqual([[ROOM, "parley-merge-$join3"]]);
  });
});

describe("the bot removed from a room", () => {
  it("ends the room's call and tells onCallEnded, once per event", async () => {
    const ended: string[] = [];
    const meetings = new MeetingService(CFG, {
      homeserver: hs, store, policy: new FederationPolicy("example.org", []), clock: { now: () => now },
      ids: { callId: () => "call1", sessionToken: () => "t" },
      onCallEnded: async (call) => void ended.push(call.callId),
    });
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    const call = await meetings.onBotRemoved(ROOM, ALICE, "$kick");
    expect(call).toMatchObject({ callId: "call1", endedBy: ALICE, endEventId: "$kick" });
    expect(await store.activeCall(ROOM)).toBeUndefined();
    expect(ended).toEqual(["call1"]);
    await meetings.onBotRemoved(ROOM, ALICE, "$kick"); // redelivered: closes again, idempotent
    expect(ended).toEqual(["call1", "call1"]);
    expect(await meetings.onBotRemoved(ROOM, ALICE, "$other")).toBeUndefined();
  });
});

describe("!meet end and the call state", () => {
  it("refuses '!meet end' from a user who may not change the call state", async () => {
    const meetings = service();
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    await meetings.onMessage(ROOM, "@bob:partner.example", "!meet end", "$ev2");
    expect(hs.notices[1]!.notice.text).toBe(
      "Sorry @bob:partner.example, ending the call needs the power level to change the call state (org.parley.call) in this room.",
    );
    expect(hs.canSendStateAsked.at(-1)).toEqual([ROOM, "org.parley.call", "@bob:partner.example"]);
    expect(await store.activeCall(ROOM)).toBeDefined();
    expect(observed).toContainEqual(["refusal", "end"]);
  });

  it("announces provisioned keys and the bot in rooms the operator lists", async () => {
    const meetings = service({ ...CFG, e2ee: { keys: "participant", provisionedRooms: [ROOM] } });
    await meetings.onMessage(ROOM, ALICE, "!meet", "$ev1");
    expect(hs.statePut[0]![2]).toEqual({ version: 1, api: "https://meet.example.org/", e2ee: { keys: "provisioned", bot: BOT } });
    await meetings.provisionAlias("#meet-x:example.org");
    expect(hs.created[0]!.callInfo).toMatchObject({ e2ee: { keys: "participant" } });
  });

  it("'!meet' in an alias room keeps the room's alias in the call state", async () => {
    const meetings = service();
    const roomId = (await meetings.provisionAlias("#meet-x:example.org"))!;
    await meetings.onMessage(roomId, ALICE, "!meet", "$ev1");
    // The meeting's governance settings stay.
    expect(hs.statePut).toEqual([[
      roomId, "org.parley.call",
      { version: 1, api: "https://meet.example.org/", alias: "#meet-x:example.org", e2ee: { keys: "participant" }, access: "invited", locked: false, guests: false },
    ]]);
  });

  it("alias rooms announce provisioned keys when calls.e2ee.keys says so", async () => {
    await service({ ...CFG, e2ee: { keys: "provisioned", provisionedRooms: [] } }).provisionAlias("#meet-x:example.org");
    expect(hs.created[0]!.callInfo).toEqual({
      version: 1, api: "https://meet.example.org/", alias: "#meet-x:example.org", e2ee: { keys: "provisioned", bot: BOT },
      access: "invited", locked: false, guests: false,
    });
  });
});
