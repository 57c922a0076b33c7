// The client tells the truth about a call while its parts fail, on the real stack (Synapse x2,
// Parley x2, Janus, Chromium): Janus SIGKILLed, the call says "Reconnecting media…" within 2 s
// and its E2EE badge stops claiming anything, until media flows again after Janus's restart;
// Bob's homeserver SIGKILLed, media goes on and decrypts, and a chat message Bob sends meanwhile
// shows pending, then sent once his homeserver is back, and reaches Alice; alone in the call, no
// E2EE claim; leaving and opening other meetings frees the Matrix crypto only once nothing uses it
// (no "null pointer passed to rust" on any page).
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mediaFlowing } from "../support/browser.ts";
import { startFederatedCall, tearDownOnFailureKeeping, type FederatedCall } from "../support/federatedCall.ts";

let call: FederatedCall;
const keep = tearDownOnFailureKeeping();
/** What Rust crypto says when something calls into an OlmMachine after it was freed. */
const FREED = /null pointer passed to rust|Attempt to use a moved value/;
const freedErrors: string[] = [];

const watchFreed = async (page: Page) => {
  page.on("console", (m) => {
    if (FREED.test(m.text())) freedErrors.push(m.text().split("\n")[0]!);
  });
  page.on("pageerror", (e) => {
    if (FREED.test(e.message)) freedErrors.push(e.message);
  });
};

beforeAll(async () => {
  call = await startFederatedCall({ slug: "honest-state", beforeOpen: { alice: watchFreed, bob: watchFreed } });
}, 240_000);

afterAll(async () => {
  const { failed } = await keep(call);
  await call?.browser.close();
  await call?.stack.stop({ keep: failed || undefined });
});

const pages = () => [call.alicePage, call.bobPage];
const statusText = (page: Page) => page.locator(".call-status").innerText();

/** Waits until the page says media is reconnecting and its badge claims nothing; the page's clock then (ms). */
async function saysReconnecting(page: Page, timeoutMs: number): Promise<number> {
  const handle = await page.waitForFunction(
    () => {
      const status = document.querySelector<HTMLElement>(".call-status");
      const badge = document.querySelector<HTMLElement>("#call-e2ee");
      const claims = badge?.dataset.state === "encrypted" || (badge?.textContent ?? "").includes("Encrypted end to end");
      return status?.textContent === "Reconnecting media…" && !claims ? Date.now() : null;
    },
    undefined,
    { polling: 50, timeout: timeoutMs },
  );
  return (await handle.jsonValue()) as number;
}

/** Opens a meeting link on the page (creating the meeting if it is new) and joins its call. */
async function joinMeeting(page: Page, link: string): Promise<void> {
  await page.goto(link);
  await page.locator("#prejoin-join, #meeting-create").first().waitFor({ timeout: 30_000 });
  if (await page.locator("#meeting-create").isVisible()) await page.locator("#meeting-create").click();
  await page.locator("#prejoin-join").click({ timeout: 30_000 });
  await page.locator('.call-status[data-phase="connected"]').waitFor({ timeout: 30_000 });
}

