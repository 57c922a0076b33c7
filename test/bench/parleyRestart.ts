// The Parley half of `npm run bench:faults` (docs/resilience.md): trials of a Parley crash
// (SIGKILL, restarted at once) during a running call. Per trial: the longest stretch any browser
// went without a decoded frame on any remote video (goal 0: media never stops), the time from the
// kill until every client's signalling is back, and, as the same-run baseline, Parley's own start
// (process start to /health ok).
import type { Page } from "playwright-core";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { watchDecodedFrames } from "../support/browser.ts";
import { metric } from "../support/metrics.ts";
import { bench, percentile } from "./lib.ts";

export interface ParleyRestartFigures {
  mediaGapMs: number[];
  signallingBackMs: number[];
  startMs: number[];
}

/** `trials` Parley SIGKILLs of `host` (which hosts the call of `pages`); throws if a client does not come back. */
export async function parleyRestartTrials(host: Institution, pages: Page[], trials: number): Promise<ParleyRestartFigures> {
  const out: ParleyRestartFigures = { mediaGapMs: [], signallingBackMs: [], startMs: [] };
  for (let i = 0; i < trials; i++) {
    const watches = await Promise.all(pages.map(watchDecodedFrames));
    const t0 = performance.now();
    await host.parley.kill9();
    const started = performance.now();
    await host.parley.restart(); // resolves once /health is ok
    out.startMs.push(performance.now() - started);
    for (;;) {
      if ((await metric(host, "parley_participant_sessions")) === pages.length) break;
      if (performance.now() - t0 > 60_000) throw new Error(`trial ${i + 1}: clients' signalling not back after 60 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
    out.signallingBackMs.push(performance.now() - t0);
    // Watch a second more of media after everyone is back.
    await new Promise((r) => setTimeout(r, 1000));
    const gaps = await Promise.all(watches.map((w) => w.stop()));
    out.mediaGapMs.push(Math.max(...gaps.map((g) => g.maxGapMs)));
  }
  return out;
}

/** The longest stretch without a decoded frame on any remote video of any page over `ms` with no fault: what the machine does anyway. */
export async function quietMediaGap(pages: Page[], ms: number): Promise<number> {
  const watches = await Promise.all(pages.map(watchDecodedFrames));
  await new Promise((r) => setTimeout(r, ms));
  return Math.max(...(await Promise.all(watches.map((w) => w.stop()))).map((g) => g.maxGapMs));
}

export function printParleyRestart(f: ParleyRestartFigures, quietGapMs: number): void {
  const back = percentile(f.signallingBackMs, 50);
  const start = percentile(f.startMs, 50);
  bench("parley_restart_media_gap_max", Math.max(...f.mediaGapMs), "ms");
  // The same measure over a stretch without any fault, in the same call: frames are decoded
  // every ~33 ms, but a loaded two-core machine stalls a page now and then.
  bench("baseline_quiet_media_gap_max", quietGapMs, "ms");
  bench("parley_restart_media_gap_p50", percentile(f.mediaGapMs, 50), "ms");
  bench("parley_restart_signalling_back_p50", back, "ms");
  bench("baseline_parley_start_ms", start, "ms");
  // What the clients add to Parley's own start: their reconnect after /health is ok.
  bench("parley_restart_signalling_over_start_p50", back - start, "ms");
}
