// The simulcast layer of each chosen video (docs/large-meetings.md). Pure. From the tile's height
// in device pixels: below 200 -> 0 (1/4 size), below 480 -> 1 (1/2), else 2 (full); a feed
// without a tile entry gets 0, so a thumbnail never pulls the high layer. Going up needs the
// height to pass the threshold by HYSTERESIS (20 %); going down is immediate. A downlink
// budget then lowers the highest layers, largest tile first, until the estimate fits.
import type { FeedId } from "./lastN.ts";

export type Layer = 0 | 1 | 2;

/** Heights (device px) at which layer 1 and layer 2 start. Part of the wire protocol. */
export const LAYER_THRESHOLDS = [200, 480] as const;
/** Going up a layer needs the height to exceed the threshold by this fraction. */
export const HYSTERESIS = 0.2;

export interface LayerInput {
  /** The chosen feeds. */
  feeds: readonly FeedId[];
  /** On-screen height per feed (device px); a feed without one is a thumbnail or hidden. */
  heights: ReadonlyMap<FeedId, number>;
  /** The layer each feed had before (the one applied now), for hysteresis. */
  previous: ReadonlyMap<FeedId, Layer>;
  /** The viewer's receive estimate; undefined: no budget. */
  downlinkKbps?: number | undefined;
  /** Estimated kbit/s of layers 0, 1, 2. */
  layerKbps: readonly [number, number, number];
}

/** The layer a height calls for, with the up-hysteresis applied against `previous`. */
export function layerForHeight(height: number | undefined, previous: Layer | undefined): Layer {
  if (height === undefined) return 0;
  const raw: Layer = height < LAYER_THRESHOLDS[0] ? 0 : height < LAYER_THRESHOLDS[1] ? 1 : 2;
  if (previous === undefined || raw <= previous) return raw;
  let layer: Layer = previous;
  for (let l = previous + 1; l <= raw; l++) {
    if (height >= LAYER_THRESHOLDS[l - 1]! * (1 + HYSTERESIS)) layer = l as Layer;
  }
  return layer;
}

export function chooseLayers(input: LayerInput): Map<FeedId, Layer> {
  const layers = new Map<FeedId, Layer>();
  for (const f of input.feeds) layers.set(f, layerForHeight(input.heights.get(f), input.previous.get(f)));
  if (input.downlinkKbps === undefined) return layers;
  const cost = () => [...layers.values()].reduce<number>((sum, l) => sum + input.layerKbps[l], 0);
  while (cost() > input.downlinkKbps) {
    let pick: FeedId | undefined;
    for (const [f, l] of layers) {
      if (l === 0) continue;
      const best = pick === undefined ? undefined : layers.get(pick)!;
      const h = input.heights.get(f) ?? 0;
      if (best === undefined || l > best || (l === best && h > (input.heights.get(pick!) ?? 0))) pick = f;
    }
    if (pick === undefined) break; // every video at the low layer: nothing more to lower
    layers.set(pick, (layers.get(pick)! - 1) as Layer);
  }
  return layers;
}
