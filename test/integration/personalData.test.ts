// Personal data on the real stack (two institutions' Synapse, Janus, Parley as a process): a
// remote user knocks, the host admits them from the lobby, they join the call and leave it; the
// attendance and audit log (written by Parley in the background) holds those events, `parley
// export` (the CLI, reading the config and the store as an operator would) shows them, and
// `parley erase` removes them while the host's and another participant's records stay.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { Method } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import type { PersonalDataExport } from "../../appservice/src/privacy/personalData.ts";
import { ERASED_USER } from "../../appservice/src/store/store.ts";
import { callSession, joinCall, seated } from "../support/callStack.ts";
import { createGuest } from "../support/guests.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import type { SignallingClient } from "../support/signalling.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const MAIN = path.join(ROOT, "appservice/src/app/main.ts");

let stack: Stack;
let A: Institution, B: Institution;
let alice: TestUser, carol: TestUser, bob: TestUser, admin: TestUser;
let roomId: string;
let failed = false;

const userOf = async (inst: Institution, localpart: string, isAdmin = false) => {
  const u = await inst.registerUser(localpart, { admin: isAdmin });
  return new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken);
};

/** Runs the CLI as an operator would, against institution A's config. */
async function parley(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [MAIN, ...args, "-c", A.parley.configFile], { cwd: ROOT });
  return stdout;
}
const exportOf = async (userId: string) => JSON.parse(await parley("export", "--user", userId)) as PersonalDataExport;
const actions = (x: PersonalDataExport) => [...x.attendance, ...x.audit].sort((a, b) => a.at - b.at).map((e) => `${e.action} ${e.actor ?? "-"} ${e.target ?? "-"}`);

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    // A takes guests (its meetings all knock, so its own users are invited in).
    guests: (i) => (i === 0 ? { mode: "lobby" } : undefined),
  });
  [A, B] = stack.institutions as [Institution, Institution];
  [alice, carol, bob, admin] = await Promise.all([userOf(A, "alice"), userOf(A, "carol"), userOf(B, "bob"), userOf(A, "root", true)]);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

