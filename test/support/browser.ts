// Headless Chromium for browser tests (Debian's chromium, driven by playwright-core), with a fake
// camera and microphone. Run inside scripts/isolated.sh: there the only real interface carries
// 127.77.0.1, so ICE candidates stay on a 127.x address.
import { createHash, X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import { chromium, type Browser, type Page } from "playwright-core";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { TestUser } from "./matrix.ts";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  // mDNS host candidates would open a socket on 224.0.0.251; show plain 127.x candidates instead.
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  // Remote audio must play for its energy to count in getStats.
  "--autoplay-policy=no-user-gesture-required",
];

/**
 * Headless Chromium; `trustCertificates` (PEM files, such as the stack's self-signed Synapse
 * certificates) are accepted for https by their public keys, and no other certificate error is.
 */
export async function launchChromium(opts: { trustCertificates?: string[] } = {}): Promise<Browser> {
  const spki = await Promise.all((opts.trustCertificates ?? []).map(async (file) => spkiHash(await fs.readFile(file))));
  const args = [...CHROMIUM_ARGS];
  const fps = process.env.PARLEY_FAKE_CAMERA_FPS;
  if (fps) args[args.indexOf("--use-fake-device-for-media-stream")] = `--use-fake-device-for-media-stream=fps=${fps}`;
  if (spki.length) args.push(`--ignore-certificate-errors-spki-list=${spki.join(",")}`);
  return chromium.launch({ executablePath: process.env.PARLEY_CHROMIUM_BIN ?? "/usr/bin/chromium", args });
}

/** base64(sha256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's SPKI list takes it. */
function spkiHash(pem: Buffer): string {
  const der = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

export interface InboundStats {
  videoFramesDecoded: number;
  audioEnergy: number;
  audioSamples: number;
  /** Widest inbound video frame. */
  maxFrameWidth: number;
  /** Width/height of that frame: 4:3 for the fake camera, 16:9 for the fake screen. */
  videoAspect: number;
}

/** Sums inbound-rtp stats over every RTCPeerConnection the page registered on window.__parleyPcs. */
export async function inboundStats(page: Page): Promise<InboundStats> {
  return page.evaluate(async () => {
    const pcs = ((window as unknown as { __parleyPcs?: RTCPeerConnection[] }).__parleyPcs ?? []).filter(
      (pc) => pc.connectionState !== "closed",
    );
    const out = { videoFramesDecoded: 0, audioEnergy: 0, audioSamples: 0, maxFrameWidth: 0, videoAspect: 0 };
    for (const pc of pcs) {
      const stats = await pc.getStats();
      stats.forEach((s: Record<string, unknown>) => {
        if (s.type !== "inbound-rtp") return;
        if (s.kind === "video") {
          out.videoFramesDecoded += Number(s.framesDecoded ?? 0);
          const width = Number(s.frameWidth ?? 0);
          if (width > out.maxFrameWidth) {
            out.maxFrameWidth = width;
            out.videoAspect = width / Number(s.frameHeight ?? 1);
          }
        }
        if (s.kind === "audio") {
          out.audioEnergy += Number(s.totalAudioEnergy ?? 0);
          out.audioSamples += Number(s.totalSamplesReceived ?? 0);
        }
      });
    }
    return out;
  });
}

/** The height of a sender's simulcast encoding (rid l, m or h) as its own stats report it (0: none). */
export async function sentHeight(page: Page, rid: "l" | "m" | "h"): Promise<number> {
  return page.evaluate(async (r) => {
    let height = 0;
    for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.filter((p) => p.connectionState !== "closed")) {
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === "outbound-rtp" && s.kind === "video" && s.rid === r) height = Number(s.frameHeight ?? 0);
      });
    }
    return height;
  }, rid);
}

/** Makes every RTCPeerConnection the page creates visible to inboundStats (before any script runs). */
export async function trackPeerConnections(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    const pcs: RTCPeerConnection[] = [];
    (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs = pcs;
    window.RTCPeerConnection = class extends Native {
      constructor(config?: RTCConfiguration) {
        super(config);
        pcs.push(this);
      }
    } as typeof RTCPeerConnection;
  });
}

