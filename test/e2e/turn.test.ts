// A call whose browsers may use only TURN relay candidates: institution A's Parley says
// turn.relayOnly, so Alice (A) and Bob (B, federated, joining A's call) gather nothing but relay
// candidates on A's coturn, with the short-lived credentials of their call grants, and Janus
// reaches them only through coturn's relay address. Media must flow both ways and decrypt.
// Runs inside scripts/isolated.sh: coturn listens and relays on the media address 127.77.0.1.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { iceCandidateTypes, mediaFlowing } from "../support/browser.ts";
import { startFederatedCall, tearDownOnFailureKeeping, type FederatedCall } from "../support/federatedCall.ts";

let call: FederatedCall;
const onFailure = tearDownOnFailureKeeping();

beforeAll(async () => {
  call = await startFederatedCall({ slug: "relay-call", stack: { relayOnly: (i) => i === 0 } });
}, 180_000);

afterAll(async () => {
  const { failed } = await onFailure(call);
  await call?.browser.close();
  await call?.stack.stop({ keep: failed || undefined });
});

describe("a relay-only call through the institution's own coturn", () => {
  it("the call grant carries A's TURN server with a short-lived credential and the relay policy", async () => {
    const config = await call.alicePage.evaluate(async () => {
      const pcs = (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs;
      return pcs.map((pc) => pc.getConfiguration()).find((c) => c.iceTransportPolicy === "relay");
    });
    expect(config?.iceServers).toHaveLength(1);
    const turn = config!.iceServers![0]!;
    expect(turn.urls).toEqual(call.A.coturn!.urls);
    const [expiry] = String(turn.username).split(":");
    const ttl = Number(expiry) - Date.now() / 1000;
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3600);
    expect(turn.credential).not.toBe(call.A.coturn!.secret);
  });

  it("both browsers gathered relay candidates only, and their connections use them", async () => {
    for (const page of [call.alicePage, call.bobPage]) {
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
    const [a, b] = await Promise.all([mediaFlowing(call.alicePage, 30_000), mediaFlowing(call.bobPage, 30_000)]);
    expect(a.videoFramesDecoded).toBeGreaterThan(0);
    expect(b.videoFramesDecoded).toBeGreaterThan(0);
    for (const page of [call.alicePage, call.bobPage]) {
      await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 15_000 });
    }
  });
});
