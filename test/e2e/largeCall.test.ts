// Issue 10's large call with real browsers: 12 synthetic participants (test/load: werift, VP8
// simulcast and Opus with DTX, every frame sealed in Parley's E2EE format, each sending the last-N
// `view` of test/integration/largeCall.test.ts) and 3 Chromium viewers in one call on the real
// stack (Synapse, Parley, Janus 1.1.2). Alice's camera is on (the real Chromium publisher); Bob's
// and Carol's are off, which keeps two Chromium encoders off the 2-core machine. Bob pins Alice;
// Carol later pins a synthetic participant in the speaker view of a larger window (the high layer).
//
// What Chromium can and cannot show of synthetic media: the synthetic participants' media keys
// never reach Chromium (they have no Matrix crypto, so nobody sends them over Olm), and their VP8
// is fake anyway, so Chromium's E2EE worker drops every synthetic frame ("no-key"): no synthetic
// frame is ever decoded and inbound-rtp has no frameHeight for them. The checks on synthetic
// video in Chromium are therefore RTP-level: packetsReceived (which m-lines Janus forwards) and
// bytesReceived per second (which simulcast layer: the synthetic layers are 60 / 150 / 400
// kbit/s, apart enough to tell even with the key frames Chromium keeps asking for). Alice's
// video, the only one that decrypts and decodes in Chromium, is checked by decoded frame height
// against her own encodings.
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { startParleyParticipants, totals, type SyntheticHandle } from "../load/call.ts";
import { LARGE_CALL_COUNT, LARGE_CALL_FPS, LARGE_CALL_LAYERS, LARGE_CALL_VIEW } from "../load/largeCall.ts";
import { TRAILER_LENGTH } from "../../client/src/rtc/e2ee/frameCrypto.ts";
import { e2eeStats, joinThroughClient as joinWith, launchChromium, sentHeight, signedInUser } from "../support/browser.ts";
import { waitFor } from "../support/matrix.ts";

const COUNT = LARGE_CALL_COUNT;
const VIEW = LARGE_CALL_VIEW;
const LAYERS = LARGE_CALL_LAYERS;
const FPS = LARGE_CALL_FPS;

let stack: Stack;
let A: Institution;
let browser: Browser;
let people: SyntheticHandle[] = [];
let pages: Page[] = [];
let failed = false;

type Push = {
  videos?: { videos: { feed: string | number; layer: number }[] };
  speakers?: { talking: (string | number)[]; recent: (string | number)[] };
  /** Every `speakers` push since the page loaded or the last `clearSpeakerPushes` (the last 500), oldest first. */
  speakerPushes?: { talking: string[]; recent: string[] }[];
};

/**
 * Keeps the last `videos` and `speakers` push the page's signalling socket received, and the
 * newest speaker of each `speakers` push (before any script runs).
 */
async function recordPushes(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    const pushes: Record<string, unknown> = {};
    (window as unknown as { __parleyPushes: Record<string, unknown> }).__parleyPushes = pushes;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        this.addEventListener("message", (e: MessageEvent) => {
          try {
            const m = JSON.parse(String(e.data)) as { type?: unknown };
            if (m.type === "videos" || m.type === "speakers") pushes[m.type] = m;
            if (m.type === "speakers") {
              const { talking = [], recent = [] } = m as { talking?: unknown[]; recent?: unknown[] };
              const all = (pushes.speakerPushes ??= []) as unknown[];
              all.push({ talking: talking.map(String), recent: recent.map(String) });
              if (all.length > 500) all.shift();
            }
          } catch {
            // not JSON: not ours
          }
        });
      }
    } as typeof WebSocket;
  });
}

const pushes = (page: Page): Promise<Push> => page.evaluate(() => (window as unknown as { __parleyPushes: Push }).__parleyPushes);
const clearSpeakerPushes = (page: Page): Promise<void> => page.evaluate(() => void ((window as unknown as { __parleyPushes: Push }).__parleyPushes.speakerPushes = []));

