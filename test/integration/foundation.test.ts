// Issue 2 against real components: three Synapses federating on loopback, each with its own
// Parley process (SQLite file) and Janus. A allows B; C is not on A's allow-list.
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import { metric } from "../support/metrics.ts";

let stack: Stack;
let A: Institution, B: Institution, C: Institution;
let alice: TestUser, bob: TestUser, carol: TestUser;

const user = async (inst: Institution, localpart: string) => {
  const u = await inst.registerUser(localpart);
  return new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken);
};

beforeAll(async () => {
  stack = await startInstitutions({
    count: 3,
    // A allows B's host; B allows A; C allows A (but A does not allow C).
    allow: (i, hosts) => (i === 0 ? [hosts[1]!] : [hosts[0]!]),
    janus: true,
  });
  [A, B, C] = stack.institutions as [Institution, Institution, Institution];
  [alice, bob, carol] = await Promise.all([user(A, "alice"), user(B, "bob"), user(C, "carol")]);
});

let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  // Logs (Synapse, Parley, Janus) are kept when anything failed.
  await stack?.stop({ keep: failed || undefined });
});

describe("meeting rooms by alias", () => {
  it("joining a new alias creates an encrypted room with the bot in charge, ACL and call state", async () => {
    const alias = A.alias("design-review");
    const roomId = await alice.join(alias);
    const state = await alice.state(roomId);
    const of = (type: string) => state.find((e) => e.type === type && e.state_key === "");
    expect(of("m.room.encryption")?.content.algorithm).toBe("m.megolm.v1.aes-sha2");
    expect(of("m.room.join_rules")?.content.join_rule).toBe("public");
    expect(of("m.room.server_acl")?.content).toEqual({
      // Each host alone (a transaction's origin, port stripped) and with its port (an event's sender).
      allow: [A.host, A.serverName, B.host, `${B.host}:*`],
      deny: [],
      allow_ip_literals: true,
    });
    expect(of("org.parley.call")?.content).toMatchObject({ version: 1, api: A.parley.config.meetings.publicUrl, alias });
    const create = of("m.room.create")!;
    expect(create.sender).toBe(A.botUserId);
    const pl = of("m.room.power_levels")!.content as { users: Record<string, number>; events: Record<string, number> };
    const version = String(create.content.room_version);
    if (Number(version) >= 12) expect(pl.users[A.botUserId]).toBeUndefined(); // creator: unlimited power
    else expect(pl.users[A.botUserId]).toBe(100);
    expect(pl.events["org.matrix.msc3401.call.member"]).toBe(0);
    expect(await alice.resolveAlias(alias)).toBe(roomId);
  });

  it("20 concurrent joins of one new alias give exactly one room", async () => {
    const alias = A.alias("all-hands");
    const before = await metric(A, "parley_rooms_created_total");
    const users = await Promise.all(Array.from({ length: 20 }, (_, i) => user(A, `crowd${i}`)));
    const roomIds = await Promise.all(users.map((u) => u.join(alias)));
    expect(new Set(roomIds).size).toBe(1);
    expect(await metric(A, "parley_rooms_created_total")).toBe(before + 1);
    const members = await alice.request<{ joined: Record<string, unknown> }>(
      Method.Get,
      `/rooms/${encodeURIComponent(roomIds[0]!)}/joined_members`,
    ).catch(() => undefined);
    // alice is not in this room; read it as one of the crowd instead.
    const joined = members ?? (await users[0]!.request<{ joined: Record<string, unknown> }>(Method.Get, `/rooms/${encodeURIComponent(roomIds[0]!)}/joined_members`));
    expect(Object.keys(joined.joined)).toHaveLength(21); // the bot and 20 users
  });

  it("a user of a federated homeserver joins a meeting alias of the first", async () => {
    const alias = A.alias("cross-agency");
    const roomId = await bob.join(alias);
    expect(roomId).toBe(await alice.resolveAlias(alias));
    await alice.join(roomId);
    const member = await waitFor("bob's membership on A", async () => {
      const e = await alice.stateEvent(roomId, "m.room.member", bob.userId);
      return e?.membership === "join" ? e : undefined;
    });
    expect(member.membership).toBe("join");
  });

  it("an alias outside Parley's prefix is not created", async () => {
    await expect(alice.join(`#other-room:${A.serverName}`)).rejects.toMatchObject({ errcode: "M_NOT_FOUND" });
  });
});

