// Tchap-style external users on the real stack: institution A names B's server as external. A's
// open meeting then knocks; A's own users' knocks are let in at once, B's users' always wait in the
// lobby for a host, and never get power; the room carries im.vector.room.access_rules.
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { callSession, seated } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution, B: Institution;
let failed = false;

const enc = encodeURIComponent;
const userOf = async (inst: Institution, localpart: string) => {
  const u = await inst.registerUser(localpart);
  return new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken);
};
const errcodeOf = async (p: Promise<unknown>) => p.then(() => "ok", (err: { errcode?: string }) => err.errcode ?? String(err));

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    governance: (i, hosts) => (i === 0 ? { access: "open", externalServers: [hosts[1]!] } : {}),
  });
  [A, B] = stack.institutions as [Institution, Institution];
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

describe("external users", () => {
  it("an open meeting knocks; a local knock is let in at once, an external user's waits for a host and gets no power", async () => {
    const [alice, carol, bob] = await Promise.all([userOf(A, "alice"), userOf(A, "carol"), userOf(B, "bob")]);
    const bot = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
    const alias = A.alias("external");
    // The first joiner (the meeting is made by the alias lookup) joins after a knock like anyone.
    expect(await errcodeOf(alice.join(alias))).toBe("M_FORBIDDEN");
    await alice.request(Method.Post, `/knock/${enc(alias)}`, {});
    const roomId = (await alice.resolveAlias(alias))!;
    const membershipOf = async (userId: string) => (await bot.stateEvent(roomId, "m.room.member", userId))?.membership;
    await waitFor("alice let in", async () => ((await membershipOf(alice.userId)) === "invite" ? true : undefined));
    await alice.join(roomId);
    await waitFor("alice host", async () => {
      const pl = await bot.stateEvent(roomId, "m.room.power_levels");
      return (pl?.users as Record<string, number> | undefined)?.[alice.userId] === 100 ? true : undefined;
    });
    expect(await bot.stateEvent(roomId, "m.room.join_rules")).toMatchObject({ join_rule: "knock" });
    expect(await bot.stateEvent(roomId, "im.vector.room.access_rules")).toEqual({ rule: "unrestricted" });
    expect(await bot.stateEvent(roomId, "org.parley.call")).toMatchObject({ access: "open" });

    await carol.request(Method.Post, `/knock/${enc(alias)}`, {});
    await waitFor("carol let in", async () => ((await membershipOf(carol.userId)) === "invite" ? true : undefined));

    const aliceWs = await seated(A, await callSession(A, alice, roomId));
    await bob.request(Method.Post, `/knock/${enc(alias)}`, {}, { server_name: A.serverName });
    await aliceWs.push("bob waits in the lobby", (p) => p.type === "lobby" && (p.waiting as { user_id: string }[]).some((w) => w.user_id === bob.userId));
    // A local knock after bob's is let in (events are handled in order): bob's was not.
    const dave = await userOf(A, "dave");
    await dave.request(Method.Post, `/knock/${enc(alias)}`, {});
    await waitFor("dave let in", async () => ((await membershipOf(dave.userId)) === "invite" ? true : undefined));
    expect(await membershipOf(bob.userId)).toBe("knock");

    expect(await aliceWs.request({ type: "moderate", action: { action: "admit", user_id: bob.userId } })).toMatchObject({ type: "result" });
    await waitFor("bob let in by the host", async () => ((await membershipOf(bob.userId)) === "invite" ? true : undefined));
    await waitFor("bob joined", async () => ((await errcodeOf(bob.join(roomId, [A.serverName]))) === "ok" ? true : undefined));
    // Never power above 0, whoever asks.
    expect(await aliceWs.request({ type: "moderate", action: { action: "set_role", user_id: bob.userId, role: "cohost" } })).toMatchObject({
      errcode: "M_FORBIDDEN", error: expect.stringContaining("external"),
    });
    aliceWs.close();
  });
});
