// The synthetic side of the large-call tests (test/integration/largeCall.test.ts and
// test/e2e/largeCall.test.ts): one call of 12, the same layout and media for both.
import type { LayerSpec } from "./media.ts";

/** Synthetic participants in the call. */
export const LARGE_CALL_COUNT = 12;
/** What a synthetic viewer shows: 9 tiles of 360 px (a 3x3 grid on a 1080p screen) -> layer 1. */
export const LARGE_CALL_VIEW = { videos: 9, tileHeight: 360 };
/** Lighter layers than a camera's (the machine has 2 cores): the same three sizes, fewer packets. */
export const LARGE_CALL_LAYERS: readonly LayerSpec[] = [
  { width: 320, height: 180, kbps: 60 },
  { width: 640, height: 360, kbps: 150 },
  { width: 1280, height: 720, kbps: 400 },
];
export const LARGE_CALL_FPS = 15;