export async function waitForStats(page: Page, ok: (s: InboundStats) => boolean, timeoutMs = 20_000): Promise<InboundStats> {
  const deadline = Date.now() + timeoutMs;
  let last = await inboundStats(page);
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`media not flowing: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 250));
    last = await inboundStats(page);
  }
  return last;
}

/** The E2EE worker's frame counts (client/src/rtc/e2ee/cipher.ts CipherStats), summed over the page's workers. */
export interface E2eeStats {
  encrypted: number;
  decrypted: number;
  failed: number;
  /** Failed frames by why (no-key, bad-tag, too-short, unbound). */
  reasons: Record<string, number>;
  /** Of the decrypted: video frames held for their key and passed on once it came. */
  released: number;
  /** Keys this page derived by ratcheting a sender's key (a join) and then decrypted with. */
  ratcheted: number;
}

export async function e2eeStats(page: Page): Promise<E2eeStats> {
  const out: E2eeStats = { encrypted: 0, decrypted: 0, failed: 0, reasons: {}, released: 0, ratcheted: 0 };
  for (const w of page.workers()) {
    const s = await w
      .evaluate(() => (self as unknown as { __parleyE2eeStats?: { encrypted: number; decrypted: number; released?: number; ratcheted?: number; failed: Record<string, number> } }).__parleyE2eeStats ?? null)
      .catch(() => null);
    if (!s) continue;
    out.encrypted += s.encrypted;
    out.decrypted += s.decrypted;
    out.released += s.released ?? 0;
    out.ratcheted += s.ratcheted ?? 0;
    out.failed += Object.values(s.failed).reduce((a, b) => a + b, 0);
    for (const [k, v] of Object.entries(s.failed)) if (v) out.reasons[k] = (out.reasons[k] ?? 0) + v;
  }
  return out;
}

/**
 * Media is flowing now: decoded frames, audio energy and frames decrypted by the E2EE worker all
 * grow over `windowMs` (a decoder "decodes" ciphertext too, into garbage: decryption is the proof).
 */
export async function mediaFlowing(page: Page, timeoutMs = 20_000, windowMs = 1000): Promise<InboundStats> {
  const deadline = Date.now() + timeoutMs;
  let before = await inboundStats(page);
  let decryptedBefore = (await e2eeStats(page)).decrypted;
  for (;;) {
    await new Promise((r) => setTimeout(r, windowMs));
    const after = await inboundStats(page);
    const decrypted = (await e2eeStats(page)).decrypted;
    const decrypting = decrypted > decryptedBefore;
    decryptedBefore = decrypted;
    if (after.videoFramesDecoded > before.videoFramesDecoded && after.audioEnergy > before.audioEnergy && decrypting) return after;
    if (Date.now() > deadline) throw new Error(`media not flowing: ${JSON.stringify({ before, after })}`);
    before = after;
  }
}

/** A user of `inst` with a password (for the login form) and a display name. */
export async function signedInUser(inst: Institution, localpart: string, displayName: string) {
  const password = `pw-${localpart}-${Date.now()}`;
  const u = await inst.registerUser(localpart, { password });
  await new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken).client.setDisplayName(displayName);
  return { ...u, password, displayName };
}

/**
 * Opens `link` in a fresh browser context, signs in on the login form (signInToMeeting), joins
 * from pre-join
 * (`beforeOpen` runs on the new page first, e.g. to route its requests; `beforeJoin` on the
 * pre-join, e.g. to turn the camera off).
 * The page's errors, warnings and E2EE log lines go to the test's stderr.
 */
export async function joinThroughClient(
  browser: Browser,
  link: string,
  user: { userId: string; password: string },
  opts: { beforeOpen?: (page: Page) => Promise<void>; beforeJoin?: (page: Page) => Promise<void> } = {},
): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  await opts.beforeOpen?.(page);
  await trackPeerConnections(page);
  page.on("pageerror", (e) => console.error(`[${user.userId}] pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning" || m.text().startsWith("[parley:e2ee]")) {
      console.error(`[${user.userId}] console.${m.type()}: ${m.text()}`);
    }
  });
  await page.goto(link);
  await signInToMeeting(page, user);
  await opts.beforeJoin?.(page);
  await page.locator("#prejoin-join").click({ timeout: 30_000 });
  await page.locator(".call").waitFor({ timeout: 30_000 });
  return page;
}

/**
 * On a meeting link's sign-in form: signs in and waits for the pre-join. The first visitor of a
 * meeting of the serving Parley's is asked whether to create it, and says yes. `typeMs`: the user
 * name and password are typed a key every `typeMs` ms, as a person types them (typeSignIn),
 * rather than filled at once.
 */
export async function signInToMeeting(page: Page, user: { userId: string; password: string }, opts: { typeMs?: number } = {}): Promise<void> {
  await typeSignIn(page, user, opts.typeMs);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.locator("#prejoin-join, #meeting-create").first().waitFor({ timeout: 30_000 });
  if (await page.locator("#meeting-create").isVisible()) await page.locator("#meeting-create").click();
  await page.locator("#prejoin-join").waitFor({ timeout: 30_000 });
}

/**
 * Fills the sign-in form's user name and password: at once, or a key every `typeMs` ms. A
 * benchmark that times what a person sees types them: the page readies the device's crypto store
 * while its user types (client/src/matrix/deviceCrypto.ts, readyNextDevice), and a form filled
 * within milliseconds of the page's load times a sign-in no person makes.
 */
export async function typeSignIn(page: Page, user: { userId: string; password: string }, typeMs?: number): Promise<void> {
  for (const [label, text] of [["User", user.userId], ["Password", user.password]] as const) {
    const field = page.getByLabel(label);
    if (typeMs === undefined) await field.fill(text);
    else await field.pressSequentially(text, { delay: typeMs });
  }
}

