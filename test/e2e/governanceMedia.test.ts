// Meeting governance enforced on media, in real browsers, on two institutions (Synapse x2, Janus,
// Parley x2); meetingControls.test.ts covers the controls themselves:
// - a user of B knocks on A's *institution* meeting from B's Parley client; A's host sees the
//   knock in the client (badge, name, server, reason), lets them in; B's client joins by itself
//   and decrypts A's media;
// - the same knock admitted by a plain matrix-js-sdk client standing in for Element (an invite);
// - a co-host (promoted in Matrix, acting over signalling) mutes B's microphone: A's page stops
//   receiving B's audio (decoded energy flat) and B's page shows the forced mute; allowed again,
//   B unmutes and the audio returns;
// - a removed participant's page says who removed them; a kicked device gets no later media key
//   while a newcomer does;
// - a host's own admit that Parley refuses (the meeting locked meanwhile): the media key the
//   host's page sent as it asked goes out of use (a newcomer's key is another one);
// - a guest joins by link, waits in the lobby, is admitted, decrypts media, and is deactivated
//   after leaving;
// - end for everyone ends every page's call.
// Runs inside scripts/isolated.sh (npm test does that).
import { Method } from "matrix-js-sdk";
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { inboundStats, joinThroughClient, launchChromium, mediaFlowing, signedInUser, trackPeerConnections } from "../support/browser.ts";
import { callSession, seated } from "../support/callStack.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import type { SignallingClient } from "../support/signalling.ts";
import { MEDIA_KEY_LENGTH, ratchetMediaKey } from "../../client/src/rtc/e2ee/frameCrypto.ts";

let stack: Stack;
let A: Institution, B: Institution;
let browser: Browser;
let alias: string;
let roomId: string;
let alicePage: Page, bobPage: Page;
let alice: Awaited<ReturnType<typeof signedInUser>>, bob: Awaited<ReturnType<typeof signedInUser>>;
let botA: TestUser;
let carolWs: SignallingClient;
let failed = false;

const enc = encodeURIComponent;
const KEYS = "io.element.call.encryption_keys";
const link = (inst: Institution) => `${inst.parley.url}/#/call/${enc(alias)}`;
const membershipOf = async (userId: string) => (await botA.stateEvent(roomId, "m.room.member", userId))?.membership;
const testUser = (inst: Institution, u: { userId: string; accessToken: string }) => new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken);

/** A fresh page signed in on `inst`'s Parley at the meeting link (stops wherever the meeting flow leads). */
async function openSignedIn(inst: Institution, user: { userId: string; password: string }): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  await trackPeerConnections(page);
  page.on("pageerror", (e) => console.error(`[${user.userId}] pageerror: ${e.message}`));
  await page.goto(link(inst));
  await page.getByLabel("User").fill(user.userId);
  await page.getByLabel("Password").fill(user.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  return page;
}

/** Audio energy A's page decodes over `ms` (what B's microphone adds). */
async function energyOver(page: Page, ms: number): Promise<number> {
  const before = (await inboundStats(page)).audioEnergy;
  await page.waitForTimeout(ms);
  return (await inboundStats(page)).audioEnergy - before;
}

/**
 * A user of A in the meeting's room with a device (CryptoClient) holding a call membership: the
 * browsers send their media keys to it.
 */
async function callDevice(localpart: string) {
  const reg = await A.registerUser(localpart);
  const u = testUser(A, reg);
  await u.request(Method.Post, `/knock/${enc(alias)}`, {});
  await waitFor(`${localpart} invited`, async () => ((await membershipOf(u.userId)) === "invite" ? true : undefined));
  await u.join(roomId);
  const client = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: reg.userId, accessToken: reg.accessToken, deviceId: reg.deviceId });
  await u.request(Method.Put, `/rooms/${enc(roomId)}/state/org.matrix.msc3401.call.member/${enc(`_${reg.userId}_${client.deviceId}`)}`, {
    application: "m.call", call_id: "", scope: "m.room", device_id: client.deviceId, expires: 3_600_000,
    focus_active: { type: "livekit", focus_selection: "oldest_membership" }, foci_preferred: [], membershipID: client.deviceId,
  });
  return { u, client };
}

