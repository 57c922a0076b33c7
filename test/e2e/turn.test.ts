// A call whose browsers may use only TURN relay candidates: institution A's Parley says
// turn.relayOnly, so Alice (A) and Bob (B, federated, joining A's call) gather nothing but relay
// candidates on A's coturn, with the short-lived credentials of their call grants, and Janus
// reaches them only through coturn's relay address. Media must flow both ways and decrypt.
// Runs inside scripts/isolated.sh: coturn listens and relays on the media address 127.77.0.1.
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { iceCandidateTypes, joinThroughClient, launchChromium, mediaFlowing, signedInUser } from "../support/browser.ts";

let stack: Stack;
let A: Institution, B: Institution;
let browser: Browser;
let alicePage: Page, bobPage: Page;
let failed = false;

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    relayOnly: (i) => i === 0,
  });
  [A, B] = stack.institutions as [Institution, Institution];
  browser = await launchChromium();
  const [alice, bob] = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(B, "bob", "Bob Badger")]);
  const alias = A.alias("relay-call");
  alicePage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(alias)}`, alice);
  bobPage = await joinThroughClient(browser, `${B.parley.url}/#/call/${encodeURIComponent(alias)}`, bob);
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

describe("a relay-only call through the institution's own coturn", () => {
  it("the call grant carries A's TURN server with a short-lived credential and the relay policy", async () => {
    const grant = await alicePage.evaluate(async () => {
      const pcs = (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs;
      return pcs.map((pc) => pc.getConfiguration()).find((c) => c.iceTransportPolicy === "relay");
    });
    expect(grant?.iceServers).toHaveLength(1);
    const turn = grant!.iceServers![0]!;
    expect(turn.urls).toEqual(A.coturn!.urls);
    const [expiry] = String(turn.username).split(":");
    const ttl = Number(expiry) - Date.now() / 1000;
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3600);
    expect(turn.credential).not.toBe(A.coturn!.secret);
  });

  it("both browsers gathered relay candidates only, and their connections use them", async () => {
    for (const page of [alicePage, bobPage]) {
      // Every live connection (the publisher's; the subscriber's once there is someone to receive) has picked its pair.
      let pcs: Awaited<ReturnType<typeof iceCandidateTypes>> = [];
      await expect
        .poll(async () => {
          pcs = await iceCandidateTypes(page);
          return pcs.length > 0 && pcs.every((p) => p.selected !== null);
        }, { timeout: 20_000 })
        .toBe(true);
      for (const pc of pcs) {
        expect(pc.gathered.length).toBeGreaterThan(0);
        expect(new Set(pc.gathered)).toEqual(new Set(["relay"]));
        expect(pc.selected).toBe("relay");
      }
    }
  });

  it("media flows both ways and decrypts end to end", async () => {
    const [a, b] = await Promise.all([mediaFlowing(alicePage, 30_000), mediaFlowing(bobPage, 30_000)]);
    expect(a.videoFramesDecoded).toBeGreaterThan(0);
    expect(b.videoFramesDecoded).toBeGreaterThan(0);
    for (const page of [alicePage, bobPage]) {
      await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 15_000 });
    }
  });
});
