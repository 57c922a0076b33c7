// Headless Chromium for browser tests (Debian's chromium, driven by playwright-core), with a fake
// camera and microphone. Run inside scripts/isolated.sh: there the only real interface carries
// 127.77.0.1, so ICE candidates stay on a 127.x address.
import { chromium, type Browser, type Page } from "playwright-core";

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

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: process.env.PARLEY_CHROMIUM_BIN ?? "/usr/bin/chromium", args: CHROMIUM_ARGS });
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

/** Media is flowing now: decoded frames and audio energy both grow over `windowMs`. */
export async function mediaFlowing(page: Page, timeoutMs = 20_000, windowMs = 1000): Promise<InboundStats> {
  const deadline = Date.now() + timeoutMs;
  let before = await inboundStats(page);
  for (;;) {
    await new Promise((r) => setTimeout(r, windowMs));
    const after = await inboundStats(page);
    if (after.videoFramesDecoded > before.videoFramesDecoded && after.audioEnergy > before.audioEnergy) return after;
    if (Date.now() > deadline) throw new Error(`media not flowing: ${JSON.stringify({ before, after })}`);
    before = after;
  }
}
