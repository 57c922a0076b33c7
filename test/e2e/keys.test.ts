// Media keys in real browsers, against the rules the room and Olm set (issue 8, item 7): Alice and
// Bob in Chromium in a call hosted by A (participant keys); Carol, a Node device with Rust crypto,
// is a call member (so Olm sessions exist) and turns hostile:
//  - a key Carol's device sends claiming Alice's device is refused by Bob's client: it is never
//    used, and Bob goes on decrypting Alice's media with Alice's own key;
//  - the call header shows the key mode the room's org.parley.call state names, also when the
//    hosting server's hello says otherwise.
import type { Browser, ConsoleMessage, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildMembershipContent, CALL_MEMBER_EVENT, membershipStateKey } from "../../client/src/matrix/membership.ts";
import { CALL_KEYS_EVENT, keyContent, parseKeyContent } from "../../client/src/rtc/e2ee/keyShare.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { e2eeStats, joinThroughClient, launchChromium, mediaFlowing, signedInUser } from "../support/browser.ts";
import { announceCallE2ee } from "../support/callState.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { TestUser } from "../support/matrix.ts";

let stack: Stack;
let A: Institution;
let browser: Browser;
let alicePage: Page, bobPage: Page;
let alice: Awaited<ReturnType<typeof signedInUser>>, bob: Awaited<ReturnType<typeof signedInUser>>;
let carol: CryptoClient;
let roomId: string;
let failed = false;
/** Bob's and Alice's pages' E2EE log lines. */
const bobLog: string[] = [];
const aliceLog: string[] = [];

const CAROL_DEVICE = "CAROLDEV";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The device id a page's user runs as. */
async function deviceOf(page: Page): Promise<string> {
  return page.evaluate(() => localStorage.getItem("parley.session.v1") ?? "").then((raw) => (JSON.parse(raw || "{}") as { deviceId?: string }).deviceId ?? "");
}

/** Whether a "media decryption" log line says the frames of `userId`'s device decrypt. */
function decrypts(line: string, userId: string): boolean {
  const at = line.indexOf(`${userId}|`);
  return line.includes("media decryption") && at >= 0 && /^[^:]*: ok/.test(line.slice(at + userId.length + 1));
}

async function decrypting(page: Page): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await e2eeStats(page)).decrypted === 0) {
    if (Date.now() > deadline) throw new Error("no frame decrypted within 30 s");
    await sleep(100);
  }
}

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true });
  [A] = stack.institutions as [Institution];
  browser = await launchChromium();
  [alice, bob] = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(A, "bob", "Bob Badger")]);
  const alias = A.alias("keys-call");
  alicePage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(alias)}`, alice);
  bobPage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(alias)}`, bob);
  bobPage.on("console", (m: ConsoleMessage) => {
    if (m.text().startsWith("[parley:e2ee]")) bobLog.push(m.text());
  });
  alicePage.on("console", (m: ConsoleMessage) => {
    if (m.text().startsWith("[parley:e2ee]")) aliceLog.push(m.text());
  });
  await Promise.all([decrypting(alicePage), decrypting(bobPage)]);

  // Carol: a call member with a Node device, so that Olm sessions with Bob's device exist.
  const c = await A.registerUser("carol");
  roomId = await new TestUser(A.synapse.clientUrl, c.userId, c.accessToken).join(alias);
  const login = await new TestUser(A.synapse.clientUrl, c.userId, c.accessToken).client.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: c.userId },
    password: c.password,
    device_id: CAROL_DEVICE,
  });
  carol = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: c.userId, accessToken: login.access_token, deviceId: CAROL_DEVICE, rooms: [roomId] });
  const content = buildMembershipContent({ deviceId: CAROL_DEVICE, callApi: A.parley.url, roomId, createdTs: Date.now() });
  await new TestUser(A.synapse.clientUrl, c.userId, login.access_token).client.sendStateEvent(
    roomId,
    CALL_MEMBER_EVENT as never,
    content as never,
    membershipStateKey(c.userId, CAROL_DEVICE),
  );
}, 240_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed && bobPage) await bobPage.screenshot({ path: `${stack.dir}/bob.png` }).catch(() => undefined);
  await carol?.stop();
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
});