/** Per live peer connection of the page: the type of every local ICE candidate and of the selected pair's local one. */
export async function iceCandidateTypes(page: Page): Promise<{ gathered: string[]; selected: string | null }[]> {
  return page.evaluate(async () => {
    const out: { gathered: string[]; selected: string | null }[] = [];
    for (const pc of (window as unknown as { __parleyPcs?: RTCPeerConnection[] }).__parleyPcs ?? []) {
      if (pc.connectionState === "closed") continue;
      const stats = new Map<string, Record<string, unknown>>();
      (await pc.getStats()).forEach((s: Record<string, unknown>) => stats.set(s.id as string, s));
      const gathered = [...stats.values()].filter((s) => s.type === "local-candidate").map((s) => String(s.candidateType));
      const transport = [...stats.values()].find((s) => s.type === "transport" && s.selectedCandidatePairId);
      const pair = transport ? stats.get(transport.selectedCandidatePairId as string) : undefined;
      const local = pair ? stats.get(pair.localCandidateId as string) : undefined;
      out.push({ gathered, selected: local ? String(local.candidateType) : null });
    }
    return out;
  });
}

/** Packets received so far on each inbound video of the page (by SSRC; closed connections left out). */
export function videoPackets(page: Page): Promise<Record<string, number>> {
  return page.evaluate(async () => {
    const out: Record<string, number> = {};
    for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs.filter((p) => p.connectionState !== "closed")) {
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === "inbound-rtp" && s.kind === "video") out[String(s.ssrc)] = Number(s.packetsReceived ?? 0);
      });
    }
    return out;
  });
}

/**
 * Starts watching every inbound video of the page (by SSRC): `stop` answers the longest time (ms)
 * any of them went without a newly decoded frame (`maxGapMs`) and without a newly received packet
 * (`maxPacketGapMs`), up to now, and how many were watched. Packets are counted on the network
 * side: a page whose main thread or decoder is starved for a while (a loaded two-core machine,
 * where the servers restart beside the browsers) still sees them arrive, so the packet gap is
 * what the SFU did, the frame gap what the person saw. `maxTickMs` is the sampler's own longest
 * interval (100 ms asked): a page starved that long reads every gap at least that long.
 */
export async function watchDecodedFrames(page: Page): Promise<{ stop(): Promise<{ maxGapMs: number; maxPacketGapMs: number; maxTickMs: number; videos: number }> }> {
  await page.evaluate(() => {
    type Last = { count: number; at: number };
    const w = window as unknown as { __parleyPcs: RTCPeerConnection[]; __gaps?: { timer: number; frames: Map<string, Last>; packets: Map<string, Last>; max: { frames: number; packets: number; tick: number }; tickAt: number } };
    const gaps = { timer: 0, frames: new Map<string, Last>(), packets: new Map<string, Last>(), max: { frames: 0, packets: 0, tick: 0 }, tickAt: performance.now() };
    w.__gaps = gaps;
    const note = (kind: "frames" | "packets", key: string, count: number, now: number) => {
      const prev = gaps[kind].get(key);
      if (!prev || count > prev.count) gaps[kind].set(key, { count, at: now });
      else gaps.max[kind] = Math.max(gaps.max[kind], now - prev.at);
    };
    gaps.timer = window.setInterval(async () => {
      const now = performance.now();
      gaps.max.tick = Math.max(gaps.max.tick, now - gaps.tickAt);
      gaps.tickAt = now;
      for (const pc of w.__parleyPcs.filter((p) => p.connectionState !== "closed")) {
        (await pc.getStats()).forEach((s: Record<string, unknown>) => {
          if (s.type !== "inbound-rtp" || s.kind !== "video") return;
          note("frames", String(s.ssrc), Number(s.framesDecoded ?? 0), now);
          note("packets", String(s.ssrc), Number(s.packetsReceived ?? 0), now);
        });
      }
    }, 100);
  });
  return {
    stop: () =>
      page.evaluate(() => {
        type Last = { at: number };
        const gaps = (window as unknown as { __gaps: { timer: number; frames: Map<string, Last>; packets: Map<string, Last>; max: { frames: number; packets: number; tick: number } } }).__gaps;
        clearInterval(gaps.timer);
        // A video that stopped for good (its peer connection closed: a republish) counts until now.
        const now = performance.now();
        const until = (m: Map<string, Last>) => Math.max(0, ...[...m.values()].map((v) => now - v.at));
        return {
          maxGapMs: Math.round(Math.max(gaps.max.frames, until(gaps.frames))),
          maxPacketGapMs: Math.round(Math.max(gaps.max.packets, until(gaps.packets))),
          maxTickMs: Math.round(gaps.max.tick),
          videos: gaps.frames.size,
        };
      }),
  };
}