describe("!meet in a chat room", () => {
  let roomId: string;

  beforeAll(async () => {
    roomId = await alice.createRoom({
      preset: "public_chat",
      name: "Team chat",
      // Room v12: the creator (alice) holds power implicitly and must not be listed.
      power_level_content_override: { users: { [A.botUserId]: 50 } },
    });
    await alice.invite(roomId, A.botUserId);
    await waitFor("the bot to accept the invite", async () => {
      const e = await alice.stateEvent(roomId, "m.room.member", A.botUserId);
      return e?.membership === "join" ? e : undefined;
    });
  });

  const botNotice = (text: string) => (e: { sender: string; type: string; content: Record<string, unknown> }) =>
    e.sender === A.botUserId && e.type === "m.room.message" && String(e.content.body).includes(text);

  it("!meet starts a call: a join link and a widget", async () => {
    await alice.send(roomId, "!meet");
    const reply = await alice.waitForEvent(roomId, botNotice("Call started"));
    expect(reply.content.msgtype).toBe("m.notice");
    expect(String(reply.content.body)).toContain(`${A.parley.config.meetings.publicUrl}/#/call/${encodeURIComponent(roomId)}`);
    const widgets = (await alice.state(roomId)).filter((e) => e.type === "im.vector.modular.widgets" && e.content.url);
    expect(widgets).toHaveLength(1);
    expect(String(widgets[0]!.content.url)).toContain("$matrix_room_id");
    expect((await A.parleyStore().activeCall(roomId))?.startedBy).toBe(alice.userId);
  });

  it("!meet again says a call is running; !meet end ends it and removes the widget", async () => {
    await alice.send(roomId, "!meet");
    await alice.waitForEvent(roomId, botNotice("already running"));
    await alice.send(roomId, "!meet end");
    await alice.waitForEvent(roomId, botNotice("Call ended"));
    const widgets = (await alice.state(roomId)).filter((e) => e.type === "im.vector.modular.widgets" && e.content.url);
    expect(widgets).toHaveLength(0);
    expect(await A.parleyStore().activeCall(roomId)).toBeUndefined();
  });

  it("!meet help explains the commands", async () => {
    await alice.send(roomId, "!meet help");
    const help = await alice.waitForEvent(roomId, botNotice("!meet end"));
    expect(String(help.content.body)).toContain("!meet help");
  });

  it("a command from a server that is not allowed gets a clear refusal", async () => {
    await carol.join(roomId, [A.serverName]);
    await carol.send(roomId, "!meet");
    const refusal = await alice.waitForEvent(roomId, botNotice(`Sorry ${carol.userId}`));
    expect(String(refusal.content.body)).toContain(A.host);
    expect(await A.parleyStore().activeCall(roomId)).toBeUndefined();
  });

  it("an invite from a server that is not allowed is refused", async () => {
    const carolRoom = await carol.createRoom({ preset: "private_chat", name: "From C" });
    await carol.invite(carolRoom, A.botUserId);
    const member = await waitFor("the bot to decline", async () => {
      const e = await carol.stateEvent(carolRoom, "m.room.member", A.botUserId);
      return e?.membership === "leave" ? e : undefined;
    });
    expect(String(member.reason)).toContain("accepts invites only from users of");
  });
});

describe("transactions and restarts", () => {
  it("the same transaction delivered twice is processed once", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await alice.invite(roomId, A.botUserId);
    await waitFor("bot joined", async () =>
      (await alice.stateEvent(roomId, "m.room.member", A.botUserId))?.membership === "join" ? true : undefined,
    );
    const before = await metric(A, "parley_commands_total", { kind: "help" });
    const txn = {
      events: [
        {
          event_id: `$replayed-${Date.now()}`,
          room_id: roomId,
          sender: alice.userId,
          type: "m.room.message",
          origin_server_ts: Date.now(),
          content: { msgtype: "m.text", body: "!meet help" },
        },
      ],
    };
    const put = (txnId: string) =>
      fetch(`${A.parley.url}/_matrix/app/v1/transactions/${txnId}`, {
        method: "PUT",
        headers: { "content-type": "application/json", authorization: `Bearer ${A.parley.config.appservice.hsToken}` },
        body: JSON.stringify(txn),
      });
    const txnId = `replay-${Date.now()}`;
    const [r1, r2] = await Promise.all([put(txnId), put(txnId)]);
    expect([r1.status, r2.status]).toEqual([200, 200]);
    expect(await metric(A, "parley_commands_total", { kind: "help" })).toBe(before + 1);
    // The same txnId after a restart is still known.
    await A.parley.restart();
    expect((await put(txnId)).status).toBe(200);
    // A fresh process whose counters start at zero: the redelivered transaction ran nothing.
    expect(await metric(A, "parley_commands_total", { kind: "help" })).toBe(0);
  });

  it("SIGKILL mid-creation and restart: no duplicate room, every alias resolves", async () => {
    const slugs = Array.from({ length: 6 }, (_, i) => `crash-${Date.now()}-${i}`);
    const aliases = slugs.map((s) => A.alias(s));
    const attempts = aliases.map((a) => alice.join(a).catch(() => undefined));
    await new Promise((r) => setTimeout(r, 150));
    await A.parley.kill9();
    await Promise.all(attempts);
    await A.parley.restart();
    const roomIds = await Promise.all(aliases.map((a) => alice.join(a)));
    expect(new Set(roomIds).size).toBe(aliases.length);
    for (const [i, alias] of aliases.entries()) {
      expect(await alice.resolveAlias(alias)).toBe(roomIds[i]);
      expect(await A.parleyStore().getAlias(alias)).toMatchObject({ state: "ready", roomId: roomIds[i] });
    }
    // No stray rooms: every room the bot is in that carries org.parley.call names a distinct alias.
    const bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
    const seen = new Map<string, string>();
    for (const r of await bot.joinedRooms()) {
      const call = await bot.stateEvent(r, "org.parley.call");
      const alias = call?.alias as string | undefined;
      if (!alias) continue;
      expect(seen.get(alias), `two rooms for ${alias}`).toBeUndefined();
      seen.set(alias, r);
    }
    for (const alias of aliases) expect(seen.has(alias)).toBe(true);
  });
});