describe("media keys: only the Olm sender's device, and the mode the room names", () => {
  it("a key Carol's device sends claiming Alice's device is not used: Bob refuses it and goes on decrypting Alice with her own key", async () => {
    const aliceDevice = await deviceOf(alicePage);
    const bobDevice = await deviceOf(bobPage);
    // The index Alice sends with now (Carol, a call member, gets her key): the forged key takes its place.
    const fromAlice = await carol.nextToDevice(CALL_KEYS_EVENT, (m) => m.encrypted && m.sender === alice.userId && m.senderDevice === aliceDevice, 30_000);
    const parsed = parseKeyContent(fromAlice.content, roomId);
    if (typeof parsed === "string") throw new Error(`Alice's key message: ${parsed}`);
    const forged = keyContent(roomId, { userId: alice.userId, deviceId: aliceDevice }, parsed.index, crypto.getRandomValues(new Uint8Array(32)), Date.now());
    expect(forged.member.claimed_device_id).toBe(aliceDevice);
    await carol.sendToDevice(CALL_KEYS_EVENT, [{ userId: bob.userId, deviceId: bobDevice }], forged as unknown as Record<string, unknown>);

    const refused = () => bobLog.find((l) => l.includes("ignored a media key") && l.includes(aliceDevice) && l.includes(CAROL_DEVICE));
    const deadline = Date.now() + 20_000;
    while (!refused() && Date.now() < deadline) await sleep(100);
    expect(refused(), bobLog.join("\n")).toBeTruthy();
    // Never taken as a key, under any name.
    expect(bobLog.filter((l) => l.includes("media key received") && l.includes(CAROL_DEVICE))).toEqual([]);
    // Alice's media still decrypts at Bob with Alice's own key.
    await mediaFlowing(bobPage);
    expect(await bobPage.locator("#call-e2ee").getAttribute("data-state")).toBe("encrypted");
  });

  it("the call header shows the key mode from the room's state: each participant here", async () => {
    for (const page of [alicePage, bobPage]) {
      await page.locator('#call-keys[data-mode="participant"]').waitFor({ timeout: 15_000 });
      expect(await page.locator("#call-keys").innerText()).toBe("Keys: each participant");
    }
  });

  it("a key whose sender's MatrixRTC membership never shows is used once the SFU lists that device publishing", async () => {
    // Dave's client cannot publish its call membership (the homeserver never gets it): his media
    // key reaches Alice before (and without) any membership of his.
    const dave = await signedInUser(A, "dave", "Dave Dormouse");
    const davePage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(A.alias("keys-call"))}`, dave, {
      beforeOpen: async (page) => {
        await page.route(`**/state/${encodeURIComponent(CALL_MEMBER_EVENT)}/**`, (route) => route.abort());
      },
    });
    try {
      await davePage.locator('.call-status[data-phase="connected"]').waitFor({ timeout: 30_000 });
      // Alice's client reports each sender's decryption state: Dave's frames decrypt.
      const daveOk = () => aliceLog.some((l) => decrypts(l, dave.userId));
      const deadline = Date.now() + 30_000;
      while (!daveOk() && Date.now() < deadline) await sleep(100);
      expect(daveOk(), aliceLog.filter((l) => l.includes(dave.userId)).join("\n")).toBe(true);
      expect(aliceLog.some((l) => l.includes("media key received") && l.includes(dave.userId) && l.includes("member: false"))).toBe(true);
      const daveTile = alicePage.locator(".tile", { has: alicePage.locator(".tile-name", { hasText: "Dave Dormouse" }) });
      expect(await daveTile.getAttribute("class")).not.toContain("undecryptable");
    } finally {
      await davePage.context().close();
    }
  });

  it("a Leave while the call's membership is still on its way, then Join again: the room keeps the new membership, and the device gets the keys again", async () => {
    // Erin's first membership is held in her browser until her next call has started: the leave
    // of the first call must reach the room before the second call's membership (one state event
    // per device), or the room keeps the leave and nobody sends the device a key again.
    const erin = await signedInUser(A, "erin", "Erin Ermine");
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let heldNow!: () => void;
    const held = new Promise<void>((r) => (heldNow = r));
    let holding = true;
    /** Erin's writes to her membership answered: memberships, scheduled leaves, fired leaves. */
    const writes: string[] = [];
    const erinPage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(A.alias("keys-call"))}`, erin, {
      beforeOpen: async (page) => {
        await page.route(`**/state/${encodeURIComponent(CALL_MEMBER_EVENT)}/**`, async (route) => {
          if (holding && route.request().method() === "PUT" && (route.request().postData() ?? "").includes("device_id")) {
            holding = false;
            heldNow();
            await released;
          }
          await route.continue();
        });
        page.on("requestfinished", (r) => {
          const membership = r.method() === "PUT" && r.url().includes(`/state/${CALL_MEMBER_EVENT}/`);
          const fired = r.method() === "POST" && r.url().includes("/delayed_events/") && (r.postData() ?? "").includes('"send"');
          if (membership || fired) writes.push(`${r.method()} ${r.url().replace(/^.*\/(state|delayed_events)\//, "$1/")} ${r.postData()?.slice(0, 40) ?? ""}`);
        });
      },
    });
    try {
      await held;
      await erinPage.locator("#call-leave").click();
      await erinPage.getByRole("button", { name: "Join again" }).click();
      await erinPage.locator("#prejoin-join").click({ timeout: 30_000 });
      await erinPage.locator('.call-status[data-phase="connected"]').waitFor({ timeout: 30_000 });
      release();
      // Five writes in all, whatever their order: each call's leave scheduled and membership, the first call's leave fired.
      const deadline = Date.now() + 30_000;
      while (writes.length < 5 && Date.now() < deadline) await sleep(100);
      expect(writes.length, writes.join("\n")).toBeGreaterThanOrEqual(5);
      const erinDevice = await deviceOf(erinPage);
      const aliceUser = new TestUser(A.synapse.clientUrl, alice.userId, alice.accessToken);
      const kept = await aliceUser.stateEvent(roomId, CALL_MEMBER_EVENT, membershipStateKey(erin.userId, erinDevice));
      expect(kept).toMatchObject({ device_id: erinDevice });
      // And the others' keys reach her again: their media decrypts on her page.
      await mediaFlowing(erinPage);
    } finally {
      release();
      await erinPage.context().close();
    }
  });

  it("a room whose state names provisioned keys gets them, though the hosting server's hello says participant keys", async () => {
    const alias = A.alias("keys-provisioned");
    await announceCallE2ee(A, alias, { keys: "provisioned", bot: A.botUserId });
    await alicePage.locator("#call-leave").click();
    await alicePage.goto(`${A.parley.url}/#/call/${encodeURIComponent(alias)}`);
    await alicePage.locator("#prejoin-join").click({ timeout: 30_000 });
    await alicePage.locator('.call-status[data-phase="connected"]').waitFor({ timeout: 30_000 });
    await alicePage.locator('#call-keys[data-mode="provisioned"]').waitFor({ timeout: 15_000 });
    expect(await alicePage.locator("#call-keys").innerText()).toBe(`Keys: provisioned by ${A.botUserId}`);
    expect(await alicePage.locator("#call-e2ee").getAttribute("data-mode")).toBe("provisioned");
  });
});
