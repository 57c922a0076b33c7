// Parley restarts (a crash, an upgrade) during a three-person federated call (docs/resilience.md):
// the browsers' media never stops (frames decoded keep growing on every inbound video), nobody
// publishes again (no new peer connection, the same feeds in Janus), and every client's
// signalling reattaches to the restarted Parley by itself.
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { createSfu } from "../../appservice/src/sfu/index.ts";
import { SqliteStore } from "../../appservice/src/store/sqlite.ts";
import { joinThroughClient, mediaFlowing, signedInUser } from "../support/browser.ts";
import { startFederatedCall, tearDownOnFailureKeeping, type FederatedCall } from "../support/federatedCall.ts";
import { waitFor } from "../support/matrix.ts";
import { metric } from "../support/metrics.ts";

const SLUG = "parley-restart";
let call: FederatedCall;
let pages: Page[];
const keepOnFailure = tearDownOnFailureKeeping();

/** The publishers Janus has in the call's room (their feed ids), asked of Janus itself. */
async function janusFeeds(inst: Institution): Promise<string[]> {
  const store = new SqliteStore(inst.parley.config.store.path);
  const sfuRoom = (await store.activeCalls())[0]?.sfu;
  await store.close();
  if (!sfuRoom) throw new Error("the call has no SFU room");
  const sfu = await createSfu({ nodes: inst.parley.config.sfu.nodes });
  try {
    const list = await sfu.listParticipants({ node: sfuRoom.node, roomId: sfuRoom.room, secret: sfuRoom.secret });
    return list.filter((p) => p.publisher).map((p) => String(p.id)).sort();
  } finally {
    await sfu.stop();
  }
}

/**
 * Starts watching every inbound video of the page (by SSRC): `stop` answers the longest time (ms)
 * any of them went without a newly decoded frame, up to now, and how many were watched.
 */
async function watchFrames(page: Page): Promise<{ stop(): Promise<{ maxGapMs: number; videos: number }> }> {
  await page.evaluate(() => {
    const w = window as unknown as { __parleyPcs: RTCPeerConnection[]; __gaps?: { timer: number; last: Map<string, { frames: number; at: number }>; max: number } };
    const gaps = { timer: 0, last: new Map<string, { frames: number; at: number }>(), max: 0 };
    w.__gaps = gaps;
    gaps.timer = window.setInterval(async () => {
      const now = performance.now();
      for (const pc of w.__parleyPcs.filter((p) => p.connectionState !== "closed")) {
        (await pc.getStats()).forEach((s: Record<string, unknown>) => {
          if (s.type !== "inbound-rtp" || s.kind !== "video") return;
          const key = String(s.ssrc);
          const frames = Number(s.framesDecoded ?? 0);
          const prev = gaps.last.get(key);
          if (!prev || frames > prev.frames) gaps.last.set(key, { frames, at: now });
          else gaps.max = Math.max(gaps.max, now - prev.at);
        });
      }
    }, 100);
  });
  return {
    stop: () =>
      page.evaluate(() => {
        const gaps = (window as unknown as { __gaps: { timer: number; last: Map<string, { at: number }>; max: number } }).__gaps;
        clearInterval(gaps.timer);
        // A video that stopped for good (its peer connection closed: a republish) counts until now.
        const now = performance.now();
        const stalled = Math.max(0, ...[...gaps.last.values()].map((v) => now - v.at));
        return { maxGapMs: Math.round(Math.max(gaps.max, stalled)), videos: gaps.last.size };
      }),
  };
}

const peerConnections = (page: Page) => page.evaluate(() => (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.length);

describe("a Parley restart during a call", () => {
  beforeAll(async () => {
    call = await startFederatedCall({ slug: SLUG });
    const carol = await signedInUser(call.A, "carol", "Carol Caracal");
    const carolPage = await joinThroughClient(call.browser, `${call.A.parley.url}/#/call/${encodeURIComponent(call.A.alias(SLUG))}`, carol);
    pages = [call.alicePage, call.bobPage, carolPage];
    // Everyone receives both others' media, decrypted.
    await Promise.all(pages.map((p) => waitFor("two remote videos", async () => ((await inboundVideos(p)) >= 2 ? true : undefined), 30_000)));
    await Promise.all(pages.map((p) => mediaFlowing(p, 30_000)));
  }, 240_000);

  afterAll(async () => {
    await keepOnFailure(call);
    await call?.browser.close();
    await call?.stack.stop();
  });

  for (const how of ["SIGKILL", "SIGTERM"] as const) {
    it(`after a ${how}, media never stops, nobody publishes again, and signalling reattaches`, async () => {
      const { A } = call;
      const feeds = await janusFeeds(A);
      expect(feeds).toHaveLength(3);
      const pcs = await Promise.all(pages.map(peerConnections));
      const watches = await Promise.all(pages.map(watchFrames));
      if (how === "SIGKILL") await A.parley.kill9();
      await A.parley.restart(); // SIGTERM when still running; resolves once /health is ok
      // Every client's signalling is back: three seats held again.
      await waitFor("three seats reattached", async () => ((await metric(A, "parley_participant_sessions")) === 3 ? true : undefined), 30_000);
      await Promise.all(pages.map((p) => mediaFlowing(p, 10_000)));
      const gaps = await Promise.all(watches.map((w) => w.stop()));
      console.log(`[faults] Parley ${how}: longest stretch without a decoded frame per page (ms): ${gaps.map((g) => g.maxGapMs).join(", ")}`);
      for (const g of gaps) {
        expect(g.videos).toBeGreaterThanOrEqual(2);
        // Frames kept being decoded on every remote video: nothing close to a reconnect's gap.
        expect(g.maxGapMs).toBeLessThan(1000);
      }
      expect(await Promise.all(pages.map(peerConnections))).toEqual(pcs);
      expect(await janusFeeds(A)).toEqual(feeds);
    }, 120_000);
  }
});

/** Inbound video streams of the page's live peer connections. */
async function inboundVideos(page: Page): Promise<number> {
  return page.evaluate(async () => {
    let n = 0;
    for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.filter((p) => p.connectionState !== "closed")) {
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === "inbound-rtp" && s.kind === "video" && Number(s.framesDecoded ?? 0) > 0) n++;
      });
    }
    return n;
  });
}