/**
 * Whether some `speakers` push since the last clear put `feed` first among the speakers, but for
 * speakers talking at that moment too (promoted after it within the same coalesced push).
 */
async function wasNewestSpeaker(page: Page, feed: string): Promise<boolean> {
  return ((await pushes(page)).speakerPushes ?? []).some((p) => {
    const i = p.recent.indexOf(feed);
    return i >= 0 && p.recent.slice(0, i).every((f) => p.talking.includes(f));
  });
}

/** The page's `videos` push: feed -> layer (null before one). */
async function pushedVideos(page: Page): Promise<Map<string, number> | null> {
  const v = (await pushes(page)).videos;
  return v ? new Map(v.videos.map((e) => [String(e.feed), e.layer])) : null;
}

interface RtpIn {
  feed: string;
  kind: "audio" | "video";
  packets: number;
  lost: number;
  bytes: number;
  decoded: number;
  height: number;
  /** getStats timestamp (ms). */
  at: number;
}

/**
 * Every inbound-rtp stream of the page by feed: the receiving track (trackIdentifier, else the
 * transceiver of its mid) is in the feed's MediaStream, which the page plays in a remote-audio
 * element carrying the feed id (data-key) for every remote participant, on screen or not.
 */
async function rtpIn(page: Page): Promise<RtpIn[]> {
  return page.evaluate(async () => {
    const feedOfTrack = new Map<string, string>();
    document.querySelectorAll<HTMLAudioElement>('[data-testid="remote-audio"] audio').forEach((el) => {
      for (const t of (el.srcObject as MediaStream | null)?.getTracks() ?? []) feedOfTrack.set(t.id, el.dataset.key ?? "");
    });
    const out: RtpIn[] = [];
    for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.filter((p) => p.connectionState !== "closed")) {
      const trackOfMid = new Map(pc.getTransceivers().filter((t) => t.mid !== null).map((t) => [t.mid!, t.receiver.track.id]));
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type !== "inbound-rtp") return;
        const track = (s.trackIdentifier as string | undefined) ?? trackOfMid.get(String(s.mid));
        const feed = track ? feedOfTrack.get(track) : undefined;
        if (!feed) return;
        out.push({
          feed,
          kind: s.kind as "audio" | "video",
          packets: Number(s.packetsReceived ?? 0),
          lost: Number(s.packetsLost ?? 0),
          bytes: Number(s.bytesReceived ?? 0),
          decoded: Number(s.framesDecoded ?? 0),
          height: Number(s.frameHeight ?? 0),
          at: Number(s.timestamp ?? 0),
        });
      });
    }
    return out;
  });
}

const find = (rows: RtpIn[], feed: string, kind: "audio" | "video") => rows.find((r) => r.feed === feed && r.kind === kind);

/**
 * The synthetic layer a stream's received bit rate between two samples belongs to, -1 for none.
 * A layer sends its nominal rate plus key frames (3 times a frame): Chromium, which never decodes
 * a synthetic frame, keeps asking for them, and the synthetic sender honours one per 300 ms per
 * layer as libwebrtc does, so at 15 fps a layer arrives at 1 to about 1.5 times its rate (plus the
 * seal's and descriptor's bytes): the ranges below are disjoint for 60 / 150 / 400 kbit/s.
 */
function layerOfRate(a: RtpIn, b: RtpIn): number {
  const kbps = ((b.bytes - a.bytes) * 8) / Math.max(1, b.at - a.at);
  return LAYERS.findIndex((l) => kbps >= 0.8 * l.kbps && kbps <= 1.7 * l.kbps);
}

/** The page's own feed id (the one feed of the call it has no remote-audio element for). */
async function ownFeed(page: Page, all: string[]): Promise<string> {
  const remote = new Set(await page.locator('[data-testid="remote-audio"] audio').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.key ?? "")));
  const own = all.filter((f) => !remote.has(f));
  if (own.length !== 1) throw new Error(`cannot tell the page's own feed: ${JSON.stringify(own)}`);
  return own[0]!;
}

/**
 * Samples the page's inbound video until every feed in `pushed` received at least `packets` more
 * packets (a state, not a time): the feeds whose video moved meanwhile, and the two samples.
 */
