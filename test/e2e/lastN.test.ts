// Last-N from a real browser's layout (docs/large-calls-client.md): three people in one call; when
// Alice's window is so small that her first page holds one remote tile, her client's `view` makes
// the server forward exactly that one video (her other subscribed video stops decoding, every
// audio goes on) and the other remote's tile shows an avatar on the next page; a large window
// brings both videos back, and each video arrives at the layer its tile's size asks for (the
// senders' own encodings' heights).
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { joinThroughClient as joinWith, launchChromium, mediaFlowing, sentHeight, signedInUser } from "../support/browser.ts";
import { everyoneFlowing } from "../support/faults.ts";

let stack: Stack;
let A: Institution;
let browser: Browser;
let pages: Page[] = [];
let failed = false;

/** Inbound video streams whose decoded frames grew over `windowMs` (the videos Janus forwards now). */
async function decodingVideos(page: Page, windowMs = 1500): Promise<number> {
  const frames = () =>
    page.evaluate(async () => {
      const out: Record<string, number> = {};
      for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.filter((p) => p.connectionState !== "closed")) {
        (await pc.getStats()).forEach((s: Record<string, unknown>) => {
          if (s.type === "inbound-rtp" && s.kind === "video") out[String(s.id)] = Number(s.framesDecoded ?? 0);
        });
      }
      return out;
    });
  const before = await frames();
  await new Promise((r) => setTimeout(r, windowMs));
  const after = await frames();
  return Object.entries(after).filter(([id, n]) => n > (before[id] ?? 0)).length;
}

/** Frame heights of the inbound videos that decode now. */
async function decodedHeights(page: Page): Promise<number[]> {
  const heights = await page.evaluate(async () => {
    const out: Record<string, [number, number]> = {};
    for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.filter((p) => p.connectionState !== "closed")) {
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === "inbound-rtp" && s.kind === "video") out[String(s.id)] = [Number(s.framesDecoded ?? 0), Number(s.frameHeight ?? 0)];
      });
    }
    return out;
  });
  return Object.values(heights).filter(([frames]) => frames > 0).map(([, h]) => h).sort((a, b) => a - b);
}

const remoteTiles = (page: Page) => page.locator('[data-testid="tile"]:not(.local)');
const remoteVideosOn = (page: Page) => page.locator('[data-testid="tile"]:not(.local)[data-video="on"]').count();

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info" });
  [A] = stack.institutions as [Institution];
  browser = await launchChromium();
  const users = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(A, "bob", "Bob Badger"), signedInUser(A, "carol", "Carol Crow")]);
  const link = `${A.parley.url}/#/call/${encodeURIComponent(A.alias("e2e-lastn"))}`;
  for (const u of users) pages.push(await joinWith(browser, link, u));
  // The call is up before last-N is tried: every page decodes (and decrypts) every remote video and
  // voice. The third joiner's media key reaches the others after its Olm sessions are made, which
  // took over 20 s on a loaded two-core machine (a CI run on 1 December; its send waited on the
  // new device's key uploads and claims, each Synapse request then taking 1-4 s).
  await everyoneFlowing({ all: pages }, 60_000);
}, 240_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed && pages[0]) await pages[0].screenshot({ path: `${stack.dir}/alice-lastn.png` }).catch(() => undefined);
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
  pages = [];
});

describe("last-N from the browser's layout", () => {
  it("a small window's first page gets exactly its one remote video; audio from everyone goes on", async () => {
    const alice = pages[0]!;
    await expect.poll(() => remoteTiles(alice).count(), { timeout: 20_000 }).toBe(2);
    await expect.poll(() => decodingVideos(alice), { timeout: 20_000 }).toBe(2);
    await alice.setViewportSize({ width: 420, height: 560 });
    await expect.poll(() => alice.locator('[data-testid="page-label"]').innerText(), { timeout: 10_000 }).toBe("Page 1 of 2");
    expect(await remoteTiles(alice).count()).toBe(1);
    await expect.poll(() => remoteVideosOn(alice), { timeout: 10_000 }).toBe(1);
    await expect.poll(() => decodingVideos(alice), { timeout: 10_000 }).toBe(1);
    // Both remote voices still decode (the audio energy of everyone grows).
    expect((await mediaFlowing(alice)).audioEnergy).toBeGreaterThan(0);
    await alice.locator('[data-testid="page-next"]').click();
    await expect.poll(() => alice.locator('[data-testid="page-label"]').innerText()).toBe("Page 2 of 2");
    // The agreed `view` has no page: the server keeps forwarding one video of its own choice
    // (docs/large-calls-client.md, "Known gap"), never both. Which one follows the speakers: the
    // fake microphones beep, so on a slow machine it was once this page's remote, whose tile then
    // shows its video (a CI run on 1 December). Either way one video, at most one tile showing it.
    await expect.poll(() => decodingVideos(alice), { timeout: 10_000 }).toBe(1);
    expect(await remoteVideosOn(alice)).toBeLessThanOrEqual(1);
  });

  it("a large window brings both videos back", async () => {
    const alice = pages[0]!;
    await alice.setViewportSize({ width: 1280, height: 720 });
    await expect.poll(() => alice.locator('[data-testid="page-label"]').isVisible(), { timeout: 10_000 }).toBe(false);
    await expect.poll(() => remoteVideosOn(alice), { timeout: 10_000 }).toBe(2);
    await expect.poll(() => decodingVideos(alice), { timeout: 10_000 }).toBe(2);
  });

  it("each video comes at the layer its tile's size asks for: low for small tiles, medium for larger ones", async () => {
    const [alice, bob, carol] = pages as [Page, Page, Page];
    const layers = () => remoteTiles(alice).evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.layer ?? "none"));
    await alice.setViewportSize({ width: 700, height: 500 }); // three tiles of about 135 px: below 200
    await expect.poll(layers, { timeout: 10_000 }).toEqual(["0", "0"]);
    const low = [await sentHeight(bob, "l"), await sentHeight(carol, "l")].sort((a, b) => a - b);
    expect(low[0]).toBeGreaterThan(0);
    await expect.poll(() => decodedHeights(alice), { timeout: 10_000 }).toEqual(low);
    await alice.setViewportSize({ width: 1280, height: 720 }); // about 245 px: below 480
    await expect.poll(layers, { timeout: 10_000 }).toEqual(["1", "1"]);
    const medium = [await sentHeight(bob, "m"), await sentHeight(carol, "m")].sort((a, b) => a - b);
    expect(medium[0]).toBeGreaterThan(low[0]!);
    await expect.poll(() => decodedHeights(alice), { timeout: 10_000 }).toEqual(medium);
  });
});
