// The whole call in real browsers: institutions A and B (two Synapses, two Parleys, Janus), a user
// of A opens a meeting in A's web client, a user of B joins it from B's web client through
// federation; media both ways through A's Janus; screen share; leave; Janus killed mid-call.
// Runs inside scripts/isolated.sh (npm test does that), so media stays on 127.77.0.1.
import type { Browser, Page, WebSocket } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { hasOpusDtx } from "../../client/src/rtc/sdp.ts";
import { joinThroughClient as joinWith, launchChromium, mediaFlowing, signedInUser } from "../support/browser.ts";

let stack: Stack;
let A: Institution, B: Institution;
let browser: Browser;
let alicePage: Page, bobPage: Page;
let alias: string;
let failed = false;
/** Bob's page's signalling sockets: where to, opened before his Join, closed since. */
const bobSockets: { url: string; beforeJoin: boolean; closed: boolean }[] = [];

const tileNames = (page: Page) => page.locator(".grid .tile .tile-name").allInnerTexts();

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info",
  });
  [A, B] = stack.institutions as [Institution, Institution];
  browser = await launchChromium();
  const [alice, bob] = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(B, "bob", "Bob Badger")]);
  alias = A.alias("e2e-call");
  alicePage = await joinWith(browser, `${A.parley.url}/#/call/${encodeURIComponent(alias)}`, alice);
  // Bob uses his own institution's client and homeserver; the call is hosted by A. His page's
  // signalling sockets are recorded; Join is pressed once his pre-join has opened one (standby).
  let joinPressed = false;
  const signalling = (ws: WebSocket) => ws.url().endsWith("/_parley/v1/signal");
  bobPage = await joinWith(browser, `${B.parley.url}/#/call/${encodeURIComponent(alias)}`, bob, {
    beforeOpen: async (page) =>
      void page.on("websocket", (ws) => {
        if (!signalling(ws)) return;
        const seen = { url: ws.url(), beforeJoin: !joinPressed, closed: false };
        bobSockets.push(seen);
        ws.on("close", () => (seen.closed = true));
      }),
    beforeJoin: async (page) => {
      if (!bobSockets.length) await page.waitForEvent("websocket", { predicate: signalling, timeout: 30_000 });
      joinPressed = true;
    },
  });
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed && alicePage) await alicePage.screenshot({ path: `${stack.dir}/alice.png` }).catch(() => undefined);
  if (failed && bobPage) await bobPage.screenshot({ path: `${stack.dir}/bob.png` }).catch(() => undefined);
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
});

