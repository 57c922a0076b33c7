// The fault suite's call and its measure of "all streams flowing": a 3-person call across two
// institutions (Alice and Carol of A, Bob of B; A hosts, so A's Janus carries it), and a check
// that in a page every remote person's audio and video each arrive and decrypt right now.
// Shared by test/e2e/faultsJanus.test.ts and test/bench/faults.ts.
import type { Browser, Page } from "playwright-core";
import { startInstitutions, type Institution, type Stack, type StackOptions } from "../../scripts/stack/institutions.ts";
import { e2eeStats, joinThroughClient, launchChromium, signedInUser } from "./browser.ts";

export interface ThreePersonCall {
  stack: Stack;
  A: Institution;
  B: Institution;
  browser: Browser;
  pages: { alice: Page; bob: Page; carol: Page };
  /** Every page, for checks over all of them. */
  all: Page[];
  /** The call's meeting alias (hosted by A). */
  alias: string;
  /** What each page's client logged about its media since the last reset (see ClientCounts). */
  counts: Map<Page, ClientCounts>;
  stop(opts?: { keep?: boolean }): Promise<void>;
}

/** Per page: media restarts the client made, and subscriptions the server refused. */
export interface ClientCounts {
  restarts: number;
  subscribeFailures: number;
}

/** Counts the client's own log lines about restarts and failed subscriptions (client/src/rtc/call.ts). */
function countClientLog(page: Page): ClientCounts {
  const counts = { restarts: 0, subscribeFailures: 0 };
  page.on("console", (m) => {
    const text = m.text();
    if (text.startsWith("[parley:call] publishing and subscribing again")) counts.restarts++;
    if (text.startsWith("[parley:call] subscribe failed")) counts.subscribeFailures++;
  });
  return counts;
}

/** Sets every page's counts back to zero (before a trial). */
export function resetCounts(call: Pick<ThreePersonCall, "counts">): void {
  for (const c of call.counts.values()) Object.assign(c, { restarts: 0, subscribeFailures: 0 });
}

export async function startThreePersonCall(o: { slug: string; stack?: Omit<StackOptions, "count" | "allow"> }): Promise<ThreePersonCall> {
  const stack = await startInstitutions({ janus: true, ...o.stack, count: 2, allow: (i, hosts) => hosts.filter((_, j) => j !== i) });
  const [A, B] = stack.institutions as [Institution, Institution];
  let browser: Browser | undefined;
  try {
    browser = await launchChromium();
    const [alice, bob, carol] = await Promise.all([
      signedInUser(A, "alice", "Alice Aardvark"),
      signedInUser(B, "bob", "Bob Badger"),
      signedInUser(A, "carol", "Carol Crane"),
    ]);
    const alias = A.alias(o.slug);
    const link = (inst: Institution) => `${inst.parley.url}/#/call/${encodeURIComponent(alias)}`;
    const alicePage = await joinThroughClient(browser, link(A), alice);
    const bobPage = await joinThroughClient(browser, link(B), bob);
    const carolPage = await joinThroughClient(browser, link(A), carol);
    const b = browser;
    const counts = new Map([alicePage, bobPage, carolPage].map((p) => [p, countClientLog(p)]));
    // PARLEY_FAULT_TRACE=1: every client log line with a wall-clock time, to line up with Parley's log.
    if (process.env.PARLEY_FAULT_TRACE === "1") {
      for (const [name, page] of Object.entries({ alice: alicePage, bob: bobPage, carol: carolPage })) {
        page.on("console", (m) => {
          if (m.text().startsWith("[parley:")) console.error(`${Date.now()} ${name} ${m.text()}`);
        });
      }
    }
    return {
      stack,
      A,
      B,
      browser,
      pages: { alice: alicePage, bob: bobPage, carol: carolPage },
      all: [alicePage, bobPage, carolPage],
      alias,
      counts,
      async stop(opts) {
        await b.close().catch(() => undefined);
        await stack.stop(opts);
      },
    };
  } catch (err) {
    await browser?.close().catch(() => undefined);
    await stack.stop({ keep: true });
    throw err;
  }
}

/** Per inbound stream of the page's live peer connections: frames decoded (video) or audio energy. */
async function streamCounters(page: Page): Promise<Map<string, { kind: string; value: number }>> {
  const rows = await page.evaluate(async () => {
    const out: [string, string, number][] = [];
    const pcs = (window as unknown as { __parleyPcs?: RTCPeerConnection[] }).__parleyPcs ?? [];
    for (const [i, pc] of pcs.entries()) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type !== "inbound-rtp") return;
        const value = s.kind === "video" ? Number(s.framesDecoded ?? 0) : Number(s.totalAudioEnergy ?? 0);
        out.push([`${i}:${String(s.ssrc)}`, String(s.kind), value]);
      });
    }
    return out;
  });
  return new Map(rows.map(([k, kind, value]) => [k, { kind, value }]));
}

/**
 * Waits until, within one window, `remotes` video streams decode new frames, `remotes` audio
 * streams carry new energy and the page's E2EE worker decrypts new frames: every other person's
 * media arrives, not only some of it. Resolves with the time (performance.now()) it saw that.
 */
export async function allStreamsFlowing(page: Page, remotes: number, timeoutMs = 30_000, windowMs = 500): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let before = await streamCounters(page);
  let decryptedBefore = (await e2eeStats(page)).decrypted;
  for (;;) {
    await new Promise((r) => setTimeout(r, windowMs));
    const after = await streamCounters(page);
    const decrypted = (await e2eeStats(page)).decrypted;
    const growing = { audio: 0, video: 0 };
    for (const [k, s] of after) {
      const b = before.get(k);
      if (b && s.value > b.value && (s.kind === "audio" || s.kind === "video")) growing[s.kind]++;
    }
    const decrypting = decrypted > decryptedBefore;
    if (growing.video >= remotes && growing.audio >= remotes && decrypting) return performance.now();
    if (performance.now() > deadline) throw new Error(`not every stream is flowing: ${JSON.stringify({ growing, decrypting, streams: after.size })}`);
    before = after;
    decryptedBefore = decrypted;
  }
}

/** Every page of the call receives every other person's audio and video; the latest time any did. */
export async function everyoneFlowing(call: Pick<ThreePersonCall, "all">, timeoutMs = 30_000): Promise<number> {
  const times = await Promise.all(call.all.map((p) => allStreamsFlowing(p, call.all.length - 1, timeoutMs)));
  return Math.max(...times);
}

/** The number of tiles (the own one included) a page shows now. */
export const tileCount = (page: Page) => page.locator(".grid .tile").count();