async function videoWindow(page: Page, pushed: Map<string, number>, packets = 30, spanMs = 0) {
  const before = await rtpIn(page);
  const was = (feed: string) => find(before, feed, "video")?.packets ?? 0;
  const start = Math.min(...before.map((r) => r.at));
  const after = await waitFor("every pushed video moving", async () => {
    const now = await rtpIn(page);
    const enough = [...pushed.keys()].every((f) => (find(now, f, "video")?.packets ?? 0) >= was(f) + packets);
    return enough && Math.min(...now.map((r) => r.at)) - start >= spanMs ? now : undefined;
  }, 20_000);
  const moving = new Set(after.filter((r) => r.kind === "video" && r.packets > was(r.feed)).map((r) => r.feed));
  return { before, after, moving };
}

let aliceFeed = "";

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, calls: () => ({ limits: { socketsPerAddress: 1000 } }), logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info" });
  A = stack.institutions[0]!;
  const alias = A.alias("e2e-large");
  // The synthetic participants first: the first one's join makes the meeting's room.
  people = await startParleyParticipants({ inst: A, room: alias, count: COUNT, tuning: { fps: FPS, layers: LAYERS, view: VIEW, keepLastAudio: true } });
  browser = await launchChromium();
  const users = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(A, "bob", "Bob Badger"), signedInUser(A, "carol", "Carol Crow")]);
  const link = `${A.parley.url}/#/call/${encodeURIComponent(alias)}`;
  const cameraOff = async (page: Page) => {
    await page.locator("#prejoin-camera").click();
    await page.locator('#prejoin-camera[aria-pressed="false"]').waitFor({ timeout: 10_000 });
  };
  for (const [i, u] of users.entries()) pages.push(await joinWith(browser, link, u, { beforeOpen: recordPushes, ...(i > 0 ? { beforeJoin: cameraOff } : {}) }));
  // Everyone's in: each page plays 14 remotes, each synthetic viewer subscribes to 14 feeds.
  await waitFor("14 remotes on every page", async () =>
    (await Promise.all(pages.map((p) => p.locator('[data-testid="remote-audio"] audio').count()))).every((n) => n === COUNT + 2) || undefined,
  60_000);
  await waitFor("every synthetic viewer subscribed to the 14 others", async () => {
    await Promise.all(people.map((p) => p.participant.settled()));
    return people.every((p) => p.participant.subscriptions().length === COUNT + 2) || undefined;
  }, 60_000);
  // Every feed of the call: the synthetic ones, and the Chromium ones a synthetic viewer subscribed to.
  aliceFeed = await ownFeed(pages[0]!, [people[0]!.feed, ...people[0]!.participant.subscriptions()]);
  // Bob pins Alice (pinned feeds are always among the chosen videos): a real publisher's video
  // reaches a Chromium viewer whatever the speakers do (Alice joined after the 12 synthetic ones).
  const bob = pages[1]!;
  await bob.locator(`[data-testid="tile"][data-key="${aliceFeed}"] [data-testid="tile-pin"]`).click({ timeout: 15_000 });
  await waitFor("Alice's video in Bob's videos push", async () => (await pushedVideos(bob))?.has(aliceFeed) || undefined, 15_000);
}, 240_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed) for (const [i, p] of pages.entries()) await p.screenshot({ path: `${stack.dir}/large-${i}.png` }).catch(() => undefined);
  await browser?.close();
  await Promise.all(people.map((p) => p.close()));
  await stack?.stop({ keep: failed || undefined });
  pages = [];
});