describe("the client's state while parts of the call fail", () => {
  it("media flows both ways, and both pages claim encryption for it", async () => {
    await Promise.all(pages().map((p) => mediaFlowing(p)));
    for (const page of pages()) {
      await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 15_000 });
      await page.locator('.call-status[data-media="flowing"]').waitFor({ timeout: 5_000 });
      expect(await statusText(page)).toBe("Connected");
    }
  });

  it("Janus SIGKILLed: within 2 s both pages say \"Reconnecting media…\" and make no E2EE claim", async () => {
    const killedAt = Date.now();
    await call.A.janus!.kill9();
    const seenAt = await Promise.all(pages().map((p) => saysReconnecting(p, 15_000)));
    console.log(`"Reconnecting media…" shown ${seenAt.map((at) => at - killedAt).join(" ms, ")} ms after Janus's SIGKILL (Alice, Bob)`);
    for (const at of seenAt) expect(at - killedAt).toBeLessThanOrEqual(2000);
    for (const page of pages()) {
      expect(await page.locator("#call-e2ee").getAttribute("data-state")).not.toBe("encrypted");
      expect(await page.locator("#call-e2ee").innerText()).not.toContain("Encrypted end to end");
    }
  });

  it("Janus back: the text goes once media flows again, and the badge claims encryption again", async () => {
    await call.A.janus!.restart();
    for (const page of pages()) {
      await page.locator('.call-status[data-media="flowing"]').waitFor({ timeout: 90_000 });
      expect(await statusText(page)).not.toBe("Reconnecting media…");
    }
    await Promise.all(pages().map((p) => mediaFlowing(p, 30_000)));
    for (const page of pages()) await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 30_000 });
  });

  it("Bob's homeserver SIGKILLed: media keeps flowing and decrypting; his chat message waits, then goes once it is back", async () => {
    const { alicePage, bobPage, B } = call;
    await Promise.all(pages().map((p) => mediaFlowing(p, 30_000)));
    for (const page of pages()) {
      await page.locator("#call-chat").click();
      await page.locator(".chat").waitFor();
    }
    // A first message shares Bob's room key while his homeserver is up: the one sent during the
    // outage then fails at its send, not in the SDK's own retried key requests.
    const before = `before the outage ${Date.now()}`;
    await bobPage.locator("#chat-input").fill(before);
    await bobPage.locator(".chat-form button[type=submit]").click();
    await alicePage.locator(".chat-list .msg-body", { hasText: before }).waitFor({ timeout: 30_000 });
    await B.synapse.kill9();
    const text = `sent while Bob's homeserver was down ${Date.now()}`;
    await bobPage.locator("#chat-input").fill(text);
    await bobPage.locator(".chat-form button[type=submit]").click();
    await bobPage.locator(".chat-list .msg.pending", { hasText: text }).waitFor({ timeout: 5_000 });
    // Frames decoded and decrypted keep growing in both pages during the outage.
    await Promise.all(pages().map((p) => mediaFlowing(p, 10_000)));
    for (const page of pages()) expect(await page.locator(".call-status").getAttribute("data-media")).toBe("flowing");
    expect(await bobPage.locator(".chat-list .msg.failed", { hasText: text }).count()).toBe(0);
    await B.synapse.restart();
    await bobPage.locator(".chat-list .msg.own:not(.pending):not(.failed)", { hasText: text }).waitFor({ timeout: 90_000 });
    await alicePage.locator(".chat-list .msg-body", { hasText: text }).waitFor({ timeout: 60_000 });
    await Promise.all(pages().map((p) => mediaFlowing(p, 10_000)));
  });

  it("alone in the call: no E2EE claim", async () => {
    const { alicePage, bobPage, B } = call;
    await bobPage.locator("#call-leave").click();
    // Straight on to another meeting, as a user may: the left meeting's Matrix client is let go now.
    const next = joinMeeting(bobPage, `${B.parley.url}/#/call/${encodeURIComponent(B.alias("honest-next-0"))}`);
    await alicePage.locator('#call-e2ee[data-state="alone"]').waitFor({ timeout: 30_000 });
    expect(await alicePage.locator("#call-e2ee").innerText()).not.toContain("Encrypted end to end");
    await alicePage.locator('.call-status[data-media="alone"]').waitFor({ timeout: 5_000 });
    await next;
    await bobPage.locator('#call-e2ee[data-state="alone"]').waitFor({ timeout: 30_000 });
  });

  it("leaving a call and opening the next meeting at once: no Matrix crypto call after it was freed", async () => {
    const { bobPage, B } = call;
    for (let i = 1; i <= 3; i++) {
      await bobPage.locator("#call-leave").click();
      await joinMeeting(bobPage, `${B.parley.url}/#/call/${encodeURIComponent(B.alias(`honest-next-${i}`))}`);
    }
    expect(freedErrors).toEqual([]);
  });
});
