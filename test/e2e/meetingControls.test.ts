// Meeting governance in real browsers against two institutions (two Synapses, two Parleys,
// Janus): A's meetings are *institution* meetings, so Bob of B knocks. Alice of A opens the
// meeting and is its host; Bob's client asks to join at once and waits in the lobby with a
// message for the hosts, his preview beside, and "Join when let in" pressed; Alice hears of it
// (the lobby badge), lets him in from the people panel, and he is in the call with no pre-join;
// a guest without a Matrix account asks to join the same way; then Alice mutes Bob (his mic button
// is disabled, "Muted by Alice"), allows him again, sees his raised hand and reaction, and ends the
// meeting for everyone ("Alice ended the meeting").
// Runs inside scripts/isolated.sh (npm test does that).
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { joinThroughClient, launchChromium, signedInUser, trackPeerConnections } from "../support/browser.ts";

let stack: Stack;
let A: Institution, B: Institution;
let browser: Browser;
let alicePage: Page, bobPage: Page;
let bob: Awaited<ReturnType<typeof signedInUser>>;
let alias: string;
let failed = false;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    governance: (i) => (i === 0 ? { access: "institution" } : {}),
    guests: (i) => (i === 0 ? { mode: "lobby" } : undefined),
    logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info",
  });
  [A, B] = stack.institutions as [Institution, Institution];
  browser = await launchChromium();
  const alice = await signedInUser(A, "alice", "Alice Aardvark");
  bob = await signedInUser(B, "bob", "Bob Badger");
  alias = A.alias("e2e-governance");
  alicePage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(alias)}`, alice);
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed && alicePage) await alicePage.screenshot({ path: `${stack.dir}/controls-alice.png` }).catch(() => undefined);
  if (failed && bobPage) await bobPage.screenshot({ path: `${stack.dir}/controls-bob.png` }).catch(() => undefined);
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
});

const byId = (page: Page, id: string) => page.locator(`[data-testid="${id}"]`);

describe("meeting controls", () => {
  it("makes the first local joiner the host: the host's controls show", async () => {
    await byId(alicePage, "end-for-all").waitFor({ timeout: 30_000 });
    await byId(alicePage, "alone-hint").waitFor({ timeout: 10_000 });
  });

  it("a user of another institution asks to join at once and waits, with a message for the hosts, beside his preview", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    contexts.push(context);
    bobPage = await context.newPage();
    await trackPeerConnections(bobPage);
    bobPage.on("pageerror", (e) => console.error(`[bob] pageerror: ${e.message}`));
    bobPage.on("console", (m) => { if (m.type() === "warning" || m.type() === "error") console.error(`[bob] console.${m.type()}: ${m.text()}`); });
    // Bob uses his own institution's client and homeserver; the meeting is A's.
    await bobPage.goto(`${B.parley.url}/#/call/${encodeURIComponent(alias)}`);
    await bobPage.getByLabel("User").fill(bob.userId);
    await bobPage.getByLabel("Password").fill(bob.password);
    await bobPage.getByRole("button", { name: "Sign in", exact: true }).click();
    await byId(bobPage, "knock-waiting").waitFor({ timeout: 60_000 });
    await byId(bobPage, "knock-note").fill("Bob from B, presenting the budget");
    await byId(bobPage, "knock-send-note").click();
    await byId(bobPage, "knock-note-sent").waitFor({ timeout: 30_000 });
    // His preview plays beside the wait (the devices he will join with), and he asks to join as
    // soon as he is let in.
    await bobPage.waitForFunction(() => (document.querySelector<HTMLVideoElement>(".knock .preview-video")?.readyState ?? 0) >= 2, undefined, { timeout: 30_000 });
    await byId(bobPage, "lobby-join").click();
    await byId(bobPage, "lobby-join-armed").waitFor();
  });

  it("the host sees the knock (badge, lobby entry with the message) and lets him in; he is in the call at once", async () => {
    await expect.poll(() => byId(alicePage, "lobby-badge").innerText(), { timeout: 30_000 }).toBe("1");
    await byId(alicePage, "people").click();
    const entry = byId(alicePage, `lobby-entry-${bob.userId}`);
    await entry.waitFor({ timeout: 10_000 });
    await expect.poll(() => entry.innerText(), { timeout: 30_000 }).toContain("presenting the budget");
    await byId(alicePage, `admit-${bob.userId}`).click();
    // No pre-join after the wait: he asked to join when let in.
    await bobPage.locator(".call").waitFor({ timeout: 60_000 });
    expect(await bobPage.locator("#prejoin-join").count()).toBe(0);
    await byId(alicePage, `participant-${bob.userId}`).waitFor({ timeout: 30_000 });
    expect(await entry.count()).toBe(0);
  });

  it("a guest asks to join from the sign-in page, marked as a guest in the lobby; the host lets them in", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    contexts.push(context);
    const guest = await context.newPage();
    guest.on("pageerror", (e) => console.error(`[guest] pageerror: ${e.message}`));
    guest.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning" || /\[parley:/.test(m.text())) console.error(`[guest] console.${m.type()}: ${m.text().slice(0, 400)}`);
    });
    await guest.goto(`${A.parley.url}/#/call/${encodeURIComponent(alias)}`);
    await guest.locator("#guest-name").fill("Gina");
    await guest.getByRole("button", { name: "Join as guest" }).click();
    await byId(guest, "knock-waiting").waitFor({ timeout: 60_000 });
    const entry = alicePage.locator('[data-testid^="lobby-entry-"]', { hasText: "Gina (guest)" });
    await entry.waitFor({ timeout: 30_000 });
    await entry.locator('[data-testid^="admit-"]').click();
    await guest.locator("#prejoin-join").click({ timeout: 60_000 });
    await guest.locator(".call").waitFor({ timeout: 30_000 });
    await alicePage.locator('[data-testid^="participant-"]', { hasText: "Gina (guest)" }).waitFor({ timeout: 30_000 });
  });

  it("the host mutes him: his mic button is disabled and says who; allowed again, he may unmute", async () => {
    await byId(alicePage, `menu-${bob.userId}`).click();
    await byId(alicePage, `mute-audio-${bob.userId}`).click();
    await expect.poll(() => byId(bobPage, "forced-mute-notice").innerText(), { timeout: 15_000 }).toContain("Muted by Alice Aardvark");
    expect(await bobPage.locator("#call-mic").isDisabled()).toBe(true);
    await expect.poll(() => byId(alicePage, `participant-${bob.userId}`).getAttribute("data-forced-audio"), { timeout: 15_000 }).toBe("true");

    await byId(alicePage, `menu-${bob.userId}`).click();
    await byId(alicePage, `allow-audio-${bob.userId}`).click();
    await byId(bobPage, "forced-mute-notice").waitFor({ state: "hidden", timeout: 15_000 });
    expect(await bobPage.locator("#call-mic").isDisabled()).toBe(false);
    expect(await bobPage.locator("#call-mic").getAttribute("aria-pressed")).toBe("false"); // he unmutes himself
    await bobPage.locator("#call-mic").click();
    await expect.poll(() => bobPage.locator("#call-mic").getAttribute("aria-pressed")).toBe("true");
  });

  it("the host sees his raised hand and his reaction", async () => {
    await byId(bobPage, "raise-hand").click();
    await expect.poll(() => byId(alicePage, `participant-${bob.userId}`).getAttribute("data-hand"), { timeout: 15_000 }).toBe("true");
    await byId(bobPage, "reactions").click();
    await byId(bobPage, "react-clap").click();
    await alicePage.locator(`[data-testid="reaction-shown"][data-user="${bob.userId}"]`).waitFor({ timeout: 15_000 });
  });

  it("the host ends the meeting for everyone after a yes; his client says who ended it and does not reconnect", async () => {
    await byId(alicePage, "end-for-all").click();
    await byId(alicePage, "end-confirm").click();
    const error = bobPage.locator(".call .banner.error [role=alert]");
    await expect.poll(() => error.innerText(), { timeout: 30_000 }).toBe("Alice Aardvark ended the meeting.");
    expect(await bobPage.locator(".call-status").getAttribute("data-phase")).toBe("failed");
  });
});
