// Who talks, as the server says (its `speakers` push from Janus's talking events), and the order
// of the remote tiles that follows from it: the server's own selection order for last-N video
// (screen shares, speakers, the others in join order), so the first page shows the people whose
// video the server forwards. Pins go first on top of this (layoutModel.ts).
import type { Layer, ViewPush } from "../rtc/protocol.ts";

export interface Speakers {
  /** Tile keys (feed ids as strings) talking now, in the server's order (most recent first). */
  talking: ReadonlySet<string>;
  /** Tile keys of the most recent speakers, most recent first. */
  recent: readonly string[];
}

export const NO_SPEAKERS: Speakers = { talking: new Set(), recent: [] };

export function speakersFrom(p: Extract<ViewPush, { type: "speakers" }>): Speakers {
  return { talking: new Set(p.talking.map(String)), recent: p.recent.map(String) };
}

/** The videos the server forwards to this viewer, by tile key; null until it has said (all of them). */
export type Forwarded = ReadonlyMap<string, Layer> | null;

export function forwardedFrom(p: Extract<ViewPush, { type: "videos" }>): Forwarded {
  return new Map(p.videos.map((v) => [String(v.feed), v.layer]));
}

/**
 * Remote tiles in the server's selection order (appservice calls/lastN.ts, pins aside): screen
 * shares in join order, then the recent speakers (most recent first; the server puts a feed there
 * once it has talked for a moment, so a one-word interjection reorders nobody), then everyone else
 * as given (join order). Who talks now only marks tiles, it does not move them.
 */
export function speakerOrder<T extends { key: string; screen: boolean }>(remotes: readonly T[], s: Speakers): T[] {
  const recency = new Map(s.recent.map((k, i) => [k, i]));
  const rank = (t: T): [number, number] => {
    if (t.screen) return [0, 0];
    const r = recency.get(t.key);
    return r === undefined ? [2, 0] : [1, r];
  };
  return remotes
    .map((t, i) => ({ t, i, r: rank(t) }))
    .sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.i - b.i)
    .map((x) => x.t);
}

/**
 * The speaker the speaker view shows large: the most recent speaker still here (through a pause
 * too, so the view does not go blank), else whoever talks now; null when nobody has spoken.
 */
export function activeSpeaker(s: Speakers, present: (key: string) => boolean): string | null {
  return s.recent.find(present) ?? [...s.talking].find(present) ?? null;
}