describe("personal data", () => {
  let aliceWs: SignallingClient;

  it("joining, leaving and admission from the lobby are recorded; export shows them for the user they concern", async () => {
    const alias = A.alias("privacy");
    // The meeting knocks (A takes guests): the bot lets alice in, as a host would.
    roomId = await waitFor(`room of ${alias}`, () => alice.resolveAlias(alias));
    await new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken).invite(roomId, alice.userId);
    await alice.join(roomId);
    await waitFor("alice host", async () => (((await alice.stateEvent(roomId, "m.room.power_levels"))?.users as Record<string, number> | undefined)?.[alice.userId] === 100 || undefined));
    aliceWs = await waitFor("alice's seat", async () => seated(A, await callSession(A, alice, roomId)).catch(() => undefined));
    await alice.invite(roomId, carol.userId);
    await carol.join(roomId);
    // From here on, users of other servers wait in the lobby.
    expect(await aliceWs.request({ type: "moderate", action: { action: "settings", access: "institution" } })).toMatchObject({ type: "result" });
    // Carol stays in the call throughout (her socket open until the stack stops).
    await seated(A, await callSession(A, carol, roomId));

    await bob.request(Method.Post, `/knock/${encodeURIComponent(alias)}`, { reason: "from B" }, { server_name: A.serverName });
    await aliceWs.push("bob in the lobby", (p) => p.type === "lobby" && (p.waiting as { user_id: string }[]).some((w) => w.user_id === bob.userId));
    expect(await aliceWs.request({ type: "moderate", action: { action: "admit", user_id: bob.userId } })).toMatchObject({ type: "result" });
    await waitFor("bob in the room", async () => (await bob.join(roomId, [A.serverName]).then(() => true, () => undefined)));
    const bobWs = await waitFor("bob's seat", async () => {
      const { status, json } = await joinCall(A, { openid_token: await bob.openIdToken(), room: roomId });
      return status === 200 ? seated(A, json.session as string) : undefined;
    });
    bobWs.close();
    await bobWs.closed;

    // Written in the background: wait for the leave to reach the store.
    const bobs = await waitFor("bob's leave recorded", async () => {
      const x = await exportOf(bob.userId);
      return x.attendance.some((e) => e.action === "call_leave") ? x : undefined;
    });
    expect(actions(bobs)).toEqual([`admit ${alice.userId} ${bob.userId}`, `call_join ${bob.userId} -`, `call_leave ${bob.userId} -`]);
    expect(bobs.attendance.every((e) => e.roomId === roomId && typeof e.callId === "string")).toBe(true);
    expect(bobs.calls).toEqual([]);
    expect(bobs.guest).toBeNull();

    const alices = await exportOf(alice.userId);
    // Her join and her becoming host are told apart by different paths (call API, transaction): any order.
    expect(actions(alices).sort()).toEqual([
      `admit ${alice.userId} ${bob.userId}`, `call_join ${alice.userId} -`, `host_assigned - ${alice.userId}`, `settings ${alice.userId} -`,
    ]);
    expect(alices.calls.map((c) => c.startedBy)).toEqual([alice.userId]);
    expect(actions(await exportOf(carol.userId))).toEqual([`call_join ${carol.userId} -`]);
  });

  it("erase removes the user's records; the host's and another participant's stay, the user's part replaced", async () => {
    const before = { alice: await exportOf(alice.userId), carol: await exportOf(carol.userId) };
    expect(await parley("erase", "--user", bob.userId)).toMatch(/^erased @bob:\S+: 3 records removed or rewritten\n$/);

    const bobs = await exportOf(bob.userId);
    expect([...bobs.attendance, ...bobs.audit, ...bobs.calls]).toEqual([]);
    const strip = (x: PersonalDataExport) => ({ ...x, exportedAt: "" });
    expect(strip(await exportOf(carol.userId))).toEqual(strip(before.carol));
    const alices = await exportOf(alice.userId);
    expect(strip(alices)).toEqual(JSON.parse(JSON.stringify(strip(before.alice)).replaceAll(bob.userId, ERASED_USER)));
    expect(actions(alices)).toContain(`admit ${alice.userId} ${ERASED_USER}`);

    const store = A.parleyStore();
    const erasures = await store.erasures();
    expect(erasures).toEqual([{ erasedAt: expect.any(Number), rowsRemoved: 3, guestDeactivated: false }]);
    expect(JSON.stringify(erasures)).not.toContain("bob");
  });

  it("erasing one of Parley's guests deactivates its account at the homeserver and removes its records", async () => {
    const guest = await createGuest(A, "Ada", roomId);
    const before = await waitFor("the guest recorded", async () => {
      const x = await exportOf(guest.userId);
      return x.audit.length ? x : undefined;
    });
    expect(actions(before)).toEqual([`guest_created - ${guest.userId}`]);
    expect(before.guest).toMatchObject({ userId: guest.userId, roomId, displayName: "Ada (guest)", state: "waiting" });

    expect(await parley("erase", "--user", guest.userId)).toMatch(/; guest account deactivated\n$/);
    const u = await admin.client.http.authedRequest<{ deactivated?: boolean }>(Method.Get, `/users/${encodeURIComponent(guest.userId)}`, undefined, undefined, { prefix: "/_synapse/admin/v2" });
    expect(u.deactivated).toBe(true);
    const after = await exportOf(guest.userId);
    expect([...after.attendance, ...after.audit]).toEqual([]);
    expect(after.guest).toBeNull();
    expect((await A.parleyStore().erasures()).at(-1)).toMatchObject({ rowsRemoved: 2, guestDeactivated: true });
  });

  it("refuses a malformed user id with a usage error", async () => {
    await expect(parley("export", "--user", "bob")).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining("needs --user with a Matrix user id") });
  });
});