/** A media key as a to-device message of MatrixRTC's shape carries it ({keys: {index, key}, ...}). */
type MediaKey = { index: number; key: string };
const mediaKeyOf = (m: { content: Record<string, unknown> }) => m.content.keys as MediaKey;

/**
 * Fails if `given` is one of the keys `held`, or one ratcheted from one of them up to its index
 * (a join ratchets the key in use: its holder could derive that one, so only a new key counts).
 */
async function expectNotDerivable(held: MediaKey[], given: MediaKey): Promise<void> {
  expect(held.length).toBeGreaterThan(0);
  for (const h of held) {
    let k = new Uint8Array(Buffer.from(h.key, "base64"));
    expect(k.length).toBe(MEDIA_KEY_LENGTH);
    for (let i = h.index; ; i = (i + 1) % 256) {
      expect(Buffer.from(k).toString("base64"), `key ${given.index} derived from key ${h.index}`).not.toBe(given.key);
      if (i === given.index) break;
      k = await ratchetMediaKey(k);
    }
  }
}

/**
 * The index of the next key `page` makes for a leave, from its log line ("new media key", reason
 * leave). Until that key's switch (`useDelayMs`) the page still encrypts with the key before it, and
 * a joiner meanwhile is sent that one too, first: only the new one is made after the leave.
 */
function nextLeaveKey(page: Page): Promise<number> {
  return page
    .waitForEvent("console", { predicate: (m) => /new media key .*reason: leave/.test(m.text()), timeout: 30_000 })
    .then((m) => Number(/index: (\d+)/.exec(m.text())?.[1] ?? NaN));
}

/** Whether key index `index` is `from` or one made after it (indexes wrap at 256). */
const fromIndex = (from: number) => (index: number) => (index - from + 256) % 256 < 128;

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    governance: (i) => (i === 0 ? { access: "institution" } : {}),
    guests: (i) => (i === 0 ? { mode: "lobby", deactivateAfterSeconds: 1 } : undefined),
  });
  [A, B] = stack.institutions as [Institution, Institution];
  browser = await launchChromium();
  alias = A.alias("board");
  botA = new TestUser(A.synapse.clientUrl, A.botUserId, A.parley.config.appservice.asToken);
  [alice, bob] = await Promise.all([signedInUser(A, "alice", "Alice"), signedInUser(B, "bob", "Bob")]);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
});

