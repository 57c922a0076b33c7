// Parley restarts (a crash, an upgrade) during a three-person federated call (docs/resilience.md):
// the browsers' media never stops (frames decoded keep growing on every inbound video), nobody
// publishes again (no new peer connection, the same feeds in Janus), and every client's
// signalling reattaches to the restarted Parley by itself.
import type { Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { createSfu } from "../../appservice/src/sfu/index.ts";
import { SqliteStore } from "../../appservice/src/store/sqlite.ts";
import { mediaFlowing, watchDecodedFrames } from "../support/browser.ts";
import { everyoneFlowing, resetCounts, startThreePersonCall, type ThreePersonCall } from "../support/faults.ts";
import { waitFor } from "../support/matrix.ts";
import { metric } from "../support/metrics.ts";

let call: ThreePersonCall;
let pages: Page[];
let failed = false;

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

const peerConnections = (page: Page) => page.evaluate(() => (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.length);

describe("a Parley restart during a call", () => {
  beforeAll(async () => {
    call = await startThreePersonCall({ slug: "parley-restart" });
    pages = call.all;
    await everyoneFlowing(call, 60_000);
  }, 240_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });

  afterAll(async () => {
    await call?.stop({ keep: failed });
  });

  for (const how of ["SIGKILL", "SIGTERM"] as const) {
    it(`after a ${how}, media never stops, nobody publishes again, and signalling reattaches`, async () => {
      const { A } = call;
      const feeds = await janusFeeds(A);
      expect(feeds).toHaveLength(3);
      const pcs = await Promise.all(pages.map(peerConnections));
      resetCounts(call);
      const watches = await Promise.all(pages.map(watchDecodedFrames));
      if (how === "SIGKILL") await A.parley.kill9();
      await A.parley.restart(); // SIGTERM when still running; resolves once /health is ok
      // Every client's signalling is back: three seats held again.
      await waitFor("three seats reattached", async () => ((await metric(A, "parley_participant_sessions")) === 3 ? true : undefined), 30_000);
      await Promise.all(pages.map((p) => mediaFlowing(p, 10_000)));
      const gaps = await Promise.all(watches.map((w) => w.stop()));
      console.log(
        `[faults] Parley ${how}: longest stretch per page without a received video packet (ms): ${gaps.map((g) => g.maxPacketGapMs).join(", ")}; ` +
          `without a decoded frame: ${gaps.map((g) => g.maxGapMs).join(", ")}`,
      );
      for (const g of gaps) {
        expect(g.videos).toBeGreaterThanOrEqual(2);
        // Janus kept forwarding every remote video: media that stops stays stopped until a
        // reconnect (the checks below say none happened), seconds. Not a speed target: Parley's
        // start takes a core for 3-4 s beside three Chromium pages on this two-core machine
        // (docs/resilience.md), and the senders' encoders and the pages' decoders stall with it
        // (gaps of 150-600 ms, once 1008 ms in a CI run); a quiet call shows ~100 ms. The packet
        // gap is read here, the decoded-frame gap printed beside it; bench:faults measures both.
        expect(g.maxPacketGapMs).toBeLessThan(1500);
      }
      expect(await Promise.all(pages.map(peerConnections))).toEqual(pcs);
      expect([...call.counts.values()].map((c) => c.restarts)).toEqual([0, 0, 0]);
      expect(await janusFeeds(A)).toEqual(feeds);
    }, 120_000);
  }
});
