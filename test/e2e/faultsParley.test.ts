// Parley restarts (a crash, an upgrade) during a three-person federated call (docs/resilience.md):
// the browsers' media never stops (packets keep arriving on every inbound video while Parley is
// down, frames decode again after), nobody publishes again (no new peer connection, the same
// feeds in Janus), and every client's signalling reattaches to the restarted Parley by itself.
import type { Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { createSfu } from "../../appservice/src/sfu/index.ts";
import { SqliteStore } from "../../appservice/src/store/sqlite.ts";
import { mediaFlowing, videoPackets, watchDecodedFrames } from "../support/browser.ts";
import { everyoneFlowing, resetCounts, startThreePersonCall, type ThreePersonCall } from "../support/faults.ts";
import { callSession, seated } from "../support/callStack.ts";
import { TestUser, waitFor } from "../support/matrix.ts";
import type { Answer } from "../support/signalling.ts";
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

/** The call's room (A's store: the one active call). */
async function callRoom(inst: Institution): Promise<string> {
  const store = new SqliteStore(inst.parley.config.store.path);
  const roomId = (await store.activeCalls())[0]?.roomId;
  await store.close();
  if (!roomId) throw new Error("no active call");
  return roomId;
}

/** Every page still receives packets on each of its (at least two) remote videos since `since`. */
async function allGrew(since: Record<string, number>[]): Promise<boolean> {
  const now = await Promise.all(pages.map(videoPackets));
  return since.every((d, i) => Object.keys(d).length >= 2 && Object.entries(d).every(([ssrc, n]) => (now[i]![ssrc] ?? 0) > n));
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
      else await A.parley.process.stop(); // SIGTERM, and its exit
      // With Parley gone, Janus goes on forwarding: every remote video's packets keep arriving at
      // every page (Janus 1.1.2 ends the sessions of a closed control socket unless it may reclaim
      // them: the media would stop here, and stay stopped until a reconnect).
      // Twice in a row, so that a teardown just after the first reading cannot pass.
      for (const round of ["first", "second"]) {
        const since = await Promise.all(pages.map(videoPackets));
        await waitFor(`every video's packets arriving while Parley is down (${round} reading)`, async () => ((await allGrew(since)) ? true : undefined), 15_000);
      }
      expect(A.parley.process.hasExited).toBe(true);
      await A.parley.restart(); // resolves once /health is ok
      // Every client's signalling is back: three seats held again.
      await waitFor("three seats reattached", async () => ((await metric(A, "parley_participant_sessions")) === 3 ? true : undefined), 30_000);
      await Promise.all(pages.map((p) => mediaFlowing(p, 10_000)));
      const gaps = await Promise.all(watches.map((w) => w.stop()));
      console.log(
        `[faults] Parley ${how}: longest stretch per page without a received video packet (ms): ${gaps.map((g) => g.maxPacketGapMs).join(", ")}; ` +
          `without a decoded frame: ${gaps.map((g) => g.maxGapMs).join(", ")}; the pages' own longest stall: ${gaps.map((g) => g.maxTickMs).join(", ")}`,
      );
      // The gaps are printed, not bounded: they move with the machine's load (Parley's start takes a
      // core for 3-4 s beside three Chromium pages on this two-core machine; the senders' encoders,
      // the pages' samplers and decoders stall with it: 150-600 ms mostly, 1008 ms and 1687 ms in
      // two CI runs). That media never stopped is asserted above, while Parley was down, and by
      // what follows: no reconnect (the same peer connections, no media restart, the same feeds).
      // bench:faults measures the gaps against a quiet call's.
      for (const g of gaps) expect(g.videos).toBeGreaterThanOrEqual(2);
      expect(await Promise.all(pages.map(peerConnections))).toEqual(pcs);
      expect([...call.counts.values()].map((c) => c.restarts)).toEqual([0, 0, 0]);
      expect(await janusFeeds(A)).toEqual(feeds);
    }, 120_000);
  }

  it("a forced mute and a raised hand outlive a restart: the muted cannot unmute, a reconnect is told, the host can allow", async () => {
    const { A, users } = call;
    const roomId = await callRoom(A);
    const as = async (user: { userId: string; accessToken: string }) => seated(A, await callSession(A, new TestUser(A.synapse.clientUrl, user.userId, user.accessToken), roomId));
    // Alice hosts (the first to join): she mutes Carol's microphone, over a second seat of hers.
    const host = await as(users.alice);
    expect(await host.request({ type: "moderate", action: { action: "mute", user_id: users.carol.userId, kind: "audio" } })).toMatchObject({ type: "result" });
    await call.pages.carol.getByTestId("forced-mute-notice").waitFor({ state: "visible", timeout: 15_000 });
    await call.pages.bob.getByTestId("raise-hand").click();
    await host.push("Bob's hand up", (p) => p.type === "participants" && handOf(p, users.bob.userId) !== null);
    host.close();
    await waitFor("the host's second seat gone", async () => ((await metric(A, "parley_participant_sessions")) === 3 ? true : undefined), 30_000);

    await A.parley.kill9();
    await A.parley.restart();
    await waitFor("three seats reattached", async () => ((await metric(A, "parley_participant_sessions")) === 3 ? true : undefined), 30_000);

    // A new seat of Carol's (a reconnect) is told who muted her, and may not unmute herself.
    const carol = await as(users.carol);
    expect(await carol.push("Carol told of her forced mute", (p) => p.type === "moderated")).toMatchObject({ kind: "audio", muted: true, by: users.alice.userId });
    expect(await carol.request({ type: "mute", kind: "audio", muted: false })).toMatchObject({ type: "error", errcode: "M_FORBIDDEN" });
    const list = await carol.push("the participant list", (p) => p.type === "participants" && handOf(p, users.bob.userId) !== undefined);
    expect(handOf(list, users.bob.userId)).not.toBeNull();
    expect(participantOf(list, users.carol.userId)?.forced).toEqual({ audio: true, video: false });
    carol.close();

    // The host allows her again: the restarted Parley lifts the block it did not make.
    const again = await as(users.alice);
    expect(await again.request({ type: "moderate", action: { action: "allow", user_id: users.carol.userId, kind: "audio" } })).toMatchObject({ type: "result" });
    await call.pages.carol.getByTestId("forced-mute-notice").waitFor({ state: "hidden", timeout: 15_000 });
    expect(await call.pages.carol.locator("#call-mic").isDisabled()).toBe(false);
    again.close();
  }, 120_000);
});

type Listed = { user_id: string; hand?: number | null; forced?: { audio: boolean; video: boolean } };
const participantOf = (push: Answer, userId: string) => (push.participants as Listed[] | undefined)?.find((p) => p.user_id === userId);
/** A user's raised hand in a participant list (null: down; undefined: not listed). */
const handOf = (push: Answer, userId: string) => {
  const p = participantOf(push, userId);
  return p ? (p.hand ?? null) : undefined;
};