describe("meeting governance in the browser", () => {
  it("a user of B knocks on A's institution meeting; A's host sees it and lets them in; B joins and decrypts media", async () => {
    alicePage = await joinThroughClient(browser, link(A), alice);
    roomId = (await botA.resolveAlias(alias))!;
    await alicePage.getByTestId("alone-hint").waitFor();

    bobPage = await openSignedIn(B, bob);
    // The client asks to join at once; a message for the hosts can follow.
    await bobPage.getByTestId("knock-waiting").waitFor({ timeout: 60_000 });
    await bobPage.getByTestId("knock-note").fill("Budget review");
    await bobPage.getByTestId("knock-send-note").click();

    await alicePage.getByTestId("lobby-badge").waitFor({ state: "visible" });
    await alicePage.getByTestId("people").click();
    const entry = alicePage.getByTestId(`lobby-entry-${bob.userId}`);
    await entry.waitFor();
    await expect.poll(() => entry.textContent(), { timeout: 30_000 }).toContain("Budget review");
    expect(await entry.textContent()).toContain(B.serverName);
    await alicePage.getByTestId(`admit-${bob.userId}`).click();

    await bobPage.locator("#prejoin-join").click({ timeout: 30_000 });
    await bobPage.locator(".call").waitFor();
    await mediaFlowing(bobPage);
    await mediaFlowing(alicePage);
  });

  it("the same knock admitted from a matrix-js-sdk client standing in for Element: the knocker's client joins by itself", async () => {
    const erin = await signedInUser(B, "erin", "Erin");
    const erinPage = await openSignedIn(B, erin);
    await erinPage.getByTestId("knock-waiting").waitFor({ timeout: 60_000 });
    await waitFor("erin's knock", async () => ((await membershipOf(erin.userId)) === "knock" ? true : undefined));
    await testUser(A, alice).invite(roomId, erin.userId);
    await erinPage.locator("#prejoin-join").waitFor({ timeout: 30_000 });
    await erinPage.context().close();
  });

  it("a co-host's mute stops B's audio at A's page and shows on B's page; allowed again, B unmutes and it returns", async () => {
    // Carol knocks (an institution member: admitted at once), is made co-host in Matrix (what a
    // host does in Element), and acts over signalling.
    const carolReg = await A.registerUser("carol");
    const carol = testUser(A, carolReg);
    await carol.request(Method.Post, `/knock/${enc(alias)}`, {});
    await waitFor("carol invited", async () => ((await membershipOf(carol.userId)) === "invite" ? true : undefined));
    await carol.join(roomId);
    const pl = (await botA.stateEvent(roomId, "m.room.power_levels"))!;
    await testUser(A, alice).request(Method.Put, `/rooms/${enc(roomId)}/state/m.room.power_levels/`, {
      ...pl, users: { ...(pl.users as object), [carol.userId]: 50 },
    });
    carolWs = await seated(A, await callSession(A, carol, roomId));
    await carolWs.push("carol is co-host", (p) => p.type === "meeting" && (p.you as { role: string }).role === "cohost");

    expect(await energyOver(alicePage, 1000)).toBeGreaterThan(0);
    expect(await carolWs.request({ type: "moderate", action: { action: "mute", user_id: bob.userId, kind: "audio" } })).toMatchObject({ type: "result" });
    await bobPage.getByTestId("forced-mute-notice").waitFor({ state: "visible" });
    expect(await bobPage.locator("#call-mic").isDisabled()).toBe(true);
    // Packets already on their way drain; then nothing more arrives.
    await waitFor("B's audio stopped at A's page", async () => ((await energyOver(alicePage, 1000)) === 0 ? true : undefined));

    expect(await carolWs.request({ type: "moderate", action: { action: "allow", user_id: bob.userId, kind: "audio" } })).toMatchObject({ type: "result" });
    await bobPage.getByTestId("forced-mute-notice").waitFor({ state: "hidden" });
    await bobPage.locator("#call-mic").click();
    await waitFor("B's audio back at A's page", async () => ((await energyOver(alicePage, 1000)) > 0 ? true : undefined));
  });

  it("a kicked device gets no later media key, while a newcomer does", async () => {
    const dave = await callDevice("dave");
    const first = await dave.client.nextToDevice(KEYS, (m) => m.sender === alice.userId, 30_000);
    const rotated = nextLeaveKey(alicePage);
    await testUser(A, alice).kick(roomId, dave.u.userId);
    // The kick is a leave: A's page makes a new key.
    const made = await rotated;
    expect(Number.isInteger(made)).toBe(true);
    const frank = await callDevice("frank");
    // The newcomer gets that key (or one ratcheted from it, for its join); the kicked device must
    // not hold it, nor any it could ratchet to it. (A newcomer within the new key's switch is sent
    // the key still in use first, the one the kicked device held: the CI run of 4 December took
    // that one for the new key.)
    const fresh = mediaKeyOf(await frank.client.nextToDevice(KEYS, (m) => m.sender === alice.userId && fromIndex(made)(mediaKeyOf(m).index), 30_000));
    const daveKeys = [first, ...dave.client.pendingToDevice(KEYS).filter((m) => m.sender === alice.userId)].map(mediaKeyOf);
    await expectNotDerivable(daveKeys, fresh);
    await Promise.all([dave.client.stop(), frank.client.stop()]);
  });

  it("a host's own admit that Parley refuses (the meeting locked meanwhile): the key its page sent early goes out of use", async () => {
    // Gina of B knocks with a device of her own (its keys up, as a Parley client's are before its knock).
    const reg = await B.registerUser("gina");
    const gina = await CryptoClient.start({ baseUrl: B.synapse.clientUrl, userId: reg.userId, accessToken: reg.accessToken, deviceId: reg.deviceId });
    // Alice's other seat (a host's second device, over signalling) locks the meeting.
    const aliceWs = await seated(A, await callSession(A, testUser(A, alice), roomId));
    try {
      await testUser(B, reg).request(Method.Post, `/knock/${enc(alias)}`, {});
      await waitFor("gina's knock", async () => ((await membershipOf(reg.userId)) === "knock" ? true : undefined));
      if (!(await alicePage.getByTestId("people-panel").isVisible())) await alicePage.getByTestId("people").click();
      const admit = alicePage.getByTestId(`admit-${reg.userId}`);
      await admit.waitFor({ timeout: 30_000 });
      // Locked after the knock showed; her page still offers "Let in" (Parley decides).
      expect(await aliceWs.request({ type: "moderate", action: { action: "settings", locked: true } })).toMatchObject({ type: "result" });
      const refusedLog = alicePage.waitForEvent("console", { predicate: (m) => m.text().includes("an admission this device asked for was refused"), timeout: 30_000 });
      // The rotation (a leave's): its new key is logged as made.
      const rotated = nextLeaveKey(alicePage);
      await admit.click();
      // Her page sent its key to Gina's device as it asked (its own admit), then heard the refusal.
      const early = await gina.nextToDevice(KEYS, (m) => m.sender === alice.userId, 30_000);
      await refusedLog;
      const made = await rotated;
      expect(Number.isInteger(made)).toBe(true);
      expect(await membershipOf(reg.userId)).toBe("knock");
      // Unlocked (a locked room takes no knock, not even a local one's): the key a newcomer gets
      // from Alice's page now is neither Gina's nor one ratcheted from it (which she could derive).
      expect(await aliceWs.request({ type: "moderate", action: { action: "settings", locked: false } })).toMatchObject({ type: "result" });
      const ivy = await callDevice("ivy");
      // (Within the new key's switch, a newcomer is sent the key still in use first: Gina's.)
      const fresh = await ivy.client.nextToDevice(KEYS, (m) => m.sender === alice.userId && fromIndex(made)(mediaKeyOf(m).index), 30_000);
      await expectNotDerivable([early, ...gina.pendingToDevice(KEYS).filter((m) => m.sender === alice.userId)].map(mediaKeyOf), mediaKeyOf(fresh));
      // Sent away (the guest's knock below finds only its own in the lobby).
      expect(await aliceWs.request({ type: "moderate", action: { action: "deny", user_id: reg.userId } })).toMatchObject({ type: "result" });
      await ivy.client.stop();
    } finally {
      // (The suite goes on in this meeting: unlocked again whatever failed.)
      await aliceWs.request({ type: "moderate", action: { action: "settings", locked: false } });
      aliceWs.close();
      await gina.stop();
    }
  });

  it("a guest joins by link, waits in the lobby, is admitted, decrypts media, and is deactivated after leaving", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    const guestPage = await context.newPage();
    await trackPeerConnections(guestPage);
    await guestPage.goto(link(A));
    await guestPage.locator("#guest-name").fill("Ada");
    await guestPage.getByRole("button", { name: "Join as guest" }).click();
    await guestPage.getByTestId("knock-waiting").waitFor({ timeout: 60_000 });

    const row = alicePage.locator(`[data-testid^="lobby-entry-@"]`, { hasText: "Ada (guest)" });
    await row.waitFor({ timeout: 30_000 });
    const guestId = (await row.getAttribute("data-testid"))!.slice("lobby-entry-".length);
    await alicePage.getByTestId(`admit-${guestId}`).click();
    await guestPage.locator("#prejoin-join").click({ timeout: 30_000 });
    await guestPage.locator(".call").waitFor();
    await mediaFlowing(guestPage);

    await guestPage.locator("#call-leave").click();
    await context.close();
    const admin = await A.registerUser("admin", { admin: true });
    await waitFor("guest deactivated", async () => {
      const u = await testUser(A, admin).client.http.authedRequest<{ deactivated?: boolean }>(
        Method.Get, `/users/${enc(guestId)}`, undefined, undefined, { prefix: "/_synapse/admin/v2" },
      );
      return u.deactivated === true ? true : undefined;
    }, 30_000);
  });

  it("a host removes a participant from the client: their page says who; end for everyone ends every call", async () => {
    await alicePage.getByTestId(`menu-${bob.userId}`).click();
    await alicePage.getByTestId(`remove-${bob.userId}`).click();
    await bobPage.getByText("Alice removed you from the meeting").waitFor({ timeout: 10_000 });

    await alicePage.getByTestId("end-for-all").click();
    await alicePage.getByTestId("end-confirm").click();
    expect((await carolWs.closed).code).toBe(4404);
    await alicePage.getByText("You ended the meeting").waitFor({ timeout: 10_000 });
    expect(await botA.stateEvent(roomId, "org.parley.call")).toMatchObject({ ended: { by: alice.userId } });
  });
});