describe("a call across two institutions", () => {
  it("each side decodes the other's video and audio", async () => {
    const [a, b] = await Promise.all([mediaFlowing(alicePage), mediaFlowing(bobPage)]);
    expect(a.videoFramesDecoded).toBeGreaterThan(0);
    expect(a.audioEnergy).toBeGreaterThan(0);
    expect(b.videoFramesDecoded).toBeGreaterThan(0);
    expect(b.audioEnergy).toBeGreaterThan(0);
  });

  it("Bob's call speaks over the one signalling socket his pre-join opened to A's Parley on standby", () => {
    expect(bobSockets).toEqual([{ url: `${A.parley.url.replace(/^http/, "ws")}/_parley/v1/signal`, beforeJoin: true, closed: false }]);
  });

  it("both sides say the call is encrypted end to end: every incoming stream decrypts", async () => {
    for (const page of [alicePage, bobPage]) {
      await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 15_000 });
      expect(await page.locator("#call-e2ee").innerText()).toContain("Encrypted end to end");
    }
  });

  it("the grid shows both participants by their Matrix display names", async () => {
    await expect.poll(() => tileNames(alicePage), { timeout: 15_000 }).toEqual(expect.arrayContaining([expect.stringContaining("Bob Badger")]));
    await expect.poll(() => tileNames(bobPage), { timeout: 15_000 }).toEqual(expect.arrayContaining([expect.stringContaining("Alice Aardvark")]));
  });

  it("the publisher asks for Opus DTX and Janus's answer keeps it (with in-band FEC)", async () => {
    const sdps = await alicePage.evaluate(() =>
      (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs
        .filter((pc) => pc.connectionState !== "closed" && pc.getTransceivers().some((t) => t.direction === "sendonly"))
        .map((pc) => ({ offer: pc.localDescription?.sdp ?? "", answer: pc.remoteDescription?.sdp ?? "" })),
    );
    expect(sdps).toHaveLength(1);
    expect(hasOpusDtx(sdps[0]!.offer)).toBe(true);
    expect(hasOpusDtx(sdps[0]!.answer)).toBe(true);
    expect(sdps[0]!.answer).toMatch(/^a=fmtp:\d+ .*useinbandfec=1/m);
  });

  it("each remote tile shows its video, every remote's audio plays, and the speaker view and pins work", async () => {
    const bobTile = alicePage.locator('[data-testid="tile"]', { hasText: "Bob Badger" });
    await expect.poll(() => bobTile.getAttribute("data-video"), { timeout: 15_000 }).toBe("on");
    expect(await alicePage.locator('[data-testid="remote-audio"] audio').count()).toBe(1);
    expect(await alicePage.locator('[data-testid="page-label"]').isVisible()).toBe(false); // two people: one page
    await alicePage.locator('[data-testid="layout-toggle"]').click();
    await expect.poll(() => bobTile.getAttribute("class"), { timeout: 5000 }).toContain("main");
    expect(await alicePage.locator(".grid").getAttribute("class")).toContain("speaker");
    await bobTile.locator('[data-testid="tile-pin"]').click();
    await expect.poll(() => bobTile.locator('[data-testid="tile-pin"]').getAttribute("aria-pressed")).toBe("true");
    await bobTile.locator('[data-testid="tile-pin"]').click();
    await alicePage.locator('[data-testid="layout-toggle"]').click();
    await expect.poll(() => alicePage.locator(".grid").getAttribute("class")).not.toContain("speaker");
    await expect.poll(() => bobTile.getAttribute("data-video"), { timeout: 10_000 }).toBe("on");
  });

  it("a screen share appears on the other side", async () => {
    // Headless Chromium's fake screen draws the same test pattern as its fake camera, so the
    // pixels cannot tell them apart: Bob's client shows Alice's tile as a screen share because
    // Alice's client says so (the `source` message), and her video keeps arriving.
    const aliceTile = bobPage.locator(".grid .tile", { hasText: "Alice Aardvark" });
    expect(await aliceTile.getAttribute("class")).not.toContain("screen");
    await alicePage.locator("#call-screen").click();
    await expect.poll(() => alicePage.locator("#call-screen").getAttribute("aria-pressed"), { timeout: 10_000 }).toBe("true");
    expect(await alicePage.evaluate(() => (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs
      .flatMap((pc) => pc.getSenders()).some((s) => s.track?.label.startsWith("screen:")))).toBe(true);
    await expect.poll(() => aliceTile.getAttribute("class"), { timeout: 10_000 }).toContain("screen");
    expect(await aliceTile.getAttribute("aria-label")).toContain("sharing screen");
    await mediaFlowing(bobPage);
    await alicePage.locator("#call-screen").click();
    await expect.poll(() => aliceTile.getAttribute("class"), { timeout: 10_000 }).not.toContain("screen");
  });

  it("Janus killed mid-call: media resumes in both browsers within 10 s", async () => {
    await A.janus!.restart({ kill9: true });
    const restartedAt = Date.now();
    await Promise.all([mediaFlowing(alicePage, 10_000, 500), mediaFlowing(bobPage, 10_000, 500)]);
    expect(Date.now() - restartedAt).toBeLessThan(10_000);
  });

  it("a leave removes the tile on the other side", async () => {
    const before = (await tileNames(alicePage)).length;
    await bobPage.locator("#call-leave").click();
    await expect.poll(() => tileNames(alicePage), { timeout: 10_000 }).not.toEqual(expect.arrayContaining([expect.stringContaining("Bob Badger")]));
    expect((await tileNames(alicePage)).length).toBe(before - 1);
  });
});