describe("a synthetic call of 12 with 3 Chromium viewers", () => {
  it("each Chromium viewer receives video from exactly the feeds its `videos` push lists, audio from everyone, under 1 % loss", async () => {
    for (const page of pages) {
      const pushed = await waitFor("a videos push", () => pushedVideos(page).then((v) => (v && v.size > 0 ? v : undefined)), 20_000);
      expect(pushed.size).toBeLessThanOrEqual(9); // the server's cap
      const { before, after, moving } = await videoWindow(page, pushed);
      expect(moving).toEqual(new Set(pushed.keys()));
      // The tiles on screen agree: a layer on exactly the pushed ones.
      const tiles = await page.locator('[data-testid="tile"]:not(.local)').evaluateAll((els) => els.map((e) => [(e as HTMLElement).dataset.key ?? "", (e as HTMLElement).dataset.layer ?? null] as const));
      for (const [feed, layer] of tiles) expect(layer, `tile ${feed}`).toBe(pushed.has(feed) ? String(pushed.get(feed)) : null);
      // Audio from all 14 others (the synthetic ones send a DTX frame every 400 ms at least).
      const audioMoving = await waitFor("audio from every remote", async () => {
        const now = await rtpIn(page);
        const moved = now.filter((r) => r.kind === "audio" && r.packets > (find(before, r.feed, "audio")?.packets ?? 0));
        return moved.length === COUNT + 2 ? moved : undefined;
      }, 10_000);
      expect(new Set(audioMoving.map((r) => r.feed)).size).toBe(COUNT + 2);
      const sum = (rows: RtpIn[], k: "packets" | "lost") => rows.reduce((n, r) => n + r[k], 0);
      const received = sum(after, "packets") - sum(before, "packets");
      const lost = sum(after, "lost") - sum(before, "lost");
      expect(received).toBeGreaterThan(0);
      expect(lost / (received + lost)).toBeLessThan(0.01);
    }
    // The synthetic participants' own traffic meanwhile stays under 1 % loss too.
    const t0 = totals(people);
    await waitFor("4000 more synthetic packets", async () => (totals(people).received - t0.received >= 4000 ? true : undefined), 20_000);
    const t1 = totals(people);
    expect((t1.lost - t0.lost) / (t1.received - t0.received + t1.lost - t0.lost)).toBeLessThan(0.01);
  });

  it("each pushed video arrives at its pushed layer: synthetic ones by bit rate, Alice's by decoded frame height", async () => {
    // Grid tiles of 1280x720 windows are small (layer 0 or 1); Carol pins a synthetic participant
    // in the speaker view of a larger window, so one video of hers asks for the high layer.
    const carol = pages[2]!;
    const synthetic = new Set(people.map((p) => p.feed));
    await carol.setViewportSize({ width: 1600, height: 1000 });
    const keys = await carol.locator('[data-testid="tile"]:not(.local)').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.key ?? ""));
    const pin = keys.find((k) => synthetic.has(k))!;
    expect(pin).toBeDefined();
    await carol.locator(`[data-testid="tile"][data-key="${pin}"] [data-testid="tile-pin"]`).click();
    await carol.locator('[data-testid="layout-toggle"]').click();
    await expect.poll(async () => (await pushedVideos(carol))?.get(pin), { timeout: 15_000 }).toBe(2);
    const layers = new Set<number>();
    for (const page of pages) for (const l of (await pushedVideos(page))!.values()) layers.add(l);
    expect(layers.size, `pushed layers ${[...layers]}`).toBeGreaterThanOrEqual(2);
    for (const [i, page] of pages.entries()) {
      const pushed = (await pushedVideos(page))!;
      await expect.poll(async () => {
        // Rates over at least 2 s of stats: a few key frames' worth, not one.
        const { before, after } = await videoWindow(page, pushed, 20, 2000);
        const got: Record<string, number> = {};
        for (const feed of pushed.keys()) {
          if (feed === aliceFeed) continue;
          got[feed] = layerOfRate(find(before, feed, "video")!, find(after, feed, "video")!);
        }
        return got;
      }, { timeout: 30_000 }).toEqual(Object.fromEntries([...pushed].filter(([f]) => f !== aliceFeed)));
      if (i > 0 && pushed.has(aliceFeed)) {
        const want = await sentHeight(pages[0]!, (["l", "m", "h"] as const)[pushed.get(aliceFeed)!]!);
        expect(want).toBeGreaterThan(0);
        await expect.poll(async () => find(await rtpIn(page), aliceFeed, "video")?.height, { timeout: 15_000 }).toBe(want);
      }
    }
  });

  it("E2EE intact: Chromium decrypts and decodes Alice's video; synthetic frames stay sealed and never decode in Chromium", async () => {
    const [alice, bob, carol] = pages as [Page, Page, Page];
    // Bob (who pinned her) and Carol when hers lists it get Alice's video (a real Chromium
    // publisher) and decode it after decryption.
    const seeAlice = [];
    for (const page of [bob, carol]) if ((await pushedVideos(page))!.has(aliceFeed)) seeAlice.push(page);
    expect(seeAlice).toContain(bob);
    for (const page of seeAlice) {
      const was = { decoded: find(await rtpIn(page), aliceFeed, "video")?.decoded ?? 0, decrypted: (await e2eeStats(page)).decrypted };
      await expect.poll(async () => (find(await rtpIn(page), aliceFeed, "video")?.decoded ?? 0) > was.decoded + 10 && (await e2eeStats(page)).decrypted > was.decrypted, { timeout: 15_000 }).toBe(true);
    }
    // Alice decrypts Bob's and Carol's voices.
    const aliceWas = (await e2eeStats(alice)).decrypted;
    await expect.poll(async () => (await e2eeStats(alice)).decrypted, { timeout: 15_000 }).toBeGreaterThan(aliceWas);
    expect((await e2eeStats(alice)).encrypted).toBeGreaterThan(0);
    // Synthetic frames reach Chromium sealed under keys it never got: dropped as "no-key", none decoded.
    const synthetic = new Set(people.map((p) => p.feed));
    for (const page of pages) {
      const rows = await rtpIn(page);
      const videos = rows.filter((r) => r.kind === "video" && synthetic.has(r.feed) && r.packets > 0);
      expect(videos.length).toBeGreaterThan(0);
      expect(videos.map((r) => r.decoded)).toEqual(videos.map(() => 0));
      expect((await e2eeStats(page)).reasons["no-key"] ?? 0).toBeGreaterThan(0);
    }
    // At the SFU's far side, Alice's audio frames carry Parley's trailer: the same 4-byte IV salt
    // and a growing frame counter (ciphertext, not a clear Opus frame).
    const viewer = people[0]!;
    const trailer = (b: Buffer) => ({ salt: b.subarray(b.length - TRAILER_LENGTH, b.length - TRAILER_LENGTH + 4).toString("hex"), counter: b.readBigUInt64BE(b.length - TRAILER_LENGTH + 4) });
    const first = await waitFor("an audio frame of Alice's at a synthetic viewer", async () => viewer.participant.lastAudio.get(aliceFeed));
    const second = await waitFor("a later one", async () => {
      const b = viewer.participant.lastAudio.get(aliceFeed);
      return b && !b.equals(first) ? b : undefined;
    });
    expect(trailer(second).salt).toBe(trailer(first).salt);
    expect(trailer(second).counter).toBeGreaterThan(trailer(first).counter);
  });

  it("a synthetic speaker's talking reaches every page: the talking strip, the speaking tile, and its video", async () => {
    const page0 = pages[1]!;
    const pushed = (await pushedVideos(page0))!;
    // Not among the speakers yet, so that being first among them below means its turn made it so.
    const recent = new Set(((await pushes(page0)).speakers?.recent ?? []).map(String));
    const speaker = people.find((p) => !pushed.has(p.feed) && !recent.has(p.feed))!;
    expect(speaker, "a synthetic feed Bob does not get video from, not a speaker yet").toBeDefined();
    const localpart = speaker.userId.slice(1, speaker.userId.indexOf(":"));
    for (const page of pages) await clearSpeakerPushes(page);
    speaker.talk(true);
    try {
      for (const page of pages) {
        await expect.poll(async () => (await pushes(page)).speakers?.talking.map(String) ?? [], { timeout: 15_000 }).toContain(speaker.feed);
        await expect.poll(() => page.locator('[data-testid="talking-strip"]').innerText(), { timeout: 10_000 }).toContain(localpart);
        await expect.poll(() => page.locator(`[data-testid="tile"][data-key="${speaker.feed}"]`).getAttribute("class"), { timeout: 10_000 }).toContain("speaking");
        // Its turn past holdMs made it the newest speaker. A Chromium page's fake microphone (it
        // beeps) may take the front after it, before this page is looked at: so the order is read
        // from every push since the talking began, not from the last one.
        await expect.poll(() => wasNewestSpeaker(page, speaker.feed), { timeout: 15_000 }).toBe(true);
        await expect.poll(async () => (await pushedVideos(page))?.has(speaker.feed), { timeout: 15_000 }).toBe(true);
        const was = find(await rtpIn(page), speaker.feed, "video")?.packets ?? 0;
        await expect.poll(async () => find(await rtpIn(page), speaker.feed, "video")?.packets ?? 0, { timeout: 15_000 }).toBeGreaterThan(was + 10);
      }
    } finally {
      speaker.talk(false);
    }
    // Talking stopped: the speaker leaves every page's strip (Chromium's fake microphone beeps, so
    // the strip may still name a Chromium participant now and then).
    for (const page of pages) await expect.poll(async () => ((await pushes(page)).speakers?.talking ?? []).map(String), { timeout: 15_000 }).not.toContain(speaker.feed);
    for (const page of pages) await expect.poll(() => page.locator('[data-testid="talking-strip"]').innerText(), { timeout: 10_000 }).not.toContain(localpart);
  });

  it("a viewer on grid page 2 receives the videos of page 2's tiles", async () => {
    // Alice's window made small enough for two grid pages (15 tiles: hers and 14 remotes).
    const alice = pages[0]!;
    const synthetic = new Set(people.map((p) => p.feed));
    await alice.setViewportSize({ width: 800, height: 520 });
    await expect.poll(() => alice.locator('[data-testid="page-label"]').innerText(), { timeout: 10_000 }).toMatch(/^Page 1 of [2-9]/);
    /** The cameras on the page now (the synthetic tiles; Bob's and Carol's cameras are off) and the page's `videos` push, read together. */
    const pageAndPush = async () => {
      const keys = await alice.locator('[data-testid="tile"]:not(.local)').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.key ?? ""));
      const shown = keys.filter((k) => synthetic.has(k)).sort();
      const pushed = [...((await pushedVideos(alice)) ?? new Map()).keys()].sort();
      return { shown, pushed };
    };
    // Speakers can reorder the tiles meanwhile (Chromium's fake microphones beep): wait for the state.
    const first = await waitFor("page 1's cameras in the push", async () => {
      const s = await pageAndPush();
      return s.shown.length > 0 && s.shown.length <= 9 && JSON.stringify(s.shown) === JSON.stringify(s.pushed) ? s : undefined;
    }, 20_000);
    await alice.locator('[data-testid="page-next"]').click();
    await expect.poll(() => alice.locator('[data-testid="page-label"]').innerText()).toMatch(/^Page 2 of/);
    const second = await waitFor("page 2's cameras in the push", async () => {
      const s = await pageAndPush();
      return s.shown.length > 0 && JSON.stringify(s.shown) === JSON.stringify(s.pushed) ? s : undefined;
    }, 20_000);
    // Page 2 shows other people than page 1, and their videos are what arrives.
    expect(second.shown.some((f) => !first.shown.includes(f))).toBe(true);
    const { moving } = await videoWindow(alice, new Map(second.pushed.map((f) => [f, 0])));
    for (const f of second.pushed) expect(moving.has(f), `video of ${f}`).toBe(true);
    // And every page-2 tile with a camera shows a layer (its video is forwarded).
    const layers = await alice.locator('[data-testid="tile"]:not(.local)').evaluateAll((els) => els.map((e) => [(e as HTMLElement).dataset.key ?? "", (e as HTMLElement).dataset.layer ?? null] as const));
    for (const [feed, layer] of layers) if (synthetic.has(feed)) expect(layer, `tile ${feed}`).not.toBeNull();
  });
});

