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
  /** Their accounts (Alice and Carol of A, Bob of B). */
  users: Record<"alice" | "bob" | "carol", { userId: string; accessToken: string }>;
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
      users: { alice, bob, carol },
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

/** The inbound streams a page has now (to tell the streams of a later restart from these). */
export async function knownStreams(page: Page): Promise<Set<string>> {
  return new Set((await streamCounters(page)).keys());
}

/**
 * Waits until the page receives every other person's media: `remotes` video streams decoding new
 * frames and `remotes` audio streams carrying new energy, confirmed over one window of
 * `windowMs` in which the page's E2EE worker also decrypts new frames. Streams in `ignore` (those
 * of before a fault) do not count. Resolves with the time (performance.now(), sampled every
 * 100 ms) the last of the counted streams started to flow: when every stream was flowing again.
 */
export async function allStreamsFlowing(
  page: Page,
  remotes: number,
  opts: { timeoutMs?: number; windowMs?: number; ignore?: Set<string> } = {},
): Promise<number> {
  const deadline = performance.now() + (opts.timeoutMs ?? 30_000);
  const windowMs = opts.windowMs ?? 500;
  const ignore = opts.ignore ?? new Set<string>();
  const started = new Map<string, number>();
  let prev = await streamCounters(page);
  let lastWindow = { at: performance.now(), counters: prev, decrypted: (await e2eeStats(page)).decrypted };
  let last = "";
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const now = performance.now();
    const counters = await streamCounters(page);
    for (const [k, c] of counters) {
      const p = prev.get(k);
      if (!ignore.has(k) && !started.has(k) && p && c.value > p.value) started.set(k, now);
    }
    prev = counters;
    if (now - lastWindow.at >= windowMs) {
      const decrypted = (await e2eeStats(page)).decrypted;
      const flowing = { audio: [] as number[], video: [] as number[] };
      for (const [k, c] of counters) {
        const before = lastWindow.counters.get(k);
        const at = started.get(k);
        if (at !== undefined && before && c.value > before.value && (c.kind === "audio" || c.kind === "video")) flowing[c.kind].push(at);
      }
      const decrypting = decrypted > lastWindow.decrypted;
      if (flowing.video.length >= remotes && flowing.audio.length >= remotes && decrypting) {
        // The `remotes` earliest flowing streams of each kind are the people; the last of those started it.
        const earliest = (xs: number[]) => xs.sort((a, b) => a - b).slice(0, remotes);
        return Math.max(...earliest(flowing.video), ...earliest(flowing.audio));
      }
      last = JSON.stringify({ video: flowing.video.length, audio: flowing.audio.length, decrypting, streams: counters.size });
      lastWindow = { at: now, counters, decrypted };
    }
    if (now > deadline) throw new Error(`not every stream is flowing: ${last}`);
  }
}

/** Per page, the streams it has now: pass to everyoneFlowing after a fault to count only new ones. */
export async function streamsNow(call: Pick<ThreePersonCall, "all">): Promise<Map<Page, Set<string>>> {
  return new Map(await Promise.all(call.all.map(async (p) => [p, await knownStreams(p)] as const)));
}

/**
 * Every page of the call receives every other person's audio and video (streams in `before`
 * not counted); resolves with the time the last stream of any page started to flow.
 */
export async function everyoneFlowing(call: Pick<ThreePersonCall, "all">, timeoutMs = 30_000, before?: Map<Page, Set<string>>): Promise<number> {
  const times = await Promise.all(call.all.map((p) => allStreamsFlowing(p, call.all.length - 1, { timeoutMs, ignore: before?.get(p) })));
  return Math.max(...times);
}

/** The number of tiles (the own one included) a page shows now. */
export const tileCount = (page: Page) => page.locator(".grid .tile").count();
